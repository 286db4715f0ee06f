# RDS for PostgreSQL: single instance in the data subnet, no EIP, reachable on 5432 from the app
# subnet only. Terraform creates the service's own account and database; the schema is created and
# migrated by the code (the consumer's initializer).

resource "huaweicloud_rds_instance" "db" {
  name              = "${var.name_prefix}-postgres"
  flavor            = var.rds_flavor
  availability_zone = [local.az]
  vpc_id            = huaweicloud_vpc.main.id
  subnet_id         = huaweicloud_vpc_subnet.data.id
  security_group_id = huaweicloud_networking_secgroup.rds.id

  db {
    type     = "PostgreSQL"
    version  = var.rds_postgres_version
    password = var.db_root_password
    port     = local.db_port
  }

  volume {
    type = var.rds_volume_type
    size = var.rds_volume_size
  }

  backup_strategy {
    start_time = "02:00-03:00"
    keep_days  = var.rds_backup_keep_days
  }

  tags = local.tags
}

resource "huaweicloud_rds_pg_account" "service" {
  instance_id = huaweicloud_rds_instance.db.id
  name        = var.db_user
  password    = var.db_password
  description = "the IoT functions"
}

resource "huaweicloud_rds_pg_database" "service" {
  instance_id = huaweicloud_rds_instance.db.id
  name        = var.db_name
  owner       = huaweicloud_rds_pg_account.service.name
  description = "IoT readings"
}
