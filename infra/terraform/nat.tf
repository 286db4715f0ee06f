# An optional public NAT gateway for the functions' subnet. FunctionGraph functions with VPC access
# lose the platform's default internet access; a public NAT gateway with an EIP in the VPC gives it
# back (FunctionGraph user guide, "Configuring the Network"), through one fixed address that a webhook
# receiver can allow. Off by default: nothing here needs the internet unless ALERT_WEBHOOK_URL is on
# it (or SMN's endpoint turns out to be unreachable from the VPC: docs/functiongraph.md, section 10).
#
# Only the app subnet (the functions and the API gateway) is translated; the data subnet (RDS, DCS,
# Kafka) gets no way out. The SNAT rule names the subnet by its network id, what huaweicloud_vpc_subnet
# calls `id` (the provider sends subnet_id as the API's network_id: resource_huaweicloud_nat_snat_rule.go).

resource "huaweicloud_vpc_eip" "nat" {
  count = var.enable_nat_gateway ? 1 : 0

  name = "${var.name_prefix}-nat"
  tags = local.tags

  publicip {
    type = var.nat_eip_type
  }

  bandwidth {
    share_type  = "PER"
    name        = "${var.name_prefix}-nat"
    size        = var.nat_bandwidth_mbit
    charge_mode = "traffic"
  }
}

resource "huaweicloud_nat_gateway" "functions" {
  count = var.enable_nat_gateway ? 1 : 0

  name        = "${var.name_prefix}-nat"
  description = "internet access for the functions in the app subnet (alert webhooks)"
  spec        = var.nat_gateway_spec
  vpc_id      = huaweicloud_vpc.main.id
  subnet_id   = huaweicloud_vpc_subnet.app.id
  tags        = local.tags
}

resource "huaweicloud_nat_snat_rule" "functions" {
  count = var.enable_nat_gateway ? 1 : 0

  nat_gateway_id = huaweicloud_nat_gateway.functions[0].id
  floating_ip_id = huaweicloud_vpc_eip.nat[0].id
  subnet_id      = huaweicloud_vpc_subnet.app.id
  description    = "the functions' outbound connections"
}
