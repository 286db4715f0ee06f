# The functions' logs in LTS: one log group for the service and one log stream per function, bound to
# each function (enable_lts_log, log_group_*, log_stream_*; docs/functiongraph.md, section 9). Every
# line the code writes is one JSON object (common/logs.py), so LTS searches them by field: a request id
# finds the ingest request and the consumer batch that stored its readings.

resource "huaweicloud_lts_group" "functions" {
  group_name  = "${var.name_prefix}-functions"
  ttl_in_days = var.log_retention_days
  tags        = local.tags
}

resource "huaweicloud_lts_stream" "function" {
  for_each = var.functions

  group_id    = huaweicloud_lts_group.functions.id
  stream_name = "${var.name_prefix}-${each.key}"
  tags        = local.tags
}
