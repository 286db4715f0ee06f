"""The plain producer against the real broker: one request is one acknowledged message, whole."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from common.errors import ServiceUnavailable
from common.producer import ReadingProducer
from common.readings import Reading, decode_message
from common.settings import Settings
from local.topics import create_topics

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def readings(device: str, count: int, start: int = 0) -> list[Reading]:
    return [Reading(device, "power", float(i), T0 + timedelta(seconds=start + i)) for i in range(count)]


def as_dict(reading: Reading) -> dict:
    return {
        "device_id": reading.device_id,
        "metric_type": reading.metric_type,
        "value": reading.value,
        "timestamp": reading.timestamp.isoformat(),
    }


def messages(settings: Settings, topic: str) -> list[tuple[bytes, list[Reading]]]:
    """(key, readings) of every message on the topic."""
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic)]
    reader.assign(partitions)
    reader.seek_to_beginning(*partitions)
    found = []
    for _ in range(20):
        polled = reader.poll(timeout_ms=200)
        found += [(r.key, decode_message(r.value.decode())) for records in polled.values() for r in records]
        if not polled and found:
            break
    reader.close()
    return found


def producer_for(settings: Settings, topic: str, partitions: int = 2) -> ReadingProducer:
    create_topics(settings.kafka_bootstrap_servers, [topic], partitions=partitions)
    return ReadingProducer(Settings(**{**settings.__dict__, "kafka_topic": topic}))


def test_each_request_is_one_message_keyed_by_its_device(settings):
    topic = f"plain-{uuid.uuid4().hex[:6]}"
    producer = producer_for(settings, topic)
    requests = [readings(f"dev-{n}", 1 + n % 5, start=n * 10) for n in range(12)]
    for request in requests:
        assert [json.loads(shown) for shown in producer.send(request)] == [as_dict(r) for r in request]
    assert producer.send([]) == []  # nothing to queue: no message
    producer.close()

    sent = messages(settings, topic)
    assert sorted(sent, key=repr) == sorted(((r[0].device_id.encode(), r) for r in requests), key=repr)


def test_a_dead_broker_is_a_quick_503_and_the_next_request_builds_a_fresh_producer(settings):
    dead = ReadingProducer(
        Settings(**{**settings.__dict__, "kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000})
    )
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="nothing was queued"):
        dead.send(readings("dev", 3))
    assert time.monotonic() - started < 5
    assert dead._producer is None  # the failed client was dropped, not reused
