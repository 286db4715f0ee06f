"""Faults with real processes: break a server or kill a process, then count what was stored.

Each test ends in the same count: every accepted reading is stored, exactly once, and nothing that
was refused is stored. The servers broken here are this module's own, not the session's.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg
import pytest
import redis
from kafka import KafkaProducer

from common.settings import Settings
from common.store import conninfo
from local.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis
from local.topics import create_topics

from .conftest import RECENT_DAY, LocalService, wait_for
from .test_service import http

pytestmark = pytest.mark.integration


@dataclass
class Ledger:
    """What the service answered: readings it accepted (200) and refused (503)."""

    accepted: set = field(default_factory=set)
    refused: set = field(default_factory=set)
    errors: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, service, readings: list[dict]) -> int:
        path = "/api/device/data" if len(readings) == 1 else "/api/device/data/bulk"
        body = readings[0] if len(readings) == 1 else {"readings": readings}
        try:
            status, answer = http(service, "POST", path, body)
        except OSError as error:  # the connection itself failed: nothing was accepted
            status, answer = 0, {"error": repr(error)}
        keys = {(r["device_id"], r["metric_type"], r["timestamp"]) for r in readings}
        with self.lock:
            if status == 200:
                self.accepted |= keys
            else:
                self.refused |= keys
                if status != 503:
                    self.errors.append((status, answer))
        return status


def reading(device: str, n: int, metric: str = "power") -> dict:
    return {
        "device_id": device,
        "metric_type": metric,
        "value": n,
        "timestamp": f"{RECENT_DAY}T00:{n // 60 % 60:02d}:{n % 60:02d}.{n // 3600:06d}Z",
    }


def stored(env: dict[str, str], prefix: str) -> tuple[int, int, set]:
    """(rows, distinct readings, keys) stored for devices starting with prefix."""
    s = Settings.from_env(env)
    with psycopg.connect(conninfo(s)) as conn:
        rows = conn.execute(
            "SELECT device_id, metric_type::text, timestamp FROM reading WHERE device_id LIKE %s",
            (prefix + "%",),
        ).fetchall()
    keys = {(d, m, t.isoformat().replace("+00:00", "Z")) for d, m, t in rows}
    return len(rows), len(set(rows)), keys


def normalise(keys: set) -> set:
    # the API answers "...Z" timestamps back as "+00:00"; compare on one spelling
    from datetime import datetime

    return {(d, m, datetime.fromisoformat(t).isoformat().replace("+00:00", "Z")) for d, m, t in keys}


def assert_exactly_once(env: dict[str, str], prefix: str, ledger: Ledger, timeout: float = 60) -> None:
    want = normalise(ledger.accepted)
    wait_for(lambda: stored(env, prefix)[0] >= len(want), timeout=timeout, interval=0.3)
    rows, distinct, keys = stored(env, prefix)
    assert ledger.errors == []
    assert rows == distinct == len(want), f"accepted {len(want)}, stored {rows} rows ({distinct} distinct)"
    assert keys == want
    assert not (keys & normalise(ledger.refused)), "a refused reading was stored"


class OwnServers:
    """PostgreSQL, Redis and Kafka of one test module, so breaking them breaks nothing else."""

    def __init__(self, base):
        self.postgres = EmbeddedPostgres(base_dir=base / "pg")
        self.redis = EmbeddedRedis(base_dir=base / "redis")
        self.kafka = EmbeddedKafka(base_dir=base / "kafka")
        for server in (self.postgres, self.redis, self.kafka):
            server.start()
        self.env = {**self.postgres.env(), **self.redis.env(), **self.kafka.env()}
        self.env.update(
            KAFKA_TOPIC="readings-faults",
            REDIS_KEY_PREFIX="faults:",
            DEMO_MODE="true",
            AUTH_ENABLED="false",
            KAFKA_TIMEOUT_MS="2000",
            CONNECT_TIMEOUT="2",
            TRIGGER_MAX_WAIT_MS="50",
        )
        self.create_topic()

    def create_topic(self) -> None:
        create_topics(self.env["KAFKA_BOOTSTRAP_SERVERS"], [self.env["KAFKA_TOPIC"]], partitions=2)

    def stop(self) -> None:
        for server in (self.kafka, self.redis, self.postgres):
            server.stop()


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    servers = OwnServers(tmp_path_factory.mktemp("fault-servers"))
    service = LocalService(servers.env, tmp_path_factory.mktemp("fault-logs"))
    service.start()
    yield servers, service
    service.stop()
    servers.stop()


def test_kafka_down_means_503_fast_nothing_queued_and_recovery(own):
    servers, service = own
    device = f"kdown-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    for n in range(5):
        assert ledger.post(service, [reading(device, n)]) == 200
    wait_for(lambda: stored(servers.env, device)[0] == 5)

    servers.kafka.stop()
    started = time.monotonic()
    status = ledger.post(service, [reading(device, 100)])
    took = time.monotonic() - started
    assert status == 503 and took < 8, f"answered {status} after {took:.1f}s"
    assert ledger.post(service, [reading(device, 101 + i) for i in range(10)]) == 503
    status, body = ready_when(service, lambda status, body: status == 503)
    assert body["checks"]["kafka"]["ok"] is False and body["checks"]["postgres"]["ok"] is True

    servers.kafka.start()  # in-memory broker: it comes back empty
    servers.create_topic()
    wait_for(lambda: ledger.post(service, [reading(device, 200)]) == 200, timeout=45, interval=1)
    for n in range(201, 211):
        assert ledger.post(service, [reading(device, n)]) == 200
    assert_exactly_once(servers.env, device, ledger)


def test_postgres_down_readings_wait_in_kafka_and_land_once(own):
    servers, service = own
    device = f"pgdown-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    assert ledger.post(service, [reading(device, 0)]) == 200
    wait_for(lambda: stored(servers.env, device)[0] == 1)

    servers.postgres.stop()
    for n in range(1, 31, 10):
        assert ledger.post(service, [reading(device, n + i) for i in range(10)]) == 200
    status, body = http(service, "GET", f"/api/device/{device}/history")
    assert status == 503 and body == {"error": "The database is unavailable; try again shortly"}
    status, body = ready_when(service, lambda status, body: status == 503)
    assert body["status"] == "unavailable" and body["checks"]["postgres"]["ok"] is False
    time.sleep(3)  # let the consumer fail and back off at least once

    servers.postgres.start()
    assert_exactly_once(servers.env, device, ledger)
    assert http(service, "GET", f"/api/device/{device}/history?limit=1000")[0] == 200


def test_redis_down_then_back_empty(own):
    servers, service = own
    device = f"rdown-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    servers.redis.stop()
    for n in range(5):
        assert ledger.post(service, [reading(device, n)]) == 200
    assert_exactly_once(servers.env, device, ledger)
    status, body = http(service, "GET", f"/api/device/{device}/latest")
    assert status == 200 and body["metrics"]["power"]["value"] == 4
    assert device in {d["device_id"] for d in http(service, "GET", "/api/devices")[1]["devices"]}
    status, body = ready_when(service, lambda status, body: body["status"] != "ready")
    assert status == 200 and body["status"] == "degraded" and body["checks"]["redis"]["ok"] is False

    servers.redis.start()  # comes back empty, as after a restart
    client = redis.Redis(port=servers.redis.port)

    def cache_rebuilt():
        status, body = http(service, "GET", f"/api/device/{device}/latest")
        return (
            status == 200
            and client.exists("faults:ready")
            and client.hget("faults:latest", f"{device} power")
        )

    wait_for(cache_rebuilt, timeout=20, interval=0.5)
    assert ledger.post(service, [reading(device, 50)]) == 200
    wait_for(
        lambda: http(service, "GET", f"/api/device/{device}/latest")[1]["metrics"]["power"]["value"] == 50
    )
    assert_exactly_once(servers.env, device, ledger)


def test_redis_frozen_then_back_with_stale_data_is_corrected(own):
    servers, service = own
    device = f"rfrozen-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    assert ledger.post(service, [reading(device, 1)]) == 200
    wait_for(lambda: http(service, "GET", f"/api/device/{device}/latest")[0] == 200)
    http(service, "GET", "/api/devices")  # the cache is built and holds value 1

    os.kill(servers.redis.pid, signal.SIGSTOP)  # a partition: Redis keeps its (soon stale) data
    try:
        assert ledger.post(service, [reading(device, 2)]) == 200
        wait_for(lambda: stored(servers.env, device)[0] == 2, timeout=30)
        assert http(service, "GET", f"/api/device/{device}/latest")[1]["metrics"]["power"]["value"] == 2
    finally:
        os.kill(servers.redis.pid, signal.SIGCONT)

    def fresh():
        status, body = http(service, "GET", f"/api/device/{device}/latest")
        listed = {d["device_id"]: d for d in http(service, "GET", "/api/devices")[1]["devices"]}
        return body["metrics"]["power"]["value"] == 2 and listed[device]["metrics"]["power"]["value"] == 2

    # served correctly at every moment, and from Redis again once it is rebuilt
    wait_for(fresh, timeout=20, interval=0.5)
    client = redis.Redis(port=servers.redis.port)
    wait_for(
        lambda: client.hget("faults:latest", f"{device} power") and client.exists("faults:ready"),
        timeout=20,
        interval=0.5,
    )
    assert client.hget("faults:latest", f"{device} power").decode().split("|")[1] == "2.0"
    assert_exactly_once(servers.env, device, ledger)


def ready_when(service, expected) -> tuple[int, dict]:
    """/ready's answer once it reflects a change: each process checks at most every few seconds."""
    answers = []

    def check():
        answers.append(http(service, "GET", "/ready"))
        return expected(*answers[-1])

    wait_for(check, timeout=10, interval=0.5)
    return answers[-1]


