# VPC, subnets and security groups: each part reachable only on the port it serves, only from where
# it is called. FunctionGraph functions run in the app subnet (they have no security group of their
# own), so the data services admit the app subnet's CIDR; nothing admits the internet except the API
# gateway's HTTPS port.

locals {
  app_cidr  = cidrsubnet(var.vpc_cidr, 8, 1)
  data_cidr = cidrsubnet(var.vpc_cidr, 8, 2)
  db_port   = 5432
  ports = {
    postgres = local.db_port
    # DMS's fixed broker ports inside the VPC: 9092 plaintext, 9093 SASL (kafka.tf, var.kafka_sasl_ssl)
    kafka = var.kafka_sasl_ssl ? 9093 : 9092
  }
}

resource "huaweicloud_vpc" "main" {
  name = "${var.name_prefix}-vpc"
  cidr = var.vpc_cidr
  tags = local.tags
}

resource "huaweicloud_vpc_subnet" "app" {
  name              = "${var.name_prefix}-app"
  description       = "FunctionGraph functions and the API gateway"
  vpc_id            = huaweicloud_vpc.main.id
  cidr              = local.app_cidr
  gateway_ip        = cidrhost(local.app_cidr, 1)
  availability_zone = local.az
  tags              = local.tags
}

resource "huaweicloud_vpc_subnet" "data" {
  name              = "${var.name_prefix}-data"
  description       = "RDS, DCS and DMS Kafka (no public addresses)"
  vpc_id            = huaweicloud_vpc.main.id
  cidr              = local.data_cidr
  gateway_ip        = cidrhost(local.data_cidr, 1)
  availability_zone = local.az
  tags              = local.tags
}

# ---------------------------------------------------------------- the API gateway: HTTPS from the callers

resource "huaweicloud_networking_secgroup" "apig" {
  name                 = "${var.name_prefix}-apig"
  description          = "APIG dedicated instance: HTTPS in from api_allowed_cidrs"
  delete_default_rules = true
}

resource "huaweicloud_networking_secgroup_rule" "apig_https_in" {
  for_each = toset(var.api_allowed_cidrs)

  security_group_id = huaweicloud_networking_secgroup.apig.id
  description       = "API callers (devices, browsers) over HTTPS"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 443
  port_range_max    = 443
  remote_ip_prefix  = each.value
}

resource "huaweicloud_networking_secgroup_rule" "apig_out" {
  security_group_id = huaweicloud_networking_secgroup.apig.id
  description       = "APIG to its FunctionGraph backends"
  direction         = "egress"
  ethertype         = "IPv4"
  remote_ip_prefix  = "0.0.0.0/0"
}

# ---------------------------------------------------------------- RDS for PostgreSQL: 5432 from the functions

resource "huaweicloud_networking_secgroup" "rds" {
  name                 = "${var.name_prefix}-rds"
  description          = "RDS for PostgreSQL: 5432 from the app subnet only"
  delete_default_rules = true
}

resource "huaweicloud_networking_secgroup_rule" "rds_from_functions" {
  security_group_id = huaweicloud_networking_secgroup.rds.id
  description       = "PostgreSQL from the functions"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = local.ports.postgres
  port_range_max    = local.ports.postgres
  remote_ip_prefix  = local.app_cidr
}

resource "huaweicloud_networking_secgroup_rule" "rds_out" {
  security_group_id = huaweicloud_networking_secgroup.rds.id
  description       = "replies and replication inside the VPC only"
  direction         = "egress"
  ethertype         = "IPv4"
  remote_ip_prefix  = var.vpc_cidr
}

# ---------------------------------------------------------------- DMS for Kafka: its port from the functions and the trigger

# One client port: 9092 (plaintext), or 9093 (SASL_SSL) and then no plaintext port at all.
resource "huaweicloud_networking_secgroup" "kafka" {
  name                 = "${var.name_prefix}-kafka"
  description          = "DMS for Kafka: ${local.ports.kafka} from the app subnet, brokers among themselves"
  delete_default_rules = true
}

resource "huaweicloud_networking_secgroup_rule" "kafka_from_functions" {
  security_group_id = huaweicloud_networking_secgroup.kafka.id
  description       = "Kafka clients: the ingest function and the consumer's Kafka trigger"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = local.ports.kafka
  port_range_max    = local.ports.kafka
  remote_ip_prefix  = local.app_cidr
}

resource "huaweicloud_networking_secgroup_rule" "kafka_brokers" {
  security_group_id = huaweicloud_networking_secgroup.kafka.id
  description       = "broker to broker"
  direction         = "ingress"
  ethertype         = "IPv4"
  remote_group_id   = huaweicloud_networking_secgroup.kafka.id
}

resource "huaweicloud_networking_secgroup_rule" "kafka_out" {
  security_group_id = huaweicloud_networking_secgroup.kafka.id
  description       = "inside the VPC only"
  direction         = "egress"
  ethertype         = "IPv4"
  remote_ip_prefix  = var.vpc_cidr
}
