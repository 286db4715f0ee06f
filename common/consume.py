"""The consumer: DMS Kafka trigger events -> validated readings -> PostgreSQL, then Redis.

A message that cannot be a reading is kept in the rejected table with its reason and does not
hold back the rest of its batch. If PostgreSQL cannot take the batch, the handler raises: the
local trigger loop then retries the same batch, and in the cloud the async retry policy applies.
Storing is idempotent, so a retried or redelivered batch is stored once.
"""

from __future__ import annotations

import logging
import time

from .dms import iter_messages
from .errors import ServiceUnavailable
from .readings import MessageError, Reading, decode_message
from .runtime import Runtime, current
from .store import StoreResult

log = logging.getLogger(__name__)

# The handler's own retry while PostgreSQL is briefly away: a few attempts, never past the
# invocation's remaining time. Beyond it the batch fails and the trigger's retry policy takes over.
STORE_ATTEMPTS = 3
FIRST_DELAY_SECONDS = 0.5
SAFETY_MARGIN_SECONDS = 5.0


def _remaining_seconds(context: object) -> float:
    getter = getattr(context, "getRemainingTimeInMilliSeconds", None)
    try:
        return getter() / 1000 if getter else float("inf")
    except Exception:  # the runtime's context is not ours to trust blindly
        return float("inf")


def _store(runtime: Runtime, readings: list[Reading], rejected: list, context: object) -> StoreResult:
    delay = FIRST_DELAY_SECONDS
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            result = runtime.store.store(readings)
            runtime.store.reject(rejected)  # after the readings: a retry re-stores them harmlessly
            return result
        except ServiceUnavailable:
            if attempt == STORE_ATTEMPTS or _remaining_seconds(context) < delay + SAFETY_MARGIN_SECONDS:
                raise
            log.warning(
                "PostgreSQL unavailable (attempt %d of %d); retrying in %.1fs", attempt, STORE_ATTEMPTS, delay
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def handle_batch(event: dict, context: object = None) -> dict:
    readings, rejected, messages = [], [], 0
    for message in iter_messages(event):
        messages += 1
        try:
            readings.extend(decode_message(message.value))
        except MessageError as error:
            readings.extend(error.readings)
            rejected.append((message.topic, message.value, error.reason))
            log.warning("rejected a message on %s: %s", message.topic or "?", error.reason)
    runtime = current()
    result = _store(runtime, readings, rejected, context)
    runtime.cache.put_readings(readings)
    return {
        "messages": messages,
        "readings": len(readings),
        "stored": result.stored,
        "duplicates": result.duplicates,
        "rejected": len(rejected),
    }
