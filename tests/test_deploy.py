"""The deploy command, run for real (``python -m deploy deploy``) against a local fake FunctionGraph.

The real huaweicloudsdkcore/huaweicloudsdkfunctiongraph client is pointed at the fake with
HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT. The fake checks every request (paths, the AK/SK signature
recomputed two ways, the zips' layout) and, like FunctionGraph, runs the published code for the smoke
invocations: the packages unpacked, a clean interpreter, the initializer and the handler, with user
data naming this test run's real PostgreSQL, Redis and Kafka. The test checks what the command
reports and what the fake was asked to do.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import package
from deploy.fgdeploy import Credentials, function_urn
from tests.fake_functiongraph import FakeFunctionGraph, canonical_request, check_code_zip, signature

ROOT = package.ROOT
AK, SK, PROJECT, REGION = (
    "AKFAKEDEPLOY000001",
    "fake-secret-key-for-tests",
    "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "ap-southeast-1",
)
PREFIX = "iot"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Packages for this interpreter (the fake runs them here); the FunctionGraph build is test_package's."""
    folder = tmp_path_factory.mktemp("dist-deploy")
    package.build(folder, package.local_target(), log=lambda *_: None)
    return folder


def fake_env(fake: FakeFunctionGraph | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_", "HW_"))}
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


def run_deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy", "deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_fake(service_env: dict[str, str], execute: bool = True) -> FakeFunctionGraph:
    """An account with the four functions Terraform would have created, on an older dependency."""
    fake = FakeFunctionGraph(AK, SK, PROJECT, REGION, execute=execute)
    old_common = fake.add_dependency(f"{PREFIX}-common", _zip({"common/__init__.py": b""}))
    other = fake.add_dependency("other-lib", _zip({"otherlib/__init__.py": b""}))
    for name in package.function_names():
        fake.add_function(
            f"{PREFIX}-{name}",
            code=_zip({"index.py": b"def handler(event, context):\n    return 'old'\n"}),
            code_filename=f"{name}.zip",
            depend_version_list=[other.id, old_common.id],
            user_data={**service_env, "AUTH_ENABLED": "true", "DEMO_MODE": "false"},  # as Terraform sets them
        )
    fake.old_common, fake.other = old_common, other
    return fake


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ---------------------------------------------------------------- the whole deployment


def test_deploy_updates_publishes_aliases_and_smoke_tests_every_function(dist, service_env):
    with make_fake(service_env) as fake:
        result = run_deploy(fake_env(fake), "--dist", str(dist), "--alias", "live", "--version", "v42")
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert fake.problems == [], fake.problems
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
            # a version with that code, the alias on it
            assert fn.versions["v42"]["code"] == fn.code and fn.aliases == {"live": "v42"}
            assert f"{name}: published version v42" in out and f"{name}: alias live created on v42" in out
            # smoke invocations ran the published version for real
            assert fn.invocations and {i["version"] for i in fn.invocations} == {"v42"}
            assert f"sha256 {manifest['functions'][name]['sha256'][:12]}" in out

        assert "ingest: smoke POST /api/device/data (no token, no body) on v42: ok (status 401" in out
        assert "query: smoke GET /health on v42: ok (status 200" in out
        assert "query: smoke GET /ready on v42: ok (status 200" in out, "PostgreSQL, Redis and Kafka reached"
        assert "dashboard: smoke GET / on v42: ok (status 200" in out
        assert 'consumer: smoke empty Kafka batch on v42: ok ({"messages": 0' in out
        assert out.strip().splitlines()[-1] == "deployed 4/4 function(s); smoke tests 5/5 passed"

        # The API calls, in order, for one function: what the SDK sent, signed, to which paths.
        paths = [f"{r.method} {r.path.split('/fgs/', 1)[1]}" for r in fake.requests if "iot-query" in r.path]
        urn = function_urn(REGION, PROJECT, "default", "iot-query")
        assert paths == [
            f"GET functions/{urn}/code",
            f"PUT functions/{urn}/code",
            f"POST functions/{urn}/versions",
            f"PUT functions/{urn}/aliases/live",
            f"POST functions/{urn}/aliases",
            f"POST functions/{urn.rsplit(':', 1)[0]}:v42/invocations",
            f"POST functions/{urn.rsplit(':', 1)[0]}:v42/invocations",
        ]
        assert all(
            r.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
            for r in fake.requests
        )

        # A second deployment moves the alias, keeps the dependency when asked, smoke tests skipped.
        again = run_deploy(
            fake_env(fake),
            "--dist",
            str(dist),
            "--alias",
            "live",
            "--version",
            "v43",
            "--keep-dependency",
            "--no-smoke",
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "query: alias live moved to v43" in again.stdout
        assert fake.functions["iot-query"].depend_version_list == [fake.other.id, new[0].id]
        assert len([d for d in fake.dependencies.values() if d.name == "iot-common"]) == 2
        assert again.stdout.strip().splitlines()[-1] == "deployed 4/4 function(s)"


def test_a_failing_smoke_test_fails_the_command(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        fake.canned["iot-query"] = {
            "statusCode": 503,
            "headers": {},
            "body": '{"error": "down"}',
            "isBase64Encoded": False,
        }
        fake.canned["iot-dashboard"] = "not an APIG response"
        result = run_deploy(
            fake_env(fake), "--dist", str(dist), "--functions", "query,dashboard", "--version", "v1"
        )
    assert result.returncode == 1
    assert "query: smoke GET /health on v1: FAILED: status 503" in result.stdout
    assert "dashboard: smoke GET / on v1: FAILED: not an APIG response" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "deployed 2/2 function(s); smoke tests 0/3 passed"


def test_dry_run_calls_nothing_and_needs_no_credentials(dist, service_env):
    with make_fake(service_env, execute=False) as fake:
        env = fake_env(None, HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT=fake.url)
        result = run_deploy(env, "--dist", str(dist), "--dry-run", "--alias", "live", "--version", "v9")
        assert fake.requests == []
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("[dry-run] deploying 4 function(s)")
    assert f"[dry-run] dependency iot-common: would publish {dist / 'deps.zip'}" in out
    assert (
        "[dry-run] ingest: would update the code of urn:fss:<region>:<project_id>:function:default:iot-ingest:latest"
        in out
    )
    assert "[dry-run] query: would point alias live at v9" in out
    assert "[dry-run] query: would invoke v9 with GET /ready" in out
    assert out.strip().splitlines()[-1] == "[dry-run] would deploy 4/4 function(s)"


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


# ---------------------------------------------------------------- the fake's own checks


def test_the_fake_refuses_a_zip_without_index_py_at_its_root(service_env):
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkfunctiongraph import v2

    from deploy.fgdeploy import make_client

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
