# Shared values: names, the availability zone, the package paths and the functions' settings.

data "huaweicloud_availability_zones" "available" {}

locals {
  az   = var.availability_zone != "" ? var.availability_zone : data.huaweicloud_availability_zones.available.names[0]
  tags = merge({ service = "iot-metrics", managed_by = "terraform" }, var.tags)

  # The FunctionGraph runtime; deploy/package.py builds the dependency zip's wheels for it (CPython 3.10).
  runtime = "Python3.10"

  dist_dir = abspath("${path.module}/${var.dist_dir}")
  deps_zip = "${local.dist_dir}/deps.zip"

  # Every setting common/settings.py reads (Settings.names()), given to every function: all four build
  # the same Settings object in their initializer. Values are strings, as user data is. To add a
  # setting: one line here (or in secret_settings), plus a variable if it needs one.
  settings = {
    DB_HOST                 = huaweicloud_rds_instance.db.private_ips[0]
    DB_PORT                 = tostring(local.db_port)
    DB_NAME                 = huaweicloud_rds_pg_database.service.name
    DB_USER                 = huaweicloud_rds_pg_account.service.name
    DB_POOL_SIZE            = tostring(var.db_pool_size)
    REDIS_HOST              = huaweicloud_dcs_instance.cache.private_ip
    REDIS_PORT              = tostring(huaweicloud_dcs_instance.cache.port)
    REDIS_DB                = tostring(var.redis_db)
    REDIS_KEY_PREFIX        = var.redis_key_prefix
    KAFKA_BOOTSTRAP_SERVERS = local.kafka_bootstrap_servers
    KAFKA_TOPIC             = huaweicloud_dms_kafka_topic.readings.name
    KAFKA_TIMEOUT_MS        = tostring(var.kafka_timeout_ms)
    CONNECT_TIMEOUT         = tostring(var.connect_timeout)
    DEMO_MODE               = tostring(var.demo_mode)
    AUTH_ENABLED            = tostring(var.auth_enabled)
    AUTH_CACHE_SECONDS      = tostring(var.auth_cache_seconds)
    LOG_LEVEL               = var.log_level
  }

  # Secret settings: from sensitive variables without defaults, passed as encrypted user data.
  secret_settings = {
    DB_PASSWORD    = var.db_password
    REDIS_PASSWORD = var.redis_password
  }
}
