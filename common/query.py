"""Queries: devices, latest values, history, health and the demo-only delete-all."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode

from . import series
from .apig import ApigRequest, Response, json_response
from .auth import require_admin, require_read
from .cache import CacheUnavailable
from .errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, UnsupportedMediaType
from .readings import (
    MAX_DEVICE_ID_LENGTH,
    MetricType,
    format_timestamp,
    parse_device_id,
    parse_metric_type,
    utc_now,
)
from .runtime import Runtime, current
from .store import LatestValue
from .timeseries import (
    EPOCH,
    decode_cursor,
    encode_cursor,
    epoch_microseconds,
    format_time,
    parse_aggregates,
    parse_interval,
    parse_range,
    parse_zone,
)

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
SERIES_DEFAULT_SPAN = timedelta(days=1)


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


def latest_values(runtime: Runtime, device_id: str) -> list[LatestValue]:
    """Latest values of one device, ordered by metric."""
    cache, store = runtime.cache, runtime.store

    def from_cache() -> list[LatestValue]:
        # Not cached is not proof of absence (a missed cache write): PostgreSQL decides.
        return cache.latest(device_id) or store.latest(device_id)

    return _from_cache_or_store(runtime, from_cache, lambda: store.latest(device_id))


def _metrics(values: Sequence[LatestValue]) -> dict:
    return {v.metric_type: {"value": v.value, "timestamp": v.timestamp} for v in values}


def _last_updated(values: Sequence[LatestValue]) -> str | None:
    return max(v.timestamp for v in values) if values else None


MAX_DEVICES_PAGE = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _whole_number(name: str, raw: str | None, default: int, maximum: int) -> int:
    """A positive whole number up to ``maximum`` (larger asks get ``maximum``), or ``default``."""
    if raw is None or raw.strip() == "":
        return default
    try:
        number = int(raw.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a whole number from 1 to {maximum}, not {raw[:20]!r}") from None
    if number < 1:
        raise BadRequest(f"{name} must be at least 1 (at most {maximum} are returned)")
    return min(number, maximum)


def list_devices(request: ApigRequest) -> Response:
    """GET /api/devices?limit=&cursor=&prefix=: a page of devices in device-id order,
    ``{"devices": [{"device_id", "metrics": {...}, "last_updated"}], "has_more", "next_cursor"}``.

    Pages walk PostgreSQL's device list, so a page costs the same at any fleet size; PostgreSQL
    writes each device's JSON (store.devices_page)."""
    runtime = current()
    principal = runtime.caller(request)
    query = request.query
    limit = _whole_number("limit", query.get("limit"), MAX_DEVICES_PAGE, MAX_DEVICES_PAGE)
    prefix = query.get("prefix") or ""
    if len(prefix) > MAX_DEVICE_ID_LENGTH:
        raise BadRequest(f"prefix must be at most {MAX_DEVICE_ID_LENGTH} characters")
    if _CONTROL.search(prefix):
        raise BadRequest(
            "prefix may not contain control characters; device ids are letters, digits and _.:@-"
        )
    scope = f"devices {prefix}"
    after = None
    if query.get("cursor"):
        after = decode_cursor(query["cursor"], scope).get("after")
        if not isinstance(after, str):
            raise BadRequest("cursor is not a position in the device list; start again without it")
    # A scoped credential's pages simply leave out the devices it may not read.
    rows = runtime.store.devices_page(after, prefix, limit + 1, scope=principal.scope)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = json.dumps(encode_cursor({"after": rows[-1][0]}, scope)) if has_more else "null"
    devices = ", ".join(text for _, text in rows)
    return Response(
        200, f'{{"devices": [{devices}], "has_more": {json.dumps(has_more)}, "next_cursor": {next_cursor}}}'
    )


def _device_id(request: ApigRequest, raw: str) -> str:
    """The path's device id, once the caller may read it: 403 before anything is looked up, so the
    answer is the same whether or not the device exists."""
    require_read(current().caller(request), raw)
    try:
        return parse_device_id(raw)
    except BadRequest:
        raise NotFound("Device not found") from None


def device_latest(request: ApigRequest, device_id: str) -> dict:
    """GET /api/device/{device_id}/latest"""
    device_id = _device_id(request, device_id)
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
    return _whole_number("limit", raw, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)


def _optional_metric(raw: str | None) -> str | None:
    return parse_metric_type(raw) if raw not in (None, "") else None


def _wants_csv(request: ApigRequest) -> bool:
    kind = request.query.get("format")
    if kind in (None, ""):
        return "text/csv" in request.headers.get("accept", "")
    if kind not in ("json", "csv"):
        raise BadRequest(f"format must be json or csv, not {kind[:20]!r}")
    return kind == "csv"


