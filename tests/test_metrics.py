"""The pieces of the pipeline's health without servers: refusal reasons, the message's trace, JSON log
lines, the trigger loop's backlog arithmetic, and prometheus_client's multiprocess directory with
processes that come and go."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from common import logs, metrics
from common.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from common.readings import (
    NO_TRACE,
    MessageError,
    Reading,
    decode_message,
    encode_message,
    read_message,
    utc_now,
)
from local.env import ROOT
from local.trigger_loop import Backlog

# ---------------------------------------------------------------- reasons


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BadRequest("Request body is not valid JSON: Expecting value"), "invalid_json"),
        (BadRequest("Request body is empty; send a JSON object"), "invalid_json"),
        (ValidationError("Unknown metric_type 'pressur'; use one of: ..."), "unknown_metric"),
        (ValidationError("Reading 3: Unknown metric_type 'x'; use one of: ..."), "unknown_metric"),
        (ValidationError("timestamp ... is older than the raw retention of 90 days"), "too_old"),
        (ValidationError("value must be a number, not the text 'hot'"), "invalid_reading"),
        (PayloadTooLarge("Request body is larger than 256 KiB"), "too_large"),
        (UnsupportedMediaType("Content-Type text/plain is not supported"), "unsupported_media_type"),
        (Unauthorized("Missing credential"), "unauthorized"),
        (Forbidden("may not send readings for device 'x'"), "forbidden"),
        (ServiceUnavailable("The message queue is unavailable"), "queue_unavailable"),
        (RuntimeError("a bug"), "other"),
    ],
)
def test_every_refusal_maps_to_one_of_a_few_reasons(error, reason):
    assert metrics.ingest_rejection_reason(error) == reason
    assert reason in metrics.INGEST_REASONS


def test_the_consumer_s_reasons_come_from_its_problems():
    assert metrics.rejection_reason("not JSON: Expecting value") == "invalid_json"
    assert metrics.rejection_reason('"readings" must be a non-empty list') == "invalid_reading"
    assert set(metrics.CONSUMER_REASONS) <= set(metrics.INGEST_REASONS)


def test_recording_without_enable_does_nothing(monkeypatch):
    """A FunctionGraph instance never enables metrics: each recording is a no-op there."""
    monkeypatch.setattr(metrics, "_metrics", None)  # as in a process where nothing enabled them
    metrics.ingest_accepted(3, 0.01)
    metrics.ingest_rejected("invalid_json", 0.01)
    metrics.consumer_stored(1, 0, ["too_old"], [0.5])
    metrics.partition_backlog("t", 0, 5, 1.0)
    assert not metrics.enabled()


# ---------------------------------------------------------------- the message's trace


def readings(count: int = 2) -> list[Reading]:
    now = utc_now().replace(microsecond=0)
    return [Reading(f"dev-{n}", "power", float(n), now) for n in range(count)]


def test_a_message_carries_when_it_was_sent_and_whose_readings_it_holds():
    sent = readings(3)
    raw = encode_message(
        [r.to_json() for r in sent], sent_at_ms=1717200000250, requests=[("a1", 2), ("b-2", 1)]
    )
    found, trace = read_message(raw.decode())
    assert found == sent
    assert trace.sent_at == 1717200000.25
    assert trace.requests == (("a1", 2), ("b-2", 1)) and trace.request_ids == ["a1", "b-2"]


def test_messages_without_a_trace_read_as_before():
    sent = readings()
    plain = encode_message([r.to_json() for r in sent])
    assert plain == ('{"readings":[' + ",".join(r.to_json() for r in sent) + "]}").encode()
    assert read_message(plain.decode()) == (sent, NO_TRACE)
    assert decode_message(sent[0].to_json()) == sent[:1]  # a bare reading, one per message


def test_a_request_id_that_is_not_a_plain_token_is_never_written_into_the_message():
    raw = encode_message([readings(1)[0].to_json()], requests=[('x","readings":[]}', 1), ("", 1), ("ok", 1)])
    assert json.loads(raw)["requests"] == [{"request_id": "ok", "readings": 1}]


def test_a_malformed_trace_is_ignored_and_never_costs_a_reading():
    reading = json.loads(readings(1)[0].to_json())
    for trace in (
        {"sent_at": "yesterday", "requests": "many"},
        {
            "sent_at": True,
            "requests": [{"request_id": 5, "readings": 1}, "x", {"request_id": "a b", "readings": 1}],
        },
        {"sent_at": float("nan")},
    ):
        raw = json.dumps({"readings": [reading], **trace})
        found, kept = read_message(raw)
        assert len(found) == 1 and kept == NO_TRACE


def test_a_reading_cannot_carry_the_trace_itself():
    reading = {**json.loads(readings(1)[0].to_json()), "request_id": "mine", "sent_at": 1.0}
    with pytest.raises(MessageError) as caught:
        read_message(json.dumps({"readings": [reading], "sent_at": 2000}))
    assert caught.value.trace.sent_at == 2.0  # the message's trace is still read
    assert len(caught.value.problems) == 1 and "request_id" in caught.value.problems[0]


def test_each_refused_reading_of_a_message_is_a_problem_of_its_own():
    good = json.loads(readings(1)[0].to_json())
    bad = [{**good, "metric_type": "pressur"}, {**good, "value": "x"}]
    with pytest.raises(MessageError) as caught:
        read_message(json.dumps({"readings": [good, *bad]}))
    assert len(caught.value.readings) == 1
    assert [metrics.rejection_reason(p) for p in caught.value.problems] == [
        "unknown_metric",
        "invalid_reading",
    ]
    with pytest.raises(MessageError) as caught:
        read_message("{nope")
    assert caught.value.problems == [caught.value.reason]


# ---------------------------------------------------------------- JSON log lines


def log_lines(emit) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.metrics.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_line_is_one_json_object_with_the_request_and_the_fields_given():
    def emit(logger):
        logger.info("outside")
        with logs.request_scope("req-1"):
            logger.warning("stored %d", 5, extra={"stored": 5, "ids": ["a", "b"], "when": object()})
            try:
                raise ValueError("broken\nacross lines")
            except ValueError:
                logger.exception("failed")

    outside, stored, failed = log_lines(emit)
    assert set(outside) == {"time", "level", "logger", "message"}
    assert outside["time"].endswith("Z") and outside["logger"] == "test.metrics.json"
    assert stored["message"] == "stored 5" and stored["level"] == "WARNING"
    assert stored["request_id"] == "req-1" and stored["stored"] == 5 and stored["ids"] == ["a", "b"]
    assert stored["when"].startswith("<object")  # what JSON cannot hold is written as its text
    assert failed["request_id"] == "req-1" and "ValueError: broken" in failed["exception"]
    assert logs.request_id() == ""


def test_configure_makes_the_process_log_json_once(tmp_path):
    script = textwrap.dedent(
        """
        import logging
        from common import logs
        logs.configure("INFO")
        logs.configure("INFO")  # a second initializer: still one line per record
        logging.getLogger("x").info("hello", extra={"n": 1})
        logging.getLogger("kafka.conn").info("chatter")  # below kafka's WARNING
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert json.loads(lines[0])["n"] == 1


