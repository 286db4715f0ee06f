"""Dashboard function: the static dashboard (the same files can be served from OBS).

Routes: ``/`` (overview), ``/device/{device_id}`` and ``/device.html?id=`` (device page: the second
form is the one that also exists on an OBS static website), ``/alerts.html`` (alert rules and closed
alerts), ``/static/{name}`` (assets). Every answer,
errors included, carries the security headers (Content-Security-Policy and others: common/static_site.py).
The key layout for OBS is in docs/dashboard.md and scripts/dashboard_site.py.
"""

from pathlib import Path

from common import runtime
from common.router import Router
from common.static_site import StaticSite

site = StaticSite(Path(__file__).parent / "static")
app = Router()
app.get("/", public=True)(site.page)
app.get("/device/{device_id}", public=True)(site.device_page)
app.get("/device.html", public=True)(site.device_page)  # the device page's name on an OBS static website
app.get("/alerts.html", public=True)(site.alerts_page)  # the alert rules and closed alerts
app.get("/static/{name}", public=True)(site.asset)


def initializer(context):
    runtime.initialize(context)


def handler(event, context):
    return site.secure(app.resolve(event, context))
