"""The deploy command, run for real (``python -m deploy deploy|rollback``) against a local fake FunctionGraph.

The real huaweicloudsdkcore/huaweicloudsdkfunctiongraph client is pointed at the fake with
HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT. The fake checks every request (paths, the AK/SK signature
recomputed two ways, the zips' layout, what may be deleted) and, like FunctionGraph, can run the
published code for the smoke invocations: the packages unpacked, a clean interpreter, the initializer
and the handler, with user data naming this test run's real PostgreSQL, Redis and Kafka. Each account
starts as Terraform's first apply leaves it: version v1 published and alias ``live`` on it, and the
consumer's async invocation config on its latest URN only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common import consume
from common.dms import build_event
from common.readings import SMOKE_DEVICE_ID, Reading, encode_message
from deploy import package
from deploy.aliases import (
    AliasMove,
    AliasState,
    PublishedVersion,
    move_aliases,
    protected_versions,
    versions_to_delete,
)
from deploy.fgclient import Credentials, function_urn, make_client
from deploy.report import Report
from deploy.smoke import smokes_for
from functions import load_function
from local.context import LocalContext
from tests.fake_functiongraph import (
    FakeError,
    FakeFunctionGraph,
    canonical_request,
    check_code_zip,
    signature,
)

ROOT = package.ROOT
AK, SK, PROJECT, REGION = (
    "AKFAKEDEPLOY000001",
    "fake-secret-key-for-tests",
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "ap-southeast-1",
)
PREFIX = "iot"
TERRAFORM_ALIAS_NOTE = "what APIG and the triggers call; moved by python -m deploy"
# What infra/terraform/functions.tf sets on the consumer's URN (variables at their defaults).
FAILURE_DESTINATION = {"bucket": "iot-artifacts-test", "prefix": "consumer-failures", "expires": 30}
CONSUMER_ASYNC_CONFIG = {
    "max_async_retry_attempts": 3,
    "max_async_event_age_in_seconds": 3600,
    "enable_async_status_log": True,
    "destination_config": {
        "on_failure": {"destination": "OBS", "param": json.dumps(FAILURE_DESTINATION)},
    },
}
# consumer 1, authorizer 2 (an unknown credential, and the smoke token), ingest 1, query 3, dashboard 1,
# maintenance 1; without a smoke token the authorizer has only the first.
SMOKE_TESTS = 9
SMOKE_TESTS_WITHOUT_TOKEN = 8


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Packages for this interpreter (the fake runs them here); the FunctionGraph build is test_package's."""
    folder = tmp_path_factory.mktemp("dist-deploy")
    package.build(folder, package.local_target(), log=lambda *_: None)
    return folder


def fake_env(fake: FakeFunctionGraph | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUAWEICLOUD_", "HW_", "IOT_SMOKE_TOKEN", "IOT_FAILURE_BUCKET"))
    }
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if fake is not None:
        env.update(
            HUAWEICLOUD_ACCESS_KEY=AK,
            HUAWEICLOUD_SECRET_KEY=SK,
            HUAWEICLOUD_PROJECT_ID=PROJECT,
            HUAWEICLOUD_REGION=REGION,
            HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT=fake.url,
        )
    env.update(extra)
    return env


def run_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_command(env, "deploy", *args)


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_fake(service_env: dict[str, str], execute: bool = True, **fake_options) -> FakeFunctionGraph:
    """An account with the six functions as Terraform's first apply leaves them: v1 published on an
    older dependency, alias live on v1, the consumer's async invocation config on latest."""
    fake = FakeFunctionGraph(AK, SK, PROJECT, REGION, execute=execute, **fake_options)
    old_common = fake.add_dependency(f"{PREFIX}-common", _zip({"common/__init__.py": b""}))
    other = fake.add_dependency("other-lib", _zip({"otherlib/__init__.py": b""}))
    for name in package.function_names():
        fn = fake.add_function(
            f"{PREFIX}-{name}",
            code=_zip({"index.py": b"def handler(event, context):\n    return 'old'\n"}),
            code_filename=f"{name}.zip",
            depend_version_list=[other.id, old_common.id],
            user_data={**service_env, "AUTH_ENABLED": "true", "DEMO_MODE": "false"},  # as Terraform sets them
        )
        fake.add_version(fn, "v1", "published by Terraform on the first apply")
        fn.aliases["live"] = "v1"
        fn.alias_descriptions["live"] = TERRAFORM_ALIAS_NOTE
        fake.canned[fn.name] = healthy
    fake.set_async_config(fake.functions[f"{PREFIX}-consumer"], "latest", **CONSUMER_ASYNC_CONFIG)
    fake.old_common, fake.other = old_common, other
    return fake


def apig_response(status: int, body: object, content_type: str = "application/json") -> dict:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_type},
        "body": text,
        "isBase64Encoded": False,
    }


