# RDS for PostgreSQL: single instance in the data subnet, no EIP, reachable on 5432 from the app
# subnet only. Terraform creates the service's accounts and its database; the schema is created and
# migrated by the code (the consumer's and the maintenance function's initializers), which also
# grants the reader and writer accounts their rights. Three accounts, least privilege:
#   - service (DB_USER): owns the database and the schema; only the functions that migrate use it;
#   - reader (DB_READER_USER): SELECT only, under a statement timeout; every read, and the authorizer;
#   - writer (DB_WRITER_USER): the query function's writes (delete-all).

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

resource "huaweicloud_rds_pg_account" "reader" {
  instance_id = huaweicloud_rds_instance.db.id
  name        = var.db_reader_user
  password    = random_password.db_reader.result
  description = "the IoT functions' reads (SELECT only; granted by the migrations)"
}

resource "huaweicloud_rds_pg_account" "writer" {
  instance_id = huaweicloud_rds_instance.db.id
  name        = var.db_writer_user
  password    = random_password.db_writer.result
  description = "the IoT query function's writes (granted by the migrations)"
}
