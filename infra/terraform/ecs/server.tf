# The server: Ubuntu from the public images, a general-purpose flavor, the boot script as user data, the
# data disk (storage.tf) and the EIP (network.tf) attached to it.

data "huaweicloud_images_image" "ubuntu" {
  name        = var.image_name
  visibility  = "public"
  most_recent = true
}

data "huaweicloud_compute_flavors" "general" {
  count = var.flavor_id == "" ? 1 : 0

  availability_zone = local.az
  performance_type  = "normal"
  cpu_core_count    = var.flavor_vcpus
  memory_size       = var.flavor_memory_gb
}

locals {
  flavor_id = var.flavor_id != "" ? var.flavor_id : try(data.huaweicloud_compute_flavors.general[0].ids[0], null)
}

resource "huaweicloud_kps_keypair" "admin" {
  count = var.ssh_public_key != "" ? 1 : 0

  name       = "${var.name_prefix}-admin"
  public_key = trimspace(var.ssh_public_key)
}

# cloud-init runs user data once per instance, so a new boot script (another git_ref, domain or password)
# only takes effect on a new server; so does a new login key. Either replaces the server: the data disk
# and the EIP are separate resources and move to the new one.
resource "terraform_data" "server_generation" {
  input = sha256(join("\n", [local.user_data, var.ssh_public_key]))
}

resource "huaweicloud_compute_instance" "server" {
  name                        = "${var.name_prefix}-server"
  description                 = "IoT metrics: the docker compose stack, data on the attached EVS disk"
  availability_zone           = local.az
  flavor_id                   = local.flavor_id
  image_id                    = data.huaweicloud_images_image.ubuntu.id
  key_pair                    = var.ssh_public_key != "" ? huaweicloud_kps_keypair.admin[0].name : null
  security_group_ids          = [huaweicloud_networking_secgroup.server.id]
  system_disk_size            = var.system_disk_gb
  user_data                   = local.user_data
  stop_before_destroy         = true
  delete_disks_on_termination = false
  delete_eip_on_termination   = false
  tags                        = local.tags

  network {
    uuid = huaweicloud_vpc_subnet.server.id
  }

  lifecycle {
    # In place, the provider would reinstall the OS for a newer public image, or re-key a running server.
    # A newer image waits for the next replacement; a new key causes one (server_generation).
    ignore_changes       = [image_id, key_pair]
    replace_triggered_by = [terraform_data.server_generation]

    precondition {
      condition     = local.flavor_id != null
      error_message = "No general-purpose flavor with flavor_vcpus vCPUs and flavor_memory_gb GB in this AZ: set flavor_id."
    }
  }
}

check "ssh_has_a_key" {
  assert {
    condition     = length(var.admin_ssh_cidrs) == 0 || var.ssh_public_key != ""
    error_message = "admin_ssh_cidrs opens SSH, but ssh_public_key is empty: no one can log in."
  }
}
