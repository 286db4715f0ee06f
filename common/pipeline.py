"""GET /api/pipeline: the pipeline's health from what outlives any one function instance.

In the cloud every invocation may land on another instance, so counters kept in a process say nothing
about the service. This answer is built from the two places that see every reading:

- **PostgreSQL**: readings stored per minute over the last minutes, by each reading's own timestamp (so
  live readings; a backfill of old readings does not show here): from the per-minute rollup as far as
  maintenance has rolled readings up, from the readings themselves after that; and the
  messages the consumer rejected per minute and in all (``rejected_message``).
- **Kafka**, where it answers within ``KAFKA_TIMEOUT``: per partition the end offset (messages ever
  queued) and the consumer group's committed offset; their difference is the lag. The end offsets'
  sum only grows, so a client polling it gets the messages queued per second.

The Kafka half is remembered for ``KAFKA_CACHE_SECONDS`` per process, so many open dashboards cost the
broker one lookup per instance every few seconds. Either half that does not answer is left out with the
reason, and the other is still given.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.errors import KafkaError

from .apig import ApigRequest
from .errors import ServiceUnavailable
from .producer import client_security
from .runtime import current
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

WINDOW_MINUTES = 15
KAFKA_TIMEOUT_MS = 2000
KAFKA_CACHE_SECONDS = 5.0
# Groups looked at when KAFKA_CONSUMER_GROUP does not name the consumer's (the DMS trigger's group name
# is not documented, docs/functiongraph.md, section 9): those that committed offsets on the topic.
MAX_GROUPS = 20
# The most recent rejected messages looked at for the per-minute counts: the table's key walked backwards,
# never the whole table.
RECENT_REJECTED = 10_000

# Series that reported within the window (latest_reading: one row per series), each read from the
# rollup's key over the window only: no scan of the rollup partition however large the fleet's history.
_STORED_PER_MINUTE = """
    WITH active AS (
        SELECT device_id, metric_type FROM latest_reading WHERE timestamp >= %(since)s
    ), bound AS (
        SELECT greatest(least(rolled_before, %(until)s), %(since)s) AS rolled FROM rollup_horizon
    )
    SELECT minute, sum(readings)::bigint FROM (
        SELECT r.bucket AS minute, r.count AS readings
        FROM active l CROSS JOIN bound CROSS JOIN LATERAL (
            SELECT bucket, count FROM rollup_1m
            WHERE device_id = l.device_id COLLATE "default" AND metric_type = l.metric_type
              AND bucket >= %(since)s AND bucket < bound.rolled
        ) r
        UNION ALL
        SELECT date_bin('1 minute', r.timestamp, timestamptz 'epoch'), 1
        FROM active l CROSS JOIN bound CROSS JOIN LATERAL (
            SELECT timestamp FROM reading
            WHERE device_id = l.device_id COLLATE "default" AND metric_type = l.metric_type
              AND timestamp >= bound.rolled AND timestamp < %(until)s
        ) r
    ) counted
    GROUP BY minute
    ORDER BY minute
"""

_REJECTED_PER_MINUTE = f"""
    SELECT date_bin('1 minute', received_at, timestamptz 'epoch') AS minute, count(*)
    FROM (SELECT received_at FROM rejected_message ORDER BY id DESC LIMIT {RECENT_REJECTED}) recent
    WHERE received_at >= %(since)s
    GROUP BY minute
    ORDER BY minute
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _per_minute(rows, since: datetime, minutes: int) -> list[dict]:
    """One entry per minute of the window, oldest first, zero where nothing happened."""
    counts = {bucket: int(count) for bucket, count in rows}
    return [
        {"minute": _iso(since + timedelta(minutes=n)), "count": counts.get(since + timedelta(minutes=n), 0)}
        for n in range(minutes)
    ]


def database_view(conn: psycopg.Connection, now: datetime, minutes: int = WINDOW_MINUTES) -> dict:
    """Stored readings and rejected messages per minute over the ``minutes`` before ``now``'s minute
    (that minute itself is still filling), and the rejected messages in all."""
    until = now.replace(second=0, microsecond=0)
    since = until - timedelta(minutes=minutes)
    params = {"since": since, "until": until}
    stored = _per_minute(conn.execute(_STORED_PER_MINUTE, params).fetchall(), since, minutes)
    rejected = _per_minute(conn.execute(_REJECTED_PER_MINUTE, params).fetchall(), since, minutes)
    (rejected_total,) = conn.execute("SELECT count(*) FROM rejected_message").fetchone()
    last = stored[-1]["count"] if stored else 0
    return {
        "stored": {"per_minute": stored, "per_second": round(last / 60, 2)},
        "rejected": {"per_minute": rejected, "total": rejected_total},
    }