def device_history(request: ApigRequest, device_id: str) -> Response | dict:
    """GET /api/device/{device_id}/history?metric_type=&from=&to=&limit=&cursor=&format=

    Newest first, a page at a time: ``next_cursor`` is the position after the page's last reading,
    so paging through a range returns every reading stored before the first page exactly once."""
    device_id = _device_id(request, device_id)
    query = request.query
    metric = _optional_metric(query.get("metric_type"))
    limit = parse_limit(query.get("limit"))
    start, end = parse_range(query.get("from"), query.get("to"), utc_now(), None)
    scope = f"history {device_id} {metric} {start and epoch_microseconds(start)} {end and epoch_microseconds(end)}"
    after = None
    if query.get("cursor"):
        after = _history_position(decode_cursor(query["cursor"], scope), metric, start, end)
    rows = current().store.history_page(device_id, metric, start, end, after, limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        kind, _, moment = rows[-1]
        next_cursor = encode_cursor({"t": epoch_microseconds(moment), "m": kind}, scope)
    if _wants_csv(request):
        return _history_csv(request, device_id, rows, next_cursor)
    return {
        "device_id": device_id,
        "metric_type": metric,
        "data": [
            {"metric_type": kind, "value": value, "timestamp": format_timestamp(moment)}
            for kind, value, moment in rows
        ],
        "has_more": has_more,
        "next_cursor": next_cursor,
    }


def _history_position(
    position: dict, metric: str | None, start: datetime | None, end: datetime | None
) -> tuple[datetime, str]:
    """The (time, metric) a cursor points after, checked against this request's range."""
    try:
        moment = EPOCH + timedelta(microseconds=int(position["t"]))
        kind = position["m"]
        if kind not in MetricType.names() or (metric is not None and kind != metric):
            raise ValueError(kind)
        if (start is not None and moment < start) or (end is not None and moment >= end):
            raise ValueError(moment)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise BadRequest("cursor is not a position in this range; start again without it") from None
    return moment, kind


CSV_HEADER = "timestamp,device_id,metric_type,value\r\n"


def _history_csv(request: ApigRequest, device_id: str, rows: list, next_cursor: str | None) -> Response:
    """A page as CSV; the next page's address in ``Link``. Device ids and metric names are plain
    (letters, digits and ``_.:@-``), and values are numbers, so no field needs quoting."""
    lines = [f"{format_timestamp(moment)},{device_id},{kind},{value!r}\r\n" for kind, value, moment in rows]
    headers = {}
    if next_cursor is not None:
        params = {name: value for name, value in request.query.items() if name != "cursor"}
        params.update(format="csv", cursor=next_cursor)
        link = f"/api/device/{quote(device_id, safe='')}/history?{urlencode(params)}"
        headers["Link"] = f'<{link}>; rel="next"'
    return Response(200, CSV_HEADER + "".join(lines), "text/csv; charset=utf-8", headers)


def device_series(request: ApigRequest, device_id: str) -> dict:
    """GET /api/device/{device_id}/series?metric_type=&from=&to=&interval=&agg=&tz=: aggregates per
    bucket, oldest first, one point per bucket that holds readings."""
    device_id = _device_id(request, device_id)
    query = request.query
    if query.get("metric_type") in (None, ""):
        raise BadRequest(f"metric_type is required: one of {', '.join(MetricType.names())}")
    metric = parse_metric_type(query["metric_type"])
    zone = parse_zone(query.get("tz"))
    start, end = parse_range(query.get("from"), query.get("to"), utc_now(), SERIES_DEFAULT_SPAN)
    interval = parse_interval(query.get("interval"), start, end)
    aggregates = parse_aggregates(query.get("agg"))
    points = series.points(current().store, device_id, metric, start, end, interval, zone, aggregates)
    return {
        "device_id": device_id,
        "metric_type": metric,
        "interval": interval.name,
        "tz": zone.key,
        "from": format_time(start, zone),
        "to": format_time(end, zone),
        "points": points,
    }


def stats(request: ApigRequest) -> dict:
    """GET /api/stats: device count, readings stored today (UTC) and rejected Kafka messages; for a
    scoped credential, only its devices (and no rejected-message count: those have no trusted device)."""
    runtime = current()
    return runtime.store.stats(scope=runtime.caller(request).scope)


def delete_all(request: ApigRequest) -> dict:
    """POST /api/delete-all (demo only): clears the database and the cache."""
    runtime = current()
    if not runtime.settings.demo_mode:
        raise Forbidden("delete-all is disabled; it works only when DEMO_MODE=true")
    # A form post from any web page needs no preflight; a JSON one does, and CORS refuses it.
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            "delete-all needs 'Content-Type: application/json' (so no other web page can send it)"
        )
    # Admin credentials are never remembered: a revoked one stops at once.
    require_admin(runtime.caller(request))
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


# How long one check of the dependencies answers /ready in a process: however often /ready is called
# (a load balancer, a flood), each dependency is asked at most this often.
READY_CHECK_SECONDS = 5.0
_ready_lock = threading.Lock()
_last_ready: tuple[Runtime, float, dict, int] | None = None


def _check_dependencies(runtime: Runtime) -> tuple[dict, int]:
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
    return body, 200 if ready else 503


def readiness(request: ApigRequest) -> Response:
    """GET /ready: each dependency checked (in parallel, each bounded by its timeout); 503 if one that
    matters is down. A check answers for READY_CHECK_SECONDS, with its age in ``checked_seconds_ago``."""
    global _last_ready
    runtime = current()
    runtime.caller(request)
    with _ready_lock:  # callers that arrive during a check wait for it rather than start their own
        now = time.monotonic()
        if (
            _last_ready is None
            or _last_ready[0] is not runtime
            or now - _last_ready[1] >= READY_CHECK_SECONDS
        ):
            body, status = _check_dependencies(runtime)
            _last_ready = (runtime, time.monotonic(), body, status)
        _, checked, body, status = _last_ready
    return json_response(
        {**body, "checked_seconds_ago": round(now - checked, 1) if now > checked else 0}, status
    )


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
