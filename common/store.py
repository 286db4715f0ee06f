"""PostgreSQL: the readings, the latest value per (device, metric), and rejected messages.

A reading is identified by (device_id, metric_type, timestamp): storing the same reading twice is
a no-op, so redelivered Kafka messages are harmless. The latest-value table only moves forward in
time, so late and out-of-order readings land in the history without replacing a newer latest.

Each kind of work connects as the least role that can do it: reads (and credential lookups) as the
reader, which may only SELECT, under a statement timeout; delete-all as the writer; storing, the
credentials and migrations as the schema's owner. Nothing migrates by itself: the functions and tools
that own the schema call ``migrate`` (common/schema.py grants the two roles their rights).
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from . import schema
from .errors import BadRequest, ServiceUnavailable
from .readings import SMOKE_DEVICE_ID, MetricType, Reading, glob_like
from .schema import ROLLUPS
from .settings import Settings
from .timeseries import EPOCH

log = logging.getLogger(__name__)

# A batch travels by binary COPY into this per-connection scratch table (created when the pool opens
# a connection; emptied at every commit): a tenth of the client CPU of array parameters, twice the rows/s.
_INCOMING = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    device_id text, metric_type text, value float8, timestamp timestamptz
) ON COMMIT DELETE ROWS
"""
_COPY_INCOMING = "COPY incoming (device_id, metric_type, value, timestamp) FROM STDIN (FORMAT BINARY)"

# A batch is nearly always new readings: Kafka redelivers only after a failure or a rebalance. So
# storing first tries plain inserts, which fail on the first reading that is already stored; only
# then are the stored ones (and repeats within the batch) removed from the batch and the rest stored
# the same way. Checking every reading for a conflict first costs a second index search per row, a
# large part of storing. Inserts go in key order, so consumers storing at the same time take index
# locks in the same order. Whatever reaches the statements below was inserted: the latest values,
# rollups and counts are moved forward from exactly those rows, in the same transaction.
# The batch is sorted once and every step reads it in that order: PostgreSQL 17 and later know the
# order and sort only within a series where a step needs another (three full sorts of the batch were
# a large part of storing it).
_BATCH = """
SELECT device_id, metric_type::metric_type AS metric_type, value, timestamp FROM incoming
ORDER BY device_id, metric_type, timestamp
"""
_INSERT_NEW = """
INSERT INTO reading (device_id, metric_type, value, timestamp) SELECT * FROM batch
"""
_DROP_STORED = """
DELETE FROM incoming i USING reading r
WHERE r.device_id = i.device_id AND r.metric_type = i.metric_type::metric_type AND r.timestamp = i.timestamp
"""
_DROP_REPEATS = """
DELETE FROM incoming a USING incoming b
WHERE a.device_id = b.device_id AND a.metric_type = b.metric_type AND a.timestamp = b.timestamp
  AND a.ctid > b.ctid
"""
# DISTINCT ON keeps the newest row of each series in the batch (which is sorted so already).
_MOVE_LATEST = """
INSERT INTO latest_reading AS l (device_id, metric_type, value, timestamp)
SELECT DISTINCT ON (device_id, metric_type) device_id, metric_type, value, timestamp
FROM batch ORDER BY device_id, metric_type, timestamp DESC
ON CONFLICT (device_id, metric_type) DO UPDATE
    SET value = excluded.value, timestamp = excluded.timestamp
    WHERE l.timestamp < excluded.timestamp
RETURNING device_id, xmax = 0 AS new_series
"""
# A device's first series is its first reading: rare, so the device list costs batches nothing.
_NEW_DEVICES = """
INSERT INTO device (device_id)
SELECT DISTINCT device_id FROM moved WHERE new_series ORDER BY device_id
ON CONFLICT DO NOTHING
"""
# Rollups: the finest level is aggregated from the readings once, the coarser ones from its rows
# (aggregating every reading again for each level doubled PostgreSQL's CPU per batch).
_FINEST = """
SELECT device_id, metric_type,
       date_bin('{width} seconds', timestamp, timestamptz 'epoch') AS bucket,
       count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
       min(timestamp) AS first_time, (array_agg(value ORDER BY timestamp))[1] AS first_value,
       max(timestamp) AS last_time, (array_agg(value ORDER BY timestamp DESC))[1] AS last_value
FROM {rows}
GROUP BY 1, 2, 3
"""
_COARSER = """
SELECT device_id, metric_type, date_bin('{width} seconds', bucket, timestamptz 'epoch') AS bucket,
       sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
       min(first_time) AS first_time, (array_agg(first_value ORDER BY first_time))[1] AS first_value,
       max(last_time) AS last_time, (array_agg(last_value ORDER BY last_time DESC))[1] AS last_value
FROM finest
GROUP BY 1, 2, 3
"""
_MERGE = """
INSERT INTO {table} AS r
    (device_id, metric_type, bucket, count, sum, min, max, first_time, first_value, last_time, last_value)
{rows} ORDER BY 1, 2, 3
ON CONFLICT (device_id, metric_type, bucket) DO UPDATE SET
    count = r.count + excluded.count,
    sum = r.sum + excluded.sum,
    min = least(r.min, excluded.min),
    max = greatest(r.max, excluded.max),
    first_value = CASE WHEN excluded.first_time < r.first_time THEN excluded.first_value ELSE r.first_value END,
    first_time = least(r.first_time, excluded.first_time),
    last_value = CASE WHEN excluded.last_time > r.last_time THEN excluded.last_value ELSE r.last_value END,
    last_time = greatest(r.last_time, excluded.last_time)
"""
# Readings per UTC day for the stats, counted by every batch; spread over shards so that concurrent
# batches rarely wait for one another's row lock. The deploy command's smoke readings are not counted.
COUNT_SHARDS = 16
_COUNT = """
INSERT INTO reading_count AS c (day, shard, readings)
SELECT (timestamp AT TIME ZONE 'UTC')::date, %(shard)s, count(*) FROM {rows}
WHERE device_id <> %(smoke)s {condition}
GROUP BY 1 ORDER BY 1
ON CONFLICT (day, shard) DO UPDATE SET readings = c.readings + excluded.readings
"""
# Batches share this lock; the backfill of old data and the roll-up of new data take it alone: each
# reading is rolled up either by its batch or by maintenance, never both and never neither.
ROLLUP_LOCK = 0x10770002
_SINCE_HORIZON = "timestamp >= (SELECT complete_from FROM rollup_horizon)"
# Rollups hold every reading before this instant (the maintenance pass moves it up): a batch merges
# only its readings before it (late data), the rest wait for the roll-up.
_BEFORE_ROLLED = "timestamp < (SELECT rolled_before FROM rollup_horizon)"


