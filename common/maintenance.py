"""The maintenance pass: partitions ahead, expired partitions dropped, new readings rolled up, rollups
of old data backfilled, devices that stopped reporting alerted and readings whose batch's alert
evaluation failed judged (common/alerts.py), alert notifications delivered to the webhook and SMN (common/notify.py).

In the cloud a FunctionGraph TIMER trigger runs it (``functions/maintenance``); locally the runner
calls the same handler on a timer. Runs never overlap: each holds a PostgreSQL advisory lock for its
whole length, and a run that finds it taken does nothing (``"skipped": true``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import psycopg

from . import alerts, metrics, notify, schema, store
from .readings import SMOKE_DEVICE_ID
from .runtime import Runtime
from .schema import DAY, ROLLUPS, UTC
from .store import ROLLUP_LOCK

log = logging.getLogger(__name__)
T = TypeVar("T")

MAINTENANCE_LOCK = 0x10770003
# Backfilling stops after this long; the next run goes on where it stopped.
BACKFILL_SECONDS = 30.0
# New readings are rolled up a quarter hour at a time, each a transaction that batches wait for.
ROLL_STEP = ROLLUPS[-1][1]
# A dropped partition waits this long for the lock; if ingest holds it longer, the next run drops it.
DROP_LOCK_TIMEOUT = "5s"


def rollup_range(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Build every rollup level and the day counts from the raw readings of [start, end), which must
    have none yet (the range lies below the rollup horizon, or the table was filled without them)."""
    schema.ensure_raw_partitions(conn, start, end - timedelta(microseconds=1))
    rows = "(SELECT * FROM reading WHERE timestamp >= %(start)s AND timestamp < %(end)s) AS ranged"
    conn.execute(
        store.statement({**store.rollup_steps(rows), **store.count_step(rows)}, "SELECT 1"),
        {"start": start, "end": end, "shard": 0, "smoke": SMOKE_DEVICE_ID},
    )


def roll_up(conn: psycopg.Connection, now: datetime, budget_seconds: float = BACKFILL_SECONDS) -> int:
    """Roll the readings of every whole quarter hour before ``now`` not rolled up yet into every rollup
    level, moving ``rolled_before`` with them. Returns the readings rolled up.

    Each quarter hour is one transaction that holds ROLLUP_LOCK alone: a batch storing meanwhile waits,
    and then sees the new boundary (it merges its readings before it itself), so each reading reaches
    every level exactly once."""
    rolled = 0
    deadline = time.monotonic() + budget_seconds
    cut = store.bucket_floor(now, ROLL_STEP)
    while time.monotonic() < deadline:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
            (before,) = conn.execute("SELECT rolled_before FROM rollup_horizon").fetchone()
            if before >= cut:
                return rolled
            upto = min(store.bucket_floor(before, ROLL_STEP) + ROLL_STEP, cut)
            (readings,) = conn.execute(store.roll_up_statement(), {"from": before, "to": upto}).fetchone()
            conn.execute("UPDATE rollup_horizon SET rolled_before = %s", (upto,))
            rolled += readings
    return rolled


def _oldest_legacy_reading(conn: psycopg.Connection) -> datetime | None:
    """The oldest reading of the old table, found per series through its primary key (one index
    probe per series; there is no index on time alone)."""
    return conn.execute(
        """
        SELECT min(first) FROM latest_reading l CROSS JOIN LATERAL (
            SELECT min(timestamp) AS first FROM reading_legacy r
            WHERE r.device_id = l.device_id AND r.metric_type = l.metric_type) AS f
        """
    ).fetchone()[0]


def backfill_rollups(conn: psycopg.Connection, budget_seconds: float = BACKFILL_SECONDS) -> int:
    """Move the rollup horizon down a day at a time, rolling up the readings below it, until there
    are none left or the budget is spent. Returns the number of days rolled up."""
    done = 0
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        with conn.transaction():
            # Alone: batches being stored wait, so each reading is rolled up exactly once.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
            complete, horizon = conn.execute(
                "SELECT complete_from = '-infinity'::timestamptz,"
                " CASE WHEN complete_from > '-infinity' THEN complete_from END FROM rollup_horizon"
            ).fetchone()
            if complete:
                return done
            oldest = _oldest_legacy_reading(conn) if _has_legacy(conn) else None
            if oldest is None or oldest >= horizon:
                conn.execute("UPDATE rollup_horizon SET complete_from = '-infinity'")
                log.info("rollups complete: every reading is rolled up")
                return done
            start = horizon - DAY
            rollup_range(conn, start, horizon)
            conn.execute("UPDATE rollup_horizon SET complete_from = %s", (start,))
            done += 1
    return done


def _has_legacy(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('reading_legacy') IS NOT NULL").fetchone()[0]


def _standing_alone(step: Callable[[], T], fallback: T, what: str) -> T:
    """``step()``, whose failure is logged and leaves the rest of the pass standing (the next pass
    tries again): ``fallback`` then."""
    try:
        return step()
    except psycopg.Error:
        log.exception("%s failed; the next pass tries again", what)
        return fallback


def run(runtime: Runtime, now: datetime | None = None) -> dict:
    """One maintenance pass; see the module docstring. ``now`` is for tests."""
    settings = runtime.settings
    now = now or datetime.now(UTC)
    result = {
        "partitions_created": 0,
        "partitions_dropped": 0,
        "readings_rolled_up": 0,
        "rollup_days_backfilled": 0,
        "no_data_alerts_opened": 0,
        "no_data_alerts_closed": 0,
        "alert_readings_caught_up": 0,
        "notifications_sent": 0,
        "notification_failures": 0,
        "skipped": False,
    }

    def maintain(conn: psycopg.Connection) -> dict:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,)).fetchone()[0]:
            log.info("another maintenance run holds the lock; skipping")
            return {**result, "skipped": True}
        try:
            with conn.transaction():
                result["partitions_created"] = schema.ensure_partitions(
                    conn, now, settings.raw_retention_days
                )
            dropped = []
            expiries = [("reading", settings.raw_retention_days)]
            if settings.rollup_retention_days:
                expiries += [(table, settings.rollup_retention_days) for table, _ in ROLLUPS]
            for table, days in expiries:
                try:
                    with conn.transaction():
                        conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
                        dropped += schema.drop_expired(conn, table, schema.retention_limit(now, days))
                except psycopg.errors.LockNotAvailable:
                    log.warning("%s busy: its expired partitions are dropped on the next run", table)
            result["partitions_dropped"] = len(dropped)
            if dropped:
                log.info("dropped expired partitions: %s", ", ".join(dropped))
            result["readings_rolled_up"] = roll_up(conn, now)
            result["rollup_days_backfilled"] = backfill_rollups(conn)
            no_data = _standing_alone(
                lambda: alerts.check_no_data(conn, now), alerts.Changes(), "judging the no-data alerts"
            )
            result["no_data_alerts_opened"], result["no_data_alerts_closed"] = no_data.opened, no_data.closed
            result["alert_readings_caught_up"] = _standing_alone(
                lambda: alerts.catch_up(conn), 0, "catching up on alert evaluation"
            )
            delivery = notify.deliver_all(conn, settings)  # nothing when no destination is set
            result["notifications_sent"], result["notification_failures"] = delivery.sent, delivery.failed
            metrics.alert_notifications_failed(delivery.failed)
            return result
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))

    return runtime.store.run(maintain)
