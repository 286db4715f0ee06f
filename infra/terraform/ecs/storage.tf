# The data disk: Docker's data root, so PostgreSQL's, Kafka's and Redis's volumes, Caddy's certificates
# and the built images. A resource of its own, attached rather than created with the server: replacing the
# server detaches it and attaches it to the new one, whose first boot mounts it without formatting.

resource "huaweicloud_evs_volume" "data" {
  name              = "${var.name_prefix}-data"
  description       = "Docker data root (PostgreSQL, Kafka, Redis, certificates); outlives the server"
  availability_zone = local.az
  volume_type       = var.data_disk_type
  size              = var.data_disk_gb
  tags              = local.tags
}

resource "huaweicloud_compute_volume_attach" "data" {
  instance_id           = huaweicloud_compute_instance.server.id
  volume_id             = huaweicloud_evs_volume.data.id
  delete_on_termination = "false"
}