def rollup_steps(rows: str) -> dict[str, str]:
    """The steps of a statement (name -> body) that merge the readings of ``rows`` (what follows
    FROM) into every rollup level: a batch's late readings, the readings maintenance rolls up, or a
    range's when rollups are backfilled (common.maintenance)."""
    (finest_table, finest_width), *coarser = ROLLUPS
    steps = {
        "finest": "(" + _FINEST.format(width=int(finest_width.total_seconds()), rows=rows) + ")",
        "level_0": "(" + _MERGE.format(table=finest_table, rows="SELECT * FROM finest") + ")",
    }
    for level, (table, width) in enumerate(coarser, start=1):
        coarser_rows = _COARSER.format(width=int(width.total_seconds()))
        steps[f"level_{level}"] = "(" + _MERGE.format(table=table, rows=coarser_rows) + ")"
    return steps


def count_step(rows: str, condition: str = "") -> dict[str, str]:
    """The step that adds the readings of ``rows`` (those ``condition`` keeps) to the per-day counts."""
    return {
        "counted": "(" + _COUNT.format(rows=rows, condition=f"AND {condition}" if condition else "") + ")"
    }


# The stored readings of [from, to), found per series that has had a reading since ``from`` (its
# latest value is that new): an index range per active series, where there is no index on time alone.
# The series list's ids are in "C" order, the readings' in the database's: compare in the readings'.
# Readings below the backfill horizon are left to the backfill, which rolls up all of its range.
ROLL_UP_ROWS = """(
SELECT r.device_id, r.metric_type, r.value, r.timestamp FROM latest_reading s CROSS JOIN LATERAL (
    SELECT device_id, metric_type, value, timestamp FROM reading r
    WHERE r.device_id = s.device_id COLLATE "default" AND r.metric_type = s.metric_type
      AND r.timestamp >= greatest(%(from)s, (SELECT complete_from FROM rollup_horizon))
      AND r.timestamp < %(to)s) AS r
WHERE s.timestamp >= %(from)s) AS fresh"""


def roll_up_statement() -> str:
    """Merge the readings of [%(from)s, %(to)s) into every rollup level; answers how many (the caller
    holds ROLLUP_LOCK alone and moves rolled_before to %(to)s in the same transaction)."""
    return statement(rollup_steps(ROLL_UP_ROWS), "SELECT coalesce(sum(count), 0)::bigint FROM finest")


def statement(steps: dict[str, str], answer: str) -> str:
    """``WITH`` every step (in order: a step reads only those before it), then ``answer``."""
    return "WITH " + ",\n".join(f"{name} AS {body}" for name, body in steps.items()) + "\n" + answer


def store_statement(since: str = "") -> str:
    """One statement that stores ``incoming`` (failing on a reading stored already), moves the latest
    values, adds new devices to the list, counts the readings per day and merges the late ones (before
    rolled_before; while old data is backfilled, only those at or after the horizon too, ``since``) into
    every rollup level. Answers (readings stored, latest values moved)."""
    late = f"batch WHERE {_BEFORE_ROLLED}" + (f" AND {since}" if since else "")
    steps = {
        "batch": "MATERIALIZED (" + _BATCH + ")",
        "stored": "(" + _INSERT_NEW + ")",
        "moved": "(" + _MOVE_LATEST + ")",
        "new_devices": "(" + _NEW_DEVICES + ")",
        **count_step("batch", since),
        **rollup_steps(late),
    }
    return statement(steps, "SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM moved)")


