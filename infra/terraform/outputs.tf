output "api_url" {
  description = "Base URL of the API (APIG group's default sub-domain), e.g. <api_url>/api/devices."
  value       = local.api_url
}

output "dashboard_url" {
  description = "The dashboard as an OBS static website (its config.js points at api_url)."
  value       = "https://${huaweicloud_obs_bucket.dashboard.bucket}.obs-website.${var.region}.myhuaweicloud.com/"
}

output "dashboard_function_url" {
  description = "The same dashboard served by the dashboard function through the API gateway."
  value       = "${local.api_url}/"
}

output "function_urns" {
  description = "URN of each function (the deploy tool derives them from name_prefix and the region)."
  value       = { for name, fn in huaweicloud_fgs_function.fn : name => fn.urn }
}

output "api_routes" {
  description = "Every published API: key => method and path."
  value       = { for key, r in local.apis : key => "${r.method} ${r.path} (${r.function})" }
}

output "kafka_topic" {
  description = "The readings topic (KAFKA_TOPIC) the ingest function writes and the Kafka trigger reads."
  value       = huaweicloud_dms_kafka_topic.readings.name
}

output "dependency_version" {
  description = "The common/ dependency version Terraform created (later ones come from `make deploy`)."
  value       = huaweicloud_fgs_dependency_version.common.version
}

output "private_endpoints" {
  description = "Where the functions find PostgreSQL, Redis and Kafka (VPC-internal addresses)."
  value = {
    postgres = "${huaweicloud_rds_instance.db.private_ips[0]}:${local.db_port}"
    redis    = "${huaweicloud_dcs_instance.cache.private_ip}:${huaweicloud_dcs_instance.cache.port}"
    kafka    = local.kafka_bootstrap_servers
  }
}
