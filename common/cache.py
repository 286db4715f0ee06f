"""Redis: the latest value per (device, metric), as a cache of PostgreSQL's latest-value table.

Layout (``prefix`` defaults to ``iot:``):
- ``{prefix}latest:{device_id}``: a hash, metric -> ``"<epoch microseconds>|<value>"``
- ``{prefix}devices``: the set of device ids
- ``{prefix}ready``: present once the cache holds everything PostgreSQL had when it was built

Writes go through one Lua script, so comparing and replacing is atomic and an older reading never
replaces a newer one, whatever order the consumers deliver them in. When ``ready`` is missing
(Redis restarted, or was flushed, or a write to it failed) the next reader rebuilds it from
PostgreSQL; until then reads fall back to PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ServiceUnavailable
from .readings import Reading
from .settings import Settings
from .store import LatestValue

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# KEYS[1]: devices set; KEYS[1 + i]: hash of reading i.  ARGV: device, metric, micros, value per reading.
_PUT_NEWER = """
local moved = 0
for i = 2, #KEYS do
  local a = (i - 2) * 4
  local micros = tonumber(ARGV[a + 3])
  local current = redis.call('HGET', KEYS[i], ARGV[a + 2])
  if (not current) or tonumber(string.match(current, '^[^|]+')) < micros then
    redis.call('HSET', KEYS[i], ARGV[a + 2], ARGV[a + 3] .. '|' .. ARGV[a + 4])
    moved = moved + 1
  end
  redis.call('SADD', KEYS[1], ARGV[a + 1])
end
return moved
"""

_CHUNK = 500
# After a failure, Redis is left alone this long: callers go straight to PostgreSQL instead of
# waiting for a connect timeout on every request.
SUSPEND_SECONDS = 5.0  # readings per script call: keeps one call short so Redis stays responsive


class CacheUnavailable(ServiceUnavailable):
    pass


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(microsecond=micros % 1_000_000)


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
            )
            self._script = self._client.register_script(_PUT_NEWER)
        return self._client

    def _key(self, device_id: str) -> str:
        return f"{self.prefix}latest:{device_id}"

    @property
    def _devices_key(self) -> str:
        return f"{self.prefix}devices"

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
            chunk = items[start : start + _CHUNK]
            keys = [self._devices_key] + [self._key(device_id) for (device_id, _), _ in chunk]
            args: list = []
            for (device_id, metric), (value, moment) in chunk:
                args += [device_id, metric, _micros(moment), repr(float(value))]
            moved += self._script(keys=keys, args=args)
        return moved

    def put_readings(self, readings: Sequence[Reading]) -> int:
        """Move latest values forward; never raises: a failed write marks the cache for rebuild."""
        if self.suspended():
            return 0
        try:
            self._heal(self.client)
            return self._put((r.device_id, r.metric_type, r.value, r.timestamp) for r in readings)
        except redis.RedisError as error:
            log.warning("Redis write failed; the cache will be rebuilt from PostgreSQL: %s", error)
            self.suspend()
            return 0

    def rebuild(self, latest: Sequence[LatestValue]) -> None:
        """Load PostgreSQL's latest values (merging with anything newer already cached)."""
        self._put((v.device_id, v.metric_type, v.value, v.timestamp) for v in latest)
        self.client.set(self._ready_key, "1")

    def clear(self) -> None:
        client = self.client
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])

    # -- reads -------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        client = self.client
        self._heal(client)
        return bool(client.exists(self._ready_key))

    @staticmethod
    def _decode(device_id: str, fields: dict) -> list[LatestValue]:
        values = []
        for metric, entry in sorted(fields.items()):
            micros, _, value = entry.decode().partition("|")
            values.append(LatestValue(device_id, metric.decode(), float(value), _from_micros(int(micros))))
        return values

    def latest(self, device_id: str) -> list[LatestValue]:
        return self._decode(device_id, self.client.hgetall(self._key(device_id)))

    def all_latest(self) -> list[LatestValue]:
        client = self.client
        device_ids = sorted(member.decode() for member in client.smembers(self._devices_key))
        pipe = client.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hgetall(self._key(device_id))
        values = []
        for device_id, fields in zip(device_ids, pipe.execute(), strict=True):
            values.extend(self._decode(device_id, fields))
        return values

    def ping(self) -> None:
        self.client.ping()
