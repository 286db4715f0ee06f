locals {
  ssh_login         = "ssh root@${huaweicloud_vpc_eip.public.address}"
  admin_token_steps = "${local.ssh_login} iot-compose exec -T shim python -m local.tokens admin ops"
  ssh_open          = length(var.admin_ssh_cidrs) > 0 && var.ssh_public_key != ""
}

output "url" {
  description = "Where the dashboard and the API answer: https://<domain>, or http://<eip> without a domain."
  value       = local.site_url
}

output "eip" {
  description = "The server's public address; a domain's DNS A record points here."
  value       = huaweicloud_vpc_eip.public.address
}

output "dns_record" {
  description = "The DNS record to create for the domain (null without one): Caddy obtains the certificate once it resolves."
  value       = var.domain != "" ? { name = var.domain, type = "A", value = huaweicloud_vpc_eip.public.address } : null
}

output "admin_token_command" {
  description = "How to create an admin token (auth is on: ingest needs device tokens, which an admin creates the same way with `register`)."
  value       = local.ssh_open ? local.admin_token_steps : "SSH is closed. Set ssh_public_key (before the first apply, or the server is replaced) and admin_ssh_cidrs = [\"<your address>/32\"], apply, then run: ${local.admin_token_steps}"
}

output "boot_log_command" {
  description = "How to follow the first boot (about 5-10 minutes: packages, images, the build), over SSH."
  value       = "${local.ssh_login} tail -f /var/log/iot-bootstrap.log"
}

output "flavor_id" {
  description = "The flavor the server runs on; set it as flavor_id to keep a later lookup from choosing another."
  value       = local.flavor_id
}

output "data_volume_id" {
  description = "The EVS data disk (Docker's data root): back it up with CBR or snapshots; it outlives the server."
  value       = huaweicloud_evs_volume.data.id
}