# -- reads -------------------------------------------------------------------------------------
_NEGATIVE_INFINITY = datetime.min.replace(tzinfo=schema.UTC)
_INFINITY = datetime.max.replace(tzinfo=schema.UTC)

# A page of one metric: an ordered walk of the primary key, across the monthly partitions in time order.
_HISTORY_ONE_METRIC = """
SELECT metric_type::text, value, timestamp FROM reading
WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type
  AND timestamp >= %(start)s AND timestamp < %(upper)s
ORDER BY timestamp DESC LIMIT %(limit)s
"""
# Across metrics: one ordered walk of the primary key per metric, merged by time (a Merge Append
# that reads each walk only as far as the page needs). Each metric has its own upper bound, because
# after the position (t, m) a metric ordered after m may still show a reading at exactly t.
_HISTORY_METRIC_WALK = """
(SELECT %(metric_{i})s::text AS metric_type, value, timestamp FROM reading
 WHERE device_id = %(device)s AND metric_type = %(metric_{i})s::metric_type
   AND timestamp >= %(start)s AND timestamp {op} %(upper)s
 ORDER BY timestamp DESC LIMIT %(limit)s)
"""
# A tie at the page's last timestamp holds at most one reading per metric: fetching this many more,
# ordered by time alone, always includes the whole tie, which Python then orders by metric.
_TIE = len(MetricType.names())
_METRIC_RANK = {name: rank for rank, name in enumerate(MetricType.names())}


def _history_all_metrics(after_metric: str | None) -> str:
    walks = []
    for i, metric in enumerate(MetricType.names()):
        later = after_metric is not None and _METRIC_RANK[metric] > _METRIC_RANK[after_metric]
        walks.append(_HISTORY_METRIC_WALK.format(i=i, op="<=" if later else "<"))
    return " UNION ALL ".join(walks) + " ORDER BY timestamp DESC LIMIT %(limit)s"


# Rollup rows for the whole rollup buckets in [rollup_from, rollup_to), raw readings for the rest of
# [start, end); then grouped by the local bucket start and the UTC offset of each row. Every zone's
# offset is a multiple of 15 minutes and changes on such a boundary, so no rollup row spans two local
# buckets or two offsets. The origin is a Monday: 7-day buckets are ISO weeks.
_SERIES = """
WITH rows AS (
    SELECT bucket AS t, count, sum, min, max, first_time, first_value, last_time, last_value
    FROM {table}
    WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type
      AND bucket >= %(rollup_from)s AND bucket < %(rollup_to)s
    UNION ALL
    SELECT timestamp, 1, value, value, value, timestamp, value, timestamp, value FROM reading
    WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type
      AND timestamp >= %(start)s AND timestamp < %(rollup_from)s
    UNION ALL
    SELECT timestamp, 1, value, value, value, timestamp, value, timestamp, value FROM reading
    WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type
      AND timestamp >= %(rollup_to)s AND timestamp < %(end)s
), local AS (
    SELECT *, t AT TIME ZONE %(zone)s AS wall, (t AT TIME ZONE %(zone)s) - (t AT TIME ZONE 'UTC') AS offset
    FROM rows
)
SELECT date_bin(%(step)s::interval, wall, timestamp '2000-01-03') AS local_start, "offset",
       sum(count)::bigint, sum(sum), min(min), max(max),
       min(first_time), (array_agg(first_value ORDER BY first_time))[1],
       max(last_time), (array_agg(last_value ORDER BY last_time DESC))[1]
FROM local GROUP BY 1, 2 ORDER BY 1, 2
"""
# Each device's latest values as one JSON text, made by PostgreSQL (building thousands of Python objects
# per page cost more than the query).
_DEVICE_JSON = """
SELECT l.device_id, json_build_object(
    'device_id', l.device_id,
    'metrics', json_object_agg(l.metric_type, json_build_object('value', l.value, 'timestamp', l.timestamp)
                               ORDER BY l.metric_type),
    'last_updated', max(l.timestamp))::text
FROM latest_reading l
"""
# The next devices in byte order from the device list, then their latest values. Both are walks of a
# primary key, whatever the size of the fleet.
_DEVICES_PAGE = (
    """
WITH page AS (
    SELECT device_id FROM device
    WHERE device_id > %(after)s AND device_id >= %(low)s AND device_id < %(high)s
      AND starts_with(device_id, %(prefix)s) AND device_id <> %(smoke)s
    ORDER BY device_id LIMIT %(limit)s
)"""
    + _DEVICE_JSON
    + """
WHERE l.device_id > %(after)s
  AND l.device_id <= (SELECT max(device_id) FROM page) AND l.device_id IN (SELECT device_id FROM page)
GROUP BY l.device_id ORDER BY l.device_id
"""
)
# A scoped page's devices may lie far apart in the key: their latest values are looked up one by one.
_SCOPED_DEVICES_JSON = (
    _DEVICE_JSON
    + """
WHERE l.device_id = ANY(ARRAY(SELECT device_id FROM page))
GROUP BY l.device_id ORDER BY l.device_id
"""
)
# A scope's devices, and their readings today (UTC) from the day's rollup rows as far as they are rolled
# up, and the readings after: probes per device and metric, where a scan of the day's rows would read
# the whole fleet's. The device list's ids are in "C" order, the rollups' in the database's: the probe
# must compare in the rollups' to use their key.
_SCOPED_STATS = """,
day AS (
    SELECT date_trunc('day', now(), 'UTC') AS start, date_trunc('day', now(), 'UTC') + interval '1 day' AS end,
           (SELECT rolled_before FROM rollup_horizon) AS rolled_before
)
SELECT (SELECT count(*) FROM scoped),
       (SELECT coalesce(sum(coalesce(rolled.readings, 0) + fresh.readings), 0)
        FROM scoped CROSS JOIN day CROSS JOIN LATERAL (
            SELECT sum(r.count) AS readings FROM {table} r
            WHERE r.device_id = scoped.device_id COLLATE "default"
              AND r.metric_type = ANY(%(metrics)s::metric_type[])
              AND r.bucket >= day.start AND r.bucket < least(day.end, day.rolled_before)) AS rolled
        CROSS JOIN LATERAL (
            SELECT count(*) AS readings FROM reading r
            WHERE r.device_id = scoped.device_id COLLATE "default"
              AND r.metric_type = ANY(%(metrics)s::metric_type[])
              AND r.timestamp >= greatest(day.start, day.rolled_before) AND r.timestamp < day.end) AS fresh)
"""
_WILDCARD = re.compile(r"[*?]")


