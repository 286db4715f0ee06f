"""The 100-million-reading benchmark: queries, maintenance and disk use at the scale of a year of data.

    python -m local.bench_scale               # build once (kept in .local/bench-scale/), then measure
    python -m local.bench_scale --record      # `make bench-scale`: also append to benchmarks/results.jsonl
    python -m local.bench_scale --rebuild     # throw the kept database away and build it again
    python -m local.bench_scale --requests 50 # fewer requests per measurement
    python -m local.bench_scale --build-only  # build (unless kept) and stop

The build fills an embedded PostgreSQL with the service's own schema (RAW_RETENTION_DAYS=400, so the
partitions cover the year): 10,000 devices x 6 metrics over a year, one reading per series about
every 7 hours, plus 10 hot series (hot-0 .. hot-9, temperature) at one reading a second for the last
30 days, ~100 million rows, by one binary COPY stream straight into ``reading``. Then the latest values,
the rollups (the maintenance code's own backfill, day by day) and VACUUM ANALYZE. It takes 15 to 30
minutes on two cores and ~35 GB of disk, so the database is kept and reused until --rebuild; it lives
under .local/, which `make clean` removes.

The measurements call the query function's handler in this process with APIG-shaped events, as
FunctionGraph would, so routing, validation and JSON encoding are timed with the database work. They
are p50/p99/max over randomized requests of: a history page of 1,000 (a metric given, and not), a 7-day
series at interval=auto (random time zone), a hot series over a year at 1d, a devices page of 1,000 at
random cursor positions, and the stats; then the time to drop an expired partition of ~300,000 rows
through the maintenance code, and the disk bytes per reading of raw data, rollups and indexes.

Results are printed as a table and, with --record, appended to benchmarks/results.jsonl as local.bench
does (one self-contained JSON object a line).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import psycopg

from common import maintenance, runtime, schema
from common.apig import build_event
from common.readings import MetricType
from common.settings import Settings
from common.store import ReadingStore, conninfo
from functions import load_function

from .bench import emit, percentile, record
from .context import LocalContext
from .embedded import EmbeddedPostgres, EmbeddedRedis
from .env import DATA_DIR

METRICS = MetricType.names()  # in the enum's order, which is the primary key's order
DAY = timedelta(days=1)
# The service's database keeps raw readings this long: partitions then cover the whole year.
RETENTION_DAYS = 400
HOME = DATA_DIR / "bench-scale"
# Written when a build completes: what was built and how long it took. No file, no usable database.
BUILD_FILE = "build.json"
TIME_ZONES = ("UTC", "Europe/Berlin", "Asia/Kolkata")
# p99 targets in milliseconds, per measurement.
TARGETS_MS = {
    "history_1000_metric": 30,
    "history_1000_all_metrics": 30,
    "series_7d_auto": 50,
    "series_hot_year_1d": 50,
    "devices_page_1000": 50,
    "stats": 10,
}
DROP_TARGET_SECONDS = 1.0


@dataclass(frozen=True)
class Shape:
    """What the build generates; the defaults are the benchmark's ~100 million readings."""

    devices: int = 10_000
    days: int = 365
    interval_hours: float = 7.0
    # Each reading lands up to this far either side of its slot, so series do not tick together.
    jitter_hours: float = 1.0
    hot_series: int = 10
    hot_days: float = 30.0
    hot_interval_seconds: int = 1

    def expected_readings(self) -> int:
        regular = self.devices * len(METRICS) * self.days * 24 / self.interval_hours
        hot = self.hot_series * self.hot_days * 86_400 / self.hot_interval_seconds
        return round(regular + hot)


def device_name(n: int) -> str:
    return f"dev-{n:05d}"


def hot_device_name(n: int) -> str:
    return f"hot-{n}"


# --------------------------------------------------------------------------- generating the readings

# Per metric: the range a device's own level is drawn from, the swing over a day, the noise, and the
# lowest value that makes sense (current and power do not go negative).
PROFILES = {
    "temperature": ((18.0, 26.0), 3.0, 0.4, -40.0),
    "humidity": ((35.0, 65.0), 8.0, 1.5, 0.0),
    "pressure": ((1005.0, 1022.0), 1.5, 0.3, 800.0),
    "voltage": ((228.0, 232.0), 1.5, 0.6, 0.0),
    "current": ((0.5, 8.0), 1.5, 0.3, 0.0),
    "power": ((100.0, 1800.0), 300.0, 40.0, 0.0),
}

