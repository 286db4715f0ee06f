"""Delivering alert notifications: each row of the outbox to the webhook, at least once.

Alerts write their openings and closings to ``alert_outbox`` in the transaction that changes them
(common/alerts.py). The maintenance pass then POSTs them, oldest first, to ALERT_WEBHOOK_URL: JSON
``{"event_id", "kind", "alert"}`` with the same event id in an ``Idempotency-Key`` header. Over HTTP
nothing can promise exactly once (an answer can be lost after the receiver acted), so a receiver that
remembers event ids sees every change exactly once.

A failed delivery is tried again later, with a back-off that doubles up to an hour. Deliveries keep
their order: a pass stops at the first row that fails or is not due yet, so a receiver never sees an
alert close before it opened. Only the maintenance pass delivers, and passes never overlap, so no
two deliverers race for a row.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta

import psycopg

log = logging.getLogger(__name__)

# Per pass: rows at most, and how long one POST may take.
BATCH = 200
TIMEOUT_SECONDS = 5.0
FIRST_RETRY = timedelta(seconds=10)
LAST_RETRY = timedelta(hours=1)

_DUE = """
SELECT event_id::text, kind, payload, next_try_at <= now() AS due FROM alert_outbox
WHERE delivered_at IS NULL ORDER BY seq LIMIT %(limit)s
"""
_DELIVERED = "UPDATE alert_outbox SET delivered_at = now(), last_error = NULL WHERE event_id = %(id)s"
_FAILED = """
UPDATE alert_outbox SET attempts = attempts + 1, last_error = %(error)s,
    next_try_at = now() + least(%(first)s * power(2, attempts), %(last)s)
WHERE event_id = %(id)s
"""


@dataclass(frozen=True)
class Delivery:
    sent: int
    failed: int


class WebhookError(Exception):
    """The receiver did not take the notification (no answer, or not a 2xx)."""


def post(url: str, event_id: str, body: dict) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": event_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        raise WebhookError(f"the receiver answered {error.code}") from error
    except (OSError, ValueError) as error:  # refused, unreachable, timed out, a malformed URL
        raise WebhookError(f"no answer from the receiver: {error}") from error


def deliver(conn: psycopg.Connection, url: str, limit: int = BATCH) -> Delivery:
    """Send the due notifications of the outbox to ``url``, oldest first; returns what was sent and
    what failed (at most one: the pass stops there, to keep the order)."""
    rows = conn.execute(_DUE, {"limit": limit}).fetchall()
    sent = 0
    for event_id, kind, payload, due in rows:
        if not due:
            break  # an earlier failure's back-off holds everything after it
        try:
            post(url, event_id, {"event_id": event_id, "kind": kind, "alert": payload})
        except WebhookError as error:
            log.warning("alert notification %s not delivered: %s", event_id, error)
            conn.execute(
                _FAILED,
                {"id": event_id, "error": str(error)[:500], "first": FIRST_RETRY, "last": LAST_RETRY},
            )
            return Delivery(sent, 1)
        conn.execute(_DELIVERED, {"id": event_id})
        sent += 1
    return Delivery(sent, 0)
