# Device alerts to SMN: the maintenance function publishes each alert opening and closing to a topic
# (common/notify.py, common/smn.py), which passes it on to the topic's subscriptions. Not the alarm
# topic of alarms.tf: that one says the service is broken, this one says a device is; they usually go
# to different people.
#
# var.alert_smn_topic: "create" (default) makes the topic here; an existing topic's URN is used as it
# is; "none" publishes nothing (the webhook, if any, still gets every change). The URN reaches the
# maintenance function as ALERT_SMN_TOPIC_URN (main.tf), and its execution agency may publish (iam.tf).

locals {
  create_alert_topic = var.alert_smn_topic == "create"
  alert_topic_urn = (
    var.alert_smn_topic == "none" ? "" :
    local.create_alert_topic ? huaweicloud_smn_topic.alerts[0].topic_urn : var.alert_smn_topic
  )
  # Whether the maintenance function publishes: known at plan time, unlike the topic's URN.
  alerts_to_smn = var.alert_smn_topic != "none"
}

# Publishing needs no topic policy: the default lets users of the topic's own account publish (SMN
# user guide, "Configuring Topic Policies"), and the agency's temporary keys are of this account.
resource "huaweicloud_smn_topic" "alerts" {
  count = local.create_alert_topic ? 1 : 0

  name         = "${var.name_prefix}-device-alerts"
  display_name = "${var.name_prefix} device alerts"
  introduction = "Device alert openings and closings of the ${var.name_prefix} IoT metrics service (JSON with a stable event_id)"
  tags         = local.tags
}

# Email: SMN mails a confirmation link first; HTTPS: SMN posts a subscription confirmation the endpoint
# must answer. Nothing is delivered to either until it is confirmed.
resource "huaweicloud_smn_subscription" "alerts" {
  for_each = local.alerts_to_smn ? { for s in var.alert_subscriptions : "${s.protocol}:${s.endpoint}" => s } : {}

  topic_urn = local.alert_topic_urn
  protocol  = each.value.protocol
  endpoint  = each.value.endpoint
  remark    = "device alerts of ${var.name_prefix}"
}