def test_poison_messages_are_kept_and_do_not_block_their_batch(own):
    servers, service = own
    device = f"poison-{uuid.uuid4().hex[:6]}"
    before = http(service, "GET", "/api/stats")[1]["rejected_messages"]
    producer = KafkaProducer(bootstrap_servers=servers.env["KAFKA_BOOTSTRAP_SERVERS"])
    good = [reading(device, n) for n in range(3)]
    values = [
        json.dumps(good[0]).encode(),
        b"this is not json",
        json.dumps(
            {"device_id": device, "metric_type": "wind", "value": 1, "timestamp": f"{RECENT_DAY}T00:00:00Z"}
        ).encode(),
        b"\xff\xfe binary \x00 junk",
        b'{"device_id": "nul\x00inside", "metric_type": "power"}',  # UTF-8 with a NUL: PostgreSQL text cannot hold it
        json.dumps({"readings": [good[1], {**good[2], "value": float("nan")}]}).encode(),
        # offsets that carry the calendar's first and last days past what Python's datetime can hold
        json.dumps({**good[2], "timestamp": "0001-01-01T00:00:00+01:00"}).encode(),
        json.dumps({**good[2], "timestamp": "9999-12-31T23:59:59-01:00"}).encode(),
        json.dumps(good[2]).encode(),
    ]
    for value in values:
        producer.send(servers.env["KAFKA_TOPIC"], key=device.encode(), value=value)
    producer.flush()
    producer.close()

    wait_for(lambda: stored(servers.env, device)[0] == 3, timeout=20)
    wait_for(lambda: http(service, "GET", "/api/stats")[1]["rejected_messages"] == before + 7)
    s = Settings.from_env(servers.env)
    with psycopg.connect(conninfo(s)) as conn:
        rows = conn.execute(
            "SELECT raw, reason, received_at FROM rejected_message WHERE raw LIKE %s OR raw LIKE %s ORDER BY id",
            (f"%{device}%", "%not json%"),
        ).fetchall()
    reasons = [reason for _, reason, _ in rows]
    assert any("not JSON" in r for r in reasons)
    assert any("Unknown metric_type 'wind'" in r for r in reasons)
    assert any("Reading 1: value must be a finite number" in r for r in reasons)
    assert sum("timestamp is out of range" in r for r in reasons) == 2
    assert all(received_at is not None for _, _, received_at in rows)
    # /ready reports a check up to a few seconds old
    wait_for(lambda: http(service, "GET", "/ready")[1]["rejected_messages"] == before + 7, timeout=10)


def test_consumer_killed_during_load_loses_and_doubles_nothing(own):
    servers, service = own
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    ledger = Ledger()
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            device = f"{prefix}-{worker}"
            if n % 3:
                ledger.post(service, [reading(device, n)])
                n += 1
            else:
                ledger.post(service, [reading(device, n + i, "voltage") for i in range(20)])
                n += 20

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        service.processes["trigger"].send_signal(signal.SIGKILL)
        service.processes["trigger"].wait()
        time.sleep(1)
        service.start_trigger_loop()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(ledger.accepted) > 100 and not ledger.refused
    assert_exactly_once(servers.env, prefix, ledger, timeout=90)
