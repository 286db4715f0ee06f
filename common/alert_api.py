"""The alert routes: rules (admin to change, any credential to read), alerts (a scoped credential sees
those of its devices) and acknowledging an alert (admin).

Reads connect as the reader role; changes as the writer, each in one transaction with its outbox rows.
"""

from __future__ import annotations

import re
from datetime import timedelta

import psycopg

from . import alerts
from .apig import ApigRequest, Response, json_response
from .auth import Principal, require_admin, require_read
from .errors import BadRequest, NotFound
from .readings import glob_like, parse_device_id
from .runtime import current
from .timeseries import EPOCH, decode_cursor, encode_cursor, epoch_microseconds

DEFAULT_ALERTS_LIMIT = 100
MAX_ALERTS_LIMIT = 1000


def _write(action):
    """``action(conn)`` in one transaction as the writer role."""

    def in_transaction(conn: psycopg.Connection):
        with conn.transaction():
            return action(conn)

    return current().store.write(in_transaction)


def _admin(request: ApigRequest) -> Principal:
    # Rules and acknowledgements are admin-only; admin credentials are never remembered, so a revoked
    # one stops at once.
    principal = current().caller(request)
    require_admin(principal)
    return principal


def _id(raw: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        raise NotFound(f"{what} not found")
    return int(raw)


def create_rule(request: ApigRequest) -> Response:
    """POST /api/alert-rules: a threshold or no-data rule; 201 with the rule as stored."""
    _admin(request)
    rule = alerts.parse_rule(request.json())
    columns = list(rule)
    placeholders = ", ".join(f"%({column})s" for column in columns)
    row = _write(
        lambda conn: conn.execute(
            f"INSERT INTO alert_rule ({', '.join(columns)}) VALUES ({placeholders})"
            f" RETURNING {alerts.RULE_COLUMNS}, created_at",
            rule,
        ).fetchone()
    )
    return json_response(alerts.rule_json(row), 201)


def list_rules(request: ApigRequest) -> dict:
    """GET /api/alert-rules: every rule in force, oldest first."""
    runtime = current()
    runtime.caller(request)
    rows = runtime.store.read(
        lambda conn: conn.execute(
            f"SELECT {alerts.RULE_COLUMNS}, created_at FROM alert_rule WHERE deleted_at IS NULL ORDER BY id"
        ).fetchall()
    )
    return {"rules": [alerts.rule_json(row) for row in rows]}


def delete_rule(request: ApigRequest, rule_id: str) -> dict:
    """DELETE /api/alert-rules/{rule_id}: the rule stops, and its open alerts close."""
    _admin(request)
    number = _id(rule_id, "Alert rule")

    def delete(conn: psycopg.Connection) -> int | None:
        found = conn.execute(
            "UPDATE alert_rule SET deleted_at = now() WHERE id = %s AND deleted_at IS NULL RETURNING id",
            (number,),
        ).fetchone()
        return None if found is None else alerts.close_rule_alerts(conn, number)

    closed = _write(delete)
    if closed is None:
        raise NotFound("Alert rule not found")
    return {"message": "Alert rule deleted", "alerts_closed": closed}


def acknowledge(request: ApigRequest, alert_id: str) -> dict:
    """POST /api/alerts/{alert_id}/ack: who saw it and when (the first acknowledgement stands)."""
    principal = _admin(request)
    number = _id(alert_id, "Alert")
    row = _write(
        lambda conn: conn.execute(
            "UPDATE alert a SET acknowledged_at = coalesce(a.acknowledged_at, now()),"
            " acknowledged_by = coalesce(a.acknowledged_by, %s)"
            f" FROM alert_rule r WHERE a.id = %s AND r.id = a.rule_id RETURNING {alerts.ALERT_COLUMNS}",
            (principal.name, number),
        ).fetchone()
    )
    if row is None:
        raise NotFound("Alert not found")
    return alerts.alert_json(row)


def _limit(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return DEFAULT_ALERTS_LIMIT
    try:
        number = int(raw.strip())
    except ValueError:
        raise BadRequest(
            f"limit must be a whole number from 1 to {MAX_ALERTS_LIMIT}, not {raw[:20]!r}"
        ) from None
    if number < 1:
        raise BadRequest(f"limit must be at least 1 (at most {MAX_ALERTS_LIMIT} are returned)")
    return min(number, MAX_ALERTS_LIMIT)


def list_alerts(request: ApigRequest) -> dict:
    """GET /api/alerts?state=open|closed&device_id=&limit=&cursor=: newest first, a page at a time."""
    runtime = current()
    principal = runtime.caller(request)
    query = request.query
    state = query.get("state") or None
    if state not in (None, alerts.OPEN, alerts.CLOSED):
        raise BadRequest(f"state must be open or closed, not {state[:20]!r}")
    device = query.get("device_id") or None
    if device is not None:
        require_read(principal, device)
        device = parse_device_id(device)
    limit = _limit(query.get("limit"))
    scope = f"alerts {state} {device}"
    params: dict = {
        "state": state,
        "device": device,
        "likes": None if principal.scope is None else [glob_like(g) for g in principal.scope],
        "t": None,
        "i": None,
        "limit": limit + 1,
    }
    if query.get("cursor"):
        position = decode_cursor(query["cursor"], scope)
        try:
            params["t"] = EPOCH + timedelta(microseconds=int(position["t"]))
            params["i"] = int(position["i"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BadRequest("cursor is not a position in the alert list; start again without it") from None
    rows = runtime.store.read(
        lambda conn: conn.execute(
            f"""
            SELECT {alerts.ALERT_COLUMNS} FROM alert a JOIN alert_rule r ON r.id = a.rule_id
            WHERE (%(state)s::text IS NULL OR a.state = %(state)s)
              AND (%(device)s::text IS NULL OR a.device_id = %(device)s)
              AND (%(likes)s::text[] IS NULL OR a.device_id LIKE ANY(%(likes)s::text[]))
              AND (%(t)s::timestamptz IS NULL OR (a.opened_at, a.id) < (%(t)s::timestamptz, %(i)s::bigint))
            ORDER BY a.opened_at DESC, a.id DESC
            LIMIT %(limit)s
            """,
            params,
        ).fetchall()
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = encode_cursor({"t": epoch_microseconds(last[6]), "i": last[0]}, scope)
    return {
        "alerts": [alerts.alert_json(row) for row in rows],
        "has_more": has_more,
        "next_cursor": next_cursor,
    }
