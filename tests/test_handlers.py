"""The functions' own handlers fed the documented cloud event shapes, on the real servers."""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from common import consume, dms
from common import runtime as runtime_module
from common.errors import ServiceUnavailable
from common.readings import MetricType, Reading, encode_message
from common.settings import Settings
from functions import load_function
from local.context import LocalContext

from .conftest import RECENT_DAY

pytestmark = pytest.mark.integration

ingest = load_function("ingest")
consumer = load_function("consumer")
query = load_function("query")
dashboard = load_function("dashboard")


def apig_event(method: str, path: str, body: object = None, *, path_params=None, query=None, headers=None):
    """An APIG event exactly as documented: lower-case headers, base64 body, requestContext."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return {
        "body": base64.b64encode(raw).decode(),
        "requestContext": {"apiId": "bc1dcffd", "requestId": uuid.uuid4().hex, "stage": "RELEASE"},
        "queryStringParameters": query or {},
        "httpMethod": method,
        "pathParameters": path_params or {},
        "headers": {"content-type": "application/json", "x-forwarded-proto": "https", **(headers or {})},
        "path": path,
        "isBase64Encoded": True,
    }


def call(function, event):
    response = function.handler(event, LocalContext("test"))
    assert set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert isinstance(response["statusCode"], int) and isinstance(response["body"], str)
    return response["statusCode"], json.loads(response["body"]) if response["headers"][
        "Content-Type"
    ].startswith("application/json") else response["body"]


def queued_messages(settings: Settings, device_id: str, expected: int, timeout: float = 10) -> list[str]:
    """Message values on the topic that mention device_id (read without a consumer group)."""
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    partitions = [
        TopicPartition(settings.kafka_topic, p) for p in reader.partitions_for_topic(settings.kafka_topic)
    ]
    reader.assign(partitions)
    reader.seek_to_beginning(*partitions)
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=200).values():
            found += [r.value.decode() for r in records if device_id.encode() in r.value]
    reader.close()
    return found


def test_ingest_to_consumer_to_query_through_the_handlers(runtime, settings):
    device = f"handler-{uuid.uuid4().hex[:8]}"
    status, body = call(
        ingest,
        apig_event(
            "POST",
            "/api/device/data",
            {
                "device_id": device,
                "metric_type": "temperature",
                "value": 21.5,
                "timestamp": f"{RECENT_DAY}T12:00:00Z",
            },
        ),
    )
    assert status == 200
    assert body == {
        "message": "Device data submitted successfully",
        "device_id": device,
        "metric_type": "temperature",
        "value": 21.5,
        "timestamp": f"{RECENT_DAY}T12:00:00+00:00",
    }
    bulk = {
        "readings": [
            {
                "device_id": device,
                "metric_type": "humidity",
                "value": i,
                "timestamp": f"{RECENT_DAY}T12:0{i}:00",
            }
            for i in range(3)
        ]
    }
    status, body = call(ingest, apig_event("POST", "/api/device/data/bulk", bulk))
    assert status == 200 and body["processed_count"] == 3 and len(body["readings"]) == 3

    messages = queued_messages(settings, device, expected=2)
    assert len(messages) == 2  # one message per accepted request
    poison = "definitely not json"
    event = {
        "event_version": "v1.0",
        "event_time": 1576737962,
        "trigger_type": "KAFKA",
        "region": "eu-de",
        "instance_id": "08fd3e1b-cf56-401f-b4c6-81fd2a1d3ae6",
        "records": [
            {"messages": [messages[0], poison], "topic_id": settings.kafka_topic},
            {"messages": [messages[1]], "topic_id": settings.kafka_topic},
        ],
    }
    result = consumer.handler(event, LocalContext("consumer"))
    assert result == {"messages": 3, "readings": 4, "stored": 4, "duplicates": 0, "rejected": 1}
    # the trigger delivering the same batch again stores nothing twice
    again = consumer.handler(event, LocalContext("consumer"))
    assert (again["stored"], again["duplicates"]) == (0, 4)
    assert runtime.store.rejected_count() == 2  # the poison message, kept each time it arrived

    status, body = call(
        query, apig_event("GET", f"/api/device/{device}/latest", path_params={"device_id": device})
    )
    assert status == 200
    assert body["metrics"] == {
        "temperature": {"value": 21.5, "timestamp": f"{RECENT_DAY}T12:00:00+00:00"},
        "humidity": {"value": 2.0, "timestamp": f"{RECENT_DAY}T12:02:00+00:00"},
    }
    status, body = call(
        query,
        apig_event(
            "GET",
            f"/api/device/{device}/history",
            path_params={"device_id": device},
            query={"metric_type": "humidity", "limit": "2"},
        ),
    )
    assert status == 200 and [d["value"] for d in body["data"]] == [2.0, 1.0]


def test_consumer_with_the_older_template_shape(runtime):
    device = f"tmpl-{uuid.uuid4().hex[:8]}"
    message = json.dumps(
        {"device_id": device, "metric_type": "power", "value": 3, "timestamp": f"{RECENT_DAY}T00:00:00Z"}
    )
    event = {"records": [{"instance_id": "inst", "topic_id": "t", "messages": [{"message": message}]}]}
    assert consumer.handler(event, LocalContext("consumer"))["stored"] == 1


def test_ingest_answers_503_and_queues_nothing_when_kafka_is_down(settings):
    dead = Settings(
        **{**settings.__dict__, "kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1500}
    )
    runtime_module.initialize(settings=dead)
    try:
        started = time.monotonic()
        status, body = call(
            ingest,
            apig_event("POST", "/api/device/data", {"device_id": "d", "metric_type": "power", "value": 1}),
        )
        assert status == 503
        assert "nothing was queued" in body["error"]
        assert time.monotonic() - started < 8
    finally:
        runtime_module.reset()


def test_dashboard_handler_serves_pages_and_assets():
    response = dashboard.handler(apig_event("GET", "/"), LocalContext("dashboard"))
    assert response["statusCode"] == 200 and response["headers"]["Content-Type"].startswith("text/html")
    assert '<table id="devices"' in response["body"]
    response = dashboard.handler(
        apig_event("GET", "/device/abc", path_params={"device_id": "abc"}), LocalContext("dashboard")
    )
    assert response["statusCode"] == 200 and '<script src="/static/device.js"></script>' in response["body"]
    response = dashboard.handler(apig_event("GET", "/static/app.js"), LocalContext("dashboard"))
    assert response["statusCode"] == 200 and "javascript" in response["headers"]["Content-Type"]
    response = dashboard.handler(apig_event("GET", "/static/..%2F..%2Findex.py"), LocalContext("dashboard"))
    assert response["statusCode"] == 404


# _large_batch's size: LARGE_DEVICES devices x 6 metrics x PER_KEY readings of each key
LARGE_DEVICES = 40
PER_KEY = 30
LARGE_BATCH = LARGE_DEVICES * len(MetricType) * PER_KEY


def _large_batch(prefix: str) -> tuple[list[bytes], dict]:
    """Messages of 100 readings, LARGE_BATCH in all, newest first in places (late data), and the
    newest (value, timestamp) of every key."""
    start = datetime.fromisoformat(RECENT_DAY).replace(tzinfo=timezone.utc)
    readings, newest = [], {}
    for d in range(LARGE_DEVICES):
        for metric in MetricType.names():
            steps = list(range(PER_KEY))
            if d % 2:
                steps.reverse()  # the newest of these arrives first
            for step in steps:
                readings.append(
                    Reading(
                        f"{prefix}-{d:03d}", metric, float(d * 1000 + step), start + timedelta(minutes=step)
                    )
                )
            newest[(f"{prefix}-{d:03d}", metric)] = (
                float(d * 1000 + PER_KEY - 1),
                start + timedelta(minutes=PER_KEY - 1),
            )
    messages = [
        encode_message([r.to_json() for r in readings[i : i + 100]]) for i in range(0, len(readings), 100)
    ]
    return messages, newest


def test_a_large_batch_is_stored_in_parts_with_every_latest_value_right(runtime, settings):
    prefix = f"parts-{uuid.uuid4().hex[:6]}"
    messages, newest = _large_batch(prefix)
    total = LARGE_BATCH
    assert total >= consume.STORE_PARTS * consume.MIN_PART_READINGS  # large enough to be split
    event = dms.build_event({settings.kafka_topic: messages})

    assert consumer.handler(event, LocalContext("consumer")) == {
        "messages": len(messages),
        "readings": total,
        "stored": total,
        "duplicates": 0,
        "rejected": 0,
    }
    redelivered = consumer.handler(event, LocalContext("consumer"))
    assert (redelivered["stored"], redelivered["duplicates"]) == (0, total)  # stored once
    in_postgres = {(v.device_id, v.metric_type): (v.value, v.timestamp) for v in runtime.store.latest()}
    in_redis = {(v.device_id, v.metric_type): (v.value, v.timestamp) for v in runtime.cache.all_latest()}
    expected = {key: (value, moment.isoformat()) for key, (value, moment) in newest.items()}
    assert in_postgres == expected
    assert in_redis == expected


@pytest.mark.parametrize("failing_part", [0, 1], ids=["the part stored in the handler's thread", "the other"])
def test_a_failed_part_fails_the_batch_and_redis_never_runs_ahead(
    runtime, settings, monkeypatch, failing_part
):
    """One part of a batch cannot be stored: the handler raises (so the trigger redelivers), Redis
    holds nothing PostgreSQL does not, and the redelivered batch completes what was missing."""
    prefix = f"fail-{uuid.uuid4().hex[:6]}"
    messages, newest = _large_batch(prefix)
    event = dms.build_event({settings.kafka_topic: messages})
    # A device of the chosen part (split_by_device: CRC-32 of the id; the first part is stored in the
    # handler's own thread, the other in the runtime's)
    broken = next(
        d for d, _ in sorted(newest) if zlib.crc32(d.encode()) % consume.STORE_PARTS == failing_part
    )
    real_store = type(runtime.store).store

    def store_failing_for_one_device(store, readings):
        if any(r.device_id == broken for r in readings):
            raise ServiceUnavailable("The database is unavailable; try again shortly")
        return real_store(store, readings)

    monkeypatch.setattr(type(runtime.store), "store", store_failing_for_one_device)
    monkeypatch.setattr(consume, "FIRST_DELAY_SECONDS", 0.01)
    with pytest.raises(ServiceUnavailable):
        consumer.handler(event, LocalContext("consumer"))
    stored = {(v.device_id, v.metric_type) for v in runtime.store.latest()}
    cached = {(v.device_id, v.metric_type) for v in runtime.cache.all_latest()}
    assert stored and (broken, "power") not in stored  # the other part did commit
    assert cached == stored

    monkeypatch.setattr(type(runtime.store), "store", real_store)
    result = consumer.handler(event, LocalContext("consumer"))
    assert result["stored"] + result["duplicates"] == LARGE_BATCH
    assert result["stored"] == LARGE_BATCH - len(stored) * PER_KEY  # exactly what was missing
    assert {(v.device_id, v.metric_type) for v in runtime.cache.all_latest()} == set(newest)
