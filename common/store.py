"""PostgreSQL: the readings, the latest value per (device, metric), and rejected messages.

A reading is identified by (device_id, metric_type, timestamp): storing the same reading twice is
a no-op, so redelivered Kafka messages are harmless. The latest-value table only moves forward in
time, so late and out-of-order readings land in the history without replacing a newer latest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import ServiceUnavailable
from .readings import SMOKE_DEVICE_ID, Reading
from .settings import Settings

log = logging.getLogger(__name__)

# Ordered, append-only: each entry runs once, in one transaction, under an advisory lock.
MIGRATIONS: list[str] = [
    # 1: the original service's table, with identity and the enum it had.
    """
    CREATE TYPE metric_type AS ENUM
        ('temperature', 'humidity', 'pressure', 'voltage', 'current', 'power');
    CREATE TABLE reading (
        device_id   text             NOT NULL,
        metric_type metric_type      NOT NULL,
        value       double precision NOT NULL,
        timestamp   timestamptz      NOT NULL,
        PRIMARY KEY (device_id, metric_type, timestamp)
    );
    CREATE INDEX reading_device_time ON reading (device_id, timestamp DESC);
    CREATE TABLE latest_reading (
        device_id   text             NOT NULL,
        metric_type metric_type      NOT NULL,
        value       double precision NOT NULL,
        timestamp   timestamptz      NOT NULL,
        PRIMARY KEY (device_id, metric_type)
    );
    CREATE TABLE rejected_message (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at timestamptz NOT NULL DEFAULT now(),
        topic       text        NOT NULL DEFAULT '',
        raw         text        NOT NULL,
        reason      text        NOT NULL
    );
    """,
    # 2: access tokens, stored only as SHA-256 hashes of high-entropy random tokens.
    """
    CREATE TABLE api_token (
        token_hash  text        PRIMARY KEY,
        name        text        NOT NULL,
        devices     text[]      NOT NULL DEFAULT '{}',
        is_admin    boolean     NOT NULL DEFAULT false,
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz
    );
    CREATE INDEX api_token_name ON api_token (name);
    """,
    # 3: history across metrics reads the primary key once per metric instead (see history()):
    # every index is maintained on every insert, and this one cost storing much of its speed.
    """
    DROP INDEX IF EXISTS reading_device_time;
    """,
]

_MIGRATION_LOCK = 0x10770001  # any constant shared by every process of this service

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
# then does it store the batch again with the statement that skips duplicates. Checking every
# reading for a conflict first costs a second index search per row, a large part of storing.
# Both insert in key order, so consumers
# storing at the same time take index locks in the same order.
_INSERT_NEW = """
INSERT INTO reading (device_id, metric_type, value, timestamp)
SELECT device_id, metric_type::metric_type, value, timestamp FROM incoming
ORDER BY device_id, metric_type, timestamp
"""
# After the plain insert: every incoming row is in the table, so the latest values move forward
# from them. DISTINCT ON keeps the newest row per key.
_MOVE_LATEST = """
INSERT INTO latest_reading AS l (device_id, metric_type, value, timestamp)
SELECT DISTINCT ON (device_id, metric_type) device_id, metric_type::metric_type, value, timestamp
FROM incoming ORDER BY device_id, metric_type, timestamp DESC
ON CONFLICT (device_id, metric_type) DO UPDATE
    SET value = excluded.value, timestamp = excluded.timestamp
    WHERE l.timestamp < excluded.timestamp
