# The six FunctionGraph functions (ingest, query, dashboard, the authorizer APIG asks first, consumer,
# maintenance), in the VPC, with the common/ layer as a dependency, initializers and the settings each
# one reads; the alias `live` that all traffic goes to; the consumer's Kafka trigger (on that alias,
# enabled on the first apply) and its async retry policy; the maintenance function's timer (on that
# alias too).
#
# Code ownership: Terraform creates each function with the code in dist/ (run `make package` first)
# and publishes it as version v1 with the alias `live` on it. After that, `make deploy`
# (python -m deploy) uploads code, publishes versions, smoke-tests them and only then moves `live`, so
# Terraform ignores later changes to the code, the dependencies and the versions instead of rolling
# them back. Nothing serves `latest`: APIG and the triggers call `live`.

resource "huaweicloud_fgs_dependency_version" "common" {
  name        = "${var.name_prefix}-common"
  runtime     = local.runtime
  link        = "https://${huaweicloud_obs_bucket.artifacts.bucket_domain_name}/${huaweicloud_obs_bucket_object.deps.key}"
  description = "common/ layer and its third-party packages (deploy/function-requirements.txt)"
}

locals {
  live_alias = "live"

  # What each function is given: exactly the settings it reads (local.function_settings), secrets as
  # encrypted user data unless var.encrypt_secrets is off.
  setting_values = merge(local.settings, local.secret_settings)
  secret_names   = keys(local.secret_settings)
  function_user_data = {
    for function, names in local.function_settings : function => {
      for name in names : name => local.setting_values[name]
      if !(var.encrypt_secrets && contains(local.secret_names, name))
    }
  }
  function_secrets = {
    for function, names in local.function_settings : function => {
      for name in names : name => local.secret_settings[name]
      if var.encrypt_secrets && contains(local.secret_names, name)
    }
  }

  # A function's URN without its version (the provider's `urn` ends in ":latest"; the provider strips
  # the last segment the same way), and its alias's URN, the form FunctionGraph documents for aliases.
  function_base_urns = { for name, fn in huaweicloud_fgs_function.fn : name => replace(fn.urn, "/:[^:]+$/", "") }
  live_urns          = { for name, urn in local.function_base_urns : name => "${urn}:!${local.live_alias}" }
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

  agency = local.agency
  # What the code's own calls act as (the credentials in its context): only the maintenance function
  # calls a cloud API, SMN, through an execution agency that may do nothing else (iam.tf). The others
  # keep the platform's default, which is the agency above.
  app_agency = each.key == "maintenance" ? local.maintenance_execution_agency : null
  vpc_id     = huaweicloud_vpc.main.id
  network_id = huaweicloud_vpc_subnet.app.id

  user_data           = length(local.function_user_data[each.key]) > 0 ? jsonencode(local.function_user_data[each.key]) : null
  encrypted_user_data = length(local.function_secrets[each.key]) > 0 ? jsonencode(local.function_secrets[each.key]) : null

  # Its logs in the service's own LTS group and a stream of its own (logs.tf), not in FunctionGraph's
  # default group shared by every function of the account.
  enable_lts_log  = true
  log_group_id    = huaweicloud_lts_group.functions.id
  log_group_name  = huaweicloud_lts_group.functions.group_name
  log_stream_id   = huaweicloud_lts_stream.function[each.key].id
  log_stream_name = huaweicloud_lts_stream.function[each.key].stream_name

  # The first apply publishes the code above as v1 and points `live` at it.
  versions {
    name        = "v1"
    description = "published by Terraform on the first apply"

    aliases {
      name        = local.live_alias
      description = "what APIG and the triggers call; moved by python -m deploy"
    }
  }

  tags = local.tags

  lifecycle {
    ignore_changes = [func_code, code_filename, depend_list, versions]
  }
}

locals {
  # The same value for the trigger and its status action, as the provider asks.
  kafka_trigger_event = merge({
    instance_id = huaweicloud_dms_kafka_instance.kafka.id
    topic_ids   = [huaweicloud_dms_kafka_topic.readings.name]
    batch_size  = var.kafka_trigger_batch_size
  }, local.kafka_trigger_auth)
}

# The consumer is invoked by DMS for Kafka with batches of the readings topic (asynchronously),
# through its `live` alias. The provider creates a Kafka trigger DISABLED whatever `status` says.
resource "huaweicloud_fgs_function_trigger" "readings" {
  function_urn = local.live_urns["consumer"]
  type         = "KAFKA"
  event_data   = jsonencode(local.kafka_trigger_event)
}

# So the trigger is ACTIVE after one apply. When the trigger is replaced (its function_urn or type
# changed), this is replaced with it and enables the new one: enable_force_new turns the provider's
# "cannot be updated" into a replacement, and replace_triggered_by makes sure it happens.
resource "huaweicloud_fgs_function_trigger_status_action" "readings" {
  function_urn      = huaweicloud_fgs_function_trigger.readings.function_urn
  trigger_type_code = "KAFKA"
  trigger_id        = huaweicloud_fgs_function_trigger.readings.id
  trigger_status    = "ACTIVE"
  event_data        = jsonencode(local.kafka_trigger_event)
  enable_force_new  = "true"

  lifecycle {
    replace_triggered_by = [huaweicloud_fgs_function_trigger.readings]
  }
}

# A failed batch (PostgreSQL down, ...) is retried by FunctionGraph, then kept in OBS, where
# `python -m deploy replay` reads it back. Storing is idempotent, so a retried batch is stored once.
resource "huaweicloud_fgs_async_invoke_configuration" "consumer" {
  function_urn                   = huaweicloud_fgs_function.fn["consumer"].urn
  max_async_retry_attempts       = var.consumer_async_retries
  max_async_event_age_in_seconds = var.consumer_max_event_age_seconds
  enable_async_status_log        = true

  on_failure {
    destination = "OBS"
    param = jsonencode({
      bucket  = huaweicloud_obs_bucket.artifacts.bucket
      prefix  = local.failure_prefix
      expires = var.failure_retention_days
    })
  }
}

locals {
  # A fixed rate ("5m", "1h", "1d") or, for anything else var.maintenance_schedule accepts, a cron
  # expression; FunctionGraph needs to be told which (docs/functiongraph.md, section 3b).
  maintenance_schedule_type = can(regex("^[0-9]+[mhd]$", var.maintenance_schedule)) ? "Rate" : "Cron"
}

# The maintenance function runs on a timer: partitions created ahead, expired ones dropped, rollups
# backfilled (common/maintenance.py). FunctionGraph invokes it asynchronously, through its `live`
# alias like every other trigger. A pass that overlaps another (a slow one, a retried one, the deploy's
# smoke test) takes no action: each pass holds a PostgreSQL advisory lock.
#
# A TIMER trigger is ACTIVE when created (the provider's acceptance test checks it), so it needs no
# status action; `status` is set so that a timer disabled in the console shows as a change in the next
# plan and is enabled again by the apply. The keys of event_data are those the provider's acceptance
# test sends and reads back unchanged, so the plan after an apply is empty.
resource "huaweicloud_fgs_function_trigger" "maintenance" {
  function_urn = local.live_urns["maintenance"]
  type         = "TIMER"
  status       = "ACTIVE"
  event_data = jsonencode({
    name           = "${replace(var.name_prefix, "-", "_")}_maintenance"
    schedule_type  = local.maintenance_schedule_type
    schedule       = var.maintenance_schedule
    sync_execution = false
    user_event     = "maintenance pass scheduled by Terraform"
  })
}
