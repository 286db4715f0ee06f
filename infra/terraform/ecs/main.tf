# Shared values: the availability zone, tags, the site's URL and the server's first-boot script.

data "huaweicloud_availability_zones" "available" {}

locals {
  az   = var.availability_zone != "" ? var.availability_zone : data.huaweicloud_availability_zones.available.names[0]
  tags = merge({ service = "iot-metrics", managed_by = "terraform" }, var.tags)

  site_url = var.domain != "" ? "https://${var.domain}" : "http://${huaweicloud_vpc_eip.public.address}"

  # The first-boot script, rendered here and run once per instance by cloud-init. With a domain it also
  # carries Caddy's configuration and the compose file that adds Caddy to the stack.
  user_data = templatefile("${path.module}/cloud-init.sh.tftpl", {
    repository_url      = var.repository_url
    git_ref             = var.git_ref
    domain              = var.domain
    site_url            = local.site_url
    data_volume_id      = huaweicloud_evs_volume.data.id
    db_password         = random_password.db.result
    db_reader_password  = random_password.db_reader.result
    db_writer_password  = random_password.db_writer.result
    auth_context_secret = random_password.auth_context.result
    app_settings        = join("\n", [for name, value in var.app_settings : "${name}=${value}"])
    caddyfile           = var.domain != "" ? templatefile("${path.module}/Caddyfile.tftpl", { domain = var.domain }) : ""
    proxy_compose       = var.domain != "" ? file("${path.module}/compose.proxy.yml") : ""
  })
}
