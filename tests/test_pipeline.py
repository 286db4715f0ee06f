"""The pipeline's own health against real servers: GET /metrics of the shim (its two workers and the
trigger loop through one multiprocess directory), the consumer's JSON log naming each request it stored,
the lag while PostgreSQL is away, and GET /api/pipeline.

The servers are this module's own (PostgreSQL is stopped here). The trigger loop keeps raw readings 30
days and the shim 90, as after a retention was shortened: a reading 60 days old is accepted by ingest and
then rejected by the consumer, so every way a reading can end is counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import maintenance, metrics
from common.runtime import Runtime
from common.settings import Settings
from common.store import conninfo
from local.embedded import free_port
from local.run import function_env

from .conftest import ROOT, LocalService, wait_for
from .test_faults import OwnServers, reading, stored
from .test_service import exchange

pytestmark = pytest.mark.integration

CONSUMER_RETENTION_DAYS = 30


class PipelineService(LocalService):
    """The shim with two workers and a trigger loop sharing one metrics directory, as `make run` does."""

    workers = 2

    def __init__(self, env: dict[str, str], log_dir: Path):
        metrics_dir = metrics.prepare_directory(log_dir / "metrics")
        super().__init__({**env, metrics.MULTIPROC_DIR: str(metrics_dir)}, log_dir)

    def start_trigger_loop(self) -> None:
        env = {**self.env, "RAW_RETENTION_DAYS": str(CONSUMER_RETENTION_DAYS)}
        self.start_process("trigger", "local.trigger_loop", "--group", self.group, env=env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    servers = OwnServers(tmp_path_factory.mktemp("pipeline-servers"))
    service = PipelineService(servers.env, tmp_path_factory.mktemp("pipeline-logs"))
    try:
        service.start()
        yield servers, service
    finally:
        service.stop()
        servers.stop()


def scrape(service) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser: (name, labels) -> value."""
    with urllib.request.urlopen(service.url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def post(service, path: str, body: object, content_type: str = "application/json"):
    status, answer, headers = exchange(service, "POST", path, body, content_type=content_type)
    return status, answer, headers


def accounted(service, before: dict) -> dict | None:
    """The metrics once everything ingest accepted since ``before`` has been stored, found stored
    already, or rejected by the consumer, and nothing waits in Kafka; else None."""
    now = scrape(service)
    accepted = delta(now, before, "iot_ingest_readings_accepted_total")
    ended = sum(
        delta(now, before, name)
        for name in (
            "iot_consumer_readings_stored_total",
            "iot_consumer_readings_duplicate_total",
            "iot_consumer_readings_rejected_total",
        )
    )
    lag = total(now, "iot_consumer_lag_messages")
    return now if accepted and accepted == ended and lag == 0 else None


def test_metrics_count_every_reading_from_acceptance_to_its_end(stack):
    servers, service = stack
    before = scrape(service)
    device = f"count-{uuid.uuid4().hex[:6]}"
    singles = [reading(device, n) for n in range(20)]
    for one in singles:
        assert post(service, "/api/device/data", one)[0] == 200
    bulk = [reading(device, n) for n in range(20, 60)]
    assert post(service, "/api/device/data/bulk", {"readings": bulk})[0] == 200
    # The same readings again: accepted by ingest, duplicates to the consumer.
    assert post(service, "/api/device/data/bulk", {"readings": singles[:10]})[0] == 200
    # Old enough for the consumer's 30 days, young enough for ingest's 90.
    old = datetime.now(timezone.utc) - timedelta(days=60)
    too_old = [
        {
            **reading(device, 100 + n),
            "timestamp": (old + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        for n in range(3)
    ]
    assert post(service, "/api/device/data/bulk", {"readings": too_old})[0] == 200
    # Refused by ingest, each for its own reason: nothing of them is queued.
    refused = [
        ("/api/device/data", b"{not json", "invalid_json"),
        ("/api/device/data", {**reading(device, 200), "metric_type": "pressur"}, "unknown_metric"),
        ("/api/device/data", {**reading(device, 201), "value": "hot"}, "invalid_reading"),
        ("/api/device/data", {**reading(device, 202), "request_id": "mine"}, "invalid_reading"),
        ("/api/device/data/bulk", {"readings": [reading(device, 203)] * 101}, "invalid_reading"),
    ]
    for path, body, _ in refused:
        assert post(service, path, body)[0] == 400
    assert post(service, "/api/device/data", "x", content_type="text/plain")[0] == 415

    after = wait_for(lambda: accounted(service, before), timeout=60, interval=0.5)
    accepted = len(singles) + len(bulk) + 10 + len(too_old)
    assert delta(after, before, "iot_ingest_readings_accepted_total") == accepted
    assert delta(after, before, "iot_consumer_readings_stored_total") == len(singles) + len(bulk)
    assert delta(after, before, "iot_consumer_readings_duplicate_total") == 10
    assert delta(after, before, "iot_consumer_readings_rejected_total", reason="too_old") == len(too_old)
    assert stored(servers.env, device)[0] == len(singles) + len(bulk)
    for reason in ("invalid_json", "unknown_metric", "invalid_reading", "unsupported_media_type"):
        expected = sum(1 for *_, why in refused if why == reason) or 1
        assert delta(after, before, "iot_ingest_requests_rejected_total", reason=reason) == expected, reason
    requests = len(singles) + 3 + len(refused) + 1
    assert delta(after, before, "iot_ingest_request_duration_seconds_count") == requests
    # Every message ingest queued is timed from queueing to stored.
    assert delta(after, before, "iot_ack_to_stored_seconds_count") >= len(singles) + 3
    assert total(after, "iot_consumer_oldest_unconsumed_age_seconds") == 0


def test_metrics_show_the_alerts_open_in_the_database(stack):
    _, service = stack
    before = total(scrape(service), "iot_alerts_open")
    device = f"alarm-{uuid.uuid4().hex[:6]}"
    rule = {"name": "hot", "device": device, "metric_type": "temperature", "condition": ">", "threshold": 50}
    status, made, _ = post(service, "/api/alert-rules", rule)
    assert status == 201, made
    assert post(service, "/api/device/data", {**reading(device, 1, "temperature"), "value": 80.0})[0] == 200
    wait_for(lambda: total(scrape(service), "iot_alerts_open") == before + 1, timeout=30, interval=0.5)
    status, _, _ = exchange(service, "DELETE", f"/api/alert-rules/{made['id']}")
    assert status == 200  # its alert closes with it
    assert total(scrape(service), "iot_alerts_open") == before


def test_every_alert_change_reaches_the_webhook_once_across_a_consumer_restart(stack):
    """The receiver is down while the consumer is killed and started again: once it is up, each of
    the three changes arrives, each with an event id of its own, and nothing is sent twice."""
    from .test_alerts import Receiver

    servers, service = stack
    device = f"hook-{uuid.uuid4().hex[:6]}"
    rule = {"name": "hot", "device": device, "metric_type": "power", "condition": ">", "threshold": 50,
            "clear_threshold": 40}  # fmt: skip
    assert post(service, "/api/alert-rules", rule)[0] == 201

    def alerts() -> list[dict]:
        return exchange(service, "GET", f"/api/alerts?device_id={device}")[1]["alerts"]

    def send(n: int, value: float) -> None:
        assert post(service, "/api/device/data", {**reading(device, n), "value": value})[0] == 200

    receiver = Receiver()  # not started: nothing listens on its port yet
    settings = Settings.from_env({**servers.env, "ALERT_WEBHOOK_URL": receiver.url})
    delivering = Runtime(settings)
    try:
        send(1, 60.0)
        wait_for(lambda: [a["state"] for a in alerts()] == ["open"], timeout=30, interval=0.3)
        assert maintenance.run(delivering)["notification_failures"] == 1
        trigger = service.processes["trigger"]
        trigger.send_signal(signal.SIGKILL)
        trigger.wait()
        send(2, 30.0)  # closes it
        send(3, 70.0)  # opens another
        service.start_trigger_loop()
        wait_for(lambda: [a["state"] for a in alerts()] == ["open", "closed"], timeout=60, interval=0.3)
        assert maintenance.run(delivering)["notifications_sent"] == 0  # the first failure's back-off
        receiver.start()
        with psycopg.connect(conninfo(settings), autocommit=True) as conn:
            conn.execute("UPDATE alert_outbox SET next_try_at = now() WHERE delivered_at IS NULL")
        while maintenance.run(delivering)["notifications_sent"]:
            pass
    finally:
        receiver.stop()
        delivering.close()
    mine = [(key, body) for key, body in receiver.received if body["alert"]["device_id"] == device]
    assert [body["kind"] for _, body in mine] == ["opened", "closed", "opened"]
    assert all(key == body["event_id"] for key, body in mine)
    assert len({key for key, _ in mine}) == 3


def json_lines(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in parsed:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    return parsed


def test_the_consumer_logs_the_request_id_of_each_reading_it_stored(stack):
    _, service = stack
    status, _, headers = post(service, "/api/device/data", reading(f"trace-{uuid.uuid4().hex[:6]}", 1))
    request_id = headers["X-Request-Id"]
    assert status == 200 and request_id

    def logged() -> dict | None:
        for entry in json_lines(service.log_dir / "trigger.log"):
            if request_id in (entry.get("ingest_request_ids") or []):
                return entry
        return None

    entry = wait_for(logged, timeout=30, interval=0.3)
    assert entry["message"] in ("batch stored", "batch requests")
    assert entry["logger"] == "common.consume" and entry["request_id"]  # the batch's own invocation id
    json_lines(service.log_dir / "shim.log")  # the shim's lines, Granian's included, are JSON too


def test_requests_that_share_a_message_are_each_named_in_the_consumer_s_log(stack):
    """Concurrent requests share Kafka messages in the shim (group commit); each is still logged."""
    from concurrent.futures import ThreadPoolExecutor

    _, service = stack
    device = f"group-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: post(service, "/api/device/data", reading(device, n)), range(40)))
    assert all(status == 200 for status, _, _ in answers)
    wanted = {headers["X-Request-Id"] for _, _, headers in answers}

    def all_logged() -> bool:
        logged = set()
        for entry in json_lines(service.log_dir / "trigger.log"):
            logged.update(entry.get("ingest_request_ids") or [])
        return wanted <= logged

    wait_for(all_logged, timeout=30, interval=0.3)


def pipeline(service, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, body, _ = exchange(service, "GET", "/api/pipeline", headers=headers)
    return status, body


def test_lag_grows_while_postgresql_is_away_and_drains_after(stack):
    servers, service = stack
    device = f"lag-{uuid.uuid4().hex[:6]}"
    servers.postgres.stop()
    try:
        for n in range(30):
            assert post(service, "/api/device/data", reading(device, n))[0] == 200

        def backlog() -> dict | None:
            now = scrape(service)
            waiting = total(now, "iot_consumer_lag_messages") > 0
            return now if waiting and total(now, "iot_consumer_oldest_unconsumed_age_seconds") > 1 else None

        wait_for(backlog, timeout=45, interval=0.5)

        def lag_seen() -> dict | None:
            status, body = pipeline(service)
            return body if status == 200 and (body["lag"] or 0) > 0 else None

        body = wait_for(lag_seen, timeout=30, interval=1)
        assert body["database"]["available"] is False and body["stored"] is None
        assert body["kafka"]["available"] is True
        # The trigger loop retries the batch that PostgreSQL refused.
        wait_for(
            lambda: total(scrape(service), "iot_consumer_batch_failures_total") > 0, timeout=45, interval=1
        )
    finally:
        servers.postgres.start()

    def drained_metrics() -> dict | None:
        now = scrape(service)
        return now if total(now, "iot_consumer_lag_messages") == 0 else None

    drained = wait_for(drained_metrics, timeout=90, interval=0.5)
    assert total(drained, "iot_consumer_oldest_unconsumed_age_seconds") == 0
    wait_for(lambda: stored(servers.env, device)[0] == 30, timeout=30, interval=0.5)

    def caught_up() -> dict | None:
        status, body = pipeline(service)
        return body if status == 200 and body["lag"] == 0 and body["database"]["available"] else None

    body = wait_for(caught_up, timeout=30, interval=1)
    assert sum(minute["count"] for minute in body["stored"]["per_minute"]) >= 0
    assert len(body["stored"]["per_minute"]) == body["window_minutes"]
    (group,) = body["kafka"]["groups"]
    assert group["group"] == service.group and group["lag"] == 0


def test_the_pipeline_view_needs_a_credential_when_auth_is_on(stack, tmp_path):
    servers, _ = stack
    env = {**os.environ, **servers.env, "AUTH_ENABLED": "true", "PYTHONUNBUFFERED": "1"}
    env.pop(metrics.MULTIPROC_DIR, None)  # this shim makes its own
    issuer = Runtime(Settings.from_env(env))
    run = uuid.uuid4().hex[:6]
    try:
        every_device = issuer.tokens.register_reader(f"pipeline-all-{run}")
        some_devices = issuer.tokens.register_reader(f"pipeline-some-{run}", ["site-a-*"])
    finally:
        issuer.close()
    port = free_port()
    with open(tmp_path / "shim.log", "wb") as log:
        shim = subprocess.Popen(
            [sys.executable, "-m", "local.shim", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=function_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        service = type("Shim", (), {"url": f"http://127.0.0.1:{port}"})()
        wait_for(lambda: _answers(service.url + "/health"), timeout=30, interval=0.2)
        status, body = pipeline(service)
        assert status == 401 and "credential" in body["error"]
        for key in (every_device, some_devices):
            status, body = pipeline(service, key)
            assert status == 200, body
            assert body["database"]["available"] and body["kafka"]["available"]
        # The local operator's page stays open: it is not an API route.
        assert _answers(service.url + "/metrics")
    finally:
        shim.terminate()
        shim.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        time.sleep(0.1)
        return False


def test_stored_per_minute_counts_every_reading_before_and_after_maintenance_rolls_it_up(runtime):
    """The pipeline's stored-per-minute numbers come from the rollups as far as maintenance rolled readings
    up, and from the readings after that: the same counts either way."""
    from common import maintenance, pipeline
    from common.readings import Reading

    (boundary,) = runtime.store.run(
        lambda conn: conn.execute("SELECT rolled_before FROM rollup_horizon").fetchone()
    )
    # Other tests may have rolled up ahead of the clock: these readings come after the boundary.
    now = max(datetime.now(timezone.utc), boundary + timedelta(minutes=10))
    minute = now.replace(second=0, microsecond=0) - timedelta(minutes=3)
    device = f"per-minute-{uuid.uuid4().hex[:6]}"
    runtime.store.store([Reading(device, "power", float(n), minute + timedelta(seconds=n)) for n in range(7)])

    def counted() -> int:
        view = runtime.store.read(lambda conn: pipeline.database_view(conn, now))
        return next(m["count"] for m in view["stored"]["per_minute"] if m["minute"] == pipeline._iso(minute))

    assert counted() == 7
    # A pass another process runs at the same moment is skipped (never two at once): run ours again.
    wait_for(lambda: not maintenance.run(runtime, now=now + timedelta(minutes=16))["skipped"], timeout=10)
    (rolled,) = runtime.store.run(
        lambda conn: conn.execute("SELECT rolled_before FROM rollup_horizon").fetchone()
    )
    assert rolled > minute  # the readings are in the rollups now
    assert counted() == 7