def healthy(event: dict) -> object:
    """What a working function answers each smoke event with (for the fake's canned invocations)."""
    if "records" in event:
        return {"messages": 1, "readings": 1, "stored": 1, "duplicates": 0, "rejected": 0}
    if "user_data" in event:  # the custom authorizer's event: a smoke credential is never known here
        return {"statusCode": 200, "body": json.dumps({"status": "deny"})}
    if event.get("trigger_type") == "TIMER":
        return {
            "partitions_created": 0,
            "partitions_dropped": 0,
            "readings_rolled_up": 0,
            "rollup_days_backfilled": 0,
            "skipped": False,
        }
    path = event["path"]
    if path == "/":
        return apig_response(200, "<!doctype html><html></html>", "text/html")
    if path == "/api/device/data":
        return apig_response(200, {"message": "Device data submitted successfully"})
    if path.endswith("/latest"):
        return apig_response(200, {"device_id": SMOKE_DEVICE_ID, "last_updated": "2026-01-01T00:00:00+00:00"})
    return apig_response(200, {"status": "ready"})


def async_settings_of(fake: FakeFunctionGraph, function: str, version: str) -> dict | None:
    """What the fake holds for one version: retries, max age, destinations and status log."""
    config = fake.functions[f"{PREFIX}-{function}"].async_configs.get(version)
    if config is None:
        return None
    keys = ("max_async_retry_attempts", "max_async_event_age_in_seconds", "enable_async_status_log")
    targets = {
        key: (t["destination"], json.loads(t["param"])) for key, t in config["destination_config"].items()
    }
    return {**{key: config.get(key) for key in keys}, **targets}


def api_calls(fake: FakeFunctionGraph, function: str) -> list[str]:
    """The API calls made for one function, as "METHOD path-after-/fgs/"."""
    return [f"{r.method} {r.path.split('/fgs/', 1)[1]}" for r in fake.requests if f":{function}:" in r.path]


# ---------------------------------------------------------------- deploy


