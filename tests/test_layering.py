"""The layers import only what they need: the cloud layer (common/) nothing above it, the tools no web
server, and every route is matched one way (Router.match)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from typing import get_type_hints

import pytest

from common.errors import MethodNotAllowed, NotFound
from common.router import Router
from common.settings import _PARSERS, Settings
from local.env import ROOT

PROBE = """
import importlib, json, sys
module = importlib.import_module({module!r})
{then}
print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}})))
"""
# What a tool does once imported, where that imports more (the route table loads every function).
USE = {"deploy.routes": "module.app_routes()"}


def imported_by(module: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after importing (and using) ``module``."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, then=USE.get(module, ""))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("module", ["common.runtime", "common.query", "common.ingest", "common.consume"])
def test_the_cloud_layer_imports_nothing_above_it(module):
    loaded = imported_by(module)
    assert not loaded & {"local", "functions", "deploy", "flask", "werkzeug", "granian"}, loaded


@pytest.mark.parametrize(
    "module",
    [
        "local.tokens",  # run on a machine in the VPC against RDS
        "local.compose_init",  # compose's one-shot init
        "deploy.routes",  # the route table for Terraform
        "deploy.fgdeploy",
    ],
)
def test_tools_do_not_drag_in_a_web_server(module):
    loaded = imported_by(module)
    assert not loaded & {"flask", "werkzeug", "granian"}, f"{module} imports a web server"
    if module.startswith("deploy"):
        assert "local" not in loaded, f"{module} reaches into the local stack's tools"


def make_router() -> Router:
    app = Router()
    app.get("/api/device/{device_id}/latest")(lambda request, device_id: {})
    app.post("/api/device/{device_id}/latest")(lambda request, device_id: {})
    app.post("/api/delete-all")(lambda request: {})
    return app


def test_match_gives_the_route_and_its_path_parameters():
    route, params = make_router().match("GET", "/api/device/d-1/latest")
    assert (route.method, route.path, params) == (
        "GET",
        "/api/device/{device_id}/latest",
        {"device_id": "d-1"},
    )
    route, _ = make_router().match("HEAD", "/api/device/d-1/latest/")  # HEAD is a GET; a trailing / is fine
    assert route.method == "GET"


def test_match_says_which_methods_a_path_has_or_that_it_has_none():
    with pytest.raises(MethodNotAllowed) as caught:
        make_router().match("DELETE", "/api/device/d-1/latest")
    assert caught.value.allowed == ["GET", "POST"] and caught.value.headers == {"Allow": "GET, POST"}
    assert caught.value.status == 405 and "use GET, POST" in caught.value.message
    with pytest.raises(NotFound, match="Not found: GET /nowhere"):
        make_router().match("GET", "/nowhere")


def test_every_setting_is_read_by_the_parser_its_annotation_names():
    types = get_type_hints(Settings)
    assert {field.name: types[field.name] in _PARSERS for field in fields(Settings)} == {
        field.name: True for field in fields(Settings)
    }
    assert Settings.from_env({"DB_PORT": "6543", "DEMO_MODE": "yes", "KAFKA_TOPIC": "t"}) == Settings(
        db_port=6543, demo_mode=True, kafka_topic="t"
    )
