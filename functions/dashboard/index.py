"""Dashboard function: the static dashboard (the same files can be served from OBS)."""

from pathlib import Path

from common import runtime
from common.router import Router
from common.static_site import StaticSite

site = StaticSite(Path(__file__).parent / "static")
app = Router()
app.get("/")(site.page)
app.get("/device/{device_id}")(site.device_page)
app.get("/static/{name}")(site.asset)


def initializer(context):
    runtime.initialize(context)


def handler(event, context):
    return app.resolve(event, context)
