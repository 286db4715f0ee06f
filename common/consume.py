"""The consumer: DMS Kafka trigger events -> validated readings -> PostgreSQL, then Redis.

A message that cannot be a reading is kept in the rejected table with its reason and does not
hold back the rest of its batch. If PostgreSQL cannot take the batch, the handler raises: the
local trigger loop then retries the same batch, and in the cloud the async retry policy applies.
Storing is idempotent, so a retried or redelivered batch is stored once.
"""

from __future__ import annotations

import logging

from .dms import iter_messages
from .readings import MessageError, decode_message
from .runtime import current

log = logging.getLogger(__name__)


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
    result = runtime.store.store(readings)
    runtime.store.reject(rejected)
    runtime.cache.put_readings(readings)
    return {
        "messages": messages,
        "readings": len(readings),
        "stored": result.stored,
        "duplicates": result.duplicates,
        "rejected": len(rejected),
    }