def _committed(admin: KafkaAdminClient, topic: str, wanted: str) -> dict[str, dict[int, int]]:
    """Committed offsets on ``topic`` per group: the named group's, or of every group that has some."""
    groups = [wanted] if wanted else [group["group_id"] for group in admin.list_groups()][:MAX_GROUPS]
    if not groups:
        return {}
    found: dict[str, dict[int, int]] = {}
    for group, offsets in admin.list_group_offsets({group: None for group in groups}).items():
        mine = {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }
        if mine or group == wanted:
            found[group] = mine
    return found


def kafka_view(settings: Settings, timeout_ms: int = KAFKA_TIMEOUT_MS) -> dict:
    """End offsets and the consumer group's committed offsets of the readings topic, per partition.
    Raises ServiceUnavailable when the broker does not answer within about ``timeout_ms``."""
    topic = settings.kafka_topic
    try:
        admin = KafkaAdminClient(
            **client_security(settings),
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            client_id="iot-pipeline",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except SettingsError as error:
        raise ServiceUnavailable(str(error)) from error
    except KafkaError as error:
        raise ServiceUnavailable("The Kafka broker cannot be reached") from error
    try:
        described = admin.describe_topics([topic])
        partitions = sorted(
            p["partition_index"] for t in described if t.get("error_code", 0) == 0 for p in t["partitions"]
        )
        if not partitions:
            raise ServiceUnavailable(f"The Kafka topic {topic!r} does not exist")
        ends = admin.list_partition_offsets(
            {TopicPartition(topic, p): OffsetSpec.LATEST for p in partitions}, timeout_ms=timeout_ms
        )
        groups = _committed(admin, topic, settings.kafka_consumer_group)
    except KafkaError as error:
        raise ServiceUnavailable("The Kafka broker does not answer") from error
    finally:
        admin.close()
    end_offsets = {tp.partition: found.offset for tp, found in ends.items()}
    return {
        "topic": topic,
        "messages_total": sum(end_offsets.values()),
        "groups": [_group(name, committed, end_offsets) for name, committed in sorted(groups.items())],
    }


def _group(name: str, committed: dict[int, int], end_offsets: dict[int, int]) -> dict:
    """A group's position: per partition its committed offset and lag (a partition it never committed
    on lags by everything the partition holds: a group that starts reading begins at the earliest)."""
    partitions = []
    for partition, end in sorted(end_offsets.items()):
        offset = committed.get(partition)
        partitions.append(
            {
                "partition": partition,
                "end_offset": end,
                "committed": offset,
                "lag": max(0, end - (offset or 0)),
            }
        )
    return {"group": name, "lag": sum(p["lag"] for p in partitions), "partitions": partitions}


class _KafkaCache:
    """The last Kafka view (or the reason there is none) for ``KAFKA_CACHE_SECONDS``, per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: object = None
        self._at = 0.0
        self._answer: dict = {}

    def get(self, settings: Settings) -> dict:
        key = (settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_consumer_group)
        with self._lock:
            age = time.monotonic() - self._at
            if self._key == key and age < KAFKA_CACHE_SECONDS:
                return {**self._answer, "checked_seconds_ago": round(age, 1)}
            try:
                answer = {"available": True, **kafka_view(settings)}
            except ServiceUnavailable as error:
                log.warning("pipeline view without Kafka: %s", error.message)
                answer = {"available": False, "error": error.message}
            self._key, self._at, self._answer = key, time.monotonic(), answer
            return {**answer, "checked_seconds_ago": 0.0}


_kafka = _KafkaCache()


def pipeline(request: ApigRequest) -> dict:
    """GET /api/pipeline: readings stored and messages rejected per minute, and the consumer's lag.
    Any credential may read it (it names no device). Each half answers without the other: while
    PostgreSQL is down the lag is what an operator most needs to see grow."""
    runtime = current()
    runtime.caller(request)  # 401 without a credential
    now = datetime.now(timezone.utc)
    try:
        view = runtime.store.read(lambda conn: database_view(conn, now))
        database = {"available": True}
    except ServiceUnavailable as error:
        view = {"stored": None, "rejected": None}
        database = {"available": False, "error": error.message}
    kafka = _kafka.get(runtime.settings)
    groups = kafka.get("groups") or []
    return {
        "generated_at": _iso(now),
        "window_minutes": WINDOW_MINUTES,
        **view,
        "database": database,
        "lag": groups[0]["lag"] if len(groups) == 1 else None,
        "kafka": kafka,
    }
