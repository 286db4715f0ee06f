"""Read access: credentials on every read, scopes, the gateway's authorizer and the hardened token cache.

Through the running service (shim + trigger loop on the real servers) with auth on, and in process
against the real PostgreSQL where a count of lookups is what is asserted."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime

import pytest

from .conftest import RECENT_DAY, LocalService, isolated_env, wait_for
from .test_auth_and_input import token_command
from .test_service import exchange

pytestmark = pytest.mark.integration

ORIGIN = "https://dash.example.test"
CACHE_SECONDS = 2


def get(service, path, key=None, **headers):
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return exchange(service, "GET", path, headers=headers)


class Fleet:
    def __init__(self, service, env, site_a, site_b, keys):
        self.service, self.env = service, env
        self.site_a, self.site_b = site_a, site_b
        self.keys = keys


def _issue(env, *args) -> str:
    made = token_command(env, *args)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def fleet(service_env, tmp_path_factory):
    env = isolated_env(
        service_env,
        AUTH_ENABLED="true",
        DEMO_MODE="true",
        AUTH_CACHE_SECONDS=str(CACHE_SECONDS),
        CORS_ORIGINS=ORIGIN,
    )
    cli_env = {**os.environ, **env}
    run = uuid.uuid4().hex[:6]
    site_a = [f"site-a-{run}-{n}" for n in range(3)]
    site_b = [f"site-b-{run}-{n}" for n in range(2)]
    keys = {
        "gateway": _issue(cli_env, "register", f"gw-{run}", *[f"--device={d}" for d in site_a + site_b]),
        "all": _issue(cli_env, "read", f"everything-{run}"),
        "site_a": _issue(cli_env, "read", f"site-a-{run}", "--device", f"site-a-{run}-*"),
        "device": _issue(cli_env, "register", site_b[0]),
        "admin": _issue(cli_env, "admin", f"ops-{run}"),
    }
    running = LocalService(
        env,
        tmp_path_factory.mktemp("read-access-logs"),
        warmup_device=site_a[0],
        warmup_headers={"Authorization": f"Bearer {keys['gateway']}"},
    )
    running.start()
    readings = [
        {"device_id": device, "metric_type": "temperature", "value": float(n), "timestamp": stamp}
        for device in site_a + site_b
        for n, stamp in enumerate(
            (f"{RECENT_DAY}T10:00:00Z", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        )
    ]
    status, body, _ = exchange(
        running,
        "POST",
        "/api/device/data/bulk",
        {"readings": readings},
        headers={"Authorization": f"Bearer {keys['gateway']}"},
    )
    assert status == 200, body
    everyone = site_a + site_b

    def all_stored():
        _, body, _ = get(running, "/api/devices?limit=1000", keys["all"])
        listed = {d["device_id"]: d for d in body["devices"]}
        return all(
            listed.get(d, {}).get("metrics", {}).get("temperature", {}).get("value") == 1.0 for d in everyone
        )

    wait_for(all_stored, timeout=30, interval=0.2)
    yield Fleet(running, cli_env, site_a, site_b, keys)
    running.stop()


READS = (
    "/api/devices",
    "/api/stats",
    "/ready",
    "/api/device/{device}/latest",
    "/api/device/{device}/history",
    "/api/device/{device}/series?metric_type=temperature",
)


def test_every_read_needs_a_credential(fleet):
    for path in READS:
        status, body, headers = get(fleet.service, path.format(device=fleet.site_a[0]))
        assert status == 401, (path, status, body)
        assert "Authorization: Bearer" in body["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = get(fleet.service, path.format(device=fleet.site_a[0]), fleet.keys["all"])
        assert status == 200, (path, status)
    for path in ("/health", "/openapi.json", "/", "/static/app.js"):
        assert get(fleet.service, path)[0] == 200, path


def test_a_malformed_or_unknown_credential_is_refused(fleet):
    for key in ("not-a-key", "iot_" + "A" * 43, "iot_" + "A" * 500, fleet.keys["all"] + "x"):
        status, body, _ = get(fleet.service, "/api/devices", key)
        assert status == 401, key


def test_a_scoped_key_sees_only_its_devices(fleet):
    key = fleet.keys["site_a"]
    _, body, _ = get(fleet.service, "/api/devices", key)
    listed = {device["device_id"] for device in body["devices"]}
    assert listed == set(fleet.site_a)
    # a prefix outside the scope is an empty page, not an error
    _, body, _ = get(fleet.service, f"/api/devices?prefix={fleet.site_b[0][:8]}", key)
    assert [d["device_id"] for d in body["devices"]] == []
    for path in READS[3:]:
        assert get(fleet.service, path.format(device=fleet.site_a[1]), key)[0] == 200, path


def test_outside_its_scope_a_device_is_403_whether_or_not_it_exists(fleet):
    key = fleet.keys["site_a"]
    for path in READS[3:]:
        existing = get(fleet.service, path.format(device=fleet.site_b[0]), key)
        missing = get(fleet.service, path.format(device=f"nobody-{uuid.uuid4().hex[:6]}"), key)
        assert existing[0] == missing[0] == 403, path
        assert existing[1]["error"].replace(fleet.site_b[0], "X") == missing[1]["error"].replace(
            missing[1]["error"].split("'")[1], "X"
        )


def test_scoped_stats_count_only_the_scope(fleet):
    _, scoped, _ = get(fleet.service, "/api/stats", fleet.keys["site_a"])
    # today: each site-a device's second reading, and the service's warm-up reading
    assert scoped == {"devices": 3, "readings_today": 4, "rejected_messages": None}
    _, whole, _ = get(fleet.service, "/api/stats", fleet.keys["all"])
    assert whole["devices"] >= 5 and whole["readings_today"] >= 5
    assert isinstance(whole["rejected_messages"], int)


def test_a_device_token_reads_its_own_device_only(fleet):
    key = fleet.keys["device"]
    assert get(fleet.service, f"/api/device/{fleet.site_b[0]}/latest", key)[0] == 200
    assert get(fleet.service, f"/api/device/{fleet.site_b[1]}/latest", key)[0] == 403
    _, body, _ = get(fleet.service, "/api/devices", key)
    assert [d["device_id"] for d in body["devices"]] == [fleet.site_b[0]]


def test_a_read_key_cannot_send(fleet):
    status, body, _ = exchange(
        fleet.service,
        "POST",
        "/api/device/data",
        {"device_id": fleet.site_a[0], "metric_type": "power", "value": 1},
        headers={"Authorization": f"Bearer {fleet.keys['all']}"},
    )
    assert status == 403 and "may not send readings" in body["error"]


def test_a_revoked_key_stops_working_within_the_cache_time(fleet):
    name = f"brief-{uuid.uuid4().hex[:6]}"
    key = _issue(fleet.env, "read", name)
    assert get(fleet.service, "/api/stats", key)[0] == 200  # now remembered by the service
    assert token_command(fleet.env, "revoke", name).returncode == 0
    revoked_at = time.monotonic()
    wait_for(lambda: get(fleet.service, "/api/stats", key)[0] == 401, timeout=CACHE_SECONDS + 3, interval=0.2)
    assert time.monotonic() - revoked_at <= CACHE_SECONDS + 3


def test_client_sent_gateway_headers_are_ignored(fleet):
    """A client cannot pass for another credential by sending the authorizer's headers itself."""
    import psycopg

    from common.settings import Settings
    from common.store import conninfo

    with psycopg.connect(conninfo(Settings.from_env(fleet.env))) as conn:
        sql = "SELECT id FROM api_token WHERE kind = 'admin' AND revoked_at IS NULL LIMIT 1"
        admin_id = conn.execute(sql).fetchone()[0]
    forged = {"X-Iot-Credential": str(admin_id), "X-Iot-Credential-Sig": "0" * 64}
    assert get(fleet.service, "/api/devices", **forged)[0] == 401
    status, _, _ = get(fleet.service, f"/api/device/{fleet.site_b[0]}/latest", fleet.keys["site_a"], **forged)
    assert status == 403


