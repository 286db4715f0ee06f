# Secrets nobody has to type: generated once, kept in the Terraform state (which is why the state is
# a secret itself: backend.tf.example), and given to the functions as encrypted user data (main.tf).
# Letters and digits only, 32 of them (about 190 bits), at least two of each kind: the RDS accounts
# ask for three kinds of 8-32 characters, and nothing has to escape them in a connection string.
# `terraform apply -replace=random_password.<name>` rotates one: the RDS account's password changes
# in place and every function that reads it gets the new value in the same apply.

# The reader role's password: every query, and the authorizer's credential lookups.
resource "random_password" "db_reader" {
  length      = 32
  special     = false
  min_upper   = 2
  min_lower   = 2
  min_numeric = 2
}

# The writer role's password: the query function's writes (delete-all).
resource "random_password" "db_writer" {
  length      = 32
  special     = false
  min_upper   = 2
  min_lower   = 2
  min_numeric = 2
}

# AUTH_CONTEXT_SECRET: the key the authorizer signs the credential id it hands the backend with
# (HMAC-SHA256), so a function never trusts an X-Iot-Credential header a client made up. Rotating it
# refuses, for up to apig_authorizer_cache_seconds, the answers APIG still holds from before.
resource "random_password" "auth_context" {
  length  = 64
  special = false
}
