"""Ranges, pages, aggregates, retention and the partitioned layout, against the real PostgreSQL.

Readings are stored through the store (as the consumer does) and read through the query function's
handler with APIG events, so every test crosses the same code a request does.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from common import maintenance, schema
from common.apig import build_event
from common.readings import Reading
from common.runtime import Runtime
from common.store import ReadingStore, conninfo
from functions import load_function

UTC = timezone.utc
query = load_function("query")
consumer = load_function("consumer")


def get(path: str, **params) -> tuple[int, object, dict]:
    """GET through the query handler: (status, body (JSON parsed where JSON), headers)."""
    headers = params.pop("headers", {})
    event = build_event("GET", path, query={k: str(v) for k, v in params.items()}, headers=headers)
    response = query.handler(event, None)
    body = response["body"]
    if response["headers"]["Content-Type"].startswith("application/json"):
        body = json.loads(body)
    return response["statusCode"], body, response["headers"]


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def readings(device: str, metric: str, start: datetime, count: int, step: timedelta, seed: int = 1):
    rng = random.Random(seed)
    return [Reading(device, metric, round(rng.uniform(-50, 50), 3), start + i * step) for i in range(count)]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def page_through(path: str, **params) -> list[dict]:
    seen, cursor = [], None
    while True:
        status, body, _ = get(path, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        seen += body["data"]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return seen
        cursor = body["next_cursor"]


# -- history: ranges, pages, CSV -------------------------------------------------------------------
def test_paging_a_range_returns_each_reading_once_newest_first_while_readings_arrive(runtime: Runtime):
    start = now() - timedelta(hours=3)
    stored = []
    for metric in ("temperature", "humidity", "power"):
        # The same timestamps for every metric: pages must break ties by metric, never skip one.
        batch = readings("pager", metric, start, 700, timedelta(seconds=10))
        runtime.store.store(batch)
        stored += batch
    end = start + timedelta(seconds=10 * 700)
    stop = threading.Event()

    def keep_storing() -> None:
        # New readings ahead of the range's newest, and late ones behind every page, all the time.
        i = 0
        while not stop.is_set():
            i += 1
            runtime.store.store(
                [
                    Reading("pager", "voltage", 1.0, end - timedelta(milliseconds=i)),
                    Reading("pager", "temperature", 2.0, now() + timedelta(microseconds=i)),
                ]
            )

    writer = threading.Thread(target=keep_storing)
    writer.start()
    try:
        seen = page_through(
            "/api/device/pager/history",
            **{"from": iso(start), "to": str(int(end.timestamp() * 1000))},
            limit=250,
        )
    finally:
        stop.set()
        writer.join()
    keys = [(row["timestamp"], row["metric_type"]) for row in seen]
    assert len(keys) == len(set(keys)), "a reading was returned twice"
    expected = {(r.timestamp.isoformat(), r.metric_type) for r in stored}
    assert expected <= set(keys), f"{len(expected - set(keys))} readings were skipped"
    # Anything else is a late reading that landed behind the cursor (allowed), never past the range.
    assert all(start.isoformat() <= t < end.isoformat() for t, _ in keys)
    order = [(row["timestamp"], row["metric_type"]) for row in seen]
    metric_rank = {
        m: i for i, m in enumerate(("temperature", "humidity", "pressure", "voltage", "current", "power"))
    }
    assert order == sorted(
        order, key=lambda k: (-datetime.fromisoformat(k[0]).timestamp(), metric_rank[k[1]])
    )


def test_one_metric_pages_and_the_newest_page_without_a_range(runtime: Runtime):
    start = now() - timedelta(hours=1)
    runtime.store.store(readings("one", "current", start, 120, timedelta(seconds=30)))
    seen = page_through("/api/device/one/history", metric_type="current", limit=50)
    assert len(seen) == 120
    status, body, _ = get("/api/device/one/history")
    assert status == 200 and len(body["data"]) == 100 and body["has_more"] is True
    assert body["data"][0]["timestamp"] == (start + 119 * timedelta(seconds=30)).isoformat()


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-13-01"}, "to"),
        ({"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from"),
        ({"from": "2024-05-01T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_ranges_cursors_and_formats_are_a_400_that_names_them(runtime: Runtime, params, says):
    status, body, _ = get("/api/device/dev-1/history", **params)
    assert status == 400 and says in body["error"], body


def test_a_cursor_from_other_parameters_is_a_400(runtime: Runtime):
    runtime.store.store(readings("cur", "power", now() - timedelta(minutes=30), 20, timedelta(minutes=1)))
    status, body, _ = get("/api/device/cur/history", limit=5)
    cursor = body["next_cursor"]
    assert get("/api/device/cur/history", limit=5, cursor=cursor)[0] == 200
    status, body, _ = get("/api/device/cur/history", metric_type="power", limit=5, cursor=cursor)
    assert status == 400 and "cursor" in body["error"]
    status, body, _ = get("/api/device/other/history", limit=5, cursor=cursor)
    assert status == 400


def test_csv_pages_follow_the_link_header_to_the_whole_range(runtime: Runtime):
    start = now() - timedelta(hours=2)
    batch = readings("csv-1", "pressure", start, 250, timedelta(seconds=20))
    runtime.store.store(batch)
    status, text, headers = get(
        "/api/device/csv-1/history", headers={"Accept": "text/csv"}, limit=100, **{"from": iso(start)}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = text.splitlines()
    assert lines[0] == "timestamp,device_id,metric_type,value" and len(lines) == 101
    rows = lines[1:]
    while "Link" in headers:
        link = headers["Link"]
        assert link.endswith('>; rel="next"')
        path, _, querystring = link[1 : link.index(">")].partition("?")
        params = dict(pair.split("=", 1) for pair in querystring.split("&"))
        from urllib.parse import unquote_plus

        status, text, headers = get(path, **{k: unquote_plus(v) for k, v in params.items()})
        assert status == 200
        assert text.splitlines()[0] == "timestamp,device_id,metric_type,value"
        rows += text.splitlines()[1:]
    assert len(rows) == 250 and len(set(rows)) == 250
    first = rows[-1].split(",")
    assert first == [start.isoformat(), "csv-1", "pressure", repr(batch[0].value)]
    assert "Link" in headers["Access-Control-Expose-Headers"]  # a dashboard on OBS can follow it


# -- series: exact aggregates ----------------------------------------------------------------------
def recompute(rows, interval: str, zone: ZoneInfo, start: datetime, end: datetime) -> dict[str, dict]:
    """The same aggregates computed in Python from raw readings (bucket rule from common.timeseries)."""
    from common.timeseries import INTERVALS, bucket_of, format_time

    chosen = next(i for i in INTERVALS if i.name == interval)
    buckets: dict[datetime, list] = {}
    for value, moment in rows:
        if start <= moment < end:
            buckets.setdefault(bucket_of(moment, chosen, zone), []).append((moment, value))
    result = {}
    for begins, items in sorted(buckets.items()):
        items.sort()
        values = [v for _, v in items]
        result[format_time(begins, zone)] = {
            "count": len(values),
            "sum": sum(values),
            "avg": sum(values) / len(values),
            "min": min(values),
            "max": max(values),
            "first": items[0][1],
            "last": items[-1][1],
        }
    return result


def raw_rows(runtime: Runtime, device: str, metric: str):
    return runtime.store.run(
        lambda conn: conn.execute(
            "SELECT value, timestamp FROM reading WHERE device_id = %s AND metric_type = %s",
            (device, metric),
        ).fetchall()
    )


def assert_points_equal(points: list[dict], expected: dict[str, dict], aggregates: list[str]) -> None:
    assert [p["t"] for p in points] == list(expected), "bucket starts differ"
    for point in points:
        want = expected[point["t"]]
        assert point["count"] == want["count"]
        for name in aggregates:
            assert point[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), (point["t"], name)


def test_aggregates_equal_a_recomputation_after_shuffled_late_and_duplicated_input(runtime: Runtime):
    rng = random.Random(7)
    end = now().replace(second=0) - timedelta(minutes=1)
    start = end - timedelta(days=3)
    batch = [
        Reading(
            "agg",
            "temperature",
            round(rng.gauss(20, 5), 4),
            start + timedelta(seconds=rng.randrange(3 * 86400)),
        )
        for _ in range(6000)
    ]
    batch = list({(r.timestamp): r for r in batch}.values())
    rng.shuffle(batch)
    # In batches, out of order; then a third of them again (redelivered) and again inside one batch.
    for i in range(0, len(batch), 700):
        runtime.store.store(batch[i : i + 700])
    again = batch[::3]
    runtime.store.store(again + again[:50])
    # Late readings, after the rollups for their minutes exist.
    late = [
        Reading("agg", "temperature", 99.5, start + timedelta(hours=h, seconds=1.5)) for h in range(0, 72, 5)
    ]
    runtime.store.store(late)
    runtime.store.store(late)
    rows = raw_rows(runtime, "agg", "temperature")
    assert len(rows) == len(batch) + len(late)
    aggregates = ["avg", "min", "max", "sum", "count", "first", "last"]
    cases = [
        (
            "1m",
            "UTC",
            start + timedelta(hours=5, seconds=17),
            start + timedelta(hours=12, minutes=3, seconds=1),
        ),
        ("5m", "Europe/Berlin", start, start + timedelta(hours=30)),
        ("15m", "Asia/Kathmandu", start + timedelta(minutes=7), end),
        ("1h", "Asia/Kolkata", start, end),
        ("3h", "America/New_York", start + timedelta(seconds=1), end - timedelta(seconds=1)),
        ("1d", "Asia/Kolkata", start, end),
        ("7d", "Pacific/Chatham", start, end),
    ]
    for interval, tz, begin, finish in cases:
        status, body, _ = get(
            "/api/device/agg/series",
            metric_type="temperature",
            interval=interval,
            tz=tz,
            agg=",".join(aggregates),
            **{"from": iso(begin), "to": iso(finish)},
        )
        assert status == 200, body
        assert body["interval"] == interval and body["tz"] == tz
        assert_points_equal(
            body["points"], recompute(rows, interval, ZoneInfo(tz), begin, finish), aggregates
        )


def test_day_buckets_across_dst_changes_are_23_and_25_hours(runtime: Runtime):
    zone = ZoneInfo("Europe/Berlin")
    # Hourly readings over three local days around each change of 2025: the change day has 23 or 25.
    # (The store creates the partitions of days this old on demand: the consumer's retention is not
    # asked here.)
    cases = [
        (
            datetime(2025, 3, 29, tzinfo=zone),
            [24, 23, 24],
            ["2025-03-29T00:00:00+01:00", "2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"],
        ),
        (
            datetime(2025, 10, 25, tzinfo=zone),
            [24, 25, 24],
            ["2025-10-25T00:00:00+02:00", "2025-10-26T00:00:00+02:00", "2025-10-27T00:00:00+01:00"],
        ),
    ]
    for first_midnight, hours, starts in cases:
        span_start = first_midnight.astimezone(UTC)
        span = timedelta(hours=sum(hours))
        runtime.store.store(readings("dst", "power", span_start, sum(hours), timedelta(hours=1)))
        window = {"from": iso(span_start), "to": iso(span_start + span)}

        def berlin(interval: str, window: dict = window) -> dict:
            status, body, _ = get(
                "/api/device/dst/series",
                metric_type="power",
                interval=interval,
                tz="Europe/Berlin",
                agg="count",
                **window,
            )
            assert status == 200, body
            return body

        body = berlin("1d")
        assert [p["t"] for p in body["points"]] == starts
        assert [p["count"] for p in body["points"]] == hours
        instants = [datetime.fromisoformat(t) for t in starts] + [span_start + span]
        assert [(b - a) / timedelta(hours=1) for a, b in zip(instants, instants[1:], strict=False)] == hours
        # One-hour buckets stay one hour each, also through the repeated and the skipped hour.
        body = berlin("1h")
        assert [p["count"] for p in body["points"]] == [1] * sum(hours)
        instants = [datetime.fromisoformat(p["t"]) for p in body["points"]]
        assert all(b - a == timedelta(hours=1) for a, b in zip(instants, instants[1:], strict=False))
        if hours[1] == 25:  # the repeated hour shows twice, with each offset
            assert {"2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00"} <= {
                p["t"] for p in body["points"]
            }


@pytest.mark.parametrize(("tz", "offset"), [("Asia/Kolkata", "+05:30"), ("Asia/Kathmandu", "+05:45")])
def test_hour_and_day_buckets_start_on_the_local_hour_and_midnight(runtime: Runtime, tz: str, offset: str):
    zone = ZoneInfo(tz)
    local_midnight = (now() - timedelta(days=3)).astimezone(zone).replace(hour=0, minute=0, second=0)
    start = local_midnight.astimezone(UTC)
    runtime.store.store(readings("asia", "voltage", start, 48 * 4, timedelta(minutes=15)))
    for interval, expected in (("1h", 48), ("1d", 2)):
        status, body, _ = get(
            "/api/device/asia/series",
            metric_type="voltage",
            interval=interval,
            tz=tz,
            agg="count",
            **{"from": iso(start), "to": iso(start + timedelta(hours=48))},
        )
        assert status == 200, body
        assert len(body["points"]) == expected
        for point in body["points"]:
            assert point["t"].endswith(offset)
            assert point["t"][14:19] == "00:00"  # on the local hour
            assert point["count"] == (4 if interval == "1h" else 96)
        if interval == "1d":
            assert all(p["t"][11:19] == "00:00:00" for p in body["points"])


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({}, "metric_type"),
        ({"metric_type": "temperature", "tz": "Mars/Olympus"}, "tz"),
        ({"metric_type": "temperature", "interval": "2h"}, "interval"),
        ({"metric_type": "temperature", "agg": "median"}, "agg"),
        (
            {
                "metric_type": "temperature",
                "interval": "1m",
                "from": "2024-01-01T00:00:00Z",
                "to": "2024-03-01T00:00:00Z",
            },
            "15m",
        ),
    ],
)
def test_bad_series_requests_are_a_400_that_says_what_to_change(runtime: Runtime, params, says):
    status, body, _ = get("/api/device/dev-1/series", **params)
    assert status == 400 and says in body["error"], body


def test_series_defaults_to_the_last_day_at_auto(runtime: Runtime):
    runtime.store.store(readings("auto", "humidity", now() - timedelta(hours=30), 30, timedelta(hours=1)))
    status, body, _ = get("/api/device/auto/series", metric_type="humidity")
    assert status == 200, body
    assert body["interval"] == "5m"  # 288 buckets in a day; 1m would be 1,440
    assert sum(p["count"] for p in body["points"]) in (23, 24, 25)
    assert set(body["points"][0]) == {"t", "count", "avg"}


# -- devices in pages, stats -----------------------------------------------------------------------
def test_devices_come_in_pages_in_id_order_and_prefix_is_literal(runtime: Runtime):
    moment = now() - timedelta(minutes=5)
    ids = [f"site-{i:04d}" for i in range(2500)] + ["site_x", "sitex", "site%1"]
    runtime.store.store([Reading(d, "power", 1.0, moment) for d in ids])
    status, body, _ = get("/api/devices")
    assert status == 200 and len(body["devices"]) == 1000 and body["has_more"] is True
    listed, cursor = [], None
    while True:
        status, body, _ = get("/api/devices", limit=700, **({"cursor": cursor} if cursor else {}))
        listed += [d["device_id"] for d in body["devices"]]
        if not body["has_more"]:
            break
        cursor = body["next_cursor"]
    assert listed == sorted(ids)
    status, body, _ = get("/api/devices", prefix="site_")
    assert [d["device_id"] for d in body["devices"]] == ["site_x"]
    status, body, _ = get("/api/devices", prefix="site%")
    assert [d["device_id"] for d in body["devices"]] == ["site%1"]
    status, body, _ = get("/api/devices", prefix="site-00")
    assert len(body["devices"]) == 100 and body["has_more"] is False


def test_stats_count_today_from_the_day_counts(runtime: Runtime):
    today = now().replace(hour=0, minute=0, second=0)
    runtime.store.store(readings("st", "power", today, 10, timedelta(seconds=1)))
    runtime.store.store(readings("st", "power", today, 10, timedelta(seconds=1)))  # duplicates
    runtime.store.store(readings("st", "power", today - timedelta(days=1), 5, timedelta(seconds=1)))
    assert runtime.store.stats()["readings_today"] == 10


# -- retention and partitions ----------------------------------------------------------------------
def test_readings_older_than_the_retention_are_refused_at_ingest_and_rejected_by_the_consumer(runtime):
    ingest = load_function("ingest")
    old = (now() - timedelta(days=runtime.settings.raw_retention_days + 1)).isoformat()
    body = json.dumps({"device_id": "old", "metric_type": "power", "value": 1, "timestamp": old}).encode()
    response = ingest.handler(
        build_event("POST", "/api/device/data", body=body, headers={"Content-Type": "application/json"}), None
    )
    assert response["statusCode"] == 400 and "RAW_RETENTION_DAYS" in json.loads(response["body"])["error"]
    from common import dms

    fresh = now().isoformat()
    message = json.dumps(
        {
            "readings": [
                {"device_id": "old", "metric_type": "power", "value": 1, "timestamp": old},
                {"device_id": "old", "metric_type": "power", "value": 2, "timestamp": fresh},
            ]
        }
    )
    result = consumer.handler(dms.build_event({"t": [message.encode()]}), None)
    assert result["stored"] == 1 and result["rejected"] == 1
    assert runtime.store.rejected_count() == 1


def test_a_reading_whose_partition_is_missing_is_stored_all_the_same(runtime: Runtime):
    month = schema.month_start(now())

    def drop_from_this_month(conn):
        for name, (lower, _) in schema.partitions(conn, "reading").items():
            if lower is not None and lower >= month:
                conn.execute(f"DROP TABLE {name}")

    runtime.store.run(drop_from_this_month)
    result = runtime.store.store(
        [Reading("ahead", "power", 3.0, now() + timedelta(hours=23)), Reading("ahead", "power", 2.0, now())]
    )
    assert result.stored == 2
    # And a maintenance pass leaves the days ahead covered again.
    maintenance.run(runtime)
    ahead = schema.day_start(now()) + timedelta(days=schema.DAYS_AHEAD)
    existing = runtime.store.run(lambda conn: schema.partitions(conn, "reading"))
    assert schema._gaps(existing, month, ahead) == []


def test_retention_drops_only_expired_partitions_and_rollups_still_answer(runtime: Runtime):
    keep = 10
    # 48 hourly readings from the last day of the month before last: half in one monthly partition,
    # half in the next.
    first_partition_ends = schema.month_start(schema.month_start(now()) - timedelta(days=1))
    last_day = first_partition_ends - timedelta(days=1)
    runtime.store.store(readings("ret", "temperature", last_day, 48, timedelta(hours=1)))
    later = first_partition_ends + timedelta(days=keep)  # the first partition has just expired then
    before = runtime.store.run(lambda conn: schema.partitions(conn, "reading"))
    runtime.settings = dataclasses.replace(runtime.settings, raw_retention_days=keep)
    result = maintenance.run(runtime, now=later)
    after = runtime.store.run(lambda conn: schema.partitions(conn, "reading"))
    limit = schema.retention_limit(later, keep)
    dropped = set(before) - set(after)
    assert result["partitions_dropped"] == len(dropped) > 0
    assert all(before[name][1] <= limit for name in dropped)
    assert all(upper > limit for _, upper in after.values())
    # The raw readings of the dropped month are gone; their rollups still answer.
    remaining = runtime.store.history_page("ret", "temperature", None, None, None, 1000)
    assert len(remaining) == 24
    span = {"from": iso(last_day - timedelta(days=1)), "to": iso(now())}
    status, body, _ = get(
        "/api/device/ret/series", metric_type="temperature", interval="1h", agg="count", **span
    )
    assert status == 200 and sum(p["count"] for p in body["points"]) == 48
    # A second run at once finds nothing to do.
    assert maintenance.run(runtime, now=later)["partitions_dropped"] == 0


def test_maintenance_runs_never_overlap(runtime: Runtime):
    with psycopg.connect(conninfo(runtime.settings), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (maintenance.MAINTENANCE_LOCK,))
        assert maintenance.run(runtime)["skipped"] is True
    assert maintenance.run(runtime)["skipped"] is False


# -- migration of an existing database -------------------------------------------------------------
class SchemaStore(ReadingStore):
    """The store in a PostgreSQL schema of its own: a database of its own, as far as it can tell."""

    def __init__(self, settings, schema_name: str):
        super().__init__(settings)
        self.schema_name = schema_name

    def _conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            super()._conninfo(), options=f"-c timezone=UTC -c search_path={self.schema_name}"
        )


def test_migrating_a_filled_database_keeps_every_reading_and_latest_value(settings, monkeypatch):
    name = f"migrate_{random.randrange(10**9)}"
    admin = psycopg.connect(conninfo(settings), autocommit=True)
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        old_settings = settings
        old = SchemaStore(old_settings, name)
        monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        monkeypatch.setattr(schema, "ensure_partitions", lambda *args: 0)
        old.migrate()
        start = now() - timedelta(days=20)
        rows = [
            (f"dev-{d}", metric, float(i), start + timedelta(minutes=i * 7 + d))
            for d in range(30)
            for metric in ("temperature", "power")
            for i in range(0, 4000, 13)
        ]

        def fill(conn):
            with conn.cursor().copy(
                "COPY reading (device_id, metric_type, value, timestamp) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(
                "INSERT INTO latest_reading SELECT DISTINCT ON (device_id, metric_type) *"
                " FROM reading ORDER BY device_id, metric_type, timestamp DESC"
            )

        old.run(fill)
        latest_before = old.latest()
        old.close()
        monkeypatch.undo()

        new = SchemaStore(old_settings, name)
        assert new.migrate() == len(schema.MIGRATIONS)
        count = new.run(lambda conn: conn.execute("SELECT count(*) FROM reading").fetchone()[0])
        assert count == len(rows)
        assert new.latest() == latest_before
        assert new.run(lambda conn: "reading_legacy" in schema.partitions(conn, "reading"))
        # New readings go to day partitions; the old ones' rollups are backfilled by maintenance.
        new.store([Reading("dev-0", "temperature", 1e6, now())])
        runtime = Runtime(old_settings)
        runtime.__dict__["store"] = new
        while maintenance.run(runtime)["rollup_days_backfilled"]:
            pass
        # the backfill rolled up every reading below its bound, the new one too: the roll-up takes none twice
        assert maintenance.run(runtime, now=now() + timedelta(minutes=16))["readings_rolled_up"] == 0
        complete = new.run(
            lambda conn: conn.execute("SELECT complete_from = '-infinity' FROM rollup_horizon").fetchone()[0]
        )
        assert complete
        totals = new.run(
            lambda conn: conn.execute(
                "SELECT (SELECT sum(count) FROM rollup_15m), (SELECT sum(count) FROM rollup_1m)"
            ).fetchone()
        )
        assert totals == (len(rows) + 1, len(rows) + 1)
        new.close()
    finally:
        admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


def level_totals(runtime: Runtime, device: str) -> tuple[int, int]:
    """Readings counted in the 15-minute and the per-minute rollups of one device."""
    return runtime.store.run(
        lambda conn: conn.execute(
            "SELECT (SELECT coalesce(sum(count), 0) FROM rollup_15m WHERE device_id = %(d)s),"
            " (SELECT coalesce(sum(count), 0) FROM rollup_1m WHERE device_id = %(d)s)",
            {"d": device},
        ).fetchone()
    )


def test_new_readings_are_rolled_up_by_maintenance_and_series_are_exact_before_and_after(runtime):
    """Maintenance rolls the readings of whole quarter hours up into the rollups; batches merge only late
    readings, before that boundary. Before and after a roll-up, and with late readings on either side of
    the boundary, hour buckets (read from the rollups as far as they are rolled up) equal a recomputation
    from raw readings."""
    rng = random.Random(11)
    moment = now()
    (boundary,) = runtime.store.run(
        lambda conn: conn.execute("SELECT rolled_before FROM rollup_horizon").fetchone()
    )
    # Other tests may have rolled up ahead of the clock: the newest readings are at or after the boundary.
    moment = max(moment, boundary + timedelta(minutes=10))
    start = boundary - timedelta(hours=2)
    end = moment + timedelta(minutes=1)
    fresh = [
        Reading("roll", "power", round(rng.uniform(0, 50), 3), max(boundary, moment - timedelta(seconds=s)))
        for s in range(0, 600, 7)
    ]
    fresh = list({r.timestamp: r for r in fresh}.values())
    older = [
        Reading("roll", "power", float(i), start + timedelta(minutes=i * 3, seconds=5)) for i in range(30)
    ]
    runtime.store.store(fresh + older)

    def answered() -> None:
        status, body, _ = get(
            "/api/device/roll/series",
            metric_type="power",
            interval="1h",
            agg="avg,min,max,sum,count,first,last",
            **{"from": iso(start), "to": iso(end)},
        )
        assert status == 200, body
        expected = recompute(raw_rows(runtime, "roll", "power"), "1h", ZoneInfo("UTC"), start, end)
        assert_points_equal(body["points"], expected, ["avg", "min", "max", "sum", "first", "last"])

    # Readings before the boundary reached every level with their batch; the newer ones wait.
    assert level_totals(runtime, "roll") == (len(older), len(older))
    answered()
    summary = maintenance.run(runtime, now=moment + timedelta(minutes=16))
    assert summary["readings_rolled_up"] > 0
    assert level_totals(runtime, "roll") == (len(older) + len(fresh),) * 2
    answered()
    # A late reading for a quarter hour already rolled up goes into both levels with its batch, once.
    late = [Reading("roll", "power", 77.0, fresh[0].timestamp + timedelta(microseconds=1))]
    runtime.store.store(late)
    runtime.store.store(late)
    assert level_totals(runtime, "roll") == (len(older) + len(fresh) + 1,) * 2
    answered()
    assert maintenance.run(runtime, now=moment + timedelta(minutes=16))["readings_rolled_up"] == 0


def test_batches_stored_while_maintenance_rolls_up_are_counted_once(runtime):
    """The roll-up and batches storing at the same time: every reading reaches each level exactly once
    (batches wait for each roll-up step and then see its new boundary)."""
    moment = now()
    stop = threading.Event()
    stored: list[int] = []

    def store_batches() -> None:
        i = 0
        while not stop.is_set() and i < 200:
            base = moment - timedelta(minutes=20) + timedelta(seconds=i * 7)
            runtime.store.store(
                [
                    Reading(f"race-{d}", "voltage", float(i), base + timedelta(milliseconds=d))
                    for d in range(20)
                ]
            )
            stored.append(20)
            i += 1

    thread = threading.Thread(target=store_batches)
    thread.start()
    for step in range(6):
        maintenance.run(runtime, now=moment + timedelta(minutes=5 * step))
    stop.set()
    thread.join()
    maintenance.run(runtime, now=moment + timedelta(hours=1))
    fifteen, minute = runtime.store.run(
        lambda conn: conn.execute(
            "SELECT (SELECT sum(count) FROM rollup_15m WHERE device_id LIKE 'race-%%'),"
            " (SELECT sum(count) FROM rollup_1m WHERE device_id LIKE 'race-%%')"
        ).fetchone()
    )
    assert fifteen == minute == sum(stored)
