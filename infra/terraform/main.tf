# Shared values: names, the availability zone, the package paths and the functions' settings.

data "huaweicloud_availability_zones" "available" {}

locals {
  az   = var.availability_zone != "" ? var.availability_zone : data.huaweicloud_availability_zones.available.names[0]
  tags = merge({ service = "iot-metrics", managed_by = "terraform" }, var.tags)

  # The FunctionGraph runtime; deploy/package.py builds the dependency zip's wheels for it (CPython 3.10).
  runtime = "Python3.10"

  dist_dir = abspath("${path.module}/${var.dist_dir}")
  deps_zip = "${local.dist_dir}/deps.zip"

  # Every setting a function reads (FUNCTION_SETTINGS in common/settings.py), as strings, as user data
  # is. To add a setting: one line here (or in secret_settings), plus a variable if it needs one, plus
  # the functions that read it in function_settings. MAINTENANCE_INTERVAL_SECONDS is not here: only the
  # local runner reads it; in the cloud the maintenance timer (functions.tf) decides.
  settings = merge({
    DB_HOST            = huaweicloud_rds_instance.db.private_ips[0]
    DB_PORT            = tostring(local.db_port)
    DB_NAME            = huaweicloud_rds_pg_database.service.name
    DB_USER            = huaweicloud_rds_pg_account.service.name
    DB_POOL_SIZE       = tostring(var.db_pool_size)
    REDIS_HOST         = huaweicloud_dcs_instance.cache.private_ip
    REDIS_PORT         = tostring(huaweicloud_dcs_instance.cache.port)
    REDIS_DB           = tostring(var.redis_db)
    REDIS_KEY_PREFIX   = var.redis_key_prefix
    KAFKA_TOPIC        = huaweicloud_dms_kafka_topic.readings.name
    KAFKA_TIMEOUT_MS   = tostring(var.kafka_timeout_ms)
    CONNECT_TIMEOUT    = tostring(var.connect_timeout)
    DEMO_MODE          = tostring(var.demo_mode)
    AUTH_ENABLED       = tostring(var.auth_enabled)
    AUTH_CACHE_SECONDS = tostring(var.auth_cache_seconds)
    LOG_LEVEL          = var.log_level

    RAW_RETENTION_DAYS    = tostring(var.raw_retention_days)
    ROLLUP_RETENTION_DAYS = tostring(var.rollup_retention_days)
    },
    # KAFKA_BOOTSTRAP_SERVERS and the broker's security settings (kafka.tf)
    local.kafka_settings,
  )

  # Secret settings: from sensitive variables without defaults, passed as encrypted user data.
  secret_settings = merge({
    DB_PASSWORD    = var.db_password
    REDIS_PASSWORD = var.redis_password
  }, local.kafka_secret_settings)

  # Which settings each function reads: the same map as FUNCTION_SETTINGS in common/settings.py
  # (tests/test_terraform.py keeps the two equal). A function is given these and nothing else, so no
  # function holds a secret it does not use; the dashboard only serves files.
  database_settings = ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_POOL_SIZE", "CONNECT_TIMEOUT"]
  redis_settings    = ["REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "REDIS_KEY_PREFIX"]
  kafka_settings_used = [
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_TIMEOUT_MS", "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE",
  ]
  auth_settings      = ["AUTH_ENABLED", "AUTH_CACHE_SECONDS"]
  retention_settings = ["RAW_RETENTION_DAYS", "ROLLUP_RETENTION_DAYS"]
  function_settings = {
    ingest      = concat(local.kafka_settings_used, local.database_settings, local.auth_settings, ["RAW_RETENTION_DAYS", "LOG_LEVEL"])
    consumer    = concat(local.database_settings, local.redis_settings, local.retention_settings, ["LOG_LEVEL"])
    maintenance = concat(local.database_settings, local.retention_settings, ["LOG_LEVEL"])
    query       = concat(local.database_settings, local.redis_settings, local.kafka_settings_used, local.auth_settings, ["DEMO_MODE", "LOG_LEVEL"])
    dashboard   = []
  }

  # Where the consumer's failed batches go in the artifacts bucket (python -m deploy replay reads them).
  failure_prefix = "consumer-failures"
}
