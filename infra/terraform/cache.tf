# DCS for Redis: the latest value per device and metric (a cache: it is rebuilt from PostgreSQL).
# Redis 5.0/6.0 instances take an IP whitelist instead of a security group: only the app subnet.

data "huaweicloud_dcs_flavors" "cache" {
  engine         = "Redis"
  engine_version = var.redis_engine_version
  cache_mode     = var.redis_cache_mode
  capacity       = var.redis_capacity_gb
}

resource "huaweicloud_dcs_instance" "cache" {
  name               = "${var.name_prefix}-redis"
  engine             = "Redis"
  engine_version     = var.redis_engine_version
  capacity           = var.redis_capacity_gb
  flavor             = data.huaweicloud_dcs_flavors.cache.flavors[0].name
  availability_zones = [local.az]
  vpc_id             = huaweicloud_vpc.main.id
  subnet_id          = huaweicloud_vpc_subnet.data.id
  password           = var.redis_password
  port               = 6379
  whitelist_enable   = true

  whitelists {
    group_name = "functions"
    ip_address = [local.app_cidr]
  }

  tags = local.tags
}