def _prefix_range(prefix: str) -> tuple[str, str]:
    """The key range of the ids that start with ``prefix``: ids are ASCII (readings.parse_device_id),
    so every one of them sorts below prefix + DEL."""
    return prefix, prefix + "\x7f"


@dataclass(frozen=True)
class DeviceScope:
    """The devices some globs match, as SQL over the device list's primary key: exact ids (globs
    without wildcards, as device and gateway tokens hold) as one array of index probes, and each
    glob with wildcards as a walk of the key range its literal prefix spans, filtered by LIKE."""

    exact: tuple[str, ...]
    patterns: tuple[str, ...]

    @classmethod
    def of(cls, scope: Sequence[str] | None) -> DeviceScope | None:
        """The scope of ``scope``'s globs; None when it is every device."""
        if scope is None or "*" in scope:
            return None
        exact = sorted({glob for glob in scope if not _WILDCARD.search(glob)})
        patterns = sorted(set(scope) - set(exact))
        return cls(tuple(exact), tuple(patterns))

    def select(
        self, params: dict, *, prefix: str = "", after: bool = False, limit: bool = False
    ) -> str | None:
        """A SELECT of the distinct matching ids that start with ``prefix``, not the smoke device, each
        part ``> %(after)s`` and cut at ``%(limit)s`` in key order when asked; adds its parameters to
        ``params``. None when no id can match."""
        params.setdefault("prefix", prefix)
        common = " AND starts_with(device_id, %(prefix)s) AND device_id <> %(smoke)s"
        if after:
            common += " AND device_id > %(after)s"
        cut = " ORDER BY device_id LIMIT %(limit)s" if limit else ""
        parts = []
        exact = [device for device in self.exact if device.startswith(prefix)]
        if exact:
            params["exact"] = exact
            parts.append(
                f"(SELECT device_id FROM device WHERE device_id = ANY(%(exact)s::text[]){common}{cut})"
            )
        for i, glob in enumerate(self.patterns):
            literal = _WILDCARD.split(glob, maxsplit=1)[0]
            if literal.startswith(prefix):
                low, high = _prefix_range(literal)
            elif prefix.startswith(literal):
                low, high = _prefix_range(prefix)
            else:
                continue  # the glob's ids and the prefix's have nothing in common
            params.update({f"low_{i}": low, f"high_{i}": high, f"like_{i}": glob_like(glob)})
            parts.append(
                f"(SELECT device_id FROM device WHERE device_id >= %(low_{i})s AND device_id < %(high_{i})s"
                f" AND device_id LIKE %(like_{i})s{common}{cut})"
            )
        if not parts:
            return None
        return "SELECT device_id FROM (" + " UNION ".join(parts) + ") AS matched"


