# The secrets of the stack: generated once and kept in the Terraform state, then written into the
# server's .env by the first-boot script, so they are in the instance's user data too (README:
# "Secrets"). Letters and digits only: docker compose interpolates .env values, where a "$" would start
# a variable.

# DB_PASSWORD: the schema's owner (migrations, the trigger loops, the maintenance timer).
resource "random_password" "db" {
  length  = 32
  special = false
}

# DB_READER_PASSWORD: the read-only role every query connects as (the migrations create and grant it).
resource "random_password" "db_reader" {
  length  = 32
  special = false
}

# DB_WRITER_PASSWORD: the role the query routes that change data connect as.
resource "random_password" "db_writer" {
  length  = 32
  special = false
}

# AUTH_CONTEXT_SECRET: the key the authorizer signs the credential id it hands a function with.
# Without it every shim worker would draw its own, and one could not check another's signature.
resource "random_password" "auth_context" {
  length  = 64
  special = false
}
