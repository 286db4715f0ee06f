# Cloud Eye alarms on what breaks the service, all sent to one SMN topic (emailed to var.alarm_emails).
# Device alerts (a device is too hot, silent) have a topic of their own: alerts.tf.
# Thresholds, periods and consecutive counts are var.alarm_rules; what each alarm watches is below.
#
# Metric names and dimensions, from the Cloud Eye metric pages of each service:
#   SYS.FunctionGraph  failcount, rejectcount; dimension package-functionname = "<app>-<function>"
#                      https://support.huaweicloud.com/intl/en-us/usermanual-functiongraph/functiongraph_01_0213.html
#   SYS.DMS            group_msgs (messages waiting in all consumer groups); dimension kafka_instance_id
#                      https://support.huaweicloud.com/intl/en-us/usermanual-kafka/kafka-ug-180413002.html
#   SYS.RDS            rds001_cpu_util, rds039_disk_util (%); dimension postgresql_cluster_id = the
#                      instance ID (https://support.huaweicloud.com/intl/en-us/api-rds/rds_10_0208.html;
#                      the dimension name as huaweicloud/cloudeye-exporter uses it, metric.yml)
#   SYS.APIC           error_5xx, throttled_calls; dimension instance_id. A dedicated gateway reports
#                      under SYS.APIC; SYS.APIG is the shared gateway's namespace
#                      https://support.huaweicloud.com/intl/en-us/usermanual-apig/apig_03_0032.html
#
# Why the Kafka backlog is not the consumer's health signal: the Kafka trigger invokes the consumer
# asynchronously, so it most likely moves past a batch once the batch is queued, whether or not the
# consumer then stores it (docs/functiongraph.md, section 3). A consumer that fails (PostgreSQL down)
# therefore shows as failed invocations (consumer_failures) and, after its retries, as objects under
# consumer-failures/ in the artifacts bucket, not as lag. The backlog grows when the trigger itself
# stops reading (disabled, lost its DMS permissions, cannot reach the brokers) or reads slower than
# devices write, and that is what kafka_backlog is for. It is measured for the whole instance,
# because the trigger's consumer group has a name Terraform is not told; the trigger's group is the
# only one on this instance unless someone attaches another consumer.

# Cloud Eye may publish to every topic by default (SMN user guide, "Configuring Topic Policies"), so
# the topic needs no policy for the alarms; anything of this account may publish to it too.
resource "huaweicloud_smn_topic" "alarms" {
  name         = "${var.name_prefix}-alarms"
  display_name = "${var.name_prefix} IoT alarms"
  introduction = "Cloud Eye alarms and alerts of the ${var.name_prefix} IoT metrics service"
  tags         = local.tags
}

# SMN mails each address a confirmation link; nothing is delivered to it until it is followed.
resource "huaweicloud_smn_subscription" "alarm_email" {
  for_each = toset(var.alarm_emails)

  topic_urn = huaweicloud_smn_topic.alarms.topic_urn
  protocol  = "email"
  endpoint  = each.value
  remark    = "alarms of ${var.name_prefix}"
}