def test_deploy_smoke_tests_each_new_version_on_its_own_urn_before_moving_live(dist, service_env, runtime):
    token = runtime.tokens.register(SMOKE_DEVICE_ID)  # with auth on, ingest's smoke reading needs one
    with make_fake(service_env) as fake:
        result = run_deploy(fake_env(fake, IOT_SMOKE_TOKEN=token), "--dist", str(dist), "--version", "v42")
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert fake.problems == [], fake.problems
        assert result.stderr == "", "no warnings either (the SDK's about the API's times are handled)"
        manifest = json.loads((dist / "manifest.json").read_text())

        # The dependency: deps.zip published as a new version of iot-common, byte for byte.
        new = [d for d in fake.dependencies.values() if d.name == "iot-common" and d.version == 2]
        assert len(new) == 1 and new[0].data == (dist / "deps.zip").read_bytes()
        assert f"dependency iot-common: published version 2 (id {new[0].id}" in out

        for name in package.function_names():
            fn = fake.functions[f"{PREFIX}-{name}"]
            urn = function_urn(REGION, PROJECT, "default", fn.name)
            # code from dist/, our dependency replaced, the other one kept
            assert fn.code == (dist / f"{name}.zip").read_bytes()
            assert fn.depend_version_list == [fake.other.id, new[0].id]
            assert f"{name}: code updated on {urn}" in out
            assert f"sha256 {manifest['functions'][name]['sha256'][:12]}" in out
            # the new version runs the new code; live moved to it and remembers v1 for a rollback
            assert fn.versions["v42"]["code"] == fn.code
            assert fn.aliases == {"live": "v42"} and "previous=v1" in fn.alias_descriptions["live"]
            assert f"{name}: alias live moved from v1 to v42" in out
            # smoke invocations ran the published version for real, never latest or the alias
            assert fn.invocations and {i["version"] for i in fn.invocations} == {"v42"}

        assert "consumer: smoke Kafka batch with one smoke reading on v42: ok (stored;" in out
        # the authorizer looked both credentials up in PostgreSQL: the unknown one denied, the smoke
        # token allowed with its id, signed
        assert "authorizer: smoke a well-formed unknown credential on v42: ok (denied;" in out
        assert re.search(
            r"authorizer: smoke the credential in IOT_SMOKE_TOKEN on v42: ok \(allowed as credential \d+, signed;",
            out,
        )
        assert (
            "ingest: smoke POST /api/device/data (smoke device) on v42: ok (status 200: queued, Kafka" in out
        )
        assert "query: smoke GET /health on v42: ok (status 200" in out
        assert "query: smoke GET /ready on v42: ok (status 200" in out, "PostgreSQL, Redis and Kafka reached"
        assert f"query: smoke GET /api/device/{SMOKE_DEVICE_ID}/latest on v42: ok (status 200" in out
        assert "dashboard: smoke GET / on v42: ok (status 200" in out
        # one real maintenance pass: the schema is already migrated and today's partitions exist, so
        # it has little to do, but it ran the new code against PostgreSQL
        assert "maintenance: smoke timer event: one maintenance pass on v42: ok (" in out
        assert (
            out.strip().splitlines()[-1]
            == f"deployed 6/6 function(s); smoke tests {SMOKE_TESTS}/{SMOKE_TESTS} passed"
        )
        # the consumer's smoke reading is really stored, under the smoke device
        assert [v.metric_type for v in runtime.store.latest(SMOKE_DEVICE_ID)] == ["voltage"]

        # The order for one function: the alias read, the code, the version, its smoke tests on the
        # version URN, and only then the alias moved; then the versions and aliases read for pruning.
        urn = function_urn(REGION, PROJECT, "default", "iot-query")
        v42 = urn.rsplit(":", 1)[0] + ":v42"
        assert api_calls(fake, "iot-query") == [
            f"GET functions/{urn}/aliases/live",
            f"GET functions/{urn}/code",
            f"PUT functions/{urn}/code",
            f"POST functions/{urn}/versions",
            f"GET functions/{urn}/async-invoke-config",
            f"POST functions/{v42}/invocations",
            f"POST functions/{v42}/invocations",
            f"POST functions/{v42}/invocations",
            f"PUT functions/{urn}/aliases/live",
            f"GET functions/{urn}/versions",
            f"GET functions/{urn}/aliases",
        ]
        # The consumer's v42 got latest's async config before anything invoked it or the alias moved.
        assert async_settings_of(fake, "consumer", "v42") == async_settings_of(fake, "consumer", "latest")
        consumer = function_urn(REGION, PROJECT, "default", "iot-consumer")
        consumer_v42 = consumer.rsplit(":", 1)[0] + ":v42"
        calls = api_calls(fake, "iot-consumer")
        assert (
            calls.index(f"PUT functions/{consumer_v42}/async-invoke-config")
            < calls.index(f"POST functions/{consumer_v42}/invocations")
            < calls.index(f"PUT functions/{consumer}/aliases/live")
        )
        assert (
            "consumer: async invocation config of latest copied to v42 (retries 3, max event age 3600 s"
            in out
        )
        assert all(
            r.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
            for r in fake.requests
        )

        # A second deployment: live moves on and remembers v42; keeping one newest version, v1 (no
        # longer what live would roll back to) is deleted, v42 (the rollback target) is kept.
        again = run_deploy(
            fake_env(fake, IOT_SMOKE_TOKEN=token),
            "--dist",
            str(dist),
            "--version",
            "v43",
            "--keep-dependency",
            "--keep-versions",
            "1",
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert fake.problems == [], fake.problems
        assert "query: alias live moved from v42 to v43" in again.stdout
        assert "query: deleted old version(s) v1; kept v42, v43" in again.stdout
        query = fake.functions["iot-query"]
        assert query.depend_version_list == [fake.other.id, new[0].id]
        assert set(query.versions) == {"v42", "v43"} and query.deleted_versions == ["v1"]
        assert "previous=v42" in query.alias_descriptions["live"]
        assert len([d for d in fake.dependencies.values() if d.name == "iot-common"]) == 2


def assert_no_alias_moved(out: str, fake) -> None:
    """A failed deploy published v2 of every function but moved no alias, not even a passing one's."""
    assert (
        "no alias moved: live stays where it was "
        "(authorizer v1, consumer v1, dashboard v1, ingest v1, maintenance v1, query v1)" in out
    )
    for fn in fake.functions.values():
        assert "v2" in fn.versions and fn.aliases == {"live": "v1"}
        assert fn.alias_descriptions["live"] == TERRAFORM_ALIAS_NOTE
    assert not [r for r in fake.requests if r.method in ("PUT", "POST") and "/aliases" in r.path]


def test_a_failing_smoke_test_moves_no_alias_and_shows_the_log_tail(dist, service_env):
    with make_fake(service_env, execute=False) as fake:

        def ready_fails(event: dict) -> object:
            if event.get("path") == "/ready":
                return apig_response(503, {"status": "unavailable", "checks": {"postgres": {"ok": False}}})
            return healthy(event)

        fake.canned["iot-query"] = ready_fails
        fake.canned["iot-dashboard"] = {
            "errorMessage": "No module named 'common'",
            "errorType": "ImportError",
        }
        fake.canned_logs["iot-query"] = (
            "\n".join(f"line {n}" for n in range(1, 31)) + "\nPostgreSQL unavailable"
        )
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--version", "v2")
        out = result.stdout
        assert result.returncode == 1, out + result.stderr
        assert fake.problems == [], fake.problems
        assert "query: smoke GET /ready on v2: FAILED: status 503" in out
        assert (
            "dashboard: smoke GET / on v2: FAILED: the function raised ImportError: No module named 'common'"
            in out
        )
        lines = out.splitlines()
        failed_at = next(i for i, line in enumerate(lines) if "GET /ready on v2: FAILED" in line)
        assert lines[failed_at + 1 : failed_at + 21] == [f"    log: line {n}" for n in range(12, 31)] + [
            "    log: PostgreSQL unavailable"
        ]
        # The other functions passed, and were published, but no alias moved: not even theirs.
        assert "ingest: smoke POST /api/device/data (smoke device) on v2: ok" in out
        assert_no_alias_moved(out, fake)
        total = SMOKE_TESTS_WITHOUT_TOKEN
        assert lines[-1] == f"FAILED: 2 problem(s); smoke tests {total - 2}/{total} passed"


def test_one_function_that_cannot_publish_keeps_every_alias_where_it_was(dist, service_env):
    with make_fake(service_env, execute=False, version_limit=1) as fake:
        del fake.functions["iot-ingest"].versions["v1"]  # the only one that still has room
        fake.functions["iot-ingest"].aliases.clear()
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--version", "v2", "--no-smoke")
    assert result.returncode == 1
    assert "consumer: FAILED: HTTP 400 FSS.0412 iot-consumer already has 1 versions" in result.stdout
    assert "ingest: published version v2 (no alias live yet)" in result.stdout
    assert fake.functions["iot-ingest"].aliases == {}, "not even the function that published"
    assert all(fn.aliases.get("live") == "v1" for name, fn in fake.functions.items() if name != "iot-ingest")


# ---------------------------------------------------------------- async invocation config per version


@pytest.mark.parametrize("missing", ["404", "empty"])
def test_the_consumers_new_version_gets_latests_async_config_before_its_alias_moves(
    dist, service_env, missing
):
    """Whether a version without a config of its own answers 404 (documented) or an empty config, the
    consumer's new version gets latest's retries, max age, destination and status log; the functions
    without a config on latest get none, and nothing is written for them."""
    from huaweicloudsdkfunctiongraph import v2

    with make_fake(service_env, execute=False) as fake:
        fake.missing_async_config = missing
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--version", "v2", "--keep-dependency")
        assert result.returncode == 0, result.stdout + result.stderr
        assert fake.problems == [], fake.problems
        latest = async_settings_of(fake, "consumer", "latest")
        assert latest == {
            "max_async_retry_attempts": 3,
            "max_async_event_age_in_seconds": 3600,
            "enable_async_status_log": True,
            "on_failure": ("OBS", FAILURE_DESTINATION),
        }
        assert async_settings_of(fake, "consumer", "v2") == latest
        assert async_settings_of(fake, "consumer", "v1") is None, "Terraform's v1 never had one"
        assert (
            "consumer: async invocation config of latest copied to v2 (retries 3, max event age 3600 s, "
            'on_failure OBS {"bucket": "iot-artifacts-test", "expires": 30, "prefix": "consumer-failures"}, '
            "status log on)" in result.stdout
        )
        assert fake.functions["iot-consumer"].aliases["live"] == "v2"
        for name in ("ingest", "query", "dashboard", "maintenance"):
            assert fake.functions[f"{PREFIX}-{name}"].async_configs == {}
            assert not [
                c for c in api_calls(fake, f"{PREFIX}-{name}") if c.startswith("PUT") and "async" in c
            ]
            assert f"{name}: async invocation config" not in result.stdout

        # What the provider's data source would list: both versions, with the same settings.
        client = make_client(Credentials(AK, SK, PROJECT, REGION, fake.url))
        listed = client.list_function_async_invoke_config(
            v2.ListFunctionAsyncInvokeConfigRequest(function_urn=fake.urn("iot-consumer"), limit="100")
        )
        assert [c.func_urn.rsplit(":", 1)[1] for c in listed.async_invoke_configs] == ["latest", "v2"]
        assert {c.destination_config.on_failure.param for c in listed.async_invoke_configs} == {
            json.dumps(FAILURE_DESTINATION)
        }


def test_no_config_is_written_when_the_version_already_has_latests(dist, service_env):
    """If the platform keeps one config per function after all, every version already reports latest's
    and the deploy writes nothing (the fake then refuses a write on a version)."""
    with make_fake(service_env, execute=False) as fake:
        fake.async_config_per_version = False
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--version", "v2", "--keep-dependency")
        assert result.returncode == 0, result.stdout + result.stderr
        assert fake.problems == [], fake.problems
    assert "consumer: async invocation config of latest already on v2 (retries 3" in result.stdout
    assert not [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/async-invoke-config")]
    assert fake.functions["iot-consumer"].aliases["live"] == "v2"


def _drop_destinations(fake: FakeFunctionGraph) -> None:
    """The fake accepts a write but keeps no destination: a platform that ignores part of it."""
    update = fake._update_async_config
    fake._update_async_config = lambda fn, version, data: update(
        fn, version, {k: v for k, v in data.items() if k != "destination_config"}
    )


def _refuse(method: str, status: int, message: str) -> Callable[[FakeFunctionGraph], None]:
    def breakage(fake: FakeFunctionGraph) -> None:
        fake.faults[(method, "async-invoke-config")] = FakeError(
            status, f"FSS.0{status}", message, violation=False
        )

    return breakage


@pytest.mark.parametrize(
    ("breakage", "reason", "failing"),
    [
        (_refuse("PUT", 403, "not allowed"), "writing it to v2: HTTP 403 FSS.0403 not allowed", ["consumer"]),
        # nobody can tell whether latest has a config: every function fails
        (
            _refuse("GET", 500, "busy"),
            "reading latest's config: HTTP 500 FSS.0500 busy",
            ["authorizer", "consumer", "dashboard", "ingest", "maintenance", "query"],
        ),
        (_drop_destinations, "v2 reads back without latest's on_failure", ["consumer"]),
    ],
    ids=["write-refused", "read-fails", "write-not-kept"],
)
def test_a_failed_async_config_copy_moves_no_alias(dist, service_env, breakage, reason, failing):
    with make_fake(service_env, execute=False) as fake:
        breakage(fake)
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--version", "v2", "--keep-dependency")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    copy_failures = [line for line in out.splitlines() if "copying the async invocation config" in line]
    assert [line.split(":", 1)[0] for line in copy_failures] == failing
    for line in copy_failures:
        assert f"config of latest to v2 FAILED: {reason}" in line, line
        assert line.endswith(
            "; without it, failed invocations of v2 would be neither retried nor sent to the failure destination"
        ), line
    assert_no_alias_moved(out, fake)
    assert out.strip().splitlines()[-1].startswith(f"FAILED: {len(failing)} problem(s)")


def test_old_versions_are_pruned_but_never_what_an_alias_uses(dist, service_env):
    """With room for only five versions, six deploys in a row succeed: each prunes down to what
    matters. The versions a second alias (with a traffic share) uses survive every one of them."""
    with make_fake(service_env, execute=False, version_limit=5) as fake:
        query = fake.functions["iot-query"]
        fake.add_version(query, "v1b")
        query.aliases["canary"] = "v1b"
        query.alias_weights["canary"] = {"v1": 10}
        for number in range(2, 8):
            result = run_deploy(
                fake_env(fake),
                "--dist",
                str(dist),
                "--version",
                f"v{number}",
                "--keep-dependency",
                "--keep-versions",
                "2",
            )
            assert result.returncode == 0, result.stdout + result.stderr
        assert fake.problems == [], fake.problems
    # live on v7, its rollback target v6, the newest two (v6, v7), and what canary uses (v1b, v1)
    assert list(query.versions) == ["v1", "v1b", "v6", "v7"]
    assert query.deleted_versions == ["v2", "v3", "v4", "v5"]
    assert query.aliases == {"live": "v7", "canary": "v1b"}
    assert list(fake.functions["iot-ingest"].versions) == ["v6", "v7"]
    # each consumer version the deploys published got its config; the deleted ones took theirs along
    assert set(fake.functions["iot-consumer"].async_configs) == {"latest", "v6", "v7"}


def test_the_maintenance_smoke_test_sends_a_timer_event_and_accepts_a_pass_or_a_skip():
    """The maintenance function is not routed: its smoke test is the event its TIMER trigger sends
    (docs/functiongraph.md, section 3b), and any pass summary, or a skip because another pass held
    the lock, shows the new version works."""
    (smoke,) = smokes_for("maintenance", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc))
    assert smoke.event == {
        "version": "v1.0",
        "time": "2026-01-01T12:00:00+00:00",
        "trigger_type": "TIMER",
        "trigger_name": "deploy-smoke",
        "user_event": "deploy smoke test",
    }
    summary = {
        "partitions_created": 2,
        "partitions_dropped": 1,
        "readings_rolled_up": 40,
        "rollup_days_backfilled": 3,
        "skipped": False,
    }
    verdict = smoke.check(summary)
    assert verdict.ok and verdict.detail == (
        "2 partition(s) created, 1 dropped, 40 reading(s) rolled up, 3 day(s) of rollups backfilled"
    )
    skipped = smoke.check({**summary, "skipped": True})
    assert skipped.ok and skipped.detail == "skipped: another maintenance pass held the lock"
    for wrong in (None, "done", {}, {**summary, "skipped": "no"}, {**summary, "partitions_created": True}):
        verdict = smoke.check(wrong)
        assert not verdict.ok and verdict.detail.startswith("not a maintenance summary"), wrong


def _authorizer_answer(status: str, context: dict | None = None, code: int = 200) -> dict:
    body = {"status": status, **({"context": context} if context is not None else {})}
    return {"statusCode": code, "body": json.dumps(body)}


def test_the_authorizer_smoke_tests_send_apigs_event_and_want_a_deny_then_an_allow():
    """The authorizer is asked about a credential of the right shape that nobody was ever given (a fresh
    one each run), which must be denied, and about the smoke token, which must be allowed with the
    credential's id and its signature (docs/functiongraph.md, section 8)."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    unknown, known = smokes_for("authorizer", now, token="iot_" + "k" * 43)
    for smoke in (unknown, known):
        assert set(smoke.event) == {"headers", "queryStringParameters", "user_data"}, "what APIG documents"
        assert all(name == name.lower() for name in smoke.event["headers"])
    presented = unknown.event["headers"]["authorization"]
    assert re.fullmatch(r"Bearer iot_[A-Za-z0-9_-]{43}", presented)
    assert smokes_for("authorizer", now)[0].event["headers"]["authorization"] != presented, "never reused"
    assert known.event["headers"]["authorization"] == "Bearer iot_" + "k" * 43
    assert [s.label for s in smokes_for("authorizer", now)] == [unknown.label], "no token: only the deny"

    signed = {"cid": "42", "sig": "0f" * 32}
    assert unknown.check(_authorizer_answer("deny")).ok
    off = unknown.check(_authorizer_answer("allow", {}))
    assert off.ok and "AUTH_ENABLED is off" in off.detail
    assert known.check(_authorizer_answer("allow", signed)).detail == "allowed as credential 42, signed"
    wrong = [
        (unknown, _authorizer_answer("allow", signed)),  # an unknown credential let through
        (unknown, _authorizer_answer("deny", code=500)),  # APIG would answer 500 itself
        (unknown, {"statusCode": 200, "body": json.dumps({"status": "maybe"})}),
        (unknown, {"statusCode": 200, "body": "deny"}),
        (unknown, _authorizer_answer("deny", {"cid": 42})),  # context values are strings
        (unknown, "deny"),
        (known, _authorizer_answer("deny")),
        (known, _authorizer_answer("allow", {"cid": "42"})),
        (known, _authorizer_answer("allow", {"cid": "x", "sig": "0f" * 32})),
    ]
    for smoke, result in wrong:
        assert not smoke.check(result).ok, (smoke.label, result)


def test_the_query_smoke_tests_read_with_the_smoke_token():
    """Reads need a credential: with the token they must answer 200; without one, auth on answers 401,
    which shows the code loads and routes, and the report says what was not checked."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    health, ready, latest = smokes_for("query", now, token="iot_" + "k" * 43, consumer_stored=True)
    assert "authorization" not in health.event["headers"], "/health is public"
    for smoke in (ready, latest):
        assert smoke.event["headers"]["authorization"] == "Bearer iot_" + "k" * 43
        assert not smoke.check(apig_response(401, {"error": "A credential is required"})).ok
    assert ready.check(apig_response(200, {"status": "ready"})).ok
    _, ready, latest = smokes_for("query", now, consumer_stored=True)
    for smoke in (ready, latest):
        assert "authorization" not in smoke.event["headers"]
        verdict = smoke.check(apig_response(401, {"error": "A credential is required"}))
        assert verdict.ok and "IOT_SMOKE_TOKEN is not set" in verdict.detail
        assert not smoke.check(apig_response(403, {"error": "no"})).ok


def test_what_pruning_keeps():
    versions = [
        PublishedVersion(name, float(i)) for i, name in enumerate(["v1", "v2", "v3", "v4", "v5", "v6"])
    ]
    live = AliasState("live", "v4", "moved by python -m deploy at now; previous=v2")
    canary = AliasState("canary", "v1", "", weights=("v3",))
    protected = protected_versions([live, canary])
    assert protected == {"latest", "v4", "v2", "v1", "v3"}
    assert versions_to_delete(versions, protected, keep_newest=1) == ["v5"]
    assert versions_to_delete(versions, protected, keep_newest=0) == ["v5", "v6"]
    assert versions_to_delete(versions, {"latest"}, keep_newest=6) == []


class AliasApi:
    """Stands in for the SDK client's alias calls: records what each alias points at; refuses to move
    the aliases of ``refused`` functions."""

    def __init__(self, refused: str):
        self.refused = refused
        self.points: dict[str, tuple[str, str]] = {}

    def update_version_alias(self, request):
        if self.refused in request.function_urn:
            raise RuntimeError("the API refused")
        self.points[request.function_urn] = (request.body.version, request.body.description)

    def create_version_alias(self, request):
        self.update_version_alias(request)


def test_alias_moves_are_all_or_nothing():
    """Deploy and rollback move every function's alias or, when one move fails, put back those moved."""
    before = {name: AliasState("live", "v1", f"{name} before") for name in ("consumer", "ingest")}
    moves = [
        AliasMove(name, f"urn:{name}", "v2", "moved", before[name], f"{name}: moved to v2")
        for name in ("consumer", "ingest")
    ]
    moves.append(AliasMove("query", "urn:query", "v2", "moved", None, "query: created on v2"))
    api, report = AliasApi(refused="query"), Report(lambda line: None)
    assert move_aliases(api, "live", moves, report) is False
    assert api.points == {"urn:consumer": ("v1", "consumer before"), "urn:ingest": ("v1", "ingest before")}
    assert report.lines == [
        "consumer: moved to v2",
        "ingest: moved to v2",
        "query: moving alias live to v2 FAILED: RuntimeError: the API refused",
        "consumer: alias live moved back to v1",
        "ingest: alias live moved back to v1",
    ]
    api, report = AliasApi(refused="nothing"), Report(lambda line: None)
    assert move_aliases(api, "live", moves, report) is True
    assert set(api.points.values()) == {("v2", "moved")} and report.ok


def test_dry_run_calls_nothing_and_needs_no_credentials(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        env = fake_env(None, HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT=fake.url)
        result = run_deploy(env, "--dist", str(dist), "--dry-run", "--version", "v9")
        assert fake.requests == []
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("[dry-run] deploying 6 function(s)")
    assert f"[dry-run] dependency iot-common: would publish {dist / 'deps.zip'}" in out
    assert (
        "[dry-run] ingest: would update the code of urn:fss:<region>:<project_id>:function:default:iot-ingest:latest"
        in out
    )
    assert "[dry-run] query: would invoke v9 with GET /ready" in out
    assert "[dry-run] maintenance: would invoke v9 with timer event: one maintenance pass" in out
    assert (
        "[dry-run] consumer: would copy the async invocation config of latest (retries, max event age, "
        "destinations) to v9, if latest has one" in out
    )
    assert "[dry-run] would point alias live of every function at v9 once all pass" in out
    assert "[dry-run] would delete old versions beyond the newest 3" in out
    assert out.strip().splitlines()[-1] == "[dry-run] would deploy 6/6 function(s)"


def test_credentials_come_from_the_environment(dist):
    result = run_deploy(fake_env(None), "--dist", str(dist))
    assert result.returncode == 2
    for name in (
        "HUAWEICLOUD_ACCESS_KEY",
        "HUAWEICLOUD_SECRET_KEY",
        "HUAWEICLOUD_PROJECT_ID",
        "HUAWEICLOUD_REGION",
    ):
        assert name in result.stderr
    creds = Credentials.from_env(
        {"HW_ACCESS_KEY": "a", "HW_SECRET_KEY": "s", "HW_PROJECT_ID": "p", "HW_REGION_NAME": "r"}
    )
    assert (creds.ak, creds.sk, creds.project_id, creds.region) == ("a", "s", "p", "r")


def test_a_wrong_secret_key_is_refused_by_the_signature_check(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        result = run_deploy(fake_env(fake, HUAWEICLOUD_SECRET_KEY="not-the-secret"), "--dist", str(dist))
    assert result.returncode == 2
    assert "dependency iot-common: publishing failed: HTTP 401 APIGW.0301" in result.stderr
    assert fake.problems and "signature does not match" in fake.problems[0]
    assert not [d for d in fake.dependencies.values() if d.version > 1]


def test_a_stale_dist_is_refused(dist, tmp_path):
    stale = tmp_path / "dist"
    stale.mkdir()
    for item in dist.iterdir():
        (stale / item.name).write_bytes(item.read_bytes())
    (stale / "ingest.zip").write_bytes(_zip({"index.py": b"def handler(e, c): pass\n"}))
    result = run_deploy(fake_env(None), "--dist", str(stale), "--dry-run")
    assert result.returncode == 2 and "does not match manifest.json" in result.stderr


# ---------------------------------------------------------------- rollback


def test_rollback_returns_every_alias_to_the_version_before_the_last_deploy(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        env = fake_env(fake)
        nothing_yet = run_command(env, "rollback")
        assert nothing_yet.returncode == 1
        assert "query: nothing to roll back to: live (v1) records no earlier version" in nothing_yet.stdout
        for version in ("v2", "v3"):
            deployed = run_deploy(env, "--dist", str(dist), "--version", version, "--keep-dependency")
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        planned = run_command(env, "rollback", "--dry-run")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "query: [dry-run] would move alias live back from v3 to v2" in planned.stdout
        assert all(fn.aliases["live"] == "v3" for fn in fake.functions.values())

        result = run_command(env, "rollback")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "query: moved alias live back from v3 to v2" in result.stdout
        assert result.stdout.strip().splitlines()[-1] == "rolled back 6 function(s)"
        assert all(fn.aliases["live"] == "v2" for fn in fake.functions.values())

        twice = run_command(env, "rollback")
        assert twice.returncode == 1
        assert "query: nothing to roll back to: live (v2) was already rolled back from v3" in twice.stdout
        assert all(fn.aliases["live"] == "v2" for fn in fake.functions.values())

        # Deploying again moves forward, and a rollback returns to v2, not to v3.
        deployed = run_deploy(env, "--dist", str(dist), "--version", "v4", "--keep-dependency")
        assert deployed.returncode == 0
        assert run_command(env, "rollback", "--functions", "query").returncode == 0
        assert fake.functions["iot-query"].aliases["live"] == "v2"
        assert fake.problems == [], fake.problems


def test_rollback_is_all_or_nothing(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        env = fake_env(fake)
        deployed = run_deploy(env, "--dist", str(dist), "--version", "v2", "--functions", "query,ingest")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        result = run_command(env, "rollback")
    assert result.returncode == 1
    assert "consumer: nothing to roll back to: live (v1) records no earlier version" in result.stdout
    assert "nothing rolled back: every alias stays where it is (4 problem(s))" in result.stdout
    assert fake.functions["iot-query"].aliases["live"] == "v2"


# ---------------------------------------------------------------- the smoke device


def _stored_through_the_consumer(readings: list[Reading]) -> None:
    event = build_event({"readings": [encode_message([r.to_json()]) for r in readings]})
    assert consume.handle_batch(event)["stored"] == len(readings)


def _query(path: str, **params: str) -> tuple[int, object]:
    event = {"httpMethod": "GET", "path": path, "headers": {}, "queryStringParameters": {}, "pathParameters": params,
             "body": "", "isBase64Encoded": False}  # fmt: skip
    response = load_function("query").handler(event, LocalContext("test"))
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.integration
def test_the_smoke_device_is_stored_but_not_listed_or_counted(runtime):
    now = datetime.now(timezone.utc)
    _stored_through_the_consumer(
        [
            Reading(SMOKE_DEVICE_ID, "voltage", 230.0, now),
            Reading(SMOKE_DEVICE_ID, "voltage", 231.0, now - timedelta(seconds=1)),
            Reading("sensor-1", "temperature", 21.5, now),
        ]
    )
    for source in ("redis", "postgres"):
        if source == "postgres":
            runtime.cache.suspend()  # the fallback path reads PostgreSQL's latest-value table
        status, devices = _query("/api/devices")
        assert status == 200 and [d["device_id"] for d in devices["devices"]] == ["sensor-1"], source
        status, stats = _query("/api/stats")
        assert status == 200 and (stats["devices"], stats["readings_today"]) == (1, 1), source
        status, latest = _query(f"/api/device/{SMOKE_DEVICE_ID}/latest", device_id=SMOKE_DEVICE_ID)
        assert status == 200 and latest["metrics"]["voltage"]["value"] == 230.0, source
        status, history = _query(f"/api/device/{SMOKE_DEVICE_ID}/history", device_id=SMOKE_DEVICE_ID)
        assert status == 200 and [row["value"] for row in history["data"]] == [230.0, 231.0], source


# ---------------------------------------------------------------- the fake's own checks


def test_the_fake_refuses_a_zip_without_index_py_at_its_root(service_env):
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkfunctiongraph import v2

    assert check_code_zip(_zip({"ingest/index.py": b"def handler(e, c): pass\n"})).startswith(
        "the zip has no index.py"
    )
    with make_fake(service_env, execute=False) as fake:
        client = make_client(Credentials(AK, SK, PROJECT, REGION, fake.url))
        bad = base64.b64encode(_zip({"src/index.py": b"def handler(e, c): pass\n"})).decode()
        request = v2.UpdateFunctionCodeRequest(
            function_urn=fake.urn("iot-ingest"),
            body=v2.UpdateFunctionCodeRequestBody(
                code_type="zip", code_filename="x.zip", func_code=v2.FuncCode(file=bad)
            ),
        )
        with pytest.raises(ClientRequestException) as refused:
            client.update_function_code(request)
    assert refused.value.status_code == 400 and "index.py at its root" in refused.value.error_msg


@pytest.mark.parametrize(
    ("version", "refusal"),
    [
        ("v1", "version v1 is used by alias live"),
        ("!live", "is an alias: deleting it deletes the version it points at"),
        ("latest", "latest cannot be deleted"),
    ],
)
def test_the_fake_refuses_deleting_what_deploy_must_keep(service_env, version, refusal):
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkfunctiongraph import v2

    with make_fake(service_env, execute=False) as fake:
        client = make_client(Credentials(AK, SK, PROJECT, REGION, fake.url))
        with pytest.raises(ClientRequestException) as refused:
            client.delete_function(v2.DeleteFunctionRequest(function_urn=fake.urn("iot-query", version)))
        assert refusal in refused.value.error_msg and fake.problems
        assert "v1" in fake.functions["iot-query"].versions


def test_the_fake_signature_algorithm_matches_a_known_request():
    """The independent signer follows the documented algorithm: a request signed by hand verifies."""
    headers = {"host": "fg.example", "x-sdk-date": "20260101T000000Z", "content-type": "application/json"}
    signed = sorted(headers)
    canonical = canonical_request(
        "POST", "/v2/p/fgs/functions/urn%3Afss%3Ax/code", "", headers, signed, b"{}"
    )
    assert canonical.splitlines()[:2] == ["POST", "/v2/p/fgs/functions/urn%3Afss%3Ax/code/"]
    from tests.fake_functiongraph import sdk_signature

    ours = signature("sk", "20260101T000000Z", canonical)
    theirs = sdk_signature(
        "ak", "sk", "POST", "fg.example", "/v2/p/fgs/functions/urn%3Afss%3Ax/code", "", headers, b"{}"
    )
    assert ours == theirs