# ---------------------------------------------------------------- the trigger loop's backlog


class Record:
    def __init__(self, offset: int, timestamp_ms: int):
        self.offset, self.timestamp = offset, timestamp_ms


class FakeConsumer:
    def __init__(self, highwater: dict, positions: dict):
        self._highwater, self._positions = highwater, positions

    def assignment(self):
        return set(self._highwater)

    def highwater(self, partition):
        return self._highwater[partition]

    def position(self, partition, timeout_ms=None):
        return self._positions[partition]


def test_the_backlog_is_what_the_broker_holds_past_the_first_message_not_stored():
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    now_ms = time.time() * 1000
    consumer = FakeConsumer({p0: 10, p1: 4}, {p0: 0, p1: 4})
    backlog = Backlog()
    batch = {p0: [Record(6, now_ms - 30_000), Record(7, now_ms - 20_000)]}
    backlog.fetched(consumer, batch)
    assert backlog.snapshot(now_ms) == {p0: (4, pytest.approx(30.0)), p1: (0, 0.0)}
    backlog.stored(batch)  # committed: 8 and 9 wait, their age unknown until fetched
    assert backlog.snapshot(now_ms)[p0] == (2, 0.0)
    backlog.fetched(consumer, {p0: [Record(8, now_ms - 5_000)]})
    assert backlog.snapshot(now_ms)[p0] == (2, pytest.approx(5.0))
    backlog.released([p0])
    assert set(backlog.snapshot(now_ms)) == {p1}


# ---------------------------------------------------------------- one endpoint for many processes

RECORDER = """
import os, sys
from common import metrics
metrics.enable()
metrics.ingest_accepted(int(sys.argv[1]), 0.004)
metrics.consumer_stored(int(sys.argv[1]), 1, ["too_old"], [0.3])
metrics.partition_backlog("readings", int(sys.argv[2]), 7, 2.5)
if sys.argv[3] == "killed":
    metrics.flush()  # what the flush thread does every half second; a kill loses the rest
    os._exit(0)  # no clean exit: its live values stay until a scrape finds the process gone
"""

EXPOSE = """
from common import metrics
body, kind = metrics.exposition()
print(kind)
print(body.decode())
"""


def run(script: str, env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_exposition_sums_every_process_and_forgets_the_gauges_of_dead_ones(tmp_path):
    directory = metrics.prepare_directory(tmp_path / "metrics")
    env = {**os.environ, metrics.MULTIPROC_DIR: str(directory)}
    run(RECORDER, env, "3", "0", "clean")
    run(RECORDER, env, "4", "1", "killed")
    assert any(path.name.startswith("gauge_live") for path in directory.iterdir())

    kind, _, text = run(EXPOSE, env).partition("\n")
    assert kind.startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("iot_ingest_readings_accepted_total", ())] == 7  # counters of gone processes stay
    assert samples[("iot_consumer_readings_duplicate_total", ())] == 2
    assert samples[("iot_consumer_readings_rejected_total", (("reason", "too_old"),))] == 2
    assert samples[("iot_ingest_request_duration_seconds_count", ())] == 2
    assert samples[("iot_ack_to_stored_seconds_bucket", (("le", "0.5"),))] == 2
    # Both processes are gone: the one that exited cleanly marked itself, the killed one was swept.
    assert not any(name.startswith("iot_consumer_lag") for name, _ in samples)
    assert not any(path.name.startswith("gauge_live") for path in directory.iterdir())


def test_a_prepared_directory_starts_empty(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    metrics.prepare_directory(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
