"""The dashboard function's static files: the security headers on every answer, the pages' own
Content-Security-Policy meta, and names a caller made up to break it (direct handler calls, no servers)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import runtime as runtime_module
from common.settings import Settings
from common.static_site import (
    CONNECT_SELF,
    InvalidApiBase,
    StaticSite,
    api_base_of,
    api_origin,
    content_security_policy,
    with_api_origin,
)
from functions import load_function
from local.context import LocalContext

from .conftest import ROOT

STATIC = ROOT / "functions" / "dashboard" / "static"
PAGES = ("index.html", "device.html", "alerts.html")
HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")

dashboard = load_function("dashboard")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_static_site_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dashboard_site = _script("dashboard_site")


@pytest.fixture(autouse=True)
def dashboard_runtime() -> Iterator[None]:
    """The dashboard function's runtime: it is given no settings (FUNCTION_SETTINGS), so defaults."""
    runtime_module.initialize(settings=Settings())
    yield
    runtime_module.reset()


def event(method: str, path: str, *, path_params: dict[str, str] | None = None) -> dict:
    """An APIG event as the gateway sends it."""
    return {
        "httpMethod": method,
        "path": path,
        "headers": {"x-forwarded-proto": "https"},
        "queryStringParameters": {},
        "pathParameters": path_params or {},
        "body": "",
        "isBase64Encoded": True,
        "requestContext": {"apiId": "test", "requestId": uuid.uuid4().hex, "stage": "RELEASE"},
    }


def get(path: str, **path_params: str) -> dict:
    response = dashboard.handler(event("GET", path, path_params=path_params), LocalContext("dashboard"))
    assert set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    return response


def body_text(response: dict) -> str:
    body = response["body"]
    return base64.b64decode(body).decode() if response["isBase64Encoded"] else body


def error_of(response: dict) -> str:
    assert response["headers"]["Content-Type"] == "application/json"
    answer = json.loads(body_text(response))
    assert set(answer) == {"error"} and answer["error"]
    return answer["error"]


def assert_secured(response: dict, connect: str = "'self'") -> None:
    headers = response["headers"]
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["img-src"] == "'self' data:"
    assert policy["connect-src"] == connect
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["form-action"] == "'self'"
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def site_copy(tmp_path: Path, api_base: str | None = None) -> Path:
    """A copy of the static folder, its config.js pointing at ``api_base``."""
    root = tmp_path / "static"
    shutil.copytree(STATIC, root)
    if api_base is not None:
        config = root / "config.js"
        config.write_text(dashboard_site.with_api_base(config.read_text(), api_base))
    return root


# ---- the pages' own policy --------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_each_page_carries_the_policy_in_a_meta_and_nothing_inline(page):
    html = (STATIC / page).read_text()
    metas = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html)
    assert metas == [content_security_policy(meta=True)]
    assert "frame-ancestors" not in metas[0], "browsers ignore frame-ancestors in a meta, and complain"
    assert html.index("Content-Security-Policy") < html.index("<link"), "the policy must come first"
    assert '<meta name="referrer" content="no-referrer">' in html
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", html, re.I)


def test_the_scripts_need_no_unsafe_inline_or_eval():
    for script in STATIC.glob("*.js"):
        if ".min." in script.name:
            continue
        text = script.read_text()
        for construct in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "eval(",
            "new Function",
            "document.write",
        ):
            assert construct not in text, f"{script.name} uses {construct}"
        assert not re.search(r"""setAttribute\(\s*["']style["']""", text), (
            f"{script.name} sets a style attribute"
        )
        assert not re.search(r"localStorage\s*[.\[]", text), (
            f"{script.name}: keys belong in sessionStorage only"
        )


# ---- headers on every answer --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "params", "kind"),
    [
        ("/", {}, "text/html"),
        ("/device.html", {}, "text/html"),
        ("/alerts.html", {}, "text/html"),
        ("/device/sensor-1", {"device_id": "sensor-1"}, "text/html"),
        ("/static/app.js", {"name": "app.js"}, "javascript"),
        ("/static/style.css", {"name": "style.css"}, "text/css"),
        ("/static/favicon.svg", {"name": "favicon.svg"}, "image/svg+xml"),
        ("/static/config.js", {"name": "config.js"}, "javascript"),
    ],
)
def test_pages_and_assets_carry_the_security_headers(path, params, kind):
    response = get(path, **params)
    assert response["statusCode"] == 200
    assert kind in response["headers"]["Content-Type"]
    assert_secured(response)


def test_errors_carry_the_security_headers_too():
    missing = get("/static/nothing.js", name="nothing.js")
    assert missing["statusCode"] == 404 and "nothing.js" in error_of(missing)
    assert_secured(missing)
    unrouted = get("/nowhere")
    assert unrouted["statusCode"] == 404
    assert_secured(unrouted)
    posted = dashboard.handler(event("POST", "/"), LocalContext("dashboard"))
    assert posted["statusCode"] == 405
    assert_secured(posted)


