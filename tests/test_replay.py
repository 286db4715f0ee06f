"""``python -m deploy replay``, run for real against a local S3-compatible server standing in for OBS
(moto's server, a child process on a free port) and the fake FunctionGraph of tests/fake_functiongraph.py.

The failure records are written the way FunctionGraph documents an asynchronous invocation's result
(docs/functiongraph.md, section 3), and the command reads them through Huawei's own OBS SDK.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from common.dms import build_event
from common.readings import Reading, decode_message, encode_message
from deploy import package
from deploy.failures import UnreadableRecord, parse_record
from deploy.replay import age
from local.embedded import free_port
from tests.test_deploy import fake_env, make_fake, run_command

BUCKET = "iot-artifacts-test"
PREFIX = "consumer-failures"


class LocalObs:
    """moto's S3 server on loopback, with one bucket, and Huawei's SDK to put and look at objects."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start; see {log}") from None
                time.sleep(0.1)
        from obs import ObsClient

        self.client = ObsClient(
            access_key_id="AKOBSTEST", secret_access_key="obs-secret", server=self.url, path_style=True,
            is_signature_negotiation=False,
        )  # fmt: skip
        assert self.client.createBucket(BUCKET).status < 300

    def put(self, key: str, data: bytes | str) -> str:
        assert self.client.putContent(BUCKET, key, data).status < 300
        return key

    def keys(self) -> list[str]:
        reply = self.client.listObjects(BUCKET, prefix=PREFIX)
        assert reply.status < 300
        return sorted(o.key for o in reply.body.contents)

    def empty(self) -> None:
        for key in self.keys():
            self.client.deleteObject(BUCKET, key)

    def stop(self) -> None:
        self.client.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._log.close()


