"""The pipeline's own health as Prometheus metrics: what ingest accepted and refused, what the consumer
stored, how far it is behind, and how long each step took.

Recorded where it happens (common/ingest.py, common/consume.py, local/trigger_loop.py), exported by the
local processes only: ``GET /metrics`` on the shim, and the trigger loops through the same multiprocess
directory or an endpoint of their own (README, "Pipeline metrics"). Nothing is recorded until a process
calls ``enable``. A FunctionGraph instance never does: counters of short-lived instances that no one can
scrape mean nothing, and prometheus_client is not in the functions' package. Every recording function is
then one test of a global.

What a recording costs once enabled. In multiprocess mode each value prometheus_client keeps is a write
to a memory-mapped file under a lock: a counter about 1 us, a histogram observation about 2 us. Ingest's
accepted requests, the one path taken per request, are therefore tallied in the process (a few additions
under a lock, well under a microsecond) and moved to prometheus_client every ``FLUSH_SECONDS`` by a
thread of its own, so /metrics may be that much behind; a process killed outright loses at most that
much of ingest's counts. Everything else (refusals, batches, the backlog) is rare enough to record at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

# prometheus_client's own variable: where the processes of one service keep their values, so that one
# endpoint can show all of them (it must be set before prometheus_client is imported).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Why a request or a reading was refused: a bounded set, so a label never grows with the input.
INVALID_JSON = "invalid_json"
INVALID_READING = "invalid_reading"
UNKNOWN_METRIC = "unknown_metric"
TOO_OLD = "too_old"
TOO_LARGE = "too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
QUEUE_UNAVAILABLE = "queue_unavailable"
OTHER = "other"
INGEST_REASONS = (
    INVALID_JSON,
    INVALID_READING,
    UNKNOWN_METRIC,
    TOO_OLD,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    UNAUTHORIZED,
    FORBIDDEN,
    QUEUE_UNAVAILABLE,
    OTHER,
)
CONSUMER_REASONS = (INVALID_JSON, INVALID_READING, UNKNOWN_METRIC, TOO_OLD)

# Seconds. A request is answered once the broker acknowledged (milliseconds, up to KAFKA_TIMEOUT_MS).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From queueing to stored: a trigger window (hundreds of ms) when all is well, hours when PostgreSQL
# was down.
STORED_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def rejection_reason(message: str) -> str:
    """The label for a validation message (common/readings.py, common/apig.py write them)."""
    if any(sign in message for sign in ("not JSON", "not valid JSON", "not UTF-8", "body is empty")):
        return INVALID_JSON
    if message.startswith("Unknown metric_type") or ": Unknown metric_type" in message:
        return UNKNOWN_METRIC
    if "older than the raw retention" in message:
        return TOO_OLD
    return INVALID_READING


def ingest_rejection_reason(error: Exception) -> str:
    """The label for an error ingest answered with (``other`` for one that was not an ApiError: a 500)."""
    if isinstance(error, PayloadTooLarge):
        return TOO_LARGE
    if isinstance(error, UnsupportedMediaType):
        return UNSUPPORTED_MEDIA_TYPE
    if isinstance(error, Unauthorized):
        return UNAUTHORIZED
    if isinstance(error, Forbidden):
        return FORBIDDEN
    if isinstance(error, ServiceUnavailable):
        return QUEUE_UNAVAILABLE
    if isinstance(error, BadRequest):
        return rejection_reason(error.message)
    return OTHER


# How often a process moves ingest's tally to prometheus_client.
FLUSH_SECONDS = 0.5


class _IngestTally:
    """Ingest's accepted requests since the last flush: readings, and the request-duration histogram's
    bucket counts and sum, as prometheus_client's Histogram keeps them (a value falls in the first bucket
    whose upper bound it does not exceed; the last bucket is +Inf)."""

    def __init__(self, bounds: tuple[float, ...]):
        self._lock = threading.Lock()
        self._bounds = bounds
        self._reset()

    def _reset(self) -> None:
        self.readings = 0
        self.buckets = [0] * (len(self._bounds) + 1)
        self.seconds = 0.0

    def add(self, readings: int, seconds: float) -> None:
        bucket = bisect_left(self._bounds, seconds)
        with self._lock:
            self.readings += readings
            self.buckets[bucket] += 1
            self.seconds += seconds

    def take(self) -> tuple[int, list[int], float]:
        with self._lock:
            taken = self.readings, self.buckets, self.seconds
            self._reset()
        return taken


class _Metrics:
    """The metric objects of one process (created by ``enable``)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.accepted = Counter(
            "iot_ingest_readings_accepted",
            "Readings ingest queued and the broker acknowledged (answered 200)",
        )
        rejected = Counter(
            "iot_ingest_requests_rejected",
            "Ingest requests refused, by reason (nothing of them queued)",
            ["reason"],
        )
        self.ingest_rejected = {reason: rejected.labels(reason) for reason in INGEST_REASONS}
        self.request_seconds = Histogram(
            "iot_ingest_request_duration_seconds",
            "Time ingest took per request, from the event to the answer (refused ones too)",
            buckets=REQUEST_BUCKETS,
        )
        self.tally = _IngestTally(REQUEST_BUCKETS)
        self.stored = Counter("iot_consumer_readings_stored", "Readings the consumer stored (new rows)")
        self.duplicates = Counter(
            "iot_consumer_readings_duplicate",
            "Readings the consumer found stored already (resent or redelivered)",
        )
        consumer_rejected = Counter(
            "iot_consumer_readings_rejected",
            "Readings (or unreadable messages) the consumer kept in rejected_message, by reason",
            ["reason"],
        )
        self.consumer_rejected = {reason: consumer_rejected.labels(reason) for reason in CONSUMER_REASONS}
        self.batch_failures = Counter(
            "iot_consumer_batch_failures", "Batches the consumer failed on (retried by the trigger loop)"
        )
        self.stored_seconds = Histogram(
            "iot_ack_to_stored_seconds",
            "Time from ingest queueing a message (just before the broker's acknowledgement) to its readings"
            " being stored, per message",
            buckets=STORED_BUCKETS,
        )
        # A partition is read by one trigger loop at a time; after a rebalance its new owner's values are
        # the most recent, and a stopped loop's are dropped (mark_process_dead).
        self.lag = Gauge(
            "iot_consumer_lag_messages",
            "Messages in a partition not yet stored and committed by the consumer group",
            ["topic", "partition"],
            multiprocess_mode="livemostrecent",
        )
        self.oldest_age = Gauge(
            "iot_consumer_oldest_unconsumed_age_seconds",
            "Age of the oldest message of a partition not yet stored (0 when none waits)",
            ["topic", "partition"],
            multiprocess_mode="livemostrecent",
        )

        self.evaluation_failures = Counter(
            "iot_alert_evaluation_failures",
            "Batches whose alert evaluation failed (stored anyway; the maintenance pass judges them)",
        )
        self.notification_failures = Counter(
            "iot_alert_notification_failures",
            "Alert notifications a destination did not take (each is tried again later)",
        )

    def flush(self) -> None:
        """Move ingest's tally to prometheus_client. The histogram takes bucket counts through its
        children (``_buckets``, ``_sum``: how it stores them since its first release), the only way to add
        many observations at once."""
        readings, buckets, seconds = self.tally.take()
        if readings:
            self.accepted.inc(readings)
        if any(buckets):
            histogram = self.request_seconds
            for child, count in zip(histogram._buckets, buckets, strict=True):
                if count:
                    child.inc(count)
            histogram._sum.inc(seconds)


