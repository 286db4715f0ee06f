# DMS for Kafka and the readings topic. Plaintext inside the VPC (the code speaks no SASL), no public
# access, 9092 open to the app subnet only (functions and the consumer's Kafka trigger).

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
  ssl_enable         = false
  enable_auto_topic  = false
  retention_policy   = "time_base"
  tags               = local.tags
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
  # connect_address is the brokers' IPs, comma-separated; the port is separate.
  kafka_bootstrap_servers = join(",", formatlist("%s:${huaweicloud_dms_kafka_instance.kafka.port}",
  split(",", huaweicloud_dms_kafka_instance.kafka.connect_address)))
}
