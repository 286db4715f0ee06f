"""Group commit in the producer, against the real broker: every request is in exactly one message,
concurrent requests share messages, and a failed message fails exactly its own requests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from common import producer as producer_module
from common.errors import ServiceUnavailable
from common.producer import MAX_GROUP_READINGS, ReadingProducer
from common.readings import Reading, decode_message
from common.settings import Settings
from local.embedded import create_topics

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def readings(device: str, count: int, start: int = 0) -> list[Reading]:
    return [Reading(device, "power", float(i), T0 + timedelta(seconds=start + i)) for i in range(count)]


def messages(settings: Settings, topic: str) -> list[list[Reading]]:
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic)]
    reader.assign(partitions)
    reader.seek_to_beginning(*partitions)
    found = []
    for _ in range(20):
        polled = reader.poll(timeout_ms=200)
        found += [decode_message(r.value.decode()) for records in polled.values() for r in records]
        if not polled and found:
            break
    reader.close()
    return found


def test_concurrent_requests_share_messages_and_each_lands_whole_once(settings):
    topic = f"group-{uuid.uuid4().hex[:6]}"
    create_topics(settings.kafka_bootstrap_servers, [topic], partitions=2)
    producer = ReadingProducer(Settings(**{**settings.__dict__, "kafka_topic": topic}))
    requests = [readings(f"dev-{n}", 1 + n % 7, start=n * 10) for n in range(400)]
    pending = list(requests)
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not pending:
                    return
                request = pending.pop()
            assert [json.loads(shown) for shown in producer.send(request)] == [r.to_dict() for r in request]

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close()

    sent = messages(settings, topic)
    flat = [reading for message in sent for reading in message]
    assert sorted(flat, key=repr) == sorted((r for request in requests for r in request), key=repr)
    assert len(sent) < len(requests)  # concurrent requests were grouped
    assert max(len(message) for message in sent) <= MAX_GROUP_READINGS
    for request in requests:  # a request is never split across messages
        assert any(all(r in message for r in request) for message in sent)


def test_a_group_as_large_as_recent_messages_is_sent_without_lingering(settings, monkeypatch):
    # A linger long enough to see: a leader that waited it out would take ten seconds.
    monkeypatch.setattr(producer_module, "GROUP_LINGER_SECONDS", 10.0)
    topic = f"linger-{uuid.uuid4().hex[:6]}"
    create_topics(settings.kafka_bootstrap_servers, [topic], partitions=1)
    producer = ReadingProducer(Settings(**{**settings.__dict__, "kafka_topic": topic}))
    producer.send(readings("warm-up", 1))  # connected, so the timing below is the group's alone
    producer._recent_sizes.append(2)  # as if a recent message had carried two requests
    done: list[float] = []

    def client(n: int) -> None:
        producer.send(readings(f"dev-{n}", 2))
        done.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close()

    assert len(done) == 2 and max(done) - started < 5, "the leader lingered although both requests were in"
    sent = messages(settings, topic)
    assert len(sent) == 2 and len(sent[1]) == 4  # the warm-up, then both requests in one message


def test_a_failed_message_fails_every_request_in_it_and_leaves_nothing_behind(settings):
    dead = ReadingProducer(
        Settings(**{**settings.__dict__, "kafka_bootstrap_servers": "127.0.0.1:1", "kafka_timeout_ms": 1000})
    )
    errors = []

    def client(n):
        try:
            dead.send(readings(f"dev-{n}", 3))
        except ServiceUnavailable as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4 and all("nothing was queued" in e.message for e in errors)
    assert not dead._waiting and dead._open is None and dead._sending is False