_metrics: _Metrics | None = None
_lock = threading.Lock()


def enable() -> None:
    """Start recording in this process (idempotent). With PROMETHEUS_MULTIPROC_DIR set, the values go to
    files there that ``exposition`` reads together with every other process's."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
            if os.environ.get(MULTIPROC_DIR):
                atexit.register(_mark_dead, os.getpid())
            atexit.register(flush)  # runs first (atexit is last in, first out)
            threading.Thread(
                target=_flush_every, args=(FLUSH_SECONDS,), name="metrics-flush", daemon=True
            ).start()


def _flush_every(seconds: float) -> None:
    stopped = threading.Event()
    while not stopped.wait(seconds):
        flush()


def flush() -> None:
    """Move what this process tallied to prometheus_client now (and at exit, and every FLUSH_SECONDS)."""
    metrics = _metrics
    if metrics is not None:
        metrics.flush()


def enabled() -> bool:
    return _metrics is not None


# --- recording --------------------------------------------------------------------------------


def ingest_accepted(readings: int, seconds: float) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.tally.add(readings, seconds)


def ingest_rejected(reason: str, seconds: float) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.ingest_rejected.get(reason, metrics.ingest_rejected[OTHER]).inc()
        metrics.request_seconds.observe(seconds)


def consumer_stored(
    stored: int, duplicates: int, rejected: Iterable[str], stored_seconds: Iterable[float]
) -> None:
    """One batch stored: its counts, the reason of each rejected reading, and per message the time
    since ingest queued it."""
    metrics = _metrics
    if metrics is None:
        return
    metrics.stored.inc(stored)
    metrics.duplicates.inc(duplicates)
    for reason in rejected:
        metrics.consumer_rejected.get(reason, metrics.consumer_rejected[INVALID_READING]).inc()
    for seconds in stored_seconds:
        metrics.stored_seconds.observe(seconds)


def consumer_failed() -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.batch_failures.inc()


def alert_evaluation_failed() -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.evaluation_failures.inc()


def alert_notifications_failed(count: int) -> None:
    metrics = _metrics
    if metrics is not None and count:
        metrics.notification_failures.inc(count)


def partition_backlog(topic: str, partition: int, lag: int, oldest_age_seconds: float) -> None:
    metrics = _metrics
    if metrics is not None:
        label = str(partition)
        metrics.lag.labels(topic, label).set(lag)
        metrics.oldest_age.labels(topic, label).set(oldest_age_seconds)


def partition_released(topic: str, partition: int) -> None:
    """This process no longer reads the partition (a rebalance gave it to another): stop showing it.
    In multiprocess mode there is nothing to do (prometheus_client cannot remove a value there): the
    partition's new owner writes it every second, and the most recent value is the one shown."""
    metrics = _metrics
    if metrics is None or os.environ.get(MULTIPROC_DIR):
        return
    for gauge in (metrics.lag, metrics.oldest_age):
        try:
            gauge.remove(topic, str(partition))
        except KeyError:
            pass


