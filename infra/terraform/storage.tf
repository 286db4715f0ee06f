# OBS: a private artifacts bucket (the dependency zip FunctionGraph installs from, the consumer's
# failed batches) and the dashboard's static website, readable by anyone, writable by no one but
# this account. The dashboard's config.js is uploaded with apiBase set to the API gateway's URL.

resource "huaweicloud_obs_bucket" "artifacts" {
  bucket        = "${var.obs_bucket_prefix}-artifacts"
  acl           = "private"
  storage_class = "STANDARD"
  versioning    = true
  tags          = local.tags
}

resource "huaweicloud_obs_bucket" "dashboard" {
  bucket        = "${var.obs_bucket_prefix}-dashboard"
  acl           = "private" # objects are public-read one by one: no listing, no anonymous writes
  storage_class = "STANDARD"
  force_destroy = true # only generated copies of functions/dashboard/static live here

  website {
    index_document = "index.html"
    error_document = "index.html"
  }

  tags = local.tags
}

locals {
  # Where the site answers: an origin of its own, so its pages call the API across origins (CORS).
  dashboard_origin = "https://${huaweicloud_obs_bucket.dashboard.bucket}.obs-website.${var.region}.myhuaweicloud.com"

  static_dir   = abspath("${path.module}/../../functions/dashboard/static")
  static_files = setsubtract(fileset(local.static_dir, "**"), ["config.js"])
  site_pages   = fileset(local.static_dir, "*.html") # also at the site root: /, /device.html, /alerts.html
  content_types = {
    css  = "text/css; charset=utf-8"
    html = "text/html; charset=utf-8"
    ico  = "image/x-icon"
    js   = "application/javascript; charset=utf-8"
    json = "application/json"
    md   = "text/markdown; charset=utf-8"
    png  = "image/png"
    svg  = "image/svg+xml"
    txt  = "text/plain; charset=utf-8"
  }
  config_js    = file("${local.static_dir}/config.js")
  connect_self = "connect-src 'self'"
  api_pattern  = "/apiBase:\\s*\"[^\"]*\"/"
}

resource "huaweicloud_obs_bucket_object" "static" {
  for_each = local.static_files

  bucket       = huaweicloud_obs_bucket.dashboard.bucket
  key          = "static/${each.value}"
  source       = "${local.static_dir}/${each.value}"
  etag         = filemd5("${local.static_dir}/${each.value}")
  content_type = lookup(local.content_types, lower(reverse(split(".", each.value))[0]), "application/octet-stream")
  acl          = "public-read"
}

resource "huaweicloud_obs_bucket_object" "pages" {
  for_each = local.site_pages

  bucket = huaweicloud_obs_bucket.dashboard.bucket
  key    = each.value
  # A website sends no headers: the page's Content-Security-Policy meta must allow the API's origin
  # (the same replacement scripts/dashboard_site.py makes, and common/static_site.py when serving).
  content      = replace(file("${local.static_dir}/${each.value}"), local.connect_self, "${local.connect_self} ${local.api_url}")
  content_type = local.content_types.html
  acl          = "public-read"

  lifecycle {
    precondition {
      condition     = length(split(local.connect_self, file("${local.static_dir}/${each.value}"))) == 2
      error_message = "functions/dashboard/static/${each.value} needs exactly one connect-src 'self' in its Content-Security-Policy meta."
    }
  }
}

resource "huaweicloud_obs_bucket_object" "config" {
  bucket       = huaweicloud_obs_bucket.dashboard.bucket
  key          = "static/config.js"
  content      = replace(local.config_js, local.api_pattern, "apiBase: \"${local.api_url}\"")
  content_type = local.content_types.js
  acl          = "public-read"

  lifecycle {
    precondition {
      condition     = can(regex("apiBase:\\s*\"", local.config_js))
      error_message = "functions/dashboard/static/config.js has no apiBase: \"...\" entry to point at the API."
    }
  }
}

# The dependency zip (common/ + wheels), keyed by its hash: FunctionGraph takes a dependency from an
# OBS link, and one link makes at most one dependency version.
resource "huaweicloud_obs_bucket_object" "deps" {
  bucket       = huaweicloud_obs_bucket.artifacts.bucket
  key          = "dependencies/${var.name_prefix}-common-${filesha256(local.deps_zip)}.zip"
  source       = local.deps_zip
  etag         = filemd5(local.deps_zip)
  content_type = "application/zip"
  acl          = "private"
}
