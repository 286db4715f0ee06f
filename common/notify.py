"""Delivering alert notifications: each row of the outbox to every destination, at least once.

Alerts write their openings and closings to ``alert_outbox`` in the transaction that changes them
(common/alerts.py). The maintenance pass then sends them, oldest first, to each destination that is
configured:

- the webhook (ALERT_WEBHOOK_URL): a POST of JSON ``{"event_id", "kind", "alert"}`` with the same event
  id in an ``Idempotency-Key`` header;
- an SMN topic (ALERT_SMN_TOPIC_URN): the same JSON as the message, under a subject a person can read
  (common/smn.py); SMN passes it on to the topic's subscriptions (mail, HTTPS, ...).

Over a network nothing can promise exactly once (an answer can be lost after the receiver acted), so a
receiver that remembers event ids sees every change exactly once.

Each destination keeps its own state on the outbox row (``DESTINATIONS``: when it was delivered there,
failed tries, when to try again, why it failed), so one that is down holds back neither the other
nor itself for longer than its own back-off, which doubles from 10 s up to an hour. A destination keeps
its order: its pass stops at the first row that fails or is not due yet there, so a receiver never
sees an alert close before it opened. A destination configured later receives the changes still
undelivered to it, oldest first. Only the maintenance pass delivers, and passes never overlap, so no
two deliverers race for a row.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from . import smn
from .settings import Settings

log = logging.getLogger(__name__)

# Per pass and destination: rows at most, and how long one POST may take.
BATCH = 200
TIMEOUT_SECONDS = 5.0
FIRST_RETRY = timedelta(seconds=10)
LAST_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class Destination:
    """Where a destination keeps its delivery state: columns of ``alert_outbox`` (schema migrations 8
    and 9). The webhook's are the outbox's first columns, from before there was a second destination."""

    name: str
    delivered_at: str
    attempts: str
    next_try_at: str
    last_error: str


WEBHOOK = Destination("webhook", "delivered_at", "attempts", "next_try_at", "last_error")
SMN = Destination("smn", "smn_delivered_at", "smn_attempts", "smn_next_try_at", "smn_last_error")
DESTINATIONS = (WEBHOOK, SMN)


@dataclass(frozen=True)
class Delivery:
    sent: int
    failed: int

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(self.sent + other.sent, self.failed + other.failed)


class DeliveryError(Exception):
    """A destination did not take a notification; the message says why."""


class WebhookError(DeliveryError):
    """The receiver did not take the notification (no answer, or not a 2xx)."""


Send = Callable[[str, str, dict], None]  # (event_id, kind, alert) -> None, or raises DeliveryError


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


def body(event_id: str, kind: str, alert: dict) -> dict:
    """What every destination receives for one change."""
    return {"event_id": event_id, "kind": kind, "alert": alert}


def webhook_sender(url: str) -> Send:
    def send(event_id: str, kind: str, alert: dict) -> None:
        post(url, event_id, body(event_id, kind, alert))

    return send


def smn_sender(publisher: smn.Publisher) -> Send:
    def send(event_id: str, kind: str, alert: dict) -> None:
        try:
            publisher.publish(smn.subject(kind, alert), json.dumps(body(event_id, kind, alert)))
        except smn.SmnError as error:
            raise DeliveryError(str(error)) from error

    return send


def _statements(destination: Destination) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    names = {
        "delivered_at": sql.Identifier(destination.delivered_at),
        "attempts": sql.Identifier(destination.attempts),
        "next_try_at": sql.Identifier(destination.next_try_at),
        "last_error": sql.Identifier(destination.last_error),
    }
    due = sql.SQL(
        "SELECT event_id::text, kind, payload, {next_try_at} <= now() AS due FROM alert_outbox"
        " WHERE {delivered_at} IS NULL ORDER BY seq LIMIT %(limit)s"
    ).format(**names)
    delivered = sql.SQL(
        "UPDATE alert_outbox SET {delivered_at} = now(), {last_error} = NULL WHERE event_id = %(id)s"
    ).format(**names)
    failed = sql.SQL(
        "UPDATE alert_outbox SET {attempts} = {attempts} + 1, {last_error} = %(error)s,"
        " {next_try_at} = now() + least(%(first)s * power(2, {attempts}), %(last)s)"
        " WHERE event_id = %(id)s"
    ).format(**names)
    return due, delivered, failed


def deliver_to(
    conn: psycopg.Connection, destination: Destination, send: Send, limit: int = BATCH
) -> Delivery:
    """Send the notifications not yet delivered to ``destination``, oldest first; returns what was
    sent and what failed (at most one: the pass stops there, to keep the order)."""
    due_rows, delivered, failed = _statements(destination)
    rows = conn.execute(due_rows, {"limit": limit}).fetchall()
    sent = 0
    for event_id, kind, payload, due in rows:
        if not due:
            break  # an earlier failure's back-off holds everything after it
        try:
            send(event_id, kind, payload)
        except DeliveryError as error:
            log.warning("alert notification %s not delivered to %s: %s", event_id, destination.name, error)
            conn.execute(
                failed,
                {"id": event_id, "error": str(error)[:500], "first": FIRST_RETRY, "last": LAST_RETRY},
            )
            return Delivery(sent, 1)
        conn.execute(delivered, {"id": event_id})
        sent += 1
    return Delivery(sent, 0)


def deliver(conn: psycopg.Connection, url: str, limit: int = BATCH) -> Delivery:
    """The webhook's share of :func:`deliver_all`: the due notifications POSTed to ``url``."""
    return deliver_to(conn, WEBHOOK, webhook_sender(url), limit)


def deliver_all(conn: psycopg.Connection, settings: Settings, limit: int = BATCH) -> Delivery:
    """Every configured destination's due notifications (ALERT_WEBHOOK_URL, ALERT_SMN_TOPIC_URN), each
    on its own: one that fails or waits out its back-off does not hold back the other. Returns what
    was sent and what failed, summed over the destinations."""
    total = Delivery(0, 0)
    if settings.alert_webhook_url:
        total += deliver(conn, settings.alert_webhook_url, limit)
    if settings.alert_smn_topic_urn:
        publisher = smn.Publisher(settings.alert_smn_topic_urn, settings.alert_smn_endpoint)
        total += deliver_to(conn, SMN, smn_sender(publisher), limit)
    return total
