"""Queries: devices, latest values, history, health and the demo-only delete-all."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from .apig import ApigRequest, Response, json_response
from .auth import require_admin
from .cache import CacheUnavailable
from .errors import BadRequest, Forbidden, NotFound, ServiceUnavailable
from .readings import SMOKE_DEVICE_ID, format_timestamp, parse_device_id, parse_metric_type
from .runtime import Runtime, current
from .store import LatestValue

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


def _from_cache_or_store(runtime: Runtime, from_cache, from_store):
    """``from_cache()`` when Redis is up (rebuilding it from PostgreSQL first if needed), else
    ``from_store()``: Redis is a cache, never the only way to an answer."""
    cache, store = runtime.cache, runtime.store
    if cache.suspended():
        return from_store()
    try:
        if not cache.is_ready():
            cache.rebuild(store.latest())
        return from_cache()
    except CacheUnavailable as error:
        log.warning("Redis unavailable, reading latest values from PostgreSQL: %s", error.__cause__)
        cache.suspend()
        return from_store()


def latest_values(runtime: Runtime, device_id: str | None = None) -> list[LatestValue]:
    """Latest values of one device, or of all, ordered by device and metric."""
    cache, store = runtime.cache, runtime.store
    if device_id is None:
        return _from_cache_or_store(runtime, cache.all_latest, store.latest)

    def from_cache() -> list[LatestValue]:
        # Not cached is not proof of absence (a missed cache write): PostgreSQL decides.
        return cache.latest(device_id) or store.latest(device_id)

    return _from_cache_or_store(runtime, from_cache, lambda: store.latest(device_id))


def _metrics(values: Sequence[LatestValue]) -> dict:
    return {v.metric_type: {"value": v.value, "timestamp": v.timestamp} for v in values}


def _last_updated(values: Sequence[LatestValue]) -> str | None:
    return max(v.timestamp for v in values) if values else None


def list_devices(request: ApigRequest) -> Response:
    """GET /api/devices: ``{"devices": [{"device_id", "metrics": {...}, "last_updated"}]}``.

    The dashboard polls this for every device; the JSON is written directly from the (sorted)
    latest values instead of building and encoding a dict per metric, which profiled as most of the
    time and the garbage for a thousand devices. Values are finite floats (validated) kept as their
    ``repr``, which is valid JSON; ids go through ``json.dumps``; times come from ``isoformat``.
    """
    runtime = current()
    rows = _from_cache_or_store(
        runtime,
        lambda: list(runtime.cache.all_latest_text()),
        lambda: [(d, m, repr(float(v)), t) for d, m, v, t in runtime.store.latest()],
    )
    devices = []
    for device_id, group in groupby(rows, key=itemgetter(0)):
        if device_id == SMOKE_DEVICE_ID:  # the deploy command's smoke readings are not a device
            continue
        metrics, last = [], ""
        for _, metric, value, moment in group:
            metrics.append(f'"{metric}": {{"value": {value}, "timestamp": "{moment}"}}')
            if moment > last:
                last = moment
        devices.append(
            f'{{"device_id": {json.dumps(device_id)}, "metrics": {{{", ".join(metrics)}}}, "last_updated": "{last}"}}'
        )
    return Response(200, '{"devices": [' + ", ".join(devices) + "]}")


def _device_id(raw: str) -> str:
    try:
        return parse_device_id(raw)
    except BadRequest:
        raise NotFound("Device not found") from None


def device_latest(request: ApigRequest, device_id: str) -> dict:
    """GET /api/device/{device_id}/latest"""
    device_id = _device_id(device_id)
    values = latest_values(current(), device_id)
    if not values:
        raise NotFound("Device not found")
    return {
        "device_id": device_id,
        "data": [{"metric_type": v.metric_type, "value": v.value, "timestamp": v.timestamp} for v in values],
        "metrics": _metrics(values),
        "last_updated": _last_updated(values),
    }


def parse_limit(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return DEFAULT_HISTORY_LIMIT
    try:
        limit = int(raw.strip())
    except ValueError:
        raise BadRequest(
            f"limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, not {raw[:20]!r}"
        ) from None
    if limit < 1:
        raise BadRequest(f"limit must be at least 1 (at most {MAX_HISTORY_LIMIT} are returned)")
    return min(limit, MAX_HISTORY_LIMIT)


def device_history(request: ApigRequest, device_id: str) -> dict:
    """GET /api/device/{device_id}/history?metric_type=&limit= (newest first)"""
    device_id = _device_id(device_id)
    raw_metric = request.query.get("metric_type")
    metric = parse_metric_type(raw_metric) if raw_metric not in (None, "") else None
    limit = parse_limit(request.query.get("limit"))
    rows = current().store.history(device_id, metric, limit)
    return {
        "device_id": device_id,
        "metric_type": metric,
        "data": [
            {"metric_type": kind, "value": value, "timestamp": format_timestamp(moment)}
            for kind, value, moment in rows
        ],
    }


def stats(request: ApigRequest) -> dict:
    """GET /api/stats: device count, readings stored today (UTC) and rejected Kafka messages."""
    return current().store.stats()


def delete_all(request: ApigRequest) -> dict:
    """POST /api/delete-all (demo only): clears the database and the cache."""
    runtime = current()
    if not runtime.settings.demo_mode:
        raise Forbidden("delete-all is disabled; it works only when DEMO_MODE=true")
    if runtime.settings.auth_enabled:
        require_admin(runtime.tokens.authenticate(request))
    try:
        runtime.cache.clear()
    except CacheUnavailable as error:
        log.warning("Redis unavailable during delete-all: %s", error.__cause__)
        raise ServiceUnavailable(
            "The cache is unavailable; nothing was deleted, try again shortly"
        ) from error
    runtime.store.delete_all()
    return {"message": "All device data deleted successfully"}


REQUIRED = ("postgres", "kafka")  # without these nothing is stored; without Redis reads are slower


def _check(probe) -> dict:
    started = time.perf_counter()
    try:
        probe()
    except ServiceUnavailable as error:  # each adapter's own unavailable error is one of these
        return {"ok": False, "error": error.message}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def readiness(request: ApigRequest) -> Response:
    """GET /ready: each dependency checked (in parallel, each bounded by its timeout); 503 if one that matters is down."""
    runtime = current()
    probes = {"postgres": runtime.store.ping, "redis": runtime.cache.ping, "kafka": runtime.producer.ping}
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = {name: pool.submit(_check, probe) for name, probe in probes.items()}
        checks = {name: future.result() for name, future in futures.items()}
    ready = all(checks[name]["ok"] for name in REQUIRED)
    body: dict = {
        "status": ("ready" if checks["redis"]["ok"] else "degraded") if ready else "unavailable",
        "checks": checks,
    }
    if checks["postgres"]["ok"]:
        body["rejected_messages"] = runtime.store.rejected_count()
    return json_response(body, 200 if ready else 503)


OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@lru_cache(maxsize=1)
def _openapi_text() -> str:
    return OPENAPI_PATH.read_text(encoding="utf-8")


def openapi_document(request: ApigRequest) -> Response:
    """GET /openapi.json: the API's OpenAPI 3 document, as kept in the repository."""
    return Response(200, _openapi_text())


def health(request: ApigRequest) -> dict:
    """GET /health: liveness only, touches no dependency."""
    return {"status": "healthy"}
