"""`make bench-scale`'s builder and measurements, on a tiny dataset in the test database.

The real run builds ~100 million readings once and keeps them; here the same code builds a few
thousand and measures a handful of requests, so that a change to the schema or the API that would
break the benchmark shows up in the ordinary test run.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from common import runtime as runtime_module
from common.store import conninfo
from functions import load_function
from local import bench_scale
from local.bench_scale import METRICS, Measurements, ReadingGenerator, Shape

pytestmark = pytest.mark.integration

TINY = Shape(devices=3, days=2, interval_hours=7, jitter_hours=1, hot_series=1, hot_days=0.05)


def test_generator_yields_each_series_in_key_order_within_its_days():
    end = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    generator = ReadingGenerator(TINY, end)
    days = generator.days()
    assert days[0] == datetime(2026, 2, 27, tzinfo=timezone.utc) and len(days) == 3
    total = 0
    for day, rows in generator.stream():
        assert rows == sorted(rows, key=_key)  # the primary key's order: devices, metrics, times
        assert all(day <= _time(row) < min(day + timedelta(days=1), end) for row in rows)
        total += len(rows)
    # 3 devices x 6 metrics x ~6.9 readings (2 days at ~7 h), and 72 minutes of one hot series
    assert abs(total - TINY.expected_readings()) < 3 * len(METRICS) * 2


def _fields(row: bytes) -> tuple[bytes, bytes, float, int]:
    """A binary COPY row back to (device, metric, value, PostgreSQL microseconds)."""
    import struct

    at = 2
    fields = []
    for _ in range(4):
        (length,) = struct.unpack_from(">i", row, at)
        fields.append(row[at + 4 : at + 4 + length])
        at += 4 + length
    device, metric, value, moment = fields
    return device, metric, struct.unpack(">d", value)[0], struct.unpack(">q", moment)[0]


def _key(row: bytes) -> tuple:
    device, metric, _, moment = _fields(row)
    return device, METRICS.index(metric.decode()), moment


def _time(row: bytes) -> datetime:
    return datetime(2000, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=_fields(row)[3])


def test_build_and_measure_a_tiny_dataset(runtime, settings):
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with psycopg.connect(conninfo(settings), autocommit=True) as conn:
        built = bench_scale.build(conn, TINY, end, report=lambda line: None)
        readings = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
        assert built["readings"] == readings > 0
        assert built["series"] == TINY.devices * len(METRICS) + TINY.hot_series
        assert conn.execute("SELECT count(*) FROM latest_reading").fetchone()[0] == built["series"]
        # The rollups and day counts hold every reading once.
        for table in ("rollup_1m", "rollup_15m"):
            assert conn.execute(f"SELECT sum(count) FROM {table}").fetchone()[0] == readings
        assert conn.execute("SELECT sum(readings) FROM reading_count").fetchone()[0] == readings

        query = load_function("query")
        timings = Measurements(query.handler, TINY, end, seed=1).measure(3)
        again = {"history_1000_metric_again", "history_1000_all_metrics_again"}
        assert {t.name for t in timings} == set(bench_scale.TARGETS_MS) | again
        for timing in timings:
            assert timing.errors == [], timing.name
            row = timing.row()
            assert row["requests"] == 3 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
            assert row["target_p99_ms"] == bench_scale.TARGETS_MS.get(timing.name)

        dropped = bench_scale.time_partition_drop(conn, settings, 3000, datetime.now(timezone.utc))
        assert dropped["rows"] == 3000 and dropped["seconds"] > 0
        assert dropped["maintenance_result"]["partitions_dropped"] >= 1

        disk = bench_scale.disk_per_reading(conn)
        assert disk["readings"] == readings
        assert disk["raw"] > 0 and disk["rollups"] > 0 and disk["indexes"] > 0
        assert disk["total"] == pytest.approx(disk["raw"] + disk["rollups"] + disk["indexes"], abs=0.2)
    runtime_module.current().store.delete_all()
