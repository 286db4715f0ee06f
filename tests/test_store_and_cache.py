"""PostgreSQL store and Redis cache against the real servers."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis

from common.cache import CacheUnavailable, LatestCache
from common.errors import ServiceUnavailable
from common.query import latest_values
from common.readings import MetricType, Reading
from common.runtime import Runtime
from common.schema import MIGRATIONS
from common.settings import Settings
from common.store import ReadingStore

from .conftest import RECENT_DAY

T0 = datetime.fromisoformat(RECENT_DAY).replace(hour=12, tzinfo=timezone.utc)


def r(device="dev-1", metric="temperature", value=1.0, minutes=0) -> Reading:
    return Reading(device, MetricType(metric).value, value, T0 + timedelta(minutes=minutes))


def count(rt: Runtime, sql: str = "SELECT count(*) FROM reading") -> int:
    with rt.store.pool.connection() as conn:
        return conn.execute(sql).fetchone()[0]


pytestmark = pytest.mark.integration


def test_migrations_are_idempotent_even_when_run_concurrently(runtime: Runtime, settings: Settings):
    errors = []

    def migrate():
        store = ReadingStore(settings)
        try:
            assert store.migrate() == len(MIGRATIONS)
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(runtime, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


def test_a_redelivered_batch_is_stored_once(runtime: Runtime):
    batch = [r(value=1, minutes=0), r(value=2, minutes=1), r(metric="humidity", value=40)]
    first = runtime.store.store(batch)
    again = runtime.store.store(batch)
    assert (first.stored, first.duplicates) == (3, 0)
    assert (again.stored, again.duplicates, again.latest_moved) == (0, 3, 0)
    assert count(runtime) == 3


def test_a_partly_stored_batch_stores_only_what_is_new(runtime: Runtime):
    """Storing tries plain inserts first; a batch holding one stored reading must still store the
    rest exactly once, and move the latest values only from what is new and newer."""
    runtime.store.store([r(value=1, minutes=0), r(value=10, minutes=10)])
    result = runtime.store.store(
        [r(value=1, minutes=0), r(value=5, minutes=5), r(metric="humidity", value=40, minutes=1)]
    )
    assert (result.stored, result.duplicates, result.latest_moved) == (2, 1, 1)
    assert count(runtime) == 4
    latest = {v.metric_type: v.value for v in runtime.store.latest("dev-1")}
    assert latest == {"temperature": 10.0, "humidity": 40.0}


def test_one_reading_twice_in_a_batch_is_stored_once(runtime: Runtime):
    result = runtime.store.store([r(value=7, minutes=3), r(value=8, minutes=4), r(value=7, minutes=3)])
    assert (result.stored, result.duplicates, result.latest_moved) == (2, 1, 1)
    assert count(runtime) == 2
    assert runtime.store.latest("dev-1")[0].value == 8.0


def test_one_batch_stored_by_two_consumers_at_once_is_stored_once(runtime: Runtime, settings: Settings):
    """Two consumers holding the same readings (a rebalance redelivers a batch another is storing):
    one stores them, the other finds them stored, whichever commits first."""
    batch = [r(device=f"dev-{n % 50}", value=n, minutes=n) for n in range(3000)]
    stores = [ReadingStore(settings), ReadingStore(settings)]
    for target in stores:
        target.migrate()  # connected and ready, so the two stores start together
    together = threading.Barrier(2)
    results, errors = [], []

    def store(target: ReadingStore) -> None:
        together.wait()
        try:
            results.append(target.store(batch))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    try:
        threads = [threading.Thread(target=store, args=(target,)) for target in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for target in stores:
            target.close()
    assert errors == []
    assert sorted((result.stored, result.duplicates) for result in results) == [(0, 3000), (3000, 0)]
    assert count(runtime) == 3000
    assert count(runtime, "SELECT count(*) FROM latest_reading") == 50


def test_latest_only_moves_forward_and_late_readings_are_history(runtime: Runtime):
    runtime.store.store([r(value=10, minutes=5)])
    runtime.store.store([r(value=99, minutes=1)])  # late
    latest = runtime.store.latest("dev-1")
    assert [(v.value, v.timestamp) for v in latest] == [(10.0, (T0 + timedelta(minutes=5)).isoformat())]
    history = runtime.store.history_page("dev-1", None, None, None, None, 10)
    assert [row[1] for row in history] == [10.0, 99.0]


def test_a_batch_with_several_readings_of_one_key_keeps_the_newest(runtime: Runtime):
    result = runtime.store.store([r(value=1, minutes=1), r(value=3, minutes=3), r(value=2, minutes=2)])
    assert result.stored == 3 and result.latest_moved == 1
    assert runtime.store.latest("dev-1")[0].value == 3.0


def test_history_order_filter_and_limit(runtime: Runtime):
    runtime.store.store([r(value=i, minutes=i) for i in range(5)] + [r(metric="power", value=50, minutes=10)])
    assert [row[1] for row in runtime.store.history_page("dev-1", "temperature", None, None, None, 3)] == [
        4.0,
        3.0,
        2.0,
    ]
    assert runtime.store.history_page("dev-1", None, None, None, None, 1)[0][0] == "power"
    assert runtime.store.history_page("nobody", None, None, None, None, 10) == []


def test_rejected_messages_are_kept_with_their_reason(runtime: Runtime):
    runtime.store.reject([("topic", "not json", "not JSON: Expecting value")])
    assert runtime.store.rejected_count() == 1
    with runtime.store.pool.connection() as conn:
        raw, reason, received_at = conn.execute(
            "SELECT raw, reason, received_at FROM rejected_message"
        ).fetchone()
    assert (raw, reason) == ("not json", "not JSON: Expecting value")
    assert received_at is not None


def test_rejected_payloads_with_nul_or_huge_sizes_are_still_kept(runtime: Runtime):
    from common.store import MAX_REJECTED_TEXT

    huge = "x" * (MAX_REJECTED_TEXT + 10)
    assert (
        runtime.store.reject([("t", '{"device_id": "a\x00b"}', "not a reading"), ("t", huge, "too big")]) == 2
    )
    with runtime.store.pool.connection() as conn:
        raws = [row[0] for row in conn.execute("SELECT raw FROM rejected_message ORDER BY id")]
    assert raws[0] == '{"device_id": "a\\u0000b"}'
    assert raws[1].startswith("x" * 100) and raws[1].endswith(
        f"[cut: {MAX_REJECTED_TEXT + 10} characters in all]"
    )


def test_cache_never_lets_an_older_reading_replace_a_newer_one(runtime: Runtime):
    cache = runtime.cache
    assert cache.put_readings([r(value=5, minutes=5), r(device="dev-2", value=7)]) == 2
    assert cache.put_readings([r(value=1, minutes=1)]) == 0
    assert cache.put_readings([r(value=6, minutes=6), r(value=4, minutes=4)]) == 1
    assert [(v.value, v.timestamp) for v in cache.latest("dev-1")] == [
        (6.0, (T0 + timedelta(minutes=6)).isoformat())
    ]
    assert {v.device_id for v in cache.all_latest()} == {"dev-1", "dev-2"}


def test_cache_is_rebuilt_from_postgres_after_redis_lost_it(runtime: Runtime):
    runtime.store.store([r(value=5, minutes=5), r(device="dev-2", metric="voltage", value=230)])
    runtime.cache.clear()  # as after a Redis restart without persistence
    assert not runtime.cache.is_ready()
    assert [v.value for v in latest_values(runtime, "dev-1")] == [5.0]
    assert {(v.device_id, v.metric_type, v.value) for v in runtime.cache.all_latest()} == {
        ("dev-1", "temperature", 5.0),
        ("dev-2", "voltage", 230.0),
    }
    assert runtime.cache.is_ready()
    assert [v.value for v in runtime.cache.latest("dev-2")] == [230.0]


def test_a_new_process_can_rebuild_the_cache_before_anything_else_touched_redis(
    runtime: Runtime, settings: Settings
):
    runtime.store.store([r(value=7, minutes=7)])
    runtime.cache.clear()
    fresh = LatestCache(settings)  # as a tool or a new instance would, with no client yet
    try:
        fresh.rebuild(runtime.store.latest())
        assert fresh.is_ready() and [v.value for v in fresh.latest("dev-1")] == [7.0]
    finally:
        fresh.close()


def test_latest_values_come_from_postgres_when_redis_is_down(runtime: Runtime, settings: Settings):
    runtime.store.store([r(value=5, minutes=5)])
    down = Runtime(Settings(**{**settings.__dict__, "redis_port": 1, "connect_timeout": 1}))
    down.__dict__["store"] = runtime.store  # same PostgreSQL, dead Redis
    assert [v.value for v in latest_values(down, "dev-1")] == [5.0]
    # a write to a dead Redis is not an error for the consumer; it marks the cache for rebuild
    assert down.cache.put_readings([r(value=6, minutes=6)]) == 0
    # the cache reports its own error, not redis-py's: callers need not know the client library
    with pytest.raises(CacheUnavailable, match="Redis does not answer") as caught:
        down.cache.ping()
    assert isinstance(caught.value.__cause__, redis.RedisError)


def test_a_dead_database_is_a_quick_503(settings: Settings):
    store = ReadingStore(Settings(**{**settings.__dict__, "db_port": 1, "connect_timeout": 1}))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="database is unavailable"):
        store.latest()
    assert time.monotonic() - started < 10
    store.close()


def test_stats_count_devices_todays_readings_and_rejections(runtime: Runtime):
    from common.readings import utc_now

    now = utc_now()
    runtime.store.store(
        [
            r(value=1),
            Reading("dev-2", "power", 1.0, now),
            Reading("dev-2", "power", 2.0, now - timedelta(seconds=1)),
        ]
    )
    runtime.store.reject([("t", "x", "not JSON")])
    stats = runtime.store.stats()
    assert stats["devices"] == 2 and stats["rejected_messages"] == 1
    assert stats["readings_today"] in (1, 2)  # both unless the test straddles midnight UTC


def test_timestamps_sort_as_text_in_time_order():
    # latest values compare ISO texts; isoformat() leaves out a zero fraction, and must still sort right
    moments = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(seconds=1), T0 + timedelta(days=400)]
    assert sorted(m.isoformat() for m in reversed(moments)) == [m.isoformat() for m in moments]


def test_devices_json_is_exact(runtime: Runtime):
    import json

    from common import query
    from common.apig import ApigRequest, build_event

    values = [1e20, -0.0, 1 / 3, 123456789.123456789, -273.15, 5e-324]
    readings = [r(device=f"dev-{i}", metric="power", value=v, minutes=i) for i, v in enumerate(values)]
    runtime.store.store(readings)
    body = json.loads(query.list_devices(ApigRequest.from_event(build_event("GET", "/api/devices"))).body)
    assert body == {
        "devices": [
            {
                "device_id": f"dev-{i}",
                "metrics": {"power": {"value": v, "timestamp": (T0 + timedelta(minutes=i)).isoformat()}},
                "last_updated": (T0 + timedelta(minutes=i)).isoformat(),
            }
            for i, v in enumerate(values)
        ],
        "has_more": False,
        "next_cursor": None,
    }
