# API Gateway (dedicated): one API per route of the functions' routers, same method and path, path
# parameters declared, published to RELEASE. The route table below is the only place routes are
# listed; tests/test_terraform.py compares it with functions/*/index.py and prints the up-to-date
# block when they differ (`python -m deploy routes` prints it too).

locals {
  routes = [
    { function = "dashboard", method = "GET", path = "/" },
    { function = "dashboard", method = "GET", path = "/device.html" },
    { function = "dashboard", method = "GET", path = "/device/{device_id}" },
    { function = "dashboard", method = "GET", path = "/static/{name}" },
    { function = "ingest", method = "POST", path = "/api/device/data" },
    { function = "ingest", method = "POST", path = "/api/device/data/bulk" },
    { function = "query", method = "GET", path = "/api/device/{device_id}/history" },
    { function = "query", method = "GET", path = "/api/device/{device_id}/latest" },
    { function = "query", method = "GET", path = "/api/devices" },
    { function = "query", method = "GET", path = "/api/stats" },
    { function = "query", method = "GET", path = "/health" },
    { function = "query", method = "GET", path = "/openapi.json" },
    { function = "query", method = "GET", path = "/ready" },
    { function = "query", method = "POST", path = "/api/delete-all" },
  ]

  # One API per route, keyed by function, method and path (stable keys: adding a route adds one API).
  apis = {
    for r in local.routes :
    "${r.function}_${lower(r.method)}_${r.path == "/" ? "root" : trim(replace(r.path, "/[^0-9A-Za-z]+/", "_"), "_")}" => r
  }

  # The dashboard served from OBS (another origin) reads the query function's GET routes with plain
  # GETs (no custom headers, so no preflight): those APIs answer CORS.
  cors_functions = ["query"]

  api_url = "https://${data.huaweicloud_apig_groups.api.groups[0].sl_domain}"
}

resource "huaweicloud_apig_instance" "gateway" {
  name                   = "${replace(var.name_prefix, "-", "_")}_gateway"
  edition                = var.apig_edition
  vpc_id                 = huaweicloud_vpc.main.id
  subnet_id              = huaweicloud_vpc_subnet.app.id
  security_group_id      = huaweicloud_networking_secgroup.apig.id
  availability_zones     = [local.az]
  ingress_bandwidth_size = var.apig_ingress_bandwidth_mbit
  description            = "IoT metrics API"
  tags                   = local.tags
}

resource "huaweicloud_apig_group" "api" {
  instance_id = huaweicloud_apig_instance.gateway.id
  name        = "${replace(var.name_prefix, "-", "_")}_api"
  description = "IoT metrics: ingest, query and dashboard functions"
}

data "huaweicloud_apig_groups" "api" {
  instance_id = huaweicloud_apig_instance.gateway.id
  group_id    = huaweicloud_apig_group.api.id
}

resource "huaweicloud_apig_api" "route" {
  for_each = local.apis

  instance_id             = huaweicloud_apig_instance.gateway.id
  group_id                = huaweicloud_apig_group.api.id
  type                    = "Public"
  name                    = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  description             = "${each.value.method} ${each.value.path} -> ${var.name_prefix}-${each.value.function}"
  request_protocol        = "HTTPS"
  request_method          = each.value.method
  request_path            = each.value.path
  matching                = "Exact"
  security_authentication = "NONE" # the functions check device, gateway and admin tokens themselves
  cors                    = contains(local.cors_functions, each.value.function) && each.value.method == "GET"

  dynamic "request_params" {
    for_each = [for m in regexall("\\{([A-Za-z0-9_]+)\\}", each.value.path) : m[0]]

    content {
      name     = request_params.value
      location = "PATH"
      type     = "STRING"
      required = true
    }
  }

  func_graph {
    function_urn    = huaweicloud_fgs_function.fn[each.value.function].urn
    version         = "latest"
    network_type    = var.apig_function_network_type
    invocation_type = "sync"
    timeout         = min(var.functions[each.value.function].timeout * 1000, 60000)
  }
}

data "huaweicloud_apig_environments" "release" {
  instance_id = huaweicloud_apig_instance.gateway.id
  name        = "RELEASE"
}

resource "huaweicloud_apig_api_publishment" "route" {
  for_each = huaweicloud_apig_api.route

  instance_id = huaweicloud_apig_instance.gateway.id
  env_id      = data.huaweicloud_apig_environments.release.environments[0].id
  api_id      = each.value.id
  description = "published by Terraform"
}
