output "api_url" {
  description = "Base URL of the API, e.g. <api_url>/api/devices: https://<api_domain>, or the API group's debugging domain when api_domain is empty."
  value       = local.api_url
}

output "api_url_warning" {
  description = "Set while api_url is the debugging domain: why it is for a smoke test only."
  value       = local.custom_domain ? null : "api_url is the API group's debugging domain: APIG answers at most 1,000 calls a day on it (one dashboard tab uses that up in under an hour). Use it for a smoke test only; for devices and the dashboard set api_domain and api_certificate_id, and point the domain's DNS A record at api_gateway_address."
}

output "api_gateway_address" {
  description = "The gateway's public inbound address: what the DNS A record of api_domain points at."
  value       = huaweicloud_apig_instance.gateway.ingress_address
}

output "api_dns_record" {
  description = "The DNS record to create for api_domain (null without one): an A record to the gateway's inbound address."
  value       = local.custom_domain ? { name = var.api_domain, type = "A", value = huaweicloud_apig_instance.gateway.ingress_address } : null
}

output "alarm_topic_urn" {
  description = "URN of the SMN topic the Cloud Eye alarms notify (device alerts have their own: alert_topic_urn)."
  value       = huaweicloud_smn_topic.alarms.topic_urn
}

output "alert_topic_urn" {
  description = "URN of the SMN topic device alerts are published to (ALERT_SMN_TOPIC_URN); null when alert_smn_topic is \"none\"."
  value       = local.alerts_to_smn ? local.alert_topic_urn : null
}

output "nat_public_ip" {
  description = "The fixed public address the functions reach the internet from (null without enable_nat_gateway): what an alert webhook's receiver may allow."
  value       = var.enable_nat_gateway ? huaweicloud_vpc_eip.nat[0].address : null
}

output "dashboard_url" {
  description = "The dashboard as an OBS static website (its config.js points at api_url)."
  value       = "${local.dashboard_origin}/"
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

output "failure_destination" {
  description = "Where the consumer's failed batches are kept after FunctionGraph's retries: make replay BUCKET=<bucket> (python -m deploy replay --bucket <bucket> --key-prefix <prefix>)."
  value = {
    bucket = huaweicloud_obs_bucket.artifacts.bucket
    prefix = local.failure_prefix
  }
}
