# The four FunctionGraph functions, in the VPC, with the common/ layer as a dependency, initializers
# and every setting the code reads; the consumer's Kafka trigger and its async retry policy.
#
# Code ownership: Terraform creates each function with the code in dist/ (run `make package` first).
# After that, developers push code and dependency versions with `make deploy` (python -m deploy), so
# Terraform ignores later changes to func_code and depend_list instead of rolling them back.

resource "huaweicloud_identity_agency" "functions" {
  count = var.fgs_agency_name == "" ? 1 : 0

  name                   = "${var.name_prefix}-functiongraph"
  description            = "FunctionGraph: VPC access, the DMS Kafka trigger, consumer failures to OBS"
  delegated_service_name = "op_svc_cff"

  project_role {
    project = var.region
    roles   = var.fgs_agency_roles
  }
}

locals {
  agency = var.fgs_agency_name != "" ? var.fgs_agency_name : huaweicloud_identity_agency.functions[0].name
}

resource "huaweicloud_fgs_dependency_version" "common" {
  name        = "${var.name_prefix}-common"
  runtime     = local.runtime
  link        = "https://${huaweicloud_obs_bucket.artifacts.bucket_domain_name}/${huaweicloud_obs_bucket_object.deps.key}"
  description = "common/ layer and its third-party packages (deploy/function-requirements.txt)"
}

resource "huaweicloud_fgs_function" "fn" {
  for_each = var.functions

  name                  = "${var.name_prefix}-${each.key}"
  app                   = "default"
  description           = "IoT metrics: functions/${each.key}"
  functiongraph_version = "v2"
  runtime               = local.runtime
  handler               = "index.handler"
  initializer_handler   = "index.initializer"
  initializer_timeout   = each.value.initializer_timeout
  memory_size           = each.value.memory_size
  timeout               = each.value.timeout
  max_instance_num      = tostring(each.value.max_instances)

  code_type     = "zip"
  code_filename = "${each.key}.zip"
  func_code     = filebase64("${local.dist_dir}/${each.key}.zip")
  depend_list   = [huaweicloud_fgs_dependency_version.common.version_id]

  agency     = local.agency
  vpc_id     = huaweicloud_vpc.main.id
  network_id = huaweicloud_vpc_subnet.app.id

  user_data           = jsonencode(var.encrypt_secrets ? local.settings : merge(local.settings, local.secret_settings))
  encrypted_user_data = var.encrypt_secrets ? jsonencode(local.secret_settings) : null

  tags = local.tags

  lifecycle {
    ignore_changes = [func_code, code_filename, depend_list]
  }
}

# The consumer is invoked by DMS for Kafka with batches of the readings topic (asynchronously).
resource "huaweicloud_fgs_function_trigger" "readings" {
  function_urn = huaweicloud_fgs_function.fn["consumer"].urn
  type         = "KAFKA"
  status       = "ACTIVE" # Kafka triggers are created DISABLED otherwise

  event_data = jsonencode({
    instance_id      = huaweicloud_dms_kafka_instance.kafka.id
    topic_ids        = [huaweicloud_dms_kafka_topic.readings.name]
    batch_size       = var.kafka_trigger_batch_size
    kafka_ssl_enable = false
  })
}

# A failed batch (PostgreSQL down, ...) is retried by FunctionGraph, then kept in OBS. Storing is
# idempotent, so a retried batch is stored once.
resource "huaweicloud_fgs_async_invoke_configuration" "consumer" {
  function_urn                   = huaweicloud_fgs_function.fn["consumer"].urn
  max_async_retry_attempts       = var.consumer_async_retries
  max_async_event_age_in_seconds = var.consumer_max_event_age_seconds
  enable_async_status_log        = true

  on_failure {
    destination = "OBS"
    param = jsonencode({
      bucket  = huaweicloud_obs_bucket.artifacts.bucket
      prefix  = "consumer-failures"
      expires = var.failure_retention_days
    })
  }
}
