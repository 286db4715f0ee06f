# The database password: generated once and kept in the Terraform state, then written into the server's
# .env by the first-boot script, so it is in the instance's user data too (README: "Secrets"). Letters and
# digits only: docker compose interpolates .env values, where a "$" would start a variable.
resource "random_password" "db" {
  length  = 32
  special = false
}
