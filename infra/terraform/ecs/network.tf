# The server's network: one VPC and subnet, and a security group that lets the internet reach the web
# ports only. SSH is closed unless admin_ssh_cidrs names who may use it. Egress is open: the first boot
# installs packages, clones the repository and pulls images, the metadata service (user data) answers on
# port 80, and Caddy reaches the certificate authority.

locals {
  subnet_cidr = cidrsubnet(var.vpc_cidr, 8, 1)
}

resource "huaweicloud_vpc" "main" {
  name = "${var.name_prefix}-vpc"
  cidr = var.vpc_cidr
  tags = local.tags
}

resource "huaweicloud_vpc_subnet" "server" {
  name              = "${var.name_prefix}-server"
  description       = "The single server running the compose stack"
  vpc_id            = huaweicloud_vpc.main.id
  cidr              = local.subnet_cidr
  gateway_ip        = cidrhost(local.subnet_cidr, 1)
  availability_zone = local.az
  tags              = local.tags
}

resource "huaweicloud_networking_secgroup" "server" {
  name                 = "${var.name_prefix}-server"
  description          = "HTTP and HTTPS from anywhere; SSH from admin_ssh_cidrs only"
  delete_default_rules = true
}

resource "huaweicloud_networking_secgroup_rule" "http_in" {
  security_group_id = huaweicloud_networking_secgroup.server.id
  description       = "HTTP: the service without a domain; with one, Caddy's redirect and certificate challenges"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 80
  port_range_max    = 80
  remote_ip_prefix  = "0.0.0.0/0"
}

resource "huaweicloud_networking_secgroup_rule" "https_in" {
  security_group_id = huaweicloud_networking_secgroup.server.id
  description       = "HTTPS through Caddy when a domain is set"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 443
  port_range_max    = 443
  remote_ip_prefix  = "0.0.0.0/0"
}

resource "huaweicloud_networking_secgroup_rule" "ssh_in" {
  for_each = toset(var.admin_ssh_cidrs)

  security_group_id = huaweicloud_networking_secgroup.server.id
  description       = "SSH for administrators"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 22
  port_range_max    = 22
  remote_ip_prefix  = each.value
}

resource "huaweicloud_networking_secgroup_rule" "all_out" {
  security_group_id = huaweicloud_networking_secgroup.server.id
  description       = "packages, the repository, images, certificates, the metadata service"
  direction         = "egress"
  ethertype         = "IPv4"
  remote_ip_prefix  = "0.0.0.0/0"
}

# ---------------------------------------------------------------- the public address

# Its own resource, not the server's: the address (and the DNS record pointing at it) stays when the
# server is replaced.
resource "huaweicloud_vpc_eip" "public" {
  name = "${var.name_prefix}-eip"
  tags = local.tags

  publicip {
    type = var.eip_type
  }

  bandwidth {
    share_type  = "PER"
    name        = "${var.name_prefix}-bandwidth"
    size        = var.bandwidth_mbit
    charge_mode = var.bandwidth_charge_mode
  }
}

resource "huaweicloud_compute_eip_associate" "public" {
  public_ip   = huaweicloud_vpc_eip.public.address
  instance_id = huaweicloud_compute_instance.server.id
}
