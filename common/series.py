"""Aggregates of one series per time bucket, from the rollups where they answer exactly.

The store groups rows by their bucket's start on the local clock and the UTC offset in force; here
each group gets its start instant (``timeseries.bucket_start``, which states the rule for the hours a
DST change skips or repeats) and groups that start at the same instant are merged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .schema import ROLLUPS
from .store import ReadingStore
from .timeseries import Interval, bucket_start, format_time


def rollup_level(interval: Interval) -> int:
    """The coarsest rollup whose buckets nest in every bucket of ``interval`` in any zone."""
    level = 0
    for index, (_, width) in enumerate(ROLLUPS):
        if interval.kind != "fixed" or interval.step % width == timedelta(0):
            level = index
    return level


class _Bucket:
    __slots__ = ("count", "sum", "min", "max", "first_time", "first", "last_time", "last")

    def __init__(self, row: tuple):
        (self.count, self.sum, self.min, self.max, self.first_time, self.first, self.last_time, self.last) = (
            row
        )

    def merge(self, row: tuple) -> None:
        count, total, low, high, first_time, first, last_time, last = row
        self.count += count
        self.sum += total
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        if first_time < self.first_time:
            self.first_time, self.first = first_time, first
        if last_time > self.last_time:
            self.last_time, self.last = last_time, last

    def point(self, start: datetime, zone: ZoneInfo, aggregates: tuple[str, ...]) -> dict:
        values = {
            "avg": self.sum / self.count,
            "min": self.min,
            "max": self.max,
            "sum": self.sum,
            "count": self.count,
            "first": self.first,
            "last": self.last,
        }
        point: dict = {"t": format_time(start, zone), "count": self.count}
        for name in aggregates:
            point[name] = values[name]
        return point


def points(
    store: ReadingStore,
    device_id: str,
    metric_type: str,
    start: datetime,
    end: datetime,
    interval: Interval,
    zone: ZoneInfo,
    aggregates: tuple[str, ...],
) -> list[dict]:
    """One point per bucket that holds readings in [start, end), oldest first."""
    rows = store.series_rows(
        device_id, metric_type, start, end, rollup_level(interval), interval.step, zone.key
    )
    buckets: dict[datetime, _Bucket] = {}
    for local_start, offset, *aggregate in rows:
        begins = bucket_start(local_start, offset, interval, zone)
        bucket = buckets.get(begins)
        if bucket is None:
            buckets[begins] = _Bucket(tuple(aggregate))
        else:
            bucket.merge(tuple(aggregate))
    return [buckets[begins].point(begins, zone, aggregates) for begins in sorted(buckets)]