# --- exposition -------------------------------------------------------------------------------

_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _mark_dead(pid: int) -> None:
    directory = os.environ.get(MULTIPROC_DIR)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


def sweep_dead_processes(directory: str | Path) -> list[int]:
    """Mark the processes that left values in ``directory`` and are gone (killed, or a shim worker the
    server replaced) as dead: their gauges stop counting, their counters stay. Returns their pids."""
    from prometheus_client import multiprocess

    dead = set()
    for path in Path(directory).glob("gauge_live*.db"):
        found = _LIVE_FILE.fullmatch(path.name)
        if found and not _alive(int(found.group(1))):
            dead.add(int(found.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return sorted(dead)


def prepare_directory(directory: str | Path) -> Path:
    """An empty multiprocess directory: what processes of an earlier run left would count again."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _registry():
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return REGISTRY
    sweep_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry


# What the database knows, read at each scrape: gauges no process could keep (a value of the whole
# service, whichever process changed it). Name -> help.
DATABASE_GAUGES = {"iot_alerts_open": "Alerts open now, of every rule and device (from the database)"}


def exposition(database: Callable[[], dict[str, float]] | None = None) -> tuple[bytes, str]:
    """The metrics in Prometheus's text format and its content type: every process sharing this one's
    multiprocess directory, or this process alone without one; then ``database()``'s values of
    DATABASE_GAUGES, left out when the database does not answer (the scrape still shows the rest)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    body = generate_latest(_registry())
    if database is not None:
        try:
            values = database()
        except Exception as error:  # a scrape must not fail because PostgreSQL is away
            log.warning("the database's gauges are left out of /metrics: %s", error)
            values = {}

        class _Database:
            def collect(self):
                for name, value in values.items():
                    yield GaugeMetricFamily(name, DATABASE_GAUGES[name], value=value)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Database())
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serve ``exposition`` on ``host:port`` from a daemon thread (a process without the shim's port)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=_registry())