# Binary COPY: PostgreSQL's file header and trailer, and each field as a length and its bytes. Written
# by hand because it takes under a third of the client CPU of psycopg's write_row, and the client shares the two
# cores with the server it feeds. Timestamps are microseconds since 2000-01-01 UTC.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_VALUE_AND_TIME = struct.Struct(">id iq")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000
_DAY_US = 86_400 * _US


def _pg_micros(moment: datetime) -> int:
    return (moment - _PG_EPOCH) // timedelta(microseconds=1)


def _row_prefix(device_id: str, metric: str) -> bytes:
    """A row's field count and its first two fields, the same for every reading of a series."""
    device, kind = device_id.encode(), metric.encode()
    return struct.pack(">hi", 4, len(device)) + device + struct.pack(">i", len(kind)) + kind


def _daily_swing(micros: int) -> float:
    """-1 .. 1 over a UTC day, highest mid-afternoon."""
    return math.sin(2 * math.pi * ((micros % _DAY_US) / _DAY_US - 0.375))


@dataclass
class _Series:
    prefix: bytes
    level: float
    swing: float
    noise: float
    floor: float
    next_us: int  # when its next reading is due, in PostgreSQL microseconds


class ReadingGenerator:
    """The readings of ``shape`` ending at ``end``, one UTC day at a time, as binary COPY data.

    A day's rows come in primary-key order (device, metric in the enum's order, time), the order the
    day's partition index then grows in: appended at its right edge, never split in the middle. Each
    series remembers when its next reading is due, so the days must be taken in order: ``stream()``."""

    def __init__(self, shape: Shape, end: datetime, seed: int = 7):
        self.shape = shape
        self.end = end
        self.start = end - shape.days * DAY
        self.hot_start = end - timedelta(days=shape.hot_days)
        self.rng = random.Random(seed)
        self.seconds = 0.0  # spent generating
        interval = round(shape.interval_hours * 3600 * _US)
        self.interval_us = interval
        self.jitter_us = round(shape.jitter_hours * 3600 * _US)
        start_us = _pg_micros(self.start)
        self.series: list[_Series] = []
        for n in range(shape.devices):
            for metric in METRICS:
                (low, high), swing, noise, floor = PROFILES[metric]
                self.series.append(
                    _Series(
                        _row_prefix(device_name(n), metric),
                        self.rng.uniform(low, high),
                        swing * self.rng.uniform(0.5, 1.5),
                        noise,
                        floor,
                        start_us + int(self.rng.random() * interval),
                    )
                )
        (low, high), swing, noise, floor = PROFILES["temperature"]
        self.hot = [
            _Series(
                _row_prefix(hot_device_name(n), "temperature"),
                self.rng.uniform(low, high),
                swing,
                noise,
                floor,
                0,
            )
            for n in range(shape.hot_series)
        ]

    def days(self) -> list[datetime]:
        """The UTC days the readings fall in; the first and last may be partial."""
        day = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        days = []
        while day < self.end:
            days.append(day)
            day += DAY
        return days

    def stream(self) -> Iterator[tuple[datetime, list[bytes]]]:
        """Each day and the binary COPY rows of its readings, in time order."""
        for day in self.days():
            started = time.perf_counter()
            rows = self._day_rows(day)
            self.seconds += time.perf_counter() - started
            yield day, rows

    def _day_rows(self, day: datetime) -> list[bytes]:
        rows: list[bytes] = []
        add, pack = rows.append, _VALUE_AND_TIME.pack
        rand, gauss = self.rng.random, self.rng.gauss
        first = max(day, self.start)
        last = min(day + DAY, self.end)
        last_us = _pg_micros(last)
        interval, jitter = self.interval_us, self.jitter_us
        for series in self.series:
            due = series.next_us
            while due < last_us:
                value = series.level + series.swing * _daily_swing(due) + gauss(0, series.noise)
                add(series.prefix + pack(8, round(max(series.floor, value), 2), 8, due))
                # Whole milliseconds, as devices send them; the jitter keeps slots from lining up.
                due += interval + (int((rand() * 2 - 1) * jitter) // 1000 * 1000)
            series.next_us = due
        hot_from = max(first, self.hot_start)
        if hot_from < last:
            step = self.shape.hot_interval_seconds * _US
            hot_first = _pg_micros(hot_from)
            # Readings on the hot series' own grid (whole steps after hot_start), inside this day.
            offset = -(hot_first - _pg_micros(self.hot_start)) % step
            for series in self.hot:
                for due in range(hot_first + offset, last_us, step):
                    value = series.level + series.swing * _daily_swing(due) + gauss(0, series.noise)
                    add(series.prefix + pack(8, round(value, 2), 8, due))
        return rows


# --------------------------------------------------------------------------- the build


T = TypeVar("T")


def _prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each made on a thread while the one before is used: the next day's rows are
    generated while PostgreSQL takes the current day's (COPY waits on the socket, without the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate") as pool:
        done = object()
        pending = pool.submit(next, items, done)
        while (item := pending.result()) is not done:
            pending = pool.submit(next, items, done)
            yield item


def copy_day(conn: psycopg.Connection, rows: list[bytes]) -> None:
    """One COPY (one transaction) of a day's rows, in chunks of about a megabyte."""
    with conn.cursor().copy(
        "COPY reading (device_id, metric_type, value, timestamp) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(_COPY_HEADER)
        for at in range(0, len(rows), 20_000):
            copy.write(b"".join(rows[at : at + 20_000]))
        copy.write(_COPY_TRAILER)


def fill_latest(conn: psycopg.Connection, shape: Shape, end: datetime) -> int:
    """One latest_reading row per series, from the newest readings. Every series has a reading in the
    last two intervals (plus jitter), so reading only those days' partitions finds them all."""
    window = timedelta(hours=2 * (shape.interval_hours + shape.jitter_hours))
    conn.execute("DELETE FROM latest_reading")
    return conn.execute(
        "INSERT INTO latest_reading (device_id, metric_type, value, timestamp)"
        " SELECT DISTINCT ON (device_id, metric_type) device_id, metric_type, value, timestamp"
        " FROM reading WHERE timestamp >= %s AND timestamp < %s"
        " ORDER BY device_id, metric_type, timestamp DESC",
        (end - window, end),
    ).rowcount


def build(
    conn: psycopg.Connection,
    shape: Shape,
    end: datetime,
    *,
    report: Callable[[str], None] = print,
    seed: int = 7,
) -> dict:
    """Fill an empty, migrated database with ``shape``'s readings ending at ``end``, then the latest
    values, the rollups and the planner's statistics. ``conn`` must be in autocommit mode. Returns
    what was built and the seconds each phase took."""
    phases: dict[str, float] = {}
    started = time.perf_counter()
    generator = ReadingGenerator(shape, end, seed)
    days = generator.days()
    total = 0
    for index, (day, rows) in enumerate(_prefetched(generator.stream()), 1):
        copy_day(conn, rows)
        total += len(rows)
        if index % 10 == 0 or index == len(days):
            elapsed = time.perf_counter() - started
            left = elapsed / index * (len(days) - index)
            report(
                f"  copy: day {index}/{len(days)} ({day:%Y-%m-%d}), {total:,} readings,"
                f" {total / elapsed:,.0f}/s, {left / 60:.1f} min to go"
            )
    phases["copy"] = time.perf_counter() - started

    mark = time.perf_counter()
    latest = fill_latest(conn, shape, end)
    phases["latest"] = time.perf_counter() - mark
    report(f"  latest values: {latest:,} series in {phases['latest']:.1f}s")

    mark = time.perf_counter()
    for index, day in enumerate(days, 1):
        maintenance.rollup_range(conn, day, day + DAY)
        if index % 30 == 0 or index == len(days):
            elapsed = time.perf_counter() - mark
            report(
                f"  rollups: day {index}/{len(days)}, {elapsed / index * (len(days) - index) / 60:.1f} min to go"
            )
    # Every reading up to the last day's end is rolled up: new readings before it merge themselves.
    conn.execute("UPDATE rollup_horizon SET rolled_before = %s", (days[-1] + DAY,))
    phases["rollups"] = time.perf_counter() - mark

    mark = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) reading, latest_reading, rollup_1m, rollup_15m, reading_count")
    phases["vacuum_analyze"] = time.perf_counter() - mark
    report(f"  VACUUM ANALYZE in {phases['vacuum_analyze']:.1f}s")

    seconds = time.perf_counter() - started
    return {
        "shape": asdict(shape),
        "end": end.isoformat(),
        "readings": total,
        "series": latest,
        "seconds": round(seconds, 1),
        "readings_per_s": round(total / seconds),
        "copy_readings_per_s": round(total / phases["copy"]),
        "generating_seconds": round(generator.seconds, 1),
        "phase_seconds": {name: round(value, 1) for name, value in phases.items()},
    }


# --------------------------------------------------------------------------- the measurements


@dataclass
class Timing:
    """Latencies of one kind of request, and the answers that were not 200."""

    name: str
    latencies: list[float]
    errors: list[str]

    def row(self) -> dict:
        ms = [latency * 1000 for latency in self.latencies]
        target = TARGETS_MS.get(self.name)
        p99 = round(percentile(ms, 0.99), 2)
        return {
            "benchmark": f"scale_{self.name}",
            "requests": len(ms),
            "p50_ms": round(percentile(ms, 0.5), 2),
            "p99_ms": p99,
            "max_ms": round(max(ms), 2),
            "target_p99_ms": target,
            "meets_target": None if target is None else p99 < target and not self.errors,
            "errors": len(self.errors),
        }


# Requests of each kind sent before the timed ones.
WARM_UP = 5
# The read key the measurements use; revoked when they end.
BENCH_KEY = "bench-scale"


def _time_param(moment: datetime, rng: random.Random) -> str:
    """``from``/``to`` as either form the API takes: ISO-8601 or epoch milliseconds."""
    if rng.random() < 0.5:
        return moment.isoformat()
    return str(int(moment.timestamp() * 1000))


class Measurements:
    """Requests to the query function's handler, in this process, against a built database."""

    def __init__(
        self,
        handler: Callable[[dict, object], dict],
        shape: Shape,
        end: datetime,
        seed: int,
        key: str | None = None,
    ):
        self.handler = handler
        # With auth on, reads need a credential, as in service: a read key for every device (checked
        # once, then remembered by the process, as a busy function instance does).
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.context = LocalContext("query")
        self.shape = shape
        self.end = end
        self.start = end - shape.days * DAY
        self.rng = random.Random(seed)

    def call(self, path: str, query: dict[str, str]) -> tuple[float, dict]:
        event = build_event("GET", path, headers=self.headers, query=query)
        started = time.perf_counter()
        response = self.handler(event, self.context)
        return time.perf_counter() - started, response

    def run(self, name: str, requests: list[tuple[str, dict[str, str]]], warm_up: int = WARM_UP) -> Timing:
        """Time the requests in turn after the first ``warm_up``, which are not timed (the first of a
        kind pay for connections and first-time code paths)."""
        for path, query in requests[:warm_up]:
            self.call(path, query)
        timing = Timing(name, [], [])
        for path, query in requests[warm_up:]:
            elapsed, response = self.call(path, query)
            timing.latencies.append(elapsed)
            if response["statusCode"] != 200:
                timing.errors.append(f"{response['statusCode']} {path} {query}: {response['body'][:200]}")
        return timing

    # -- what is asked --------------------------------------------------------------------------
    def random_device(self) -> str:
        return device_name(self.rng.randrange(self.shape.devices))

    def random_range(self, shortest: timedelta) -> tuple[datetime, datetime]:
        """A range of at least ``shortest`` (when the data spans that much) inside the data."""
        span = self.end - self.start
        length = shortest + (span - shortest) * self.rng.random() if span > shortest else span
        start = self.start + (span - length) * self.rng.random()
        return start, start + length

    def history(self, count: int, with_metric: bool) -> list[tuple[str, dict[str, str]]]:
        """Pages of 1,000 over ranges long enough to hold more than a page of the device's readings."""
        per_day = 24 / self.shape.interval_hours * (1 if with_metric else len(METRICS))
        shortest = timedelta(days=min(self.shape.days, 1.2 * 1000 / per_day))
        requests = []
        for _ in range(count):
            start, end = self.random_range(shortest)
            query = {"from": _time_param(start, self.rng), "to": _time_param(end, self.rng), "limit": "1000"}
            if with_metric:
                query["metric_type"] = self.rng.choice(METRICS)
            requests.append((f"/api/device/{self.random_device()}/history", query))
        return requests

    def series_week(self, count: int) -> list[tuple[str, dict[str, str]]]:
        requests = []
        for _ in range(count):
            start, end = self.random_range(timedelta(days=7))
            end = start + min(end - start, timedelta(days=7))
            query = {
                "metric_type": self.rng.choice(METRICS),
                "from": _time_param(start, self.rng),
                "to": _time_param(end, self.rng),
                "interval": "auto",
                "tz": self.rng.choice(TIME_ZONES),
            }
            requests.append((f"/api/device/{self.random_device()}/series", query))
        return requests

    def series_hot_year(self, count: int) -> list[tuple[str, dict[str, str]]]:
        aggregates = ["avg", "min", "max", "sum", "count", "first", "last"]
        requests = []
        for _ in range(count):
            query = {
                "metric_type": "temperature",
                "from": _time_param(self.end - 365 * DAY, self.rng),
                "to": _time_param(self.end, self.rng),
                "interval": "1d",
                "agg": ",".join(self.rng.sample(aggregates, self.rng.randint(1, len(aggregates)))),
                "tz": self.rng.choice(TIME_ZONES),
            }
            device = hot_device_name(self.rng.randrange(max(1, self.shape.hot_series)))
            requests.append((f"/api/device/{device}/series", query))
        return requests

    def device_cursors(self) -> list[str | None]:
        """The cursor of every page of 1,000 devices (None: the first), found by walking them once."""
        cursors: list[str | None] = [None]
        while True:
            query = {"limit": "1000"} if cursors[-1] is None else {"limit": "1000", "cursor": cursors[-1]}
            _, response = self.call("/api/devices", query)
            if response["statusCode"] != 200:
                raise RuntimeError(
                    f"GET /api/devices answered {response['statusCode']}: {response['body'][:300]}"
                )
            following = json.loads(response["body"])["next_cursor"]
            if following is None:
                return cursors
            cursors.append(following)

    def devices(self, count: int) -> list[tuple[str, dict[str, str]]]:
        cursors = self.device_cursors()
        requests = []
        for _ in range(count):
            cursor = self.rng.choice(cursors)
            query = {"limit": "1000"} if cursor is None else {"limit": "1000", "cursor": cursor}
            requests.append(("/api/devices", query))
        return requests

    def measure(self, count: int) -> list[Timing]:
        """``count`` timed requests of each kind (after a few untimed ones)."""
        count += WARM_UP
        plans = {
            "history_1000_metric": self.history(count, with_metric=True),
            "history_1000_all_metrics": self.history(count, with_metric=False),
            "series_7d_auto": self.series_week(count),
            "series_hot_year_1d": self.series_hot_year(count),
            "devices_page_1000": self.devices(count),
            "stats": [("/api/stats", {})] * count,
        }
        timings = [self.run(name, requests) for name, requests in plans.items()]
        # The same history pages again, now in memory: what is left is planning and CPU, not disk.
        for name in ("history_1000_metric", "history_1000_all_metrics"):
            timings.append(self.run(f"{name}_again", plans[name][WARM_UP:], warm_up=0))
        return timings


def time_partition_drop(conn: psycopg.Connection, settings: Settings, rows: int, now: datetime) -> dict:
    """Create a partition of a day past the raw retention, fill it with ``rows`` readings, and time
    one pass of the maintenance function's handler, which drops it. The runtime must be initialized
    with ``settings``."""
    day = schema.day_start(now) - (settings.raw_retention_days + 30) * DAY
    name = schema.raw_partition(day)
    conn.execute(
        f"CREATE TABLE {name} PARTITION OF reading"
        f" FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + DAY).isoformat()}')"
    )
    # 1,000 series of one metric, their readings spread evenly over the day.
    conn.execute(
        "INSERT INTO reading (device_id, metric_type, value, timestamp)"
        " SELECT 'expired-' || (n %% 1000), 'temperature', n,"
        "        %s + (n / 1000) * make_interval(secs => %s)"
        " FROM generate_series(0, %s - 1) AS n",
        (day, 86_400 / max(1, rows // 1000), rows),
    )
    function = load_function("maintenance")
    started = time.perf_counter()
    result = function.handler({}, LocalContext("maintenance"))
    seconds = time.perf_counter() - started
    if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
        raise RuntimeError(f"the maintenance pass did not drop {name}: {result}")
    return {
        "benchmark": "scale_drop_expired_partition",
        "rows": rows,
        "seconds": round(seconds, 3),
        "target_seconds": DROP_TARGET_SECONDS,
        "meets_target": seconds < DROP_TARGET_SECONDS,
        "maintenance_result": result,
    }


# Every table that holds readings or their rollups, and what it counts as.
_STORAGE_KINDS = {"reading": "raw", "rollup_1m": "rollups", "rollup_15m": "rollups"}


def disk_per_reading(conn: psycopg.Connection) -> dict:
    """Bytes on disk per reading: the tables (with TOAST and maps) and their indexes, over every
    partition of the readings and of the rollups."""
    sizes = {"raw": 0, "raw_indexes": 0, "rollups": 0, "rollup_indexes": 0}
    for parent, kind in _STORAGE_KINDS.items():
        table, indexes = conn.execute(
            "SELECT coalesce(sum(pg_table_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0)"
            " FROM pg_partition_tree(%s::regclass) WHERE isleaf",
            (parent,),
        ).fetchone()
        sizes[kind] += int(table)
        sizes["raw_indexes" if kind == "raw" else "rollup_indexes"] += int(indexes)
    rows = {parent: conn.execute(f"SELECT count(*) FROM {parent}").fetchone()[0] for parent in _STORAGE_KINDS}
    readings = rows["reading"]
    return {
        "benchmark": "scale_disk_bytes_per_reading",
        "readings": readings,
        "rollup_rows": {name: count for name, count in rows.items() if name != "reading"},
        "raw": round(sizes["raw"] / readings, 1),
        "rollups": round(sizes["rollups"] / readings, 1),
        "indexes": round((sizes["raw_indexes"] + sizes["rollup_indexes"]) / readings, 1),
        "total": round(sum(sizes.values()) / readings, 1),
        "bytes": sizes,
    }


# --------------------------------------------------------------------------- the run


class Servers:
    """The kept PostgreSQL (home/postgres), and a Redis (home/redis, empty each run) for any route of
    the query function that reads its cache."""

    def __init__(self, home: Path):
        self.home = home
        self.postgres = EmbeddedPostgres(base_dir=home / "postgres")
        self.redis = EmbeddedRedis(base_dir=home / "redis")

    def start(self) -> Settings:
        self.postgres.start(timeout=300)  # after a crash mid-build, recovery replays a lot of WAL
        self.redis.start()
        env = {
            **self.postgres.env(),
            **self.redis.env(),
            "REDIS_KEY_PREFIX": "bench-scale:",
            "RAW_RETENTION_DAYS": str(RETENTION_DAYS),
            "LOG_LEVEL": "WARNING",
        }
        return Settings.from_env(env)

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(conninfo(settings), autocommit=True)


def load_build(home: Path) -> dict | None:
    path = home / BUILD_FILE
    return json.loads(path.read_text()) if path.exists() else None


def ensure_built(servers: Servers, shape: Shape, rebuild: bool) -> tuple[Settings, dict, bool]:
    """The kept database when a build completed (and matches ``shape``), else a new one.
    Returns the settings, the build's record and whether it was built now."""
    home = servers.home
    built = load_build(home)
    if built is not None and not rebuild and built["shape"] == asdict(shape):
        settings = servers.start()
        store = ReadingStore(settings)
        store.migrate()  # a kept database gets the current schema and the reader and writer roles
        store.close()
        return settings, built, False
    if built is not None and built["shape"] != asdict(shape) and not rebuild:
        print("# the kept database has another shape: building again", file=sys.stderr)
    # Anything there is a build that did not finish, or one to replace.
    (home / BUILD_FILE).unlink(missing_ok=True)
    shutil.rmtree(home / "postgres", ignore_errors=True)
    settings = servers.start()
    store = ReadingStore(settings)
    store.migrate()  # the schema and partitions back to RETENTION_DAYS ago
    store.close()
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    print(
        f"# building {shape.expected_readings():,} readings ending {end:%Y-%m-%d %H:%M} UTC in {home}",
        flush=True,
    )
    with connect(settings) as conn:
        built = build(conn, shape, end, report=lambda line: print(line, flush=True))
    (home / BUILD_FILE).write_text(json.dumps(built, indent=2) + "\n")
    return settings, built, True


def print_table(results: list[dict]) -> None:
    print(f"\n{'measurement':<40}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'target':>9}  ok")
    for result in results:
        if "p99_ms" in result:
            target = result["target_p99_ms"]
            ok = {True: "yes", False: "NO", None: ""}[result["meets_target"]]
            print(
                f"{result['benchmark']:<40}{result['requests']:>9}{result['p50_ms']:>9}{result['p99_ms']:>9}"
                f"{result['max_ms']:>9}{'' if target is None else '< ' + str(target):>9}  {ok}"
            )
        elif result["benchmark"] == "scale_drop_expired_partition":
            ok = "yes" if result["meets_target"] else "NO"
            print(
                f"{'drop expired partition (' + format(result['rows'], ',') + ' rows)':<40}"
                f"{'':>9}{'':>9}{'':>9}{result['seconds'] * 1000:>9.1f}{'< 1000':>9}  {ok}"
            )
        elif result["benchmark"] == "scale_disk_bytes_per_reading":
            print(
                f"\ndisk bytes per reading: raw {result['raw']}, rollups {result['rollups']},"
                f" indexes {result['indexes']}, total {result['total']} ({result['readings']:,} readings)"
            )
            sizes = ", ".join(f"{name} {size / 2**30:.1f}" for name, size in result["bytes"].items())
            print(f"  GiB: {sizes}; rollup rows: {result['rollup_rows']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark queries and maintenance on ~100 million readings."
    )
    parser.add_argument(
        "--record", action="store_true", help="append the results to benchmarks/results.jsonl"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the kept database again")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per measurement")
    parser.add_argument("--drop-rows", type=int, default=300_000, help="readings in the expired partition")
    parser.add_argument("--build-only", action="store_true", help="build (when needed) and measure nothing")
    parser.add_argument(
        "--seed",
        type=int,
        help="the requests' random seed (default: a new one each run, recorded: the same seed asks for the"
        " same pages, which PostgreSQL and the OS then have in memory)",
    )
    parser.add_argument("--home", type=Path, default=HOME, help="where the database is kept")
    args = parser.parse_args()

    shape = Shape()
    servers = Servers(args.home)
    results: list[dict] = []
    try:
        settings, built, fresh = ensure_built(servers, shape, args.rebuild)
        emit(
            {
                "benchmark": "scale_build",
                "built_now": fresh,
                **{k: v for k, v in built.items() if k != "end"},
            },
            results,
        )
        if args.build_only:
            return
        end = datetime.fromisoformat(built["end"])
        tokens = runtime.initialize(settings=settings).tokens
        key = tokens.register_reader(BENCH_KEY)
        query = load_function("query")
        seed = args.seed if args.seed is not None else random.randrange(2**31)
        measurements = Measurements(query.handler, shape, end, seed, key)
        for timing in measurements.measure(args.requests):
            emit({**timing.row(), "readings_in_database": built["readings"], "seed": seed}, results)
            for error in timing.errors[:3]:
                print(f"#   {error}", file=sys.stderr)
        tokens.revoke(BENCH_KEY)
        with connect(settings) as conn:
            emit(time_partition_drop(conn, settings, args.drop_rows, datetime.now(timezone.utc)), results)
            emit(disk_per_reading(conn), results)
        runtime.reset()
    finally:
        servers.stop()
    print_table(results)
    if args.record:
        path = record(results, "scale")
        print(f"# {len(results)} results appended to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