# ---- names made up to break it --------------------------------------------------------------------------
HOSTILE_NAMES = {
    "nul": "app\x00.js",
    "nul alone": "\x00",
    "percent-encoded nul": "%00",  # unquoted by the gateway event's parsing: a NUL again
    "control character": "app.js\n",
    "too long for the file system": "a" * 5000,
    "just too long": "a" * 256,
    "deep path": "a/" * 2000 + "app.js",
    "parent": "..",
    "escape": "../index.py",
    "encoded escape": "..%2F..%2Findex.py",
    "absolute": "/etc/passwd",
    "current folder": ".",
    "empty": "",
    "hidden file": ".gitignore",
    "backslashes": "..\\index.py",
    "not UTF-8": "%FF%FE",
    "surrogate": "\udcff.js",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_made_up_asset_name_is_refused_with_a_json_message_never_a_500(name):
    response = get("/static/x", name=name)
    assert response["statusCode"] in (400, 404), response
    message = error_of(response)
    assert len(message) < 200, "the message quotes at most the start of a long name"
    assert "\x00" not in message
    assert_secured(response)


def test_names_that_are_folders_or_links_are_not_served(tmp_path):
    root = site_copy(tmp_path)
    (root / "charts").mkdir()
    (root / "charts" / "inner.js").write_text("// not served: only the folder's own files are")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the web")
    (root / "secret.txt").symlink_to(outside)
    (root / ".env").write_text("SECRET=1")
    site = StaticSite(root)
    assert "app.js" in site.names()
    assert not {"charts", "secret.txt", ".env"} & site.names()
    for name in ("charts", "charts/inner.js", "secret.txt", ".env", "charts/../app.js"):
        with pytest.raises(Exception) as refused:
            site.file(name)
        assert getattr(refused.value, "status", None) == 404, name


def test_a_name_too_long_or_with_a_nul_is_a_400_that_says_why():
    too_long = get("/static/x", name="b" * 5000)
    assert too_long["statusCode"] == 400
    assert "at most 255 characters" in error_of(too_long) and "5000" in error_of(too_long)
    nul = get("/static/x", name="app.js\x00.png")
    assert nul["statusCode"] == 400 and "NUL" in error_of(nul)


# ---- connect-src follows config.js --------------------------------------------------------------------------
def test_api_origin_is_the_scheme_host_and_port_of_api_base():
    assert api_origin("") is None
    assert api_origin("https://0123.apic.cn-north-4.huaweicloudapis.com") == (
        "https://0123.apic.cn-north-4.huaweicloudapis.com"
    )
    assert api_origin("https://API.example.com:8443/prefix/") == "https://api.example.com:8443"
    assert api_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert api_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in (
        "ftp://example.com",
        "example.com",
        "https://",
        "https://a b",
        "https://x;script-src *",
        "https://u@x",
    ):
        with pytest.raises(InvalidApiBase):
            api_origin(bad)


def test_api_base_is_read_from_config_js():
    assert api_base_of((STATIC / "config.js").read_text()) == ""
    assert api_base_of('window.IOT_CONFIG = {\n  apiBase: "https://x.example",\n};') == "https://x.example"
    assert api_base_of('// apiBase: "https://commented.example"\nwindow.IOT_CONFIG = {};') == ""


def test_widening_the_meta_is_the_literal_replacement_terraform_makes():
    for page in PAGES:
        html = (STATIC / page).read_text()
        assert html.count(CONNECT_SELF) == 1
        origin = "https://api.example.com"
        widened = with_api_origin(html, origin)
        assert widened == html.replace(CONNECT_SELF, f"{CONNECT_SELF} {origin}")
        assert with_api_origin(html, None) == html


def test_the_function_allows_the_api_that_config_js_names_in_header_and_meta(tmp_path):
    root = site_copy(tmp_path, "https://api.example.com/")
    site = StaticSite(root)
    assert site.api_origin() == "https://api.example.com"
    page = site.page(None).to_apig()
    assert "connect-src 'self' https://api.example.com;" in page["body"]
    assert_secured(site.secure(page), connect="'self' https://api.example.com")
    # config.js is re-read: an edit applies to the next answer, without a restart.
    config = root / "config.js"
    config.write_text(dashboard_site.with_api_base(config.read_text(), "http://127.0.0.1:9000"))
    assert_secured(
        site.secure(site.asset(None, name="app.js").to_apig()), connect="'self' http://127.0.0.1:9000"
    )


def test_an_api_base_that_is_not_a_url_leaves_the_pages_calling_their_own_origin(tmp_path, caplog):
    root = site_copy(tmp_path)
    config = root / "config.js"
    config.write_text(config.read_text().replace('apiBase: ""', 'apiBase: "not a url"'))
    site = StaticSite(root)
    assert site.api_origin() is None
    assert "apiBase must be an http(s) URL" in caplog.text
    assert_secured(site.secure(site.page(None).to_apig()))


def test_the_obs_layout_widens_the_pages_as_the_function_serves_them(tmp_path):
    api = "https://api.example.com"
    out = tmp_path / "site"
    dashboard_site.build(out, api_base=api)
    served = StaticSite(site_copy(tmp_path, api))
    for page in PAGES:
        assert (out / page).read_text() == served.file(page).body
        assert f"connect-src 'self' {api};" in (out / page).read_text()
    with pytest.raises(ValueError, match="http"):
        dashboard_site.build(tmp_path / "bad", api_base="https://x;script-src *")
