"""How the local trigger loop gathers a batch, against the real broker: a consumer that has caught up
waits out its window for what arrives meanwhile; one that is behind takes what is there and goes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common.settings import Settings
from local.topics import create_topics
from local.trigger_loop import TriggerLoop

from .conftest import ROOT

pytestmark = pytest.mark.integration

WINDOW_MS = 4000


def topic_with(settings: Settings, values: list[bytes]) -> str:
    topic = f"collect-{uuid.uuid4().hex[:6]}"
    create_topics(settings.kafka_bootstrap_servers, [topic], partitions=1)
    send(settings, topic, values)
    return topic


def send(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Each value in a record batch of its own, as separate requests would write them."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for value in values:
        producer.send(topic, value).get(timeout=10)
    producer.close()


def loop_and_consumer(
    settings: Settings, topic: str, **consumer_options
) -> tuple[TriggerLoop, KafkaConsumer]:
    loop = TriggerLoop(settings, lambda event, context: None, batch_size=500, max_wait_ms=WINDOW_MS)
    # Assigned, not subscribed: no group to join, so the first poll already fetches.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False, **consumer_options
    )
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    return loop, consumer


def collected(batch: dict) -> list[bytes]:
    return [record.value for records in batch.values() for record in records]


def test_a_caught_up_consumer_also_takes_what_arrives_within_its_window(settings):
    topic = topic_with(settings, [b"first"])
    loop, consumer = loop_and_consumer(settings, topic)
    # The second message arrives well inside the window, after the first has been fetched.
    later = threading.Timer(1.0, send, args=(settings, topic, [b"second"]))
    later.start()
    try:
        batch = loop._collect(consumer)
    finally:
        later.join()
        consumer.close()
    assert collected(batch) == [b"first", b"second"]


def test_a_consumer_that_is_behind_does_not_wait_out_its_window(settings):
    values = [f"{n:04d}".encode() * 100 for n in range(60)]  # 400 bytes each
    topic = topic_with(settings, values)
    # Small fetches: the first poll gets a few messages of the sixty, so the consumer is behind.
    loop, consumer = loop_and_consumer(settings, topic, max_partition_fetch_bytes=2048, fetch_max_bytes=2048)
    try:
        started = time.monotonic()
        batch = loop._collect(consumer)
        took = time.monotonic() - started
    finally:
        consumer.close()
    got = collected(batch)
    assert 0 < len(got) < len(values) and got == values[: len(got)]
    assert took < WINDOW_MS / 1000 / 2, f"waited {took:.1f}s with more messages ready"


def test_empty_trigger_variables_mean_the_defaults():
    """`TRIGGER_BATCH_SIZE=` in a shell or an env file is "not set", not a crash at start-up."""
    env = {**os.environ, "TRIGGER_BATCH_SIZE": "", "TRIGGER_MAX_WAIT_MS": "", "TRIGGER_LOOPS": ""}
    for module in ("local.trigger_loop", "local.run"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        ("local.trigger_loop", "TRIGGER_BATCH_SIZE"),
        ("local.run", "TRIGGER_LOOPS"),
        ("local.run", "SHIM_PORT"),
        ("local.shim", "SHIM_THREADS"),
    ],
)
def test_a_variable_that_is_not_a_number_is_named_not_a_traceback(module: str, variable: str):
    """The local tools' whole-number variables, set to something else, stop the tool with a message
    naming the variable and what it held."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        env={**os.environ, variable: "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{variable} must be a whole number, not 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
