# API Gateway (dedicated): one API per route of the functions' routers, same method and path, path
# parameters declared, each calling its function's `live` alias, published to RELEASE and bound to
# a throttling policy. The route table below is the only place routes are listed;
# tests/test_terraform.py compares it with functions/*/index.py (methods, paths and which routes are
# public) and prints the up-to-date block when they differ (`python -m deploy routes` prints it too).
#
# Credentials at the gateway (docs/functiongraph.md, section 8): every route the routers do not mark
# public (the dashboard's files, /health, /openapi.json) uses a custom authorizer, the authorizer
# function, before its own function runs. A request it refuses gets APIG's 401 and never reaches a
# function; one it allows reaches the function with the credential's id and signature in the
# X-Iot-Credential and X-Iot-Credential-Sig headers (backend parameters). With var.auth_enabled off,
# no API uses an authorizer.
#
# Where the API answers: on var.api_domain with its certificate when one is given (DNS: an A record
# to the gateway's inbound address, output api_gateway_address). Without one, on the group's
# debugging domain, which APIG caps at 1,000 calls a day: enough for a smoke test, not for a
# dashboard that polls every 5 s (https://support.huaweicloud.com/intl/en-us/usermanual-apig/apig_03_0006.html).

locals {
  routes = [
    { function = "dashboard", method = "GET", path = "/", public = true },
    { function = "dashboard", method = "GET", path = "/alerts.html", public = true },
    { function = "dashboard", method = "GET", path = "/device.html", public = true },
    { function = "dashboard", method = "GET", path = "/device/{device_id}", public = true },
    { function = "dashboard", method = "GET", path = "/static/{name}", public = true },
    { function = "ingest", method = "POST", path = "/api/device/data", public = false },
    { function = "ingest", method = "POST", path = "/api/device/data/bulk", public = false },
    { function = "query", method = "DELETE", path = "/api/alert-rules/{rule_id}", public = false },
    { function = "query", method = "GET", path = "/api/alert-rules", public = false },
    { function = "query", method = "GET", path = "/api/alerts", public = false },
    { function = "query", method = "GET", path = "/api/device/{device_id}/history", public = false },
    { function = "query", method = "GET", path = "/api/device/{device_id}/latest", public = false },
    { function = "query", method = "GET", path = "/api/device/{device_id}/series", public = false },
    { function = "query", method = "GET", path = "/api/devices", public = false },
    { function = "query", method = "GET", path = "/api/pipeline", public = false },
    { function = "query", method = "GET", path = "/api/stats", public = false },
    { function = "query", method = "GET", path = "/health", public = true },
    { function = "query", method = "GET", path = "/openapi.json", public = true },
    { function = "query", method = "GET", path = "/ready", public = false },
    { function = "query", method = "POST", path = "/api/alert-rules", public = false },
    { function = "query", method = "POST", path = "/api/alerts/{alert_id}/ack", public = false },
    { function = "query", method = "POST", path = "/api/delete-all", public = false },
  ]

  # A browser sends a credential (an Authorization header) from another origin only after a CORS
  # preflight, an OPTIONS request for the same path that carries none. So each path that needs a
  # credential also gets an OPTIONS API without authentication, calling the function that owns the
  # path: its router answers the preflight, and CORS_ORIGINS decides which origins it allows. APIG's
  # own CORS switch stays off on every API: it would answer "Access-Control-Allow-Origin: *" wherever
  # the function refused an origin (docs/functiongraph.md, section 8).
  credential_paths = distinct([for r in local.routes : r.path if !r.public])
  preflight_routes = [
    for path in local.credential_paths : {
      function = [for r in local.routes : r.function if r.path == path && !r.public][0]
      method   = "OPTIONS"
      path     = path
      public   = true
    }
  ]

  # One API per route and per preflight, keyed by function, method and path (stable keys: adding a
  # route adds one API).
  apis = {
    for r in concat(local.routes, local.preflight_routes) :
    "${r.function}_${lower(r.method)}_${r.path == "/" ? "root" : trim(replace(r.path, "/[^0-9A-Za-z]+/", "_"), "_")}" => r
  }

  # The two frontend authorizers, both the authorizer function's `live` alias:
  # - credential: reads and admin calls, which carry `Authorization: Bearer <credential>`. It names
  #   that header as its identity source, so APIG answers a request without one 401 itself, and keeps
  #   each answer for var.apig_authorizer_cache_seconds, keyed by the header's value;
  # - ingest: devices may send their token as X-Device-Token instead, and APIG refuses a request that
  #   lacks any identity source an authorizer names, whichever header the function would have
  #   accepted. So this one names none, and as APIG caches only by identity sources, it keeps nothing:
  #   the authorizer function runs on every ingest request (its own AUTH_CACHE_SECONDS cache spares
  #   PostgreSQL).
  authorizers = {
    credential = { identities = ["Authorization"], cache_age = var.apig_authorizer_cache_seconds }
    ingest     = { identities = [], cache_age = 0 }
  }

  # The authorizer each API uses, or null: none for public routes and preflights, none at all while
  # auth is off (APIG refuses authorizer parameters on an API without one).
  api_authorizer = {
    for key, r in local.apis :
    key => !var.auth_enabled || r.public ? null : r.function == "ingest" ? "ingest" : "credential"
  }
  authorized_apis = { for key, name in local.api_authorizer : key => name if name != null }

  # The authorizer's context keys and the request headers its backend parameters put them in, for the
  # function (common/auth.py, CONTEXT_PARAMETERS): the credential's id and its HMAC signature.
  authorizer_context_headers = {
    cid = "X-Iot-Credential"
    sig = "X-Iot-Credential-Sig"
  }

  # The throttling policy (var.api_throttling) each API is bound to: the admin routes (delete-all, alert
  # rules, acknowledgements) get the tightest, the devices' ingest routes the most generous, everything
  # else (query API, dashboard, probes) read.
  admin_routes = [
    "POST /api/delete-all", "POST /api/alert-rules", "DELETE /api/alert-rules/{rule_id}", "POST /api/alerts/{alert_id}/ack",
  ]
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

# The authorizer function as APIG's frontend custom authorizers (local.authorizers says why two). APIG
# calls its `live` alias, like every API's backend, so `make deploy` moves it with the other functions;
# the function URN is given without a version, as for the APIs. APIG needs no trigger or agency to
# call a function of the same account. The provider leaves APIG's "relaxed mode" (let requests through
# when the authorizer fails) off, and so does this.
resource "huaweicloud_apig_custom_authorizer" "api" {
  for_each = local.authorizers

  instance_id        = huaweicloud_apig_instance.gateway.id
  name               = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  type               = "FRONTEND"
  function_urn       = local.function_base_urns["authorizer"]
  function_alias_uri = local.live_urns["authorizer"]
  network_type       = var.apig_function_network_type
  cache_age          = each.value.cache_age

  dynamic "identity" {
    for_each = each.value.identities

    content {
      name     = identity.value
      location = "HEADER"
    }
  }
}

# What APIG answers when an authorizer does not let a request through, for the APIs that use one. Its
# defaults would be 500 for a refused credential and 500 for an authorizer that failed; here a refused
# or missing credential is 401 and a failed check 503 (try again), each with a JSON body in the
# service's {"error": ...} shape. The headers let the dashboard on OBS (another origin) read the 401
# and ask for a credential; on the API's own domain the page is same-origin anyway.
resource "huaweicloud_apig_response" "authorizer" {
  instance_id = huaweicloud_apig_instance.gateway.id
  group_id    = huaweicloud_apig_group.api.id
  name        = "${replace(var.name_prefix, "-", "_")}_authorizer"

  dynamic "rule" {
    for_each = local.authorizer_responses

    content {
      error_type  = rule.key
      status_code = rule.value.status
      body        = jsonencode({ error = rule.value.error, request_id = "$context.requestId" })

      dynamic "headers" {
        for_each = merge(local.authorizer_response_headers, rule.value.status == 401 ? { "WWW-Authenticate" = "Bearer" } : {})

        content {
          key   = headers.key
          value = headers.value
        }
      }
    }
  }
}

locals {
  authorizer_responses = {
    AUTHORIZER_FAILURE            = { status = 401, error = "This credential is not valid: unknown, revoked or malformed" }
    AUTHORIZER_IDENTITIES_FAILURE = { status = 401, error = "A credential is required: send Authorization: Bearer iot_..." }
    AUTHORIZER_CONF_FAILURE       = { status = 503, error = "Credentials cannot be checked right now; try again shortly" }
  }
  authorizer_response_headers = {
    "Access-Control-Allow-Origin" = local.dashboard_origin
    "Vary"                        = "Origin"
  }
}

resource "huaweicloud_apig_api" "route" {
  for_each = local.apis

  instance_id      = huaweicloud_apig_instance.gateway.id
  group_id         = huaweicloud_apig_group.api.id
  type             = "Public"
  name             = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  description      = "${each.value.method} ${each.value.path} -> ${var.name_prefix}-${each.value.function}:${local.live_alias}"
  request_protocol = "HTTPS"
  request_method   = each.value.method
  request_path     = each.value.path
  matching         = "Exact"
  # The functions send their own CORS headers (CORS_ORIGINS); APIG's would add "*" where they refuse.
  cors = false

  # Checked by the authorizer before the function runs; the functions check scopes themselves.
  security_authentication = contains(keys(local.authorized_apis), each.key) ? "AUTHORIZER" : "NONE"
  authorizer_id           = contains(keys(local.authorized_apis), each.key) ? huaweicloud_apig_custom_authorizer.api[local.authorized_apis[each.key]].id : null
  response_id             = contains(keys(local.authorized_apis), each.key) ? huaweicloud_apig_response.authorizer.id : null

  # The authorizer's answer, for the function: `$context.authorizer.frontend.<key>` as a header.
  dynamic "backend_params" {
    for_each = contains(keys(local.authorized_apis), each.key) ? local.authorizer_context_headers : {}

    content {
      type              = "SYSTEM"
      system_param_type = "frontend"
      value             = backend_params.key
      name              = backend_params.value
      location          = "HEADER"
      description       = "set by the custom authorizer (${backend_params.key})"
    }
  }

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
# never reaches the function. The limits cannot tell devices apart, only source addresses: per-user
# and per-app limits need APIG's own App or IAM authentication, not a custom authorizer.
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