def test_cors_names_only_configured_origins(fleet):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    preflight["Access-Control-Request-Headers"] = "authorization"
    status, _, headers = exchange(fleet.service, "OPTIONS", "/api/devices", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    _, _, headers = get(fleet.service, "/api/stats", fleet.keys["all"], Origin=ORIGIN)
    assert (
        headers["Access-Control-Allow-Origin"] == ORIGIN
        and "Link" in headers["Access-Control-Expose-Headers"]
    )
    for origin in ("https://evil.example", "null"):
        status, _, headers = exchange(
            fleet.service, "OPTIONS", "/api/devices", headers={**preflight, "Origin": origin}
        )
        assert "Access-Control-Allow-Origin" not in headers, origin
    # a 401 can be read by the dashboard's origin (so it knows to ask for a key)
    _, _, headers = get(fleet.service, "/api/devices", Origin=ORIGIN)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN


def test_delete_all_needs_a_json_request_even_with_the_admin_token(fleet):
    admin = {"Authorization": f"Bearer {fleet.keys['admin']}"}
    status, body, _ = exchange(
        fleet.service,
        "POST",
        "/api/delete-all",
        b"confirm=yes",
        headers=admin,
        content_type="application/x-www-form-urlencoded",
    )
    assert status == 415 and "application/json" in body["error"]
    assert get(fleet.service, f"/api/device/{fleet.site_a[0]}/latest", fleet.keys["all"])[0] == 200


# -- in process, against the real PostgreSQL ----------------------------------------------------


class CountingStore:
    """The real store, counting the credential lookups that reach PostgreSQL."""

    def __init__(self, store):
        self.store = store
        self.lookups = 0

    def find_token(self, token_hash):
        self.lookups += 1
        return self.store.find_token(token_hash)

    def find_token_by_id(self, token_id):
        self.lookups += 1
        return self.store.find_token_by_id(token_id)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_random_credentials_cost_no_lookup_when_malformed_and_never_evict_a_valid_one(runtime):
    from common.auth import MAX_REMEMBERED, TokenRegistry

    counting = CountingStore(runtime.store)
    registry = TokenRegistry(counting, cache_seconds=60)
    valid = registry.register_reader(f"reader-{uuid.uuid4().hex[:6]}")
    assert registry.verify(valid) is not None and counting.lookups == 1
    malformed = [secrets.token_urlsafe(32) for _ in range(5_000)]
    malformed += ["iot_" + secrets.token_urlsafe(40) for _ in range(5_000)]  # the wrong length
    for credential in malformed:
        assert registry.verify(credential) is None
    assert counting.lookups == 1, "a malformed credential reached PostgreSQL"
    well_formed = ["iot_" + secrets.token_urlsafe(32) for _ in range(MAX_REMEMBERED + 500)]
    for credential in well_formed:
        assert registry.verify(credential) is None
    assert counting.lookups == 1 + len(well_formed)
    for credential in well_formed[-MAX_REMEMBERED:]:  # remembered: asked again, no lookup
        assert registry.verify(credential) is None
    assert counting.lookups == 1 + len(well_formed)
    assert registry.verify(valid) is not None
    assert counting.lookups == 1 + len(well_formed), "the flood evicted the valid credential"
    assert len(registry.refused) == MAX_REMEMBERED


def test_admin_credentials_are_never_remembered(runtime):
    from common.auth import TokenRegistry

    counting = CountingStore(runtime.store)
    registry = TokenRegistry(counting, cache_seconds=60)
    admin = registry.register(f"ops-{uuid.uuid4().hex[:6]}", is_admin=True)
    principal = registry.verify(admin)
    registry.verify(admin)
    assert principal.is_admin and counting.lookups == 2
    registry.principal_by_id(principal.id)
    registry.principal_by_id(principal.id)
    assert counting.lookups == 4


def _event(path, headers=None, method="GET", query=None):
    from common.apig import build_event

    return build_event(method, path, headers=headers or {}, query=query or {})


def test_the_authorizer_answers_its_event_and_its_context_reaches_the_backend(service_env):
    from common import runtime as runtime_module
    from common.apig import response_body
    from common.auth import authorizer_event
    from common.settings import Settings
    from functions import load_function

    env = isolated_env(service_env, AUTH_ENABLED="true", AUTH_CONTEXT_SECRET="s" * 32)
    rt = runtime_module.initialize(settings=Settings.from_env(env))
    try:
        rt.store.migrate()
        device = f"authz-{uuid.uuid4().hex[:6]}"
        key = rt.tokens.register_reader(f"key-{device}", [f"{device}*"])
        authorizer, query = load_function("authorizer"), load_function("query")

        def decide(headers):
            answer = authorizer.handler(authorizer_event(_event("/api/devices", headers)), None)
            assert answer["statusCode"] == 200
            return json.loads(answer["body"])

        denied = [
            decide({}),
            decide({"authorization": "Bearer nonsense"}),
            decide({"authorization": "Bearer iot_" + "B" * 43}),
        ]
        assert all(d == {"status": "deny"} for d in denied)
        allowed = decide({"authorization": f"Bearer {key}"})
        assert allowed["status"] == "allow" and set(allowed["context"]) == {"cid", "sig"}
        # APIG's backend parameters carry the context as headers; the backend enforces the scope
        context = {
            "x-iot-credential": allowed["context"]["cid"],
            "x-iot-credential-sig": allowed["context"]["sig"],
        }
        inside = query.handler(_event(f"/api/device/{device}-1/history", context), None)
        assert inside["statusCode"] == 200
        outside = query.handler(_event("/api/device/elsewhere/history", context), None)
        assert outside["statusCode"] == 403
        forged = {**context, "x-iot-credential-sig": "f" * 64}
        assert query.handler(_event("/api/devices", forged), None)["statusCode"] == 401
        # another instance with the same secret accepts the context (the cloud: other functions)
        other = Settings.from_env({**env})
        from common.auth import TokenRegistry

        assert (
            TokenRegistry(rt.store, 60, other.auth_context_secret).sign(int(context["x-iot-credential"]))
            == (context["x-iot-credential-sig"])
        )
        body = json.loads(response_body(query.handler(_event("/api/devices", context), None)))
        assert body["devices"] == []
    finally:
        runtime_module.reset()


def test_ready_asks_each_dependency_at_most_every_few_seconds(runtime):
    from common import query
    from common.apig import ApigRequest

    pings = {"count": 0}
    real_ping = runtime.store.ping

    def counted():
        pings["count"] += 1
        real_ping()

    runtime.store.ping = counted
    request = ApigRequest("GET", "/ready")
    answers = [json.loads(query.readiness(request).body) for _ in range(200)]
    assert pings["count"] == 1
    assert all(answer["status"] in ("ready", "degraded") for answer in answers)