@pytest.fixture(scope="module")
def obs(tmp_path_factory) -> Iterator[LocalObs]:
    server = LocalObs(tmp_path_factory.mktemp("obs") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def consumer_package(tmp_path_factory) -> Path:
    """This checkout's consumer and dependency zips, for this interpreter (the fake runs them here)."""
    folder = tmp_path_factory.mktemp("dist-replay")
    package.build(folder, package.local_target(), ["consumer"], log=lambda *_: None)
    return folder


@pytest.fixture
def bucket(obs) -> LocalObs:
    obs.empty()
    return obs


def batch(device: str, values: list[float]) -> dict:
    """A Kafka trigger event holding one message per reading of ``device``, a second apart."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    messages = [
        encode_message([Reading(device, "temperature", value, now.replace(second=i)).to_json()])
        for i, value in enumerate(values)
    ]
    return build_event({"readings-topic": messages}, instance_id="kafka-1", region="ap-southeast-1")


def failure_record(event: dict, request_id: str | None = None) -> str:
    """An asynchronous invocation's failure record as documented: the event as a JSON string."""
    return json.dumps(
        {
            "timestamp": "2026-11-30T10:00:00.123456789+08:00",
            "request_context": {
                "request_id": request_id or str(uuid.uuid4()),
                "function_urn": "urn:fss:ap-southeast-1:p:function:default:iot-consumer:!live",
                "condition": "UnhandledInvocationError",
                "approximate_invoke_count": 4,
            },
            "request_payload": json.dumps(event),
            "response_context": {"status_code": 500, "function_error": ""},
            "response_payload": json.dumps(
                {
                    "errorMessage": "The database is unavailable; try again shortly",
                    "errorType": "ServiceUnavailable",
                }
            ),
        }
    )


def obs_env(fake, obs: LocalObs, **extra: str) -> dict[str, str]:
    return fake_env(fake, HUAWEICLOUD_OBS_ENDPOINT=obs.url, **extra)


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_command(env, "replay", "--bucket", BUCKET, *args)


# ---------------------------------------------------------------- against the real consumer


def test_each_failed_batch_is_replayed_once_into_live_and_then_deleted(
    consumer_package, service_env, runtime, bucket
):
    first, second = f"replay-{uuid.uuid4().hex[:6]}", f"replay-{uuid.uuid4().hex[:6]}"
    events = [batch(first, [20.0, 20.5, 21.0]), batch(second, [30.0])]
    partly = events[0]["records"][0]["messages"][:1]  # the first batch got one reading in before failing
    runtime.store.store([r for message in partly for r in decode_message(message)])
    bucket.put(f"{PREFIX}/2026/11/30/a.json", failure_record(events[0], "req-a"))
    bucket.put(f"{PREFIX}/2026/11/30/b.json", json.dumps(events[1]))  # a record that is the bare event
    with make_fake(service_env) as fake:
        # live runs this checkout's consumer, as after a deploy
        consumer = fake.functions["iot-consumer"]
        consumer.code = (consumer_package / "consumer.zip").read_bytes()
        deps = (consumer_package / "deps.zip").read_bytes()
        consumer.depend_version_list = [fake.add_dependency("iot-common", deps).id]
        fake.add_version(consumer, "v2")
        consumer.aliases["live"] = "v2"

        result = replay(obs_env(fake, bucket))
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert fake.problems == [], fake.problems
        assert bucket.keys() == []
        # each batch invoked once, on the alias, with the event it failed on
        assert [i["event"] for i in consumer.invocations] == events
        invoked = [r.path for r in fake.requests if r.path.endswith("/invocations")]
        assert len(invoked) == 2 and all(path.endswith(":iot-consumer:!live/invocations") for path in invoked)
        assert (
            "replaying 2 of 2 failure record(s) under obs://iot-artifacts-test/consumer-failures into" in out
        )
        assert (
            f"{PREFIX}/2026/11/30/a.json: 0 min old; 3 message(s), 3 reading(s); request req-a; 4 invocation(s)"
            in out
        )
        assert "    replayed: stored 2, duplicates 1, rejected 0" in out
        assert "    replayed: stored 1, duplicates 0, rejected 0" in out
        assert out.strip().splitlines()[-1] == "replayed 2/2 record(s); 0 kept"
        # stored once: the reading that was in before is not there twice
        assert [v for _, v, _ in runtime.store.history_page(first, None, None, None, None, 10)] == [
            21.0,
            20.5,
            20.0,
        ]
        assert [v for _, v, _ in runtime.store.history_page(second, None, None, None, None, 10)] == [30.0]

        again = replay(obs_env(fake, bucket))
        assert (
            again.returncode == 0
            and again.stdout.strip() == f"no failure records under obs://{BUCKET}/{PREFIX}"
        )
        assert len(consumer.invocations) == 2


# ---------------------------------------------------------------- what is kept


def test_a_batch_that_fails_again_and_a_record_it_cannot_read_are_kept(service_env, bucket):
    good, bad = batch("device-good", [1.0]), batch("device-bad", [2.0, 3.0])
    bucket.put(f"{PREFIX}/1-good.json", failure_record(good))
    bucket.put(f"{PREFIX}/2-bad.json", failure_record(bad))
    garbage = b"\x00\xff not a record"
    other = json.dumps({"timestamp": "t", "request_payload": "hello world!"})
    bucket.put(f"{PREFIX}/3-garbage.json", garbage)
    bucket.put(f"{PREFIX}/4-other.json", other)
    with make_fake(service_env, execute=False) as fake:

        def consumer(event: dict) -> dict:
            if "device-bad" in json.dumps(event):
                return {"errorMessage": "The database is unavailable", "errorType": "ServiceUnavailable"}
            return {"messages": 1, "readings": 1, "stored": 1, "duplicates": 0, "rejected": 0}

        fake.canned["iot-consumer"] = consumer
        fake.canned_logs["iot-consumer"] = "PostgreSQL unavailable (attempt 3 of 3)"
        result = replay(obs_env(fake, bucket))
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert bucket.keys() == [f"{PREFIX}/2-bad.json", f"{PREFIX}/3-garbage.json", f"{PREFIX}/4-other.json"]
    assert "    replayed: stored 1, duplicates 0, rejected 0" in out
    assert (
        "    kept: the consumer failed again: the function raised ServiceUnavailable: The database is unavailable"
        in out
    )
    assert "    log: PostgreSQL unavailable (attempt 3 of 3)" in out
    assert (
        f"{PREFIX}/3-garbage.json: 0 min old, {len(garbage)} bytes: kept, unreadable: not UTF-8 text" in out
    )
    assert (
        f"{PREFIX}/4-other.json: 0 min old, {len(other)} bytes: kept, unreadable: no DMS-for-Kafka event"
        in out
    )
    assert out.strip().splitlines()[-1] == "replayed 1/4 record(s); 3 kept (1 failed again, 2 unreadable)"


def test_dry_run_lists_the_records_and_changes_nothing(service_env, bucket):
    bucket.put(f"{PREFIX}/a.json", failure_record(batch("device-a", [1.0, 2.0])))
    bucket.put(f"{PREFIX}/b.json", "not json")
    with make_fake(service_env, execute=False) as fake:
        env = obs_env(fake, bucket)
        del env["HUAWEICLOUD_PROJECT_ID"]  # listing OBS needs no FunctionGraph project
        result = replay(env, "--dry-run")
        assert fake.requests == []
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # an unreadable record is worth a non-zero exit
    assert bucket.keys() == [f"{PREFIX}/a.json", f"{PREFIX}/b.json"]
    assert "[dry-run] would replay 2 of 2 failure record(s)" in out
    assert ":function:default:iot-consumer:!live" in out
    assert f"{PREFIX}/a.json: 0 min old; 2 message(s), 2 reading(s)" in out
    assert "    [dry-run] would invoke the consumer with it, then delete the object" in out
    assert f"{PREFIX}/b.json: 0 min old, 8 bytes: kept, unreadable: not JSON" in out
    assert out.strip().splitlines()[-1] == "[dry-run] would replay 1/2 record(s); 1 unreadable, would be kept"


def test_the_bucket_must_be_named(service_env, obs):
    with make_fake(service_env, execute=False) as fake:
        result = run_command(obs_env(fake, obs), "replay")
    assert result.returncode == 2 and "name the bucket: --bucket or IOT_FAILURE_BUCKET" in result.stderr


# ---------------------------------------------------------------- reading records


def test_the_original_event_is_found_in_every_shape_a_record_may_have():
    event = batch("device-x", [1.0, 2.0])
    documented = failure_record(event, "req-1")
    as_object = json.dumps({"request_context": {"request_id": "req-2"}, "request_payload": event})
    encoded = json.dumps({"request_payload": base64.b64encode(json.dumps(event).encode()).decode()})
    flat = {"topic_id": "t", "instance_id": "i", "messages": event["records"][0]["messages"]}
    for raw in (documented, as_object, encoded, json.dumps(event), json.dumps({"wrapped": {"event": flat}})):
        record = parse_record(raw.encode())
        assert (record.messages, record.readings, record.unreadable_messages) == (2, 2, 0), raw[:80]
        assert record.event in (event, flat)
    record = parse_record(documented.encode())
    assert (record.request_id, record.attempts, record.condition) == ("req-1", 4, "UnhandledInvocationError")
    assert record.error == "ServiceUnavailable: The database is unavailable; try again shortly"


def test_messages_that_are_not_readings_are_counted_but_do_not_make_a_record_unreadable():
    event = batch("device-y", [1.0])
    event["records"][0]["messages"] += ["not json", encode_message([]).decode()]
    record = parse_record(json.dumps(event).encode())
    assert (record.messages, record.readings, record.unreadable_messages) == (3, 1, 2)
    assert "2 message(s) not readings" in record.describe()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"{not json", "not JSON"),
        (b'{"request_payload": "hello world!", "records": []}', "no DMS-for-Kafka event"),
        (b"[1, 2, 3]", "no DMS-for-Kafka event"),
    ],
)
def test_a_record_without_a_batch_is_unreadable(raw, reason):
    with pytest.raises(UnreadableRecord, match=reason):
        parse_record(raw)


def test_age_is_said_in_the_largest_units():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert age(datetime(2026, 11, 30, 11, 58, 30, tzinfo=timezone.utc), now) == "1 min old"
    assert age(datetime(2026, 11, 30, 9, 15, tzinfo=timezone.utc), now) == "2 h 45 min old"
    assert age(datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc), now) == "3 d 2 h old"
    assert age(None, now) == "of unknown age"
