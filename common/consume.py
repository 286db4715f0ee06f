"""The consumer: DMS Kafka trigger events -> validated readings -> PostgreSQL, then Redis.

A message that cannot be a reading is kept in the rejected table with its reason and does not
hold back the rest of its batch. If PostgreSQL cannot take the batch, the handler raises: the
local trigger loop then retries the same batch, and in the cloud the async retry policy applies.
Storing is idempotent, so a retried or redelivered batch is stored once.

A large batch is stored as parts that share no device, concurrently, each in its own transaction
on its own connection and then written to Redis. Parts with no key in common take no lock the
other waits for, so PostgreSQL stores them in parallel, and one part's Redis write overlaps the
other's storing. Redis still only ever gets what PostgreSQL has committed.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from . import alerts, logs, metrics
from .dms import iter_messages
from .errors import ServiceUnavailable
from .readings import MessageError, Reading, read_message, retention_error, utc_now
from .runtime import Runtime, current
from .store import StoreResult

log = logging.getLogger(__name__)

# The handler's own retry while PostgreSQL is briefly away: a few attempts, never past the
# invocation's remaining time. Beyond it the batch fails and the trigger's retry policy takes over.
STORE_ATTEMPTS = 3
FIRST_DELAY_SECONDS = 0.5
SAFETY_MARGIN_SECONDS = 5.0

# A batch is split into up to STORE_PARTS parts (never more than the connection pool holds), each
# of at least MIN_PART_READINGS: below that, a second transaction costs more than it saves.
STORE_PARTS = 2
MIN_PART_READINGS = 2000

T = TypeVar("T")


def _remaining_seconds(context: object) -> float:
    getter = getattr(context, "getRemainingTimeInMilliSeconds", None)
    try:
        return getter() / 1000 if getter else float("inf")
    except Exception:  # the runtime's context is not ours to trust blindly
        return float("inf")


def _retrying(action: Callable[[], T], context: object) -> T:
    delay = FIRST_DELAY_SECONDS
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return action()
        except ServiceUnavailable:
            if attempt == STORE_ATTEMPTS or _remaining_seconds(context) < delay + SAFETY_MARGIN_SECONDS:
                raise
            log.warning(
                "PostgreSQL unavailable (attempt %d of %d); retrying in %.1fs", attempt, STORE_ATTEMPTS, delay
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def split_by_device(readings: list[Reading], parts: int) -> list[list[Reading]]:
    """The readings in up to ``parts`` non-empty lists, all of one device's readings in the same one.

    A device goes to the same part in every process (CRC-32 of its id, not Python's per-process
    string hash): consumers running side by side then split their batches alike, so each part
    waits only for the same part of another batch, never for a mix of two."""
    if parts < 2:
        return [readings]
    split: list[list[Reading]] = [[] for _ in range(parts)]
    part_of: dict[str, list[Reading]] = {}
    for reading in readings:
        part = part_of.get(reading.device_id)
        if part is None:
            part = part_of[reading.device_id] = split[zlib.crc32(reading.device_id.encode()) % parts]
        part.append(reading)
    return [part for part in split if part] or [readings]


def _store_part(runtime: Runtime, readings: list[Reading], context: object) -> StoreResult:
    result = _retrying(lambda: runtime.store.store(readings), context)
    runtime.cache.put_readings(readings)  # after the commit: the cache never runs ahead of PostgreSQL
    return result


def _store(runtime: Runtime, readings: list[Reading], context: object) -> StoreResult:
    count = min(STORE_PARTS, runtime.settings.db_pool_size, len(readings) // MIN_PART_READINGS)
    first, *others = split_by_device(readings, count)
    pending = [runtime.threads.submit(_store_part, runtime, part, context) for part in others]
    results: list[StoreResult] = []
    try:
        results.append(_store_part(runtime, first, context))
    finally:
        results += [part.result() for part in pending]  # no part is left running when this returns
    return StoreResult(
        stored=sum(r.stored for r in results),
        duplicates=sum(r.duplicates for r in results),
        latest_moved=sum(r.latest_moved for r in results),
    )


def _within_retention(
    runtime: Runtime, readings: list[Reading], rejected: list, reasons: list
) -> list[Reading]:
    """The readings young enough to store; each older one is kept as a rejected message of its own
    (no partition holds its day, and it must not fail the batch)."""
    days = runtime.settings.raw_retention_days
    oldest = utc_now() - timedelta(days=days)
    kept = []
    for reading in readings:
        problem = retention_error(reading, oldest, days)
        if problem is None:
            kept.append(reading)
        else:
            rejected.append(("", reading.to_json(), problem))
            reasons.append(metrics.TOO_OLD)
    return kept


def _context_request_id(context: object) -> str:
    getter = getattr(context, "getRequestID", None)
    try:
        return str(getter()) if getter else ""
    except Exception:  # the runtime's context is not ours to trust blindly
        return ""


# Ingest request ids per log line: a batch can hold thousands of requests (the local group commit puts
# many in one message), and one line of megabytes helps no one. Every id is still logged, on as many lines
# as it takes.
REQUEST_IDS_PER_LINE = 200


def _log_batch(summary: dict, request_ids: list[str]) -> None:
    """One "batch stored" line with the counts and the first ingest request ids, then "batch requests"
    lines with the rest, so `grep <request id>` finds the line of the batch that stored its readings."""
    first, rest = request_ids[:REQUEST_IDS_PER_LINE], request_ids[REQUEST_IDS_PER_LINE:]
    log.info("batch stored", extra={**summary, "ingest_request_ids": first})
    for start in range(0, len(rest), REQUEST_IDS_PER_LINE):
        log.info("batch requests", extra={"ingest_request_ids": rest[start : start + REQUEST_IDS_PER_LINE]})


def handle_batch(event: dict, context: object = None) -> dict:
    with logs.request_scope(_context_request_id(context)):
        return _handle_batch(event, context)


def _handle_batch(event: dict, context: object) -> dict:
    readings, rejected, reasons, messages = [], [], [], 0
    request_ids: list[str] = []
    sent_times: list[float] = []
    for message in iter_messages(event):
        messages += 1
        try:
            found, trace = read_message(message.value)
            readings.extend(found)
        except MessageError as error:
            readings.extend(error.readings)
            rejected.append((message.topic, message.value, error.reason))
            reasons.extend(metrics.rejection_reason(problem) for problem in error.problems)
            log.warning("rejected a message on %s: %s", message.topic or "?", error.reason)
            trace = error.trace
        request_ids.extend(trace.request_ids)
        if trace.sent_at is not None:
            sent_times.append(trace.sent_at)
    runtime = current()
    readings = _within_retention(runtime, readings, rejected, reasons)
    result = _store(runtime, readings, context)
    # After the readings: a retried batch stores them again harmlessly.
    _retrying(lambda: runtime.store.reject(rejected), context)
    # Judged once the batch is committed, in a transaction of its own; a failure is logged, counted and
    # marked for the maintenance pass, never raised. Readings found stored already are judged too: a
    # redelivery may follow a consumer that stopped between the commit and the judging, and judging a
    # reading again changes nothing.
    alerts.evaluate(runtime, readings)
    stored_at = time.time()
    # Counted once the whole batch is stored: a batch that failed half way counts nothing, and its retry
    # counts what it finds already stored as duplicates.
    metrics.consumer_stored(
        result.stored, result.duplicates, reasons, [max(0.0, stored_at - sent) for sent in sent_times]
    )
    summary = {
        "messages": messages,
        "readings": len(readings),
        "stored": result.stored,
        "duplicates": result.duplicates,
        "rejected": len(rejected),
    }
    _log_batch(
        {**summary, "oldest_sent_seconds_ago": round(stored_at - min(sent_times), 3) if sent_times else None},
        request_ids,
    )
    return summary
