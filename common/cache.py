"""Redis: the latest value per (device, metric), as a cache of PostgreSQL's latest-value table.

Layout (``prefix`` defaults to ``iot:``):
- ``{prefix}latest``: one hash, ``"<device_id> <metric>"`` -> ``"<epoch microseconds>|<value>|<ISO time>"``
  (device ids cannot contain spaces), so a device's latest values come back in one round trip
- ``{prefix}ready``: present once the cache holds everything PostgreSQL had when it was built

Writes go through one Lua script, so comparing and replacing is atomic and an older reading never
replaces a newer one, whatever order the consumers deliver them in. When ``ready`` is missing
(Redis restarted, or was flushed, or this process saw Redis fail) the next reader rebuilds it from
PostgreSQL; until then, and while Redis is down, reads fall back to PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ServiceUnavailable
from .readings import MetricType, Reading
from .settings import Settings
from .store import LatestValue
from .timeseries import epoch_microseconds

log = logging.getLogger(__name__)

# KEYS[1]: the latest hash.  ARGV: field, micros, "value|ISO time" for each reading.
_PUT_NEWER = """
local moved = 0
for a = 1, #ARGV, 3 do
  local micros = tonumber(ARGV[a + 1])
  local current = redis.call('HGET', KEYS[1], ARGV[a])
  if (not current) or tonumber(string.match(current, '^[^|]+')) < micros then
    redis.call('HSET', KEYS[1], ARGV[a], ARGV[a + 1] .. '|' .. ARGV[a + 2])
    moved = moved + 1
  end
end
return moved
"""

_CHUNK = 500  # readings per script call: keeps one call short so Redis stays responsive
# After a failure, Redis is left alone this long: callers go straight to PostgreSQL instead of
# waiting for a connect timeout on every request.
SUSPEND_SECONDS = 5.0


class CacheUnavailable(ServiceUnavailable):
    """Redis cannot be reached or failed; readers fall back to PostgreSQL."""

    def __init__(self, message: str = "Redis does not answer"):
        super().__init__(message)


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """Redis's own errors become CacheUnavailable: callers know this module's error, not redis-py's."""
    try:
        yield
    except redis.RedisError as error:
        raise CacheUnavailable() from error


class LatestCache:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.prefix = settings.redis_key_prefix
        self._client: redis.Redis | None = None
        self._script = None
        # Set when Redis failed this process: updates may have been missed meanwhile (by this
        # process or by others that could not reach it either), so rebuild once it answers again.
        self._needs_rebuild = False
        self._suspended_until = 0.0

    def suspended(self) -> bool:
        """True for a few seconds after Redis failed."""
        return time.monotonic() < self._suspended_until

    def suspend(self) -> None:
        """Leave Redis alone for a while, and rebuild the cache when it is back."""
        self._suspended_until = time.monotonic() + SUSPEND_SECONDS
        self._needs_rebuild = True

    def _heal(self, client: redis.Redis) -> None:
        """First contact after a failure: drop the ready marker so the next reader rebuilds."""
        if self._needs_rebuild:
            client.delete(self._ready_key)
            self._needs_rebuild = False

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            s = self.settings
            self._client = redis.Redis(
                host=s.redis_host,
                port=s.redis_port,
                db=s.redis_db,
                password=s.redis_password or None,
                socket_connect_timeout=s.connect_timeout,
                socket_timeout=s.connect_timeout,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
                decode_responses=True,  # hiredis decodes in C: thousands of entries per /api/devices
            )
            self._script = self._client.register_script(_PUT_NEWER)
        return self._client

    @property
    def _put_newer(self):
        """The compare-and-set script, registered with the current client (made on first use)."""
        if self._script is None or self._client is None:
            self._script = self.client.register_script(_PUT_NEWER)
        return self._script

    @property
    def _latest_key(self) -> str:
        return f"{self.prefix}latest"

    @property
    def _ready_key(self) -> str:
        return f"{self.prefix}ready"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- writes ------------------------------------------------------------------------------
    def _put(self, values: Iterable[tuple[str, str, float, datetime]]) -> int:
        # Only the newest of each key matters; sending fewer keeps the script short.
        newest: dict[tuple[str, str], tuple[float, datetime]] = {}
        for device_id, metric, value, moment in values:
            seen = newest.get((device_id, metric))
            if seen is None or seen[1] < moment:
                newest[(device_id, metric)] = (value, moment)
        items = list(newest.items())
        moved = 0
        for start in range(0, len(items), _CHUNK):
            args: list = []
            for (device_id, metric), (value, moment) in items[start : start + _CHUNK]:
                args += [
                    f"{device_id} {metric}",
                    epoch_microseconds(moment),
                    f"{float(value)!r}|{moment.isoformat()}",
                ]
            moved += self._put_newer(keys=[self._latest_key], args=args)
        return moved

    def put_readings(self, readings: Sequence[Reading]) -> int:
        """Move latest values forward; never raises: a failed write marks the cache for rebuild."""
        if self.suspended():
            return 0
        try:
            self._heal(self.client)
            return self._put(readings)  # a Reading is the (device, metric, value, time) tuple _put takes
        except redis.RedisError as error:
            log.warning("Redis write failed; the cache will be rebuilt from PostgreSQL: %s", error)
            self.suspend()
            return 0

    def rebuild(self, latest: Sequence[LatestValue]) -> None:
        """Load PostgreSQL's latest values (merging with anything newer already cached)."""
        with _unavailable_on_error():
            self._put(
                (v.device_id, v.metric_type, v.value, datetime.fromisoformat(v.timestamp)) for v in latest
            )
            self.client.set(self._ready_key, "1")

    def clear(self) -> None:
        with _unavailable_on_error():
            client = self.client
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])

    # -- reads -------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        with _unavailable_on_error():
            client = self.client
            self._heal(client)
            return bool(client.exists(self._ready_key))

    @staticmethod
    def _value(device_id: str, metric: str, entry: str) -> LatestValue:
        _, value, moment = entry.split("|", 2)
        return LatestValue(device_id, metric, float(value), moment)

    def latest(self, device_id: str) -> list[LatestValue]:
        """One device's latest values, ordered by metric."""
        metrics = sorted(MetricType.names())
        with _unavailable_on_error():
            entries = self.client.hmget(self._latest_key, [f"{device_id} {metric}" for metric in metrics])
        return [
            self._value(device_id, metric, entry)
            for metric, entry in zip(metrics, entries, strict=True)
            if entry is not None
        ]

    def all_latest(self) -> list[LatestValue]:
        """Every latest value, ordered by device and metric."""
        with _unavailable_on_error():
            entries = self.client.hgetall(self._latest_key)
        values = []
        for field, entry in sorted(entries.items()):
            device_id, metric = field.split(" ")
            values.append(self._value(device_id, metric, entry))
        return values

    def ping(self) -> None:
        with _unavailable_on_error():
            self.client.ping()
