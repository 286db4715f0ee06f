"""Device tokens, the admin token, hostile input and readiness, through the real service."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from .conftest import RECENT_DAY, ROOT, LocalService, isolated_env, wait_for
from .test_service import exchange
from .test_service import http as plain_http

pytestmark = pytest.mark.integration


def token_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local.tokens", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def http(service, method, path, body=None, *, token=None, header="Authorization"):
    """(status, body, headers), sending the token in the given header."""
    headers = {}
    if token is not None:
        headers[header] = f"Bearer {token}" if header == "Authorization" else token
    return exchange(service, method, path, body, headers=headers)


class Secured:
    def __init__(
        self,
        service: LocalService,
        env: dict[str, str],
        device: str,
        device_token: str,
        gateway_token: str,
        admin_token: str,
    ):
        self.service, self.env = service, env
        self.device, self.device_token = device, device_token
        self.gateway_token, self.admin_token = gateway_token, admin_token


@pytest.fixture(scope="module")
def secured(service_env, tmp_path_factory):
    import os

    env = isolated_env(service_env, AUTH_ENABLED="true", DEMO_MODE="true")
    cli_env = {**os.environ, **env}
    device = f"secure-{uuid.uuid4().hex[:8]}"
    made = token_command(cli_env, "register", device)
    assert made.returncode == 0, made.stderr
    device_token = made.stdout.strip()
    gateway = token_command(
        cli_env, "register", f"gw-{device}", "--device", f"{device}-a", "--device", f"{device}-b"
    )
    admin = token_command(cli_env, "admin", f"ops-{device}")
    assert gateway.returncode == 0 and admin.returncode == 0
    running = LocalService(
        env,
        tmp_path_factory.mktemp("secured-logs"),
        warmup_device=device,
        warmup_headers={"Authorization": f"Bearer {device_token}"},
    )
    running.start()
    yield Secured(running, cli_env, device, device_token, gateway.stdout.strip(), admin.stdout.strip())
    running.stop()


def reading(device, value=1.0, **extra):
    return {"device_id": device, "metric_type": "temperature", "value": value, **extra}


def test_tokens_are_printed_once_and_stored_only_as_hashes(secured):
    assert secured.device_token.startswith("iot_") and len(secured.device_token) > 40
    import psycopg

    from common.settings import Settings
    from common.store import conninfo

    settings = Settings.from_env(secured.env)
    with psycopg.connect(conninfo(settings)) as conn:
        stored = conn.execute(
            "SELECT string_agg(token_hash || name || array_to_string(devices, ','), ' ') FROM api_token"
        ).fetchone()[0]
    assert secured.device_token not in stored and secured.admin_token not in stored
    listed = token_command(secured.env, "list")
    assert secured.device in listed.stdout and secured.device_token not in listed.stdout


def test_ingest_needs_a_valid_token(secured):
    service = secured.service
    # Refused by the authorizer, before the ingest function runs (as APIG does in the cloud)
    status, body, headers = http(service, "POST", "/api/device/data", reading(secured.device))
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, body, _ = http(service, "POST", "/api/device/data", reading(secured.device), token="iot_wrong")
    assert status == 401 and "invalid or revoked credential" in body["error"]
    status, body, _ = http(
        service, "POST", "/api/device/data", reading(secured.device), token=secured.device_token
    )
    assert status == 200
    status, body, _ = http(
        service,
        "POST",
        "/api/device/data",
        reading(secured.device, 2.0),
        token=secured.device_token,
        header="X-Device-Token",
    )
    assert status == 200


def test_a_token_sends_only_for_its_own_devices(secured):
    service = secured.service
    status, body, _ = http(
        service, "POST", "/api/device/data", reading("someone-else"), token=secured.device_token
    )
    assert status == 403 and "may not send readings for device 'someone-else'" in body["error"]
    bulk = {
        "readings": [reading(f"{secured.device}-a"), reading(f"{secured.device}-b"), reading(secured.device)]
    }
    status, body, _ = http(service, "POST", "/api/device/data/bulk", bulk, token=secured.gateway_token)
    assert status == 403 and body["error"].startswith("Reading 2: ")
    bulk["readings"].pop()
    status, body, _ = http(service, "POST", "/api/device/data/bulk", bulk, token=secured.gateway_token)
    assert status == 200 and body["processed_count"] == 2
    latest = f"/api/device/{secured.device}-b/latest"
    assert wait_for(lambda: http(service, "GET", latest, token=secured.gateway_token)[0] == 200)


def test_delete_all_needs_the_admin_token(secured):
    service = secured.service
    assert http(service, "POST", "/api/delete-all", {})[0] == 401
    status, body, _ = http(service, "POST", "/api/delete-all", {}, token=secured.device_token)
    assert status == 403 and "admin token" in body["error"]
    assert http(service, "POST", "/api/delete-all", {}, token=secured.admin_token)[:2] == (
        200,
        {"message": "All device data deleted successfully"},
    )


def test_revoked_tokens_stop_working(secured, tmp_path_factory):
    name = f"short-lived-{uuid.uuid4().hex[:6]}"
    token = token_command(secured.env, "register", name).stdout.strip()
    revoked = token_command(secured.env, "revoke", name)
    assert revoked.returncode == 0 and "Revoked 1" in revoked.stdout
    # verified fresh (never cached by the running service): refused at once
    assert http(secured.service, "POST", "/api/device/data", reading(name), token=token)[0] == 401


def test_delete_all_is_off_outside_demo_mode(service_env, settings):
    from common import runtime as runtime_module
    from common.apig import build_event
    from functions import load_function
    from local.context import LocalContext

    runtime_module.initialize(settings=settings.__class__(**{**settings.__dict__, "demo_mode": False}))
    try:
        response = load_function("query").handler(
            build_event("POST", "/api/delete-all"), LocalContext("query")
        )
    finally:
        runtime_module.reset()
    assert response["statusCode"] == 403 and "DEMO_MODE=true" in response["body"]


HOSTILE = [
    (
        b'{"device_id": "x\'; DROP TABLE reading; --", "metric_type": "power", "value": 1}',
        400,
        "device_id may contain only",
    ),
    (b'{"device_id": "a b", "metric_type": "power", "value": 1}', 400, "device_id may contain only"),
    (b'{"device_id": "dev*", "metric_type": "power", "value": 1}', 400, "device_id may contain only"),
    (b'{"device_id": "dev", "metric_type": "power\' OR 1=1", "value": 1}', 400, "Unknown metric_type"),
    (b'{"device_id": "dev", "metric_type": "power", "value": 1, "value": 2}', 400, "more than once"),
    (b'{"device_id": "dev", "metric_type": "power", "value": {"a": [1, 2]}}', 400, "plain value"),
    (b'{"device_id": "dev", "metric_type": "power", "value": 1e999}', 400, "finite"),
    (b'{"device_id": "dev", "metric_type": "power", "value": "1.5"}', 400, "not the text '1.5'"),
    (b'{"device_id": "dev", "metric_type": "power", "value": 1, "unit": "W"}', 400, "'unit' is not a field"),
    (b'{"device_id": "dev", "metric_type": "Power", "value": 1}', 400, "use 'power'"),
    (
        b'{"device_id": "dev", "metric_type": "power", "value": 1, "timestamp": "9999-01-01T00:00:00"}',
        400,
        "future",
    ),
    (b"\xff\xfe\x00garbage", 400, "UTF-8"),
    (b'{"device_id": "dev", "metric_type": "power", "value": 1}' + b" " * (300 * 1024), 413, "larger than"),
]


@pytest.mark.parametrize(("raw", "status", "message"), HOSTILE)
def test_hostile_bodies_are_refused_clearly(service, raw, status, message):
    got, body = plain_http(service, "POST", "/api/device/data", raw)
    assert got == status and message in body["error"]


def test_a_body_over_the_http_limit_is_refused_before_it_is_read(service):
    """Above 1 MiB the shim answers 413 from the headers alone, as APIG would: the client announces
    the body (Expect: 100-continue) and gets the answer without having to push 2 MB at a closed door."""
    import http.client
    import json
    from urllib.parse import urlsplit

    url = urlsplit(service.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    conn.putrequest("POST", "/api/device/data")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 * 1024 * 1024))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 413 and "too large" in body["error"]


def test_a_chunked_body_without_content_length_is_read_whole(service):
    """Clients that stream (Transfer-Encoding: chunked) announce no length; the shim still reads the
    whole body, and an oversized one is still refused."""
    import http.client
    import json
    from urllib.parse import urlsplit

    def post_chunked(chunks: list[bytes]) -> tuple[int, dict]:
        url = urlsplit(service.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
        conn.request(
            "POST",
            "/api/device/data/bulk",
            body=iter(chunks),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        return response.status, body

    readings = [{"device_id": "chunky-1", "metric_type": "power", "value": n} for n in range(40)]
    text = json.dumps({"readings": readings}).encode()
    status, body = post_chunked([text[i : i + 100] for i in range(0, len(text), 100)])
    assert status == 200 and body["processed_count"] == 40
    status, body = post_chunked([b'{"readings": [' + b" " * 64 * 1024] * 20)
    assert status == 413 and "large" in body["error"]


def test_wrong_content_types(service):
    assert plain_http(service, "POST", "/api/device/data", b"a=1", content_type="text/plain")[0] == 415
    assert (
        plain_http(
            service,
            "POST",
            "/api/device/data/bulk",
            b"readings=1",
            content_type="application/x-www-form-urlencoded",
        )[0]
        == 415
    )


def test_key_like_device_ids_are_stored_verbatim_without_effect(service):
    # ids that look like the cache's own keys or separators must stay ordinary devices
    tag = uuid.uuid4().hex[:6]
    ids = [f"ready{tag}", f"devices:{tag}", f"latest:{tag}:x", f"{tag}@site.example"]
    readings = [
        {"device_id": d, "metric_type": "power", "value": i, "timestamp": f"{RECENT_DAY}T00:00:00Z"}
        for i, d in enumerate(ids)
    ]
    assert plain_http(service, "POST", "/api/device/data/bulk", {"readings": readings})[0] == 200
    for value, device in enumerate(ids):
        wait_for(lambda device=device: plain_http(service, "GET", f"/api/device/{device}/latest")[0] == 200)
        latest = plain_http(service, "GET", f"/api/device/{device}/latest")[1]
        assert latest["metrics"]["power"]["value"] == value


def test_readiness_reports_each_dependency(service):
    status, body = plain_http(service, "GET", "/ready")
    assert status == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"postgres", "redis", "kafka"}
    assert all(check["ok"] for check in body["checks"].values())
    assert isinstance(body["rejected_messages"], int)
