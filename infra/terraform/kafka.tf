# DMS for Kafka and the readings topic: no public access, reachable from the app subnet only
# (network.tf). By default plaintext inside the VPC on 9092. With kafka_sasl_ssl, SASL_SSL only, on
# 9093: the functions and the consumer's Kafka trigger sign in as one SASL user over TLS, and the
# functions verify the brokers against the DMS CA certificate that `make package` packs.
#
# kafka_sasl_ssl is chosen when the stack is created. ssl_enable and security_protocol force a new
# instance (provider v1.97.1, huaweicloud/services/kafka/resource_huaweicloud_dms_kafka_instance.go):
# changing the variable on an existing stack destroys the instance and every reading still queued in
# it. Do not change the access mode in the DMS console either: the next plan would replace the
# instance to put ssl_enable back.

locals {
  # Both mechanisms DMS offers are enabled, because they cannot be changed once SASL is on: the
  # functions use var.kafka_sasl_mechanism, and the Kafka trigger's API takes only a user and a
  # password, so which mechanism it uses is not documented.
  kafka_sasl_mechanisms = ["PLAIN", "SCRAM-SHA-512"]

  # Where `make package` puts deploy/kafka-ca.pem in the dependency zip (deploy/package.py); the code
  # reads a relative KAFKA_SSL_CAFILE from the directory that holds common/, the zip's root.
  kafka_ca_file = "certs/kafka-ca.pem"
}

resource "huaweicloud_dms_kafka_instance" "kafka" {
  name               = "${var.name_prefix}-kafka"
  flavor_id          = var.kafka_flavor_id
  engine_version     = var.kafka_engine_version
  storage_spec_code  = var.kafka_storage_spec_code
  storage_space      = var.kafka_storage_gb
  broker_num         = var.kafka_broker_num
  availability_zones = [local.az]
  vpc_id             = huaweicloud_vpc.main.id
  network_id         = huaweicloud_vpc_subnet.data.id
  security_group_id  = huaweicloud_networking_secgroup.kafka.id
  enable_auto_topic  = false
  retention_policy   = "time_base"
  tags               = local.tags

  # Fixed when the instance is created (see the top of this file).
  ssl_enable         = var.kafka_sasl_ssl
  security_protocol  = var.kafka_sasl_ssl ? "SASL_SSL" : null
  enabled_mechanisms = var.kafka_sasl_ssl ? local.kafka_sasl_mechanisms : null
  access_user        = var.kafka_sasl_ssl ? var.kafka_sasl_username : null
  password           = var.kafka_sasl_ssl ? var.kafka_sasl_password : null

  lifecycle {
    precondition {
      condition     = !var.kafka_sasl_ssl || var.kafka_sasl_password != ""
      error_message = "kafka_sasl_ssl is on: set the SASL user's password, export TF_VAR_kafka_sasl_password=..."
    }
  }
}

resource "huaweicloud_dms_kafka_topic" "readings" {
  instance_id = huaweicloud_dms_kafka_instance.kafka.id
  name        = var.kafka_topic
  partitions  = var.kafka_partitions
  replicas    = 3
  aging_time  = var.kafka_retention_hours
  description = "device readings: written by ingest, read by the consumer's Kafka trigger"
}

locals {
  # connect_address is the brokers' IPs, comma-separated; the port is DMS's fixed one for the protocol.
  kafka_bootstrap_servers = join(",", formatlist("%s:${local.ports.kafka}",
  split(",", huaweicloud_dms_kafka_instance.kafka.connect_address)))

  # The functions' Kafka settings (common/settings.py); main.tf merges them into local.settings. Every
  # name is always present, empty when SASL_SSL is off (an empty setting counts as unset).
  kafka_settings = {
    KAFKA_BOOTSTRAP_SERVERS = local.kafka_bootstrap_servers
    KAFKA_SECURITY_PROTOCOL = var.kafka_sasl_ssl ? "SASL_SSL" : "PLAINTEXT"
    KAFKA_SASL_MECHANISM    = var.kafka_sasl_ssl ? var.kafka_sasl_mechanism : ""
    KAFKA_SASL_USERNAME     = var.kafka_sasl_ssl ? var.kafka_sasl_username : ""
    KAFKA_SSL_CAFILE        = var.kafka_sasl_ssl ? local.kafka_ca_file : ""
  }
  kafka_secret_settings = {
    KAFKA_SASL_PASSWORD = var.kafka_sasl_ssl ? var.kafka_sasl_password : ""
  }

  # Merged into the Kafka trigger's event_data (functions.tf). The trigger API's SASL fields are
  # kafka_user, kafka_password and kafka_ssl_enable; it finds the brokers from instance_id. Without
  # SASL_SSL this is exactly the event_data the trigger has always had.
  kafka_trigger_auth = merge(
    { kafka_ssl_enable = var.kafka_sasl_ssl },
    var.kafka_sasl_ssl ? { kafka_user = var.kafka_sasl_username, kafka_password = var.kafka_sasl_password } : {},
  )
}

# A warning, not an error: the first apply of a SASL_SSL stack may come before anyone could download
# the certificate from the new instance. Until the certificate is packed and deployed, ingest answers
# 503 and the query function's /ready names the missing file.
check "kafka_ca_certificate_packaged" {
  assert {
    condition     = !var.kafka_sasl_ssl || try(jsondecode(file("${local.dist_dir}/manifest.json")).dependency.kafka_ca.file == local.kafka_ca_file, false)
    error_message = "kafka_sasl_ssl is on, but the dependency package has no Kafka CA certificate: download it from the DMS console (instance > Basic Information > SSL Certificate, phy_ca.crt), save it as deploy/kafka-ca.pem, then run `make package` and `make deploy`."
  }
}
