"""Group commit (local/group_commit.py): concurrent requests share messages, each request stays whole
inside one message, a lone request never waits, and a failed message fails exactly its own requests.

The grouping is pure logic and is tested with a publisher that records what it is given; the last
test runs it through the real producer and broker."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from common.errors import ServiceUnavailable
from common.producer import UNAVAILABLE, ReadingProducer
from common.readings import Reading
from common.settings import Settings
from local import group_commit
from local.group_commit import MAX_GROUP_READINGS, GroupCommitProducer
from local.topics import create_topics

from .test_producer import messages

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def readings(device: str, count: int, start: int = 0) -> list[Reading]:
    return [Reading(device, "power", float(i), T0 + timedelta(seconds=start + i)) for i in range(count)]


class RecordingPublisher:
    """Stands in for ReadingProducer.publish: records each message, takes ``delay`` to "send" it."""

    def __init__(self, delay: float = 0.002, fail: bool = False):
        self.delay = delay
        self.fail = fail
        self.messages: list[list[str]] = []
        self.lock = threading.Lock()

    def publish(self, readings: list[str], key: bytes, requests=None) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise ServiceUnavailable(UNAVAILABLE)
        with self.lock:
            self.messages.append(list(readings))

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_clients(producer, requests: list[list[Reading]], threads: int = 8) -> list[Exception]:
    pending, errors, lock = list(requests), [], threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                request = pending.pop()
            try:
                assert producer.send(request) == [r.to_json() for r in request]
            except ServiceUnavailable as error:
                errors.append(error)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def assert_each_request_whole_in_exactly_one_message(sent: list[list[str]], requests: list[list[Reading]]):
    flat = [reading for message in sent for reading in message]
    assert sorted(flat) == sorted(
        r.to_json() for request in requests for r in request
    )  # nothing lost or twice
    for request in requests:
        shown = [r.to_json() for r in request]
        holders = [m for m in sent if shown[0] in m]
        assert len(holders) == 1 and all(r in holders[0] for r in shown)


def test_concurrent_requests_share_messages_and_each_lands_whole_once():
    publisher = RecordingPublisher()
    requests = [readings(f"dev-{n}", 1 + n % 7, start=n * 10) for n in range(400)]
    assert run_clients(GroupCommitProducer(publisher), requests) == []
    assert len(publisher.messages) < len(requests) / 2  # concurrent requests were grouped
    assert max(len(message) for message in publisher.messages) <= MAX_GROUP_READINGS
    assert_each_request_whole_in_exactly_one_message(publisher.messages, requests)


def test_a_lone_request_is_sent_at_once(monkeypatch):
    monkeypatch.setattr(group_commit, "GROUP_LINGER_SECONDS", 10.0)
    publisher = RecordingPublisher(delay=0)
    producer = GroupCommitProducer(publisher)
    started = time.monotonic()
    for n in range(3):
        producer.send(readings(f"dev-{n}", 2))
    assert time.monotonic() - started < 1
    assert len(publisher.messages) == 3


def test_a_group_as_large_as_recent_messages_is_sent_without_lingering(monkeypatch):
    # A linger long enough to see: a leader that waited it out would take ten seconds.
    monkeypatch.setattr(group_commit, "GROUP_LINGER_SECONDS", 10.0)
    publisher = RecordingPublisher(delay=0.2)
    producer = GroupCommitProducer(publisher)
    in_flight = threading.Thread(target=producer.send, args=(readings("first", 1),))
    in_flight.start()  # while this one is being sent, the next two requests form one group
    time.sleep(0.05)
    producer._recent_sizes.append(2)  # as if a recent message had carried two requests
    started = time.monotonic()
    assert run_clients(producer, [readings("a", 2), readings("b", 2)], threads=2) == []
    in_flight.join()
    assert time.monotonic() - started < 5, "the leader lingered although both requests were in"
    assert [len(message) for message in publisher.messages] == [1, 4]


def test_a_failed_message_fails_every_request_in_it_and_leaves_nothing_behind():
    producer = GroupCommitProducer(RecordingPublisher(fail=True))
    errors = run_clients(producer, [readings(f"dev-{n}", 3) for n in range(6)], threads=4)
    assert len(errors) == 6 and all("nothing was queued" in e.message for e in errors)
    assert not producer._waiting and producer._open is None and producer._sending is False
    producer.producer.fail = False  # the broker is back: the next request goes through
    assert producer.send(readings("after", 1))
    assert producer.producer.messages == [[readings("after", 1)[0].to_json()]]


@pytest.mark.integration
def test_grouped_requests_reach_the_real_broker_whole_and_once(settings):
    topic = f"group-{uuid.uuid4().hex[:6]}"
    create_topics(settings.kafka_bootstrap_servers, [topic], partitions=2)
    producer = GroupCommitProducer(ReadingProducer(Settings(**{**settings.__dict__, "kafka_topic": topic})))
    requests = [readings(f"dev-{n}", 1 + n % 7, start=n * 10) for n in range(300)]
    assert run_clients(producer, requests) == []
    producer.close()
    sent = [[r.to_json() for r in message] for _, message in messages(settings, topic)]
    assert len(sent) < len(requests)
    assert_each_request_whole_in_exactly_one_message(sent, requests)