locals {
  # The FunctionGraph dimension value of each function: "<app>-<function name>".
  function_metric_ids = { for name, fn in huaweicloud_fgs_function.fn : name => "${fn.app}-${fn.name}" }

  # What each alarm watches; var.alarm_rules[key] says when it fires. level: 1 critical, 2 major,
  # 3 minor. Every condition is "metric (rolled up by filter over the period) >= threshold".
  alarms = {
    consumer_failures = {
      description = "The consumer failed to store batches (PostgreSQL or Redis unreachable, or a bug). FunctionGraph retries them, then writes them to consumer-failures/ in the artifacts bucket; python -m deploy replay stores them again."
      namespace   = "SYS.FunctionGraph"
      metric      = "failcount"
      filter      = "sum"
      level       = 1
      dimension   = "package-functionname"
      values      = [local.function_metric_ids["consumer"]]
    }
    maintenance_failures = {
      description = "Maintenance passes keep failing: partitions are not created ahead (the consumer then creates each day's itself), expired ones not dropped (the disk fills), rollups not backfilled. See the maintenance function's logs."
      namespace   = "SYS.FunctionGraph"
      metric      = "failcount"
      filter      = "sum"
      level       = 2
      dimension   = "package-functionname"
      values      = [local.function_metric_ids["maintenance"]]
    }
    http_function_errors = {
      description = "Ingest, query, dashboard or authorizer invocations failed outright (timeout, crash, initializer failure). Handled errors are answered as JSON and do not count; a failing authorizer makes APIG answer 503 to every request that needs a credential."
      namespace   = "SYS.FunctionGraph"
      metric      = "failcount"
      filter      = "sum"
      level       = 2
      dimension   = "package-functionname"
      values      = [for name in ["ingest", "query", "dashboard", "authorizer"] : local.function_metric_ids[name]]
    }
    function_throttles = {
      description = "FunctionGraph refused invocations: a function is at its max_instances (var.functions) or the account's concurrency quota."
      namespace   = "SYS.FunctionGraph"
      metric      = "rejectcount"
      filter      = "sum"
      level       = 2
      dimension   = "package-functionname"
      values      = values(local.function_metric_ids)
    }
    kafka_backlog = {
      description = "Readings are waiting in Kafka: the Kafka trigger stopped reading (disabled, permissions, network) or reads slower than devices write."
      namespace   = "SYS.DMS"
      metric      = "group_msgs"
      filter      = "max"
      level       = 2
      dimension   = "kafka_instance_id"
      values      = [huaweicloud_dms_kafka_instance.kafka.id]
    }
    rds_cpu_percent = {
      description = "PostgreSQL CPU is high: queries slow down, then time out."
      namespace   = "SYS.RDS"
      metric      = "rds001_cpu_util"
      filter      = "average"
      level       = 2
      dimension   = "postgresql_cluster_id"
      values      = [huaweicloud_rds_instance.db.id]
    }
    rds_disk_percent = {
      description = "PostgreSQL storage is filling up; when it is full, the consumer can store nothing. Grow rds_volume_size."
      namespace   = "SYS.RDS"
      metric      = "rds039_disk_util"
      filter      = "max"
      level       = 1
      dimension   = "postgresql_cluster_id"
      values      = [huaweicloud_rds_instance.db.id]
    }
    apig_5xx = {
      description = "The API gateway answered 5xx: a function failed, timed out or could not be reached."
      namespace   = "SYS.APIC"
      metric      = "error_5xx"
      filter      = "sum"
      level       = 2
      dimension   = "instance_id"
      values      = [huaweicloud_apig_instance.gateway.id]
    }
    apig_throttled = {
      description = "The API gateway refused calls over the throttling limits (429): an abusive client, or limits (api_throttling) too tight for real traffic."
      namespace   = "SYS.APIC"
      metric      = "throttled_calls"
      filter      = "sum"
      level       = 3
      dimension   = "instance_id"
      values      = [huaweicloud_apig_instance.gateway.id]
    }
  }
}

resource "huaweicloud_ces_alarmrule" "service" {
  for_each = local.alarms

  alarm_name           = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  alarm_description    = each.value.description
  alarm_type           = "MULTI_INSTANCE"
  alarm_enabled        = true
  alarm_action_enabled = true

  metric {
    namespace = each.value.namespace
  }

  # One monitored object per value (e.g. each HTTP function); the condition applies to each alone.
  dynamic "resources" {
    for_each = each.value.values

    content {
      dimensions {
        name  = each.value.dimension
        value = resources.value
      }
    }
  }

  condition {
    metric_name         = each.value.metric
    filter              = each.value.filter
    comparison_operator = ">="
    value               = var.alarm_rules[each.key].threshold
    period              = var.alarm_rules[each.key].period
    count               = var.alarm_rules[each.key].count
    alarm_level         = each.value.level
    suppress_duration   = 3600 # while it lasts, a reminder every hour
  }

  # The same list on both, as Cloud Eye requires: a message when it fires and when it clears.
  alarm_actions {
    type              = "notification"
    notification_list = [huaweicloud_smn_topic.alarms.topic_urn]
  }

  ok_actions {
    type              = "notification"
    notification_list = [huaweicloud_smn_topic.alarms.topic_urn]
  }
}