"""
# When some readings are stored already: one statement inserts the rest (duplicates are skipped) and
# moves the latest values forward from exactly the rows that were inserted.
_INSERT_SKIPPING_STORED = """
WITH inserted AS (
    INSERT INTO reading (device_id, metric_type, value, timestamp)
    SELECT device_id, metric_type::metric_type, value, timestamp FROM incoming
    ORDER BY device_id, metric_type, timestamp
    ON CONFLICT DO NOTHING
    RETURNING device_id, metric_type, value, timestamp
), newest AS (
    SELECT DISTINCT ON (device_id, metric_type) device_id, metric_type, value, timestamp
    FROM inserted ORDER BY device_id, metric_type, timestamp DESC
), moved AS (
    INSERT INTO latest_reading AS l (device_id, metric_type, value, timestamp)
    SELECT device_id, metric_type, value, timestamp FROM newest
    ON CONFLICT (device_id, metric_type) DO UPDATE
        SET value = excluded.value, timestamp = excluded.timestamp
        WHERE l.timestamp < excluded.timestamp
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM moved)
"""


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


def conninfo(settings: Settings) -> str:
    """The libpq connection string for the settings' database (also for tools and tests)."""
    return psycopg.conninfo.make_conninfo(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_user,
        password=settings.db_password,
        connect_timeout=settings.connect_timeout,
        application_name="iot-metrics",
        # timestamptz values come back in the session's time zone: UTC, as the API shows them
        options="-c timezone=UTC",
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
    """Access to PostgreSQL through a lazily opened connection pool."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool: ConnectionPool | None = None
        self._migrated = False

    # -- connections -------------------------------------------------------------------------
    def _conninfo(self) -> str:
        return conninfo(self.settings)

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self._conninfo(),
                min_size=1,
                max_size=max(1, self.settings.db_pool_size),
                kwargs={"autocommit": True},
                configure=_configure,
                check=ConnectionPool.check_connection,
                timeout=self.settings.connect_timeout + 1,
                open=False,
                name="iot-metrics",
            )
            self._pool.open(wait=False)
        return self._pool

    def _run(self, action, *, migrate: bool = True):
        """Run ``action(conn)`` on a pooled connection; a dead database becomes a 503."""
        try:
            if migrate and not self._migrated:
                self.migrate()
            with self.pool.connection() as conn:
                return action(conn)
        except (PoolTimeout, psycopg.OperationalError) as error:
            log.warning("PostgreSQL unavailable: %s", error)
            raise ServiceUnavailable("The database is unavailable; try again shortly") from error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- schema ------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Bring the schema up to date; safe to run from many processes at once. Returns the version."""

        def apply(conn: psycopg.Connection) -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
                for version, sql in enumerate(MIGRATIONS, start=1):
                    if version > current:
                        log.info("applying schema migration %d", version)
                        conn.execute(sql)
                        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            return len(MIGRATIONS)

        version = self._run(apply, migrate=False)
        self._migrated = True
        return version

    # -- writes ------------------------------------------------------------------------------
    def store(self, readings: Sequence[Reading]) -> StoreResult:
        """Store a batch once: duplicates skipped, latest values only moved forward."""
        if not readings:
            return StoreResult(0, 0, 0)

        def copy_incoming(conn: psycopg.Connection) -> None:
            with conn.cursor().copy(_COPY_INCOMING) as copy:
                copy.set_types(["text", "text", "float8", "timestamptz"])
                for r in readings:
                    copy.write_row((r.device_id, r.metric_type, r.value, r.timestamp))

        def insert_new(conn: psycopg.Connection) -> StoreResult:
            copy_incoming(conn)
            conn.execute(_INSERT_NEW)
            return StoreResult(len(readings), 0, conn.execute(_MOVE_LATEST).rowcount)

        def insert_skipping_stored(conn: psycopg.Connection) -> StoreResult:
            copy_incoming(conn)
            stored, moved = conn.execute(_INSERT_SKIPPING_STORED).fetchone()
            return StoreResult(stored, len(readings) - stored, moved)

        def insert(conn: psycopg.Connection) -> StoreResult:
            try:
                return _in_transaction(conn, insert_new)
            except psycopg.errors.UniqueViolation:
                # Some are stored already (a redelivery, or one reading twice in the batch).
                return _in_transaction(conn, insert_skipping_stored)

        return self._run(insert)

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
    def save_token(self, token_hash: str, name: str, devices: Sequence[str], is_admin: bool) -> None:
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO api_token (token_hash, name, devices, is_admin) VALUES (%s, %s, %s, %s)",
                (token_hash, name, list(devices), is_admin),
            )
        )

    def find_token(self, token_hash: str) -> tuple[str, list[str], bool] | None:
        """(name, devices, is_admin) of an active token, or None."""
        return self._run(
            lambda conn: conn.execute(
                "SELECT name, devices, is_admin FROM api_token WHERE token_hash = %s AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
        )

    def revoke_tokens(self, name: str) -> int:
        return self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE api_token SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,)
                ).rowcount
            )
        )

    def list_tokens(self) -> list[tuple]:
        """(name, devices, is_admin, created_at, revoked_at), oldest first; hashes are not shown."""
        return self._run(
            lambda conn: conn.execute(
                "SELECT name, devices, is_admin, created_at, revoked_at FROM api_token ORDER BY created_at"
            ).fetchall()
        )

    def delete_all(self) -> None:
        self._run(lambda conn: conn.execute("TRUNCATE reading, latest_reading, rejected_message"))

    # -- reads -------------------------------------------------------------------------------
    def latest(self, device_id: str | None = None) -> list[LatestValue]:
        """Latest values of one device, or of every device, ordered by device and metric."""
        sql = "SELECT device_id, metric_type::text, value, timestamp FROM latest_reading"
        params: tuple = ()
        if device_id is not None:
            sql += " WHERE device_id = %s"
            params = (device_id,)
        sql += " ORDER BY device_id, metric_type"
        return self._run(
            lambda conn: [LatestValue(d, m, v, t.isoformat()) for d, m, v, t in conn.execute(sql, params)]
        )

    def history(
        self, device_id: str, metric_type: str | None, limit: int
    ) -> list[tuple[str, float, datetime]]:
        """(metric_type, value, timestamp) newest first."""
        if metric_type is None:
            # The newest `limit` of each metric through the primary key, then the newest of those:
            # no second index on (device_id, timestamp) to maintain on every insert.
            sql = (
                "SELECT m.metric_type::text, r.value, r.timestamp"
                " FROM unnest(enum_range(NULL::metric_type)) AS m(metric_type)"
                " CROSS JOIN LATERAL ("
                "   SELECT value, timestamp FROM reading"
                "   WHERE device_id = %s AND metric_type = m.metric_type"
                "   ORDER BY timestamp DESC LIMIT %s) AS r"
                " ORDER BY r.timestamp DESC, m.metric_type LIMIT %s"
            )
            params: tuple = (device_id, limit, limit)
        else:
            sql = (
                "SELECT metric_type::text, value, timestamp FROM reading"
                " WHERE device_id = %s AND metric_type = %s ORDER BY timestamp DESC LIMIT %s"
            )
            params = (device_id, metric_type, limit)
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def stats(self) -> dict[str, int]:
        """Counts for the dashboard: devices, readings stored since midnight UTC, rejected messages.
        The deploy command's smoke device is not counted."""
        sql = """
            SELECT (SELECT count(DISTINCT device_id) FROM latest_reading WHERE device_id <> %(smoke)s),
                   (SELECT count(*) FROM reading
                     WHERE timestamp >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       AND device_id <> %(smoke)s),
                   (SELECT count(*) FROM rejected_message)
        """
        params = {"smoke": SMOKE_DEVICE_ID}
        devices, today, rejected = self._run(lambda conn: conn.execute(sql, params).fetchone())
        return {"devices": devices, "readings_today": today, "rejected_messages": rejected}

    def rejected_count(self) -> int:
        return self._run(lambda conn: conn.execute("SELECT count(*) FROM rejected_message").fetchone()[0])

    def ping(self) -> None:
        self._run(lambda conn: conn.execute("SELECT 1"), migrate=False)
