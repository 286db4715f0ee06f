# API Gateway (dedicated): one API per route of the functions' routers, same method and path, path
# parameters declared, each calling its function's `live` alias, published to RELEASE and bound to
# a throttling policy. The route table below is the only place routes are listed;
# tests/test_terraform.py compares it with functions/*/index.py and prints the up-to-date block when
# they differ (`python -m deploy routes` prints it too).
#
# Where the API answers: on var.api_domain with its certificate when one is given (DNS: an A record
# to the gateway's inbound address, output api_gateway_address). Without one, on the group's
# debugging domain, which APIG caps at 1,000 calls a day: enough for a smoke test, not for a
# dashboard that polls every 5 s (https://support.huaweicloud.com/intl/en-us/usermanual-apig/apig_03_0006.html).

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
    { function = "query", method = "GET", path = "/api/device/{device_id}/series" },
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
  # GETs (no custom headers, so no preflight): those APIs answer CORS. APIG adds its own CORS headers
  # only where the function's response has none; the query function sends its own, among them
  # Access-Control-Expose-Headers: Link, so a page on another origin can follow the history's next
  # page (docs/functiongraph.md, section 2).
  cors_functions = ["query"]

  # The throttling policy (var.api_throttling) each API is bound to: delete-all gets the tightest,
  # the devices' ingest routes the most generous, everything else (query API, dashboard, probes) read.
  admin_routes = ["POST /api/delete-all"]
  api_throttling_policy = {
    for key, r in local.apis :
    key => contains(local.admin_routes, "${r.method} ${r.path}") ? "admin" : r.function == "ingest" ? "ingest" : "read"
  }

  custom_domain = var.api_domain != ""
  api_url       = var.api_domain != "" ? "https://${var.api_domain}" : "https://${data.huaweicloud_apig_groups.api.groups[0].sl_domain}"
}

resource "huaweicloud_apig_instance" "gateway" {
  name               = "${replace(var.name_prefix, "-", "_")}_gateway"
  edition            = var.apig_edition
  vpc_id             = huaweicloud_vpc.main.id
  subnet_id          = huaweicloud_vpc_subnet.app.id
  security_group_id  = huaweicloud_networking_secgroup.apig.id
  availability_zones = [local.az]
  description        = "IoT metrics API"
  tags               = local.tags

  # The public inbound address (ingress_address) devices, browsers and the DNS record point at. The
  # provider requires size and charging mode together (RequiredWith both ways).
  ingress_bandwidth_size          = var.apig_ingress_bandwidth_mbit
  ingress_bandwidth_charging_mode = var.apig_ingress_bandwidth_charging_mode
}

resource "huaweicloud_apig_group" "api" {
  instance_id = huaweicloud_apig_instance.gateway.id
  name        = "${replace(var.name_prefix, "-", "_")}_api"
  description = "IoT metrics: ingest, query and dashboard functions"

  # The provider switches the debugging domain off when it creates a group unless this is true
  # (resource_huaweicloud_apig_group.go). It stays on only while it is the API's address, so with
  # an own domain there is one way in.
  domain_access_enabled = !local.custom_domain

  lifecycle {
    ignore_changes = [url_domains] # managed by huaweicloud_apig_group_domain_associate below
  }
}

data "huaweicloud_apig_groups" "api" {
  instance_id = huaweicloud_apig_instance.gateway.id
  group_id    = huaweicloud_apig_group.api.id
}

# The API's own domain and the certificate that serves it. The certificate is uploaded to APIG
# beforehand (see infra/terraform/README.md), so its private key never passes through Terraform.
resource "huaweicloud_apig_group_domain_associate" "api" {
  count = local.custom_domain ? 1 : 0

  instance_id     = huaweicloud_apig_instance.gateway.id
  group_id        = huaweicloud_apig_group.api.id
  url_domain      = var.api_domain
  min_ssl_version = var.api_min_tls_version

  lifecycle {
    precondition {
      condition     = var.api_certificate_id != ""
      error_message = "api_domain is set but api_certificate_id is empty: every API is HTTPS-only, so the domain needs a certificate uploaded to APIG."
    }
  }
}

resource "huaweicloud_apig_domain_certificate_associate" "api" {
  count = local.custom_domain ? 1 : 0

  instance_id    = huaweicloud_apig_instance.gateway.id
  group_id       = huaweicloud_apig_group.api.id
  domain_id      = huaweicloud_apig_group_domain_associate.api[0].domain_id
  certificate_id = var.api_certificate_id
}

resource "huaweicloud_apig_api" "route" {
  for_each = local.apis

  instance_id             = huaweicloud_apig_instance.gateway.id
  group_id                = huaweicloud_apig_group.api.id
  type                    = "Public"
  name                    = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  description             = "${each.value.method} ${each.value.path} -> ${var.name_prefix}-${each.value.function}:${local.live_alias}"
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

  # Traffic goes to the alias `live`, which python -m deploy moves only after a smoke test. The
  # function URN is given without a version (as the provider's acceptance test does); `version` is
  # left out because the alias URN decides it (docs/resources/apig_api.md at v1.97.1).
  func_graph {
    function_urn       = local.function_base_urns[each.value.function]
    function_alias_urn = local.live_urns[each.value.function]
    network_type       = var.apig_function_network_type
    invocation_type    = "sync"
    timeout            = min(var.functions[each.value.function].timeout * 1000, 60000)
  }

  lifecycle {
    # The provider reads back whatever version APIG reports for the alias; the alias decides it.
    ignore_changes = [func_graph[0].version]
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

# Throttling: one policy per class of route, each limit counted per API ("API-based") over one
# minute, in total and per source IP. A throttled call gets APIG's 429 (error code APIG.0308) and
# never reaches the function. The gateway cannot tell devices apart (the APIs have no APIG
# authentication; device tokens are checked in the functions), only source addresses.
resource "huaweicloud_apig_throttling_policy" "api" {
  for_each = var.api_throttling

  instance_id      = huaweicloud_apig_instance.gateway.id
  name             = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  description      = "${each.key} routes: ${each.value.api_requests_per_minute}/min per API, ${each.value.ip_requests_per_minute}/min per source IP"
  type             = "API-based"
  period           = 1
  period_unit      = "MINUTE"
  max_api_requests = each.value.api_requests_per_minute
  max_ip_requests  = each.value.ip_requests_per_minute
}

# Binds by publication (an API's publish ID in RELEASE), so a newly published route is bound on the
# same apply.
resource "huaweicloud_apig_throttling_policy_associate" "api" {
  for_each = huaweicloud_apig_throttling_policy.api

  instance_id = huaweicloud_apig_instance.gateway.id
  policy_id   = each.value.id
  publish_ids = [for key, p in huaweicloud_apig_api_publishment.route : p.publish_id if local.api_throttling_policy[key] == each.key]
}