def bucket_floor(moment: datetime, width) -> datetime:
    """``moment`` down to a multiple of ``width`` since the epoch (the rollups' buckets)."""
    return EPOCH + ((moment - EPOCH) // width) * width


def _ceil(moment: datetime, width) -> datetime:
    floor = bucket_floor(moment, width)
    return floor if floor == moment else floor + width


MAX_REJECTED_TEXT = 256 * 1024


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a huge payload is cut (and says so) rather than lost whole."""
    text = text.replace("\x00", "\\u0000")
    if len(text) > MAX_REJECTED_TEXT:
        text = text[:MAX_REJECTED_TEXT] + f"... [cut: {len(text)} characters in all]"
    return text


class LatestValue(NamedTuple):
    """A latest value as the API shows it. ``timestamp`` is ISO-8601 UTC text (``isoformat()``):
    strings of that one shape sort in time order, so they need no parsing to be compared. A tuple,
    because GET /api/devices builds thousands of them per request."""

    device_id: str
    metric_type: str
    value: float
    timestamp: str


@dataclass(frozen=True)
class StoreResult:
    stored: int  # new rows in the readings table
    duplicates: int  # readings that were already stored
    latest_moved: int  # latest values that moved forward


class TokenRecord(NamedTuple):
    """An active credential as stored (its hash aside)."""

    id: int
    name: str
    kind: str  # device (or gateway), admin or read
    # Device ids for a device or gateway token; device globs for a read key (none: every device).
    devices: tuple[str, ...]


# The database roles the store connects as (common/settings.py names their accounts).
OWNER, READER, WRITER = "owner", "reader", "writer"


def account(settings: Settings, role: str = OWNER) -> tuple[str, str]:
    """(user, password) of ``role``; a reader or writer without a user of its own is the owner."""
    user, password = {
        OWNER: (settings.db_user, settings.db_password),
        READER: (settings.db_reader_user, settings.db_reader_password),
        WRITER: (settings.db_writer_user, settings.db_writer_password),
    }[role]
    return (user, password) if user else (settings.db_user, settings.db_password)


def conninfo(settings: Settings, role: str = OWNER) -> str:
    """The libpq connection string for the settings' database as ``role`` (also for tools and tests)."""
    user, password = account(settings, role)
    return psycopg.conninfo.make_conninfo(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=user,
        password=password,
        connect_timeout=settings.connect_timeout,
        application_name=_application_name(role),
        # timestamptz values come back in the session's time zone: UTC, as the API shows them
        options="-c timezone=UTC" + _role_options(settings, role),
    )


def _application_name(role: str) -> str:
    """How a role's connections name themselves (pg_stat_activity) and their pool."""
    return "iot-metrics" if role == OWNER else f"iot-metrics-{role}"


def _role_options(settings: Settings, role: str) -> str:
    """What a role's sessions set besides the time zone: the reader's statement timeout (the migration
    also sets it on the role; here a changed setting applies at once, and where the role may not be
    altered)."""
    return f" -c statement_timeout={settings.db_read_timeout_ms}" if role == READER else ""


NOT_MIGRATED = (
    "The database schema is not migrated yet; run `python -m deploy migrate`, or start the consumer or"
    " maintenance function, whose initializers migrate it"
)


def _configure(conn: psycopg.Connection) -> None:
    conn.execute(_INCOMING)


T = TypeVar("T")


def _in_transaction(conn: psycopg.Connection, action: Callable[[psycopg.Connection], T]) -> T:
    """``action(conn)`` in a transaction, run again when PostgreSQL broke a deadlock by failing it."""
    for attempt in range(3):
        try:
            with conn.transaction():
                return action(conn)
        except psycopg.errors.DeadlockDetected:
            if attempt == 2:
                raise
            log.info("deadlock storing a batch; retrying")
    raise AssertionError("unreachable")


class ReadingStore:
    """Access to PostgreSQL through a lazily opened connection pool per database role."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pools: dict[str, ConnectionPool] = {}
        self._pools_lock = threading.Lock()
        self._rollups_complete = False

    # -- connections -------------------------------------------------------------------------
    def _conninfo(self) -> str:
        """The owner's connection string; the other roles' are made from it (a subclass that changes
        this, e.g. the search path, changes it for every role)."""
        return conninfo(self.settings)

    def _role_conninfo(self, role: str) -> str:
        if role == OWNER:
            return self._conninfo()
        params = psycopg.conninfo.conninfo_to_dict(self._conninfo())
        params["user"], params["password"] = account(self.settings, role)
        params["application_name"] = _application_name(role)
        params["options"] = (str(params.get("options") or "") + _role_options(self.settings, role)).strip()
        return psycopg.conninfo.make_conninfo(**params)

    def _pool(self, role: str) -> ConnectionPool:
        pool = self._pools.get(role)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(role)
                if pool is None:
                    pool = ConnectionPool(
                        self._role_conninfo(role),
                        min_size=1,
                        max_size=max(1, self.settings.db_pool_size),
                        kwargs={"autocommit": True},
                        # Only the owner stores batches, through the scratch table.
                        configure=_configure if role == OWNER else None,
                        check=ConnectionPool.check_connection,
                        timeout=self.settings.connect_timeout + 1,
                        open=False,
                        name=_application_name(role),
                    )
                    pool.open(wait=False)
                    self._pools[role] = pool
        return pool

    @property
    def pool(self) -> ConnectionPool:
        """The owner's pool."""
        return self._pool(OWNER)

    def _run(self, action: Callable[[psycopg.Connection], T], role: str = OWNER) -> T:
        """Run ``action(conn)`` on a pooled connection of ``role``; a dead database, a schema not
        migrated yet, a role without its rights and a read past the reader's timeout become 503s."""
        try:
            with self._pool(role).connection() as conn:
                return action(conn)
        except (PoolTimeout, psycopg.OperationalError) as error:
            if role == READER and isinstance(error, psycopg.errors.QueryCanceled):
                log.warning("a read ran past the reader's statement timeout: %s", error)
                raise ServiceUnavailable(
                    f"The database did not answer within {self.settings.db_read_timeout_ms} ms"
                    " (DB_READ_TIMEOUT_MS); try again, or ask for less (a shorter range)"
                ) from error
            log.warning("PostgreSQL unavailable: %s", error)
            raise ServiceUnavailable("The database is unavailable; try again shortly") from error
        except psycopg.errors.UndefinedTable as error:
            log.error("%s (%s)", NOT_MIGRATED, error)
            raise ServiceUnavailable(NOT_MIGRATED) from error
        except psycopg.errors.InsufficientPrivilege as error:
            user = account(self.settings, role)[0]
            log.error("database role %s lacks a right: %s", user, error)
            raise ServiceUnavailable(
                f"The database role {user} lacks a right it needs; run `python -m deploy migrate`"
                " (the migration grants the reader and writer roles their rights)"
            ) from error

    def run(self, action: Callable[[psycopg.Connection], T]) -> T:
        """``action(conn)`` on a pooled connection of the schema's owner (autocommit: the action opens
        its own transactions); a dead database becomes a 503."""
        return self._run(action)

    def read(self, action: Callable[[psycopg.Connection], T]) -> T:
        """``action(conn)`` on a pooled connection of the read-only role, under its statement timeout."""
        return self._run(action, READER)

    def write(self, action: Callable[[psycopg.Connection], T]) -> T:
        """``action(conn)`` on a pooled connection of the writer role (the query function's changes)."""
        return self._run(action, WRITER)

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    # -- schema ------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Bring the schema up to date, the reader and writer roles granted and the partitions ahead;
        safe from many processes at once. Returns the schema version."""
        settings = self.settings

        def role(user: str, password: str) -> schema.Role | None:
            return schema.Role(user, password) if user else None

        def apply(conn: psycopg.Connection) -> int:
            version = schema.migrate(
                conn,
                reader=role(settings.db_reader_user, settings.db_reader_password),
                writer=role(settings.db_writer_user, settings.db_writer_password),
                read_timeout_ms=settings.db_read_timeout_ms,
            )
            with conn.transaction():
                schema.ensure_partitions(conn, datetime.now(schema.UTC), settings.raw_retention_days)
            return version

        return self._run(apply)

    # -- writes ------------------------------------------------------------------------------
    def store(self, readings: Sequence[Reading]) -> StoreResult:
        """Store a batch once: duplicates skipped; latest values only moved forward; rollups and day
        counts merged from the rows inserted, in the same transaction."""
        if not readings:
            return StoreResult(0, 0, 0)

        def copy_incoming(conn: psycopg.Connection) -> None:
            with conn.cursor().copy(_COPY_INCOMING) as copy:
                copy.set_types(["text", "text", "float8", "timestamptz"])
                for r in readings:
                    copy.write_row((r.device_id, r.metric_type, r.value, r.timestamp))

        def insert(conn: psycopg.Connection, skip_stored: bool) -> StoreResult:
            copy_incoming(conn)
            if skip_stored:
                conn.execute(_DROP_REPEATS)
                conn.execute(_DROP_STORED)
            # Shared with every batch; the maintenance pass takes it alone to move a rollup boundary.
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
            since = "" if self._rollups_complete else self._since_horizon(conn)
            params = {"shard": random.randrange(COUNT_SHARDS), "smoke": SMOKE_DEVICE_ID}
            stored, moved = conn.execute(store_statement(since), params).fetchone()
            return StoreResult(stored, len(readings) - stored, moved)

        def store(conn: psycopg.Connection) -> StoreResult:
            skip_stored = False
            for attempt in range(4):
                try:
                    return _in_transaction(conn, lambda c, skip=skip_stored: insert(c, skip))
                except psycopg.errors.UniqueViolation:
                    # Some are stored already (a redelivery, one reading twice in the batch, or
                    # another consumer storing the same reading meanwhile).
                    skip_stored = True
                except psycopg.errors.CheckViolation as error:
                    # No partition for a reading's day (the maintenance pass has not run for a week,
                    # or the day was just dropped): create the days of this batch, then store again.
                    if attempt == 3 or "partition" not in str(error):
                        raise
                    times = [r.timestamp for r in readings]
                    with conn.transaction():
                        schema.ensure_raw_partitions(conn, min(times), max(times))
            raise AssertionError("unreachable")

        return self._run(store)

    def _since_horizon(self, conn: psycopg.Connection) -> str:
        """While rollups are backfilled below the horizon: roll up only the readings at or after it.
        Once complete, nothing is ever backfilled again (remembered)."""
        (complete,) = conn.execute(
            "SELECT complete_from = '-infinity'::timestamptz FROM rollup_horizon"
        ).fetchone()
        if complete:
            self._rollups_complete = True
            return ""
        return _SINCE_HORIZON

    def reject(self, rejected: Iterable[tuple[str, str, str]]) -> int:
        """Keep messages that cannot be readings: (topic, raw payload, reason), in one statement."""
        rows = [(topic, _storable(raw), _storable(reason)) for topic, raw, reason in rejected]
        if not rows:
            return 0
        topics, raws, reasons = (list(column) for column in zip(*rows, strict=True))

        def insert(conn: psycopg.Connection) -> int:
            conn.execute(
                "INSERT INTO rejected_message (topic, raw, reason)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])",
                (topics, raws, reasons),
            )
            return len(rows)

        return self._run(insert)

    # -- access tokens -----------------------------------------------------------------------
    # Issued and revoked by the tokens command as the owner (the writer has no rights on credentials);
    # looked up by every function as the reader.
    def save_token(self, token_hash: str, name: str, kind: str, devices: Sequence[str]) -> int:
        """Store a credential's hash; returns its id."""
        return self._run(
            lambda conn: conn.execute(
                "INSERT INTO api_token (token_hash, name, kind, devices) VALUES (%s, %s, %s, %s) RETURNING id",
                (token_hash, name, kind, list(devices)),
            ).fetchone()[0]
        )

    def find_token(self, token_hash: str) -> TokenRecord | None:
        """The active credential with this hash, or None."""
        return self._find_token("token_hash = %s", token_hash)

    def find_token_by_id(self, token_id: int) -> TokenRecord | None:
        """The active credential with this id, or None."""
        return self._find_token("id = %s", token_id)

    def _find_token(self, condition: str, value: object) -> TokenRecord | None:
        row = self.read(
            lambda conn: conn.execute(
                f"SELECT id, name, kind, devices FROM api_token WHERE {condition} AND revoked_at IS NULL",
                (value,),
            ).fetchone()
        )
        return None if row is None else TokenRecord(row[0], row[1], row[2], tuple(row[3]))

    def revoke_tokens(self, name: str) -> int:
        return self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE api_token SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,)
                ).rowcount
            )
        )

    def list_tokens(self) -> list[tuple]:
        """(name, kind, devices, created_at, revoked_at), oldest first; hashes are not shown."""
        return self._run(
            lambda conn: conn.execute(
                "SELECT name, kind, devices, created_at, revoked_at FROM api_token ORDER BY created_at, id"
            ).fetchall()
        )

    def delete_all(self) -> None:
        """Empty every data table (not the credentials), as the writer."""
        tables = ", ".join(schema.DATA_TABLES)
        self.write(lambda conn: conn.execute(f"TRUNCATE {tables}"))

    # -- reads -------------------------------------------------------------------------------
    def latest(self, device_id: str | None = None) -> list[LatestValue]:
        """Latest values of one device, or of every device, ordered by device and metric."""
        sql = "SELECT device_id, metric_type::text, value, timestamp FROM latest_reading"
        params: tuple = ()
        if device_id is not None:
            sql += " WHERE device_id = %s"
            params = (device_id,)
        sql += " ORDER BY device_id, metric_type"
        return self.read(
            lambda conn: [LatestValue(d, m, v, t.isoformat()) for d, m, v, t in conn.execute(sql, params)]
        )

    def history_page(
        self,
        device_id: str,
        metric_type: str | None,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, float, datetime]]:
        """Up to ``limit`` readings (metric_type, value, timestamp) in [start, end), newest first and
        then by metric, strictly after the position ``after`` (the last row of the previous page).

        A keyset page: each page starts where the previous ended, so readings stored meanwhile shift
        nothing. Across metrics it reads the primary key once per metric (no second index on
        (device_id, timestamp) to maintain on every insert) and merges."""
        upper = end
        after_metric = None
        if after is not None and (end is None or after[0] < end):
            upper, after_metric = after
        params = {
            "device": device_id,
            "metric": metric_type,
            "start": start or _NEGATIVE_INFINITY,
            "upper": upper or _INFINITY,
            "limit": limit,
        }
        if metric_type is not None:
            return self.read(lambda conn: conn.execute(_HISTORY_ONE_METRIC, params).fetchall())
        params["limit"] = limit + _TIE
        params.update({f"metric_{i}": metric for i, metric in enumerate(MetricType.names())})
        rows = self.read(lambda conn: conn.execute(_history_all_metrics(after_metric), params).fetchall())
        rows.sort(key=lambda row: (row[2], -_METRIC_RANK[row[0]]), reverse=True)
        return rows[:limit]

    def series_rows(
        self,
        device_id: str,
        metric_type: str,
        start: datetime,
        end: datetime,
        level: int,
        step: str,
        zone: str,
    ) -> list[tuple]:
        """Aggregates of one series in [start, end) grouped by local bucket: rows of (local bucket
        start, UTC offset, count, sum, min, max, first_time, first_value, last_time, last_value),
        grouped by the bucket's start on the local clock *and* the UTC offset in force, so that the
        caller can tell apart the two passes of a repeated hour (common.series).

        Reads the rollup ``ROLLUPS[level]`` for the whole buckets of that width inside the range that
        are rolled up (at or after the backfill horizon, before rolled_before), and raw readings for the
        rest (the edges, the newest minutes, and old data not yet rolled up)."""
        table, width = ROLLUPS[level]
        params = {
            "device": device_id,
            "metric": metric_type,
            "start": start,
            "end": end,
            "width": width,
            "step": step,
            "zone": zone,
        }

        def query(conn: psycopg.Connection) -> list[tuple]:
            horizon, rolled = conn.execute(
                "SELECT greatest(complete_from, %(start)s), least(rolled_before, %(end)s) FROM rollup_horizon",
                params,
            ).fetchone()
            first = _ceil(horizon, width)
            last = bucket_floor(rolled, width)
            if first >= last:
                first = last = end  # nothing whole: raw readings answer all of it
            try:
                return conn.execute(
                    _SERIES.format(table=table), {**params, "rollup_from": first, "rollup_to": last}
                ).fetchall()
            except psycopg.errors.InvalidParameterValue as error:
                # A zone this Python knows (tzdata) but the database's zone data does not yet.
                raise BadRequest(
                    f"tz {zone!r} is not known to the database; use another zone name"
                ) from error

        return self.read(query)

    def devices_page(
        self, after: str | None, prefix: str, limit: int, scope: Sequence[str] | None = None
    ) -> list[tuple[str, str]]:
        """(device_id, the device's JSON object) of up to ``limit`` devices after ``after`` in
        device-id (byte) order whose ids start with ``prefix`` and match one of the ``scope`` globs
        (None: every device); not the deploy command's smoke device."""
        params = {"after": after or "", "prefix": prefix, "smoke": SMOKE_DEVICE_ID, "limit": limit}
        matcher = DeviceScope.of(scope)
        if matcher is None:
            params["low"], params["high"] = _prefix_range(prefix)
            return self.read(lambda conn: conn.execute(_DEVICES_PAGE, params).fetchall())
        page = matcher.select(params, prefix=prefix, after=True, limit=True)
        if page is None:
            return []
        statement = f"WITH page AS ({page} ORDER BY device_id LIMIT %(limit)s)" + _SCOPED_DEVICES_JSON
        return self.read(lambda conn: conn.execute(statement, params).fetchall())

    def stats(self, scope: Sequence[str] | None = None) -> dict[str, int | None]:
        """Counts for the dashboard: devices, readings stored for today (UTC) and rejected messages.
        Each is an index walk or a handful of rows, whatever the number of readings: today's count
        comes from the per-day counts kept with every batch. The smoke device is not counted.

        For a ``scope`` (device globs): its devices, and their readings today from today's rollup
        rows; no rejected-message count, since a rejected message has no device to trust."""
        matcher = DeviceScope.of(scope)
        if matcher is None:
            sql = """
                SELECT (SELECT count(*) FROM device WHERE device_id <> %(smoke)s),
                       (SELECT coalesce(sum(readings), 0) FROM reading_count
                         WHERE day = (now() AT TIME ZONE 'UTC')::date),
                       (SELECT count(*) FROM rejected_message)
            """
            params: dict = {"smoke": SMOKE_DEVICE_ID}
            devices, today, rejected = self.read(lambda conn: conn.execute(sql, params).fetchone())
            return {"devices": devices, "readings_today": int(today), "rejected_messages": rejected}
        params = {"smoke": SMOKE_DEVICE_ID, "metrics": MetricType.names()}
        scoped = matcher.select(params)
        if scoped is None:
            return {"devices": 0, "readings_today": 0, "rejected_messages": None}
        statement = f"WITH scoped AS MATERIALIZED ({scoped})" + _SCOPED_STATS.format(table=ROLLUPS[-1][0])
        devices, today = self.read(lambda conn: conn.execute(statement, params).fetchone())
        return {"devices": devices, "readings_today": int(today), "rejected_messages": None}

    def rejected_count(self) -> int:
        return self.read(lambda conn: conn.execute("SELECT count(*) FROM rejected_message").fetchone()[0])

    def ping(self) -> None:
        self.read(lambda conn: conn.execute("SELECT 1"))
