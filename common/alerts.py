"""Device alerts: threshold rules judged from each stored batch, no-data rules judged by maintenance.

A threshold rule opens an alert for a (device, metric) when its readings breach the threshold for
``for_seconds`` without a non-breaching reading between them, judged by the readings' own timestamps;
the alert closes at the first reading back across ``clear_threshold`` (the threshold when it has none),
so a value hovering at the threshold does not open and close it over and over.

The consumer judges the readings of a batch once it is committed, in a transaction of its own: each
(rule, device, metric) keeps its state in ``alert_state`` (when the current breach began, the newest
reading judged: the series' watermark). The consumer judges only the rows a batch inserted, so a
redelivered batch changes nothing. A reading measured before the watermark (it arrived late, or out of
order) has the series judged again from its stored readings around it (``_rejudge``), so alerts follow
the times the readings were measured; an alert once opened stays an event, never retracted. The state row is
locked while it is judged, so consumers judging the same series take turns; the partial unique index
``alert_one_open`` keeps one open alert per rule, device and metric whatever happens.

A no-data rule opens an alert for each matching device whose newest reading is older than
``after_seconds``; the maintenance pass opens and closes them, and a batch with a fresh reading of the
device closes them at once.

A batch whose evaluation failed (or whose consumer stopped between commit and judging) is judged by
the next maintenance pass, from each series' watermark (``catch_up``).

Every opening and closing writes an ``alert_outbox`` row in the same transaction. Delivering those
(webhook, SMN) is a separate job; nothing here sends them or sets ``delivered_at``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

import psycopg

from . import metrics
from .auth import parse_glob
from .errors import BadRequest
from .readings import SMOKE_DEVICE_ID, Reading, format_timestamp, glob_like, glob_regex, parse_metric_type
from .runtime import Runtime

log = logging.getLogger(__name__)

THRESHOLD, NO_DATA = "threshold", "no_data"
CONDITIONS = (">", ">=", "<", "<=")
OPEN, CLOSED = "open", "closed"
MAX_NAME_LENGTH = 100
# A duration longer than this is surely a mistake (and would overflow an interval): a year.
MAX_SECONDS = 366 * 24 * 3600
# Judging a series again after a late reading reads at most this many of its stored readings.
REJUDGE_LIMIT = 50_000

_COMPARE = {
    ">": lambda value, limit: value > limit,
    ">=": lambda value, limit: value >= limit,
    "<": lambda value, limit: value < limit,
    "<=": lambda value, limit: value <= limit,
}


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    kind: str
    device_glob: str
    metric_type: str | None = None
    condition: str | None = None
    threshold: float | None = None
    clear_threshold: float | None = None
    for_seconds: float = 0.0
    after_seconds: float | None = None

    @cached_property
    def _devices(self) -> re.Pattern:
        return re.compile(glob_regex(self.device_glob))

    def matches(self, device_id: str) -> bool:
        return self._devices.fullmatch(device_id) is not None

    def breaches(self, value: float) -> bool:
        return _COMPARE[self.condition](value, self.threshold)

    def clears(self, value: float) -> bool:
        """Back across the clear threshold: no longer beyond it in the breaching direction."""
        limit = self.threshold if self.clear_threshold is None else self.clear_threshold
        return not _COMPARE[self.condition](value, limit)


RULE_COLUMNS = (
    "id, name, kind, device_glob, metric_type::text, condition, threshold, clear_threshold,"
    " for_seconds, after_seconds"
)


def active_rules(conn: psycopg.Connection) -> list[Rule]:
    rows = conn.execute(
        f"SELECT {RULE_COLUMNS} FROM alert_rule WHERE deleted_at IS NULL ORDER BY id"
    ).fetchall()
    return [Rule(*row) for row in rows]


# -- rules as the API receives them --------------------------------------------------------------
_THRESHOLD_FIELDS = {"name", "kind", "device", "metric_type", "condition", "threshold", "for_seconds",
                     "clear_threshold"}  # fmt: skip
_NO_DATA_FIELDS = {"name", "kind", "device", "after_seconds"}


def _number(body: dict, name: str, *, required: bool = True) -> float | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise BadRequest(f"{name} is required: a number")
        return None
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(raw)
        number = float(raw)  # an integer past a double's range overflows here
        if not math.isfinite(number):
            raise ValueError(raw)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} must be a finite number, not {str(raw)[:40]!r}") from None
    return number


def _seconds(body: dict, name: str, *, required: bool, default: float | None = None) -> float | None:
    seconds = _number(body, name, required=required)
    if seconds is None:
        return default
    if seconds < 0:
        raise BadRequest(f"{name} may not be negative (it is a duration in seconds)")
    if seconds > MAX_SECONDS:
        raise BadRequest(f"{name} may be at most {MAX_SECONDS} seconds (a year)")
    return seconds


def parse_rule(body: object) -> dict:
    """The columns of a new rule from a request body; BadRequest naming the first problem."""
    if not isinstance(body, dict):
        raise BadRequest("Send the rule as a JSON object")
    kind = body.get("kind", THRESHOLD)
    if kind not in (THRESHOLD, NO_DATA):
        raise BadRequest(f"kind must be {THRESHOLD!r} (the default) or {NO_DATA!r}, not {str(kind)[:40]!r}")
    allowed = _THRESHOLD_FIELDS if kind == THRESHOLD else _NO_DATA_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field(s) for a {kind} rule: {', '.join(unknown)[:200]}; it takes {', '.join(sorted(allowed))}"
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("name is required: a short text naming the rule")
    if len(name) > MAX_NAME_LENGTH or re.search(r"[\x00-\x1f\x7f\ud800-\udfff]", name):
        raise BadRequest(
            f"name must be at most {MAX_NAME_LENGTH} characters, without control characters or lone surrogates"
        )
    device = body.get("device", "*")
    if not isinstance(device, str):
        raise BadRequest("device must be a device id or glob (* any run of characters, ? one)")
    rule = {"name": name.strip(), "kind": kind, "device_glob": parse_glob(device)}
    if kind == NO_DATA:
        after = _seconds(body, "after_seconds", required=True)
        if after == 0:
            raise BadRequest("after_seconds must be more than 0")
        return {**rule, "after_seconds": after}
    condition = body.get("condition")
    if condition not in CONDITIONS:
        raise BadRequest(f"condition must be one of {', '.join(CONDITIONS)}, not {str(condition)[:20]!r}")
    threshold = _number(body, "threshold")
    clear = _number(body, "clear_threshold", required=False)
    if clear is not None and (clear > threshold if condition.startswith(">") else clear < threshold):
        side = "at or below" if condition.startswith(">") else "at or above"
        raise BadRequest(
            f"clear_threshold must be {side} the threshold ({threshold:g}) for condition {condition!r}:"
            " the alert closes when readings are back across it"
        )
    return {
        **rule,
        "metric_type": parse_metric_type(body.get("metric_type")),
        "condition": condition,
        "threshold": threshold,
        "clear_threshold": clear,
        "for_seconds": _seconds(body, "for_seconds", required=False, default=0.0),
    }


# -- state changes and their outbox rows ---------------------------------------------------------
_OUTBOX = """
    INSERT INTO alert_outbox (alert_id, kind, payload)
    SELECT a.id, %(kind)s, jsonb_build_object(
        'id', a.id, 'rule_id', a.rule_id, 'rule_name', r.name, 'device_id', a.device_id,
        'metric_type', nullif(a.metric_type, ''), 'state', a.state, 'opened_at', a.opened_at,
        'closed_at', a.closed_at, 'value', a.value)
    FROM alert a JOIN alert_rule r ON r.id = a.rule_id
    WHERE a.id = ANY(%(ids)s::bigint[])
"""


def record(conn: psycopg.Connection, kind: str, alert_ids: Sequence[int]) -> None:
    """One outbox row per changed alert (``kind`` 'opened' or 'closed'), in the caller's transaction."""
    if alert_ids:
        conn.execute(_OUTBOX, {"kind": kind, "ids": list(alert_ids)})


_OPEN = """
    INSERT INTO alert (rule_id, device_id, metric_type, state, opened_at, value)
    VALUES (%s, %s, %s, 'open', %s, %s)
    ON CONFLICT (rule_id, device_id, metric_type) WHERE state = 'open' DO NOTHING
    RETURNING id
"""
_CLOSE = "UPDATE alert SET state = 'closed', closed_at = %s WHERE id = %s AND state = 'open' RETURNING id"


def close_rule_alerts(conn: psycopg.Connection, rule_id: int) -> int:
    """Close every open alert of a rule (it is being deleted) and forget its series' state."""
    ids = [
        row[0]
        for row in conn.execute(
            "UPDATE alert SET state = 'closed', closed_at = now() WHERE rule_id = %s AND state = 'open'"
            " RETURNING id",
            (rule_id,),
        )
    ]
    record(conn, "closed", ids)
    conn.execute("DELETE FROM alert_state WHERE rule_id = %s", (rule_id,))
    return len(ids)


# -- threshold rules, from each batch ------------------------------------------------------------
@dataclass
class Changes:
    opened: int = 0
    closed: int = 0


def evaluate(runtime: Runtime, readings: Sequence[Reading]) -> Changes:
    """Judge a committed batch's readings against the rules. Never raises: a failure is logged, and
    the batch (already stored) stands."""
    if not readings:
        return Changes()
    try:
        return runtime.store.run(lambda conn: _evaluate(conn, readings))
    except Exception:
        log.exception(
            "alert evaluation failed for a batch of %d readings; the batch is stored, and the next"
            " maintenance pass judges them",
            len(readings),
        )
        metrics.alert_evaluation_failed()
        return Changes()


def _evaluate(conn: psycopg.Connection, readings: Sequence[Reading]) -> Changes:
    rules = active_rules(conn)
    if not rules:
        return Changes()
    changes = Changes()
    by_metric: dict[str, list[Rule]] = defaultdict(list)
    no_data = [rule for rule in rules if rule.kind == NO_DATA]
    for rule in rules:
        if rule.kind == THRESHOLD:
            by_metric[rule.metric_type].append(rule)
    series: dict[tuple[int, str, str], list[Reading]] = defaultdict(list)
    rules_by_id = {rule.id: rule for rule in rules}
    # A batch holds many readings of each device and metric: each pair is matched against the rules once.
    matching: dict[tuple[str, str], list[int]] = {}
    for reading in readings:
        pair = (reading.device_id, reading.metric_type)
        rule_ids = matching.get(pair)
        if rule_ids is None:
            rule_ids = matching[pair] = [
                rule.id for rule in by_metric.get(reading.metric_type, ()) if rule.matches(reading.device_id)
            ]
        for rule_id in rule_ids:
            series[(rule_id, *pair)].append(reading)
    newest: dict[str, datetime] = {}
    if no_data:
        for reading in readings:
            known = newest.get(reading.device_id)
            if known is None or reading.timestamp > known:
                newest[reading.device_id] = reading.timestamp
    if not series and not newest:
        return changes
    with conn.transaction():
        if series:
            _judge_series(conn, rules_by_id, series, changes)
        if newest:
            _close_reported(conn, newest, changes)
    if changes.opened or changes.closed:
        log.info("alerts changed", extra={"opened": changes.opened, "closed": changes.closed})
    return changes


def _judge_series(
    conn: psycopg.Connection,
    rules: dict[int, Rule],
    series: dict[tuple[int, str, str], list[Reading]],
    changes: Changes,
) -> None:
    # Every transaction takes the state rows in the same (sorted) order: no two wait on each other.
    keys = sorted(series)
    columns = {
        "rules": [key[0] for key in keys],
        "devices": [key[1] for key in keys],
        "metrics": [key[2] for key in keys],
    }
    unnest = "unnest(%(rules)s::bigint[], %(devices)s::text[], %(metrics)s::metric_type[])"
    conn.execute(
        f"INSERT INTO alert_state (rule_id, device_id, metric_type) SELECT * FROM {unnest} ON CONFLICT DO NOTHING",
        columns,
    )
    rows = conn.execute(
        f"""
        SELECT s.rule_id, s.device_id, s.metric_type::text, s.breach_start, s.judged_at, a.id
        FROM alert_state s
        LEFT JOIN alert a ON a.rule_id = s.rule_id AND a.device_id = s.device_id
            AND a.metric_type = s.metric_type::text AND a.state = 'open'
        WHERE (s.rule_id, s.device_id, s.metric_type) IN (SELECT * FROM {unnest})
        ORDER BY s.rule_id, s.device_id, s.metric_type
        FOR UPDATE OF s
        """,
        columns,
    ).fetchall()
    updates = []
    for rule_id, device_id, metric, breach_start, judged_at, open_id in rows:
        rule = rules[rule_id]
        readings = sorted(series[(rule_id, device_id, metric)], key=lambda r: r.timestamp)
        if judged_at is not None and readings[0].timestamp <= judged_at:
            # Measured before a reading judged already: judged again from the stored readings around it.
            breach_start, judged_at = _rejudge(conn, rule, device_id, metric, readings[0].timestamp, changes)
        else:
            breach_start, judged_at = _judge_in_order(
                conn, rule, device_id, metric, readings, breach_start, open_id, changes
            )
        updates.append((rule_id, device_id, metric, breach_start, judged_at))
    if updates:
        conn.execute(
            """
            UPDATE alert_state s SET breach_start = u.breach_start, judged_at = u.judged_at
            FROM unnest(%s::bigint[], %s::text[], %s::metric_type[], %s::timestamptz[], %s::timestamptz[])
                AS u(rule_id, device_id, metric_type, breach_start, judged_at)
            WHERE s.rule_id = u.rule_id AND s.device_id = u.device_id AND s.metric_type = u.metric_type
            """,
            [list(column) for column in zip(*updates, strict=True)],
        )


def _judge_in_order(
    conn: psycopg.Connection,
    rule: Rule,
    device_id: str,
    metric: str,
    readings: Sequence[Reading],
    breach_start: datetime | None,
    open_id: int | None,
    changes: Changes,
) -> tuple[datetime | None, datetime]:
    """Readings newer than every one judged, oldest first: the common case, judged from the state row
    alone. Answers the new (breach_start, judged_at)."""
    for reading in readings:
        if open_id is not None:
            if rule.clears(reading.value):
                if conn.execute(_CLOSE, (reading.timestamp, open_id)).fetchone():
                    record(conn, "closed", [open_id])
                    changes.closed += 1
                open_id, breach_start = None, None
        elif not rule.breaches(reading.value):
            breach_start = None
        else:
            breach_start = breach_start or reading.timestamp
            if (reading.timestamp - breach_start).total_seconds() >= rule.for_seconds:
                open_id = _open(conn, rule, device_id, metric, reading.timestamp, reading.value, changes)
    return breach_start, readings[-1].timestamp


@dataclass
class _Episode:
    """A stretch of time an alert of the series is (or would be) open: [opened, closed)."""

    opened: datetime
    closed: datetime | None = None
    value: float | None = None
    alert_id: int | None = None

    def overlaps(self, other: _Episode) -> bool:
        return (other.closed is None or self.opened < other.closed) and (
            self.closed is None or other.opened < self.closed
        )


def _rejudge(
    conn: psycopg.Connection, rule: Rule, device_id: str, metric: str, since: datetime, changes: Changes
) -> tuple[datetime | None, datetime]:
    """Judge a series again from its stored readings, from ``for_seconds`` before ``since`` (the oldest
    reading that arrived late) to its newest, as if they had arrived in order; then record what that
    finds and the alerts do not show yet. An alert that was opened stays opened (an event is not
    retracted): a replayed episode that overlaps an alert is that alert, and can only close it.

    A late breaching reading can so open an alert (closed at once when a later reading already
    cleared it); a late clearing reading closes the open alert it falls in, and the readings after
    it may open a new one."""
    lower = since - timedelta(seconds=rule.for_seconds)
    key = {"device": device_id, "metric": metric, "lower": lower, "rule": rule.id}
    before = conn.execute(
        "SELECT value, timestamp FROM reading WHERE device_id = %(device)s AND metric_type = %(metric)s"
        " AND timestamp < %(lower)s ORDER BY timestamp DESC LIMIT 1",
        key,
    ).fetchone()
    stored = conn.execute(
        "SELECT value, timestamp FROM reading WHERE device_id = %(device)s AND metric_type = %(metric)s"
        " AND timestamp >= %(lower)s ORDER BY timestamp LIMIT %(limit)s",
        {**key, "limit": REJUDGE_LIMIT},
    ).fetchall()
    if len(stored) == REJUDGE_LIMIT:
        log.warning(
            "alert rule %s judged %s/%s again over its first %d readings after %s only",
            rule.id, device_id, metric, REJUDGE_LIMIT, lower,
        )  # fmt: skip
    alerts = [
        _Episode(opened, closed, alert_id=alert_id)
        for alert_id, opened, closed in conn.execute(
            "SELECT id, opened_at, closed_at FROM alert WHERE rule_id = %(rule)s AND device_id = %(device)s"
            " AND metric_type = %(metric)s AND (closed_at IS NULL OR closed_at > %(lower)s) ORDER BY opened_at",
            key,
        )
    ]
    # The state just before the window: an alert open then, or a breach running into it.
    first = stored[0][1] if stored else since
    current = next((a for a in alerts if a.opened < first and (a.closed is None or a.closed > first)), None)
    replayed: list[_Episode] = []
    episode = _Episode(current.opened, alert_id=current.alert_id) if current else None
    breach_start = before[1] if before is not None and episode is None and rule.breaches(before[0]) else None
    for value, moment in stored:
        if episode is not None:
            if rule.clears(value):
                episode.closed = moment
                replayed.append(episode)
                episode, breach_start = None, None
        elif not rule.breaches(value):
            breach_start = None
        else:
            breach_start = breach_start or moment
            if (moment - breach_start).total_seconds() >= rule.for_seconds:
                episode = _Episode(moment, value=value)
    if episode is not None:
        replayed.append(episode)
    for found in replayed:
        known = [a for a in alerts if a.overlaps(found) or (found.alert_id and a.alert_id == found.alert_id)]
        if not known:
            _record_episode(conn, rule, device_id, metric, found, changes)
            continue
        if found.closed is not None:
            for alert in known:
                if alert.closed is None and alert.opened < found.closed:
                    if conn.execute(_CLOSE, (found.closed, alert.alert_id)).fetchone():
                        record(conn, "closed", [alert.alert_id])
                        changes.closed += 1
                    alert.closed = found.closed
    return breach_start, stored[-1][1] if stored else since


def _record_episode(
    conn: psycopg.Connection, rule: Rule, device_id: str, metric: str, episode: _Episode, changes: Changes
) -> None:
    """An alert the replay found that no alert shows: opened, and closed too when it has ended."""
    alert_id = _open(conn, rule, device_id, metric, episode.opened, episode.value, changes)
    if episode.closed is not None and alert_id is not None:
        if conn.execute(_CLOSE, (episode.closed, alert_id)).fetchone():
            record(conn, "closed", [alert_id])
            changes.closed += 1


def _open(
    conn: psycopg.Connection,
    rule: Rule,
    device_id: str,
    metric: str,
    moment: datetime,
    value: float | None,
    changes: Changes,
) -> int | None:
    """Open an alert unless one is open already; the open alert's id either way."""
    row = conn.execute(_OPEN, (rule.id, device_id, metric, moment, value)).fetchone()
    if row is not None:
        record(conn, "opened", [row[0]])
        changes.opened += 1
        return row[0]
    found = conn.execute(
        "SELECT id FROM alert WHERE rule_id = %s AND device_id = %s AND metric_type = %s AND state = 'open'",
        (rule.id, device_id, metric),
    ).fetchone()
    return found[0] if found else None


def _close_reported(conn: psycopg.Connection, newest: dict[str, datetime], changes: Changes) -> None:
    """Close the no-data alerts of devices that reported: a reading that would not have been overdue
    when the alert opened."""
    ids = [
        row[0]
        for row in conn.execute(
            """
            UPDATE alert a SET state = 'closed', closed_at = n.newest
            FROM unnest(%s::text[], %s::timestamptz[]) AS n(device_id, newest), alert_rule r
            WHERE a.state = 'open' AND a.device_id = n.device_id AND r.id = a.rule_id AND r.kind = 'no_data'
              AND n.newest > a.opened_at - r.after_seconds * interval '1 second'
            RETURNING a.id
            """,
            (list(newest), list(newest.values())),
        )
    ]
    record(conn, "closed", ids)
    changes.closed += len(ids)


# -- catching up, from each maintenance pass -------------------------------------------------------
# Per pass: at most this many readings judged, so a long outage of evaluation is caught up over passes.
CATCH_UP_READINGS = 50_000

_BEHIND = """
SELECT l.device_id, coalesce(s.judged_at, %(created)s) FROM latest_reading l
LEFT JOIN alert_state s ON s.rule_id = %(rule)s AND s.device_id = l.device_id AND s.metric_type = l.metric_type
WHERE l.metric_type = %(metric)s::metric_type AND l.device_id LIKE %(like)s AND l.device_id <> %(smoke)s
  AND l.timestamp > coalesce(s.judged_at, %(created)s)
"""
_UNJUDGED = """
SELECT value, timestamp FROM reading
WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type AND timestamp > %(mark)s
ORDER BY timestamp LIMIT %(limit)s
"""


def catch_up(conn: psycopg.Connection) -> int:
    """Judge the stored readings that a batch's evaluation missed (it failed, or its consumer died
    between commit and judging): every series a threshold rule matches whose newest reading is newer
    than its watermark (the newest reading judged; the rule's creation for a series never judged).
    Answers how many readings were judged. The evaluation of a batch that was only slow finds them
    judged and judges them again, to the same result."""
    budget = CATCH_UP_READINGS
    created = dict(conn.execute("SELECT id, created_at FROM alert_rule WHERE deleted_at IS NULL").fetchall())
    judged = 0
    for rule in active_rules(conn):
        if rule.kind != THRESHOLD or budget <= 0:
            continue
        params = {"rule": rule.id, "metric": rule.metric_type, "like": glob_like(rule.device_glob),
                  "smoke": SMOKE_DEVICE_ID, "created": created[rule.id]}  # fmt: skip
        series: dict[tuple[int, str, str], list[Reading]] = {}
        for device_id, mark in conn.execute(_BEHIND, params).fetchall():
            if budget <= 0:
                break
            rows = conn.execute(
                _UNJUDGED, {"device": device_id, "metric": rule.metric_type, "mark": mark, "limit": budget}
            ).fetchall()
            if rows:
                series[(rule.id, device_id, rule.metric_type)] = [
                    Reading(device_id, rule.metric_type, value, moment) for value, moment in rows
                ]
                budget -= len(rows)
                judged += len(rows)
        if series:
            with conn.transaction():
                _judge_series(conn, {rule.id: rule}, series, Changes())
    if judged:
        log.warning("alert evaluation caught up on %d readings a batch had not judged", judged)
    return judged


# -- no-data rules, from each maintenance pass -----------------------------------------------------
def check_no_data(conn: psycopg.Connection, now: datetime) -> Changes:
    """Open an alert for each device a no-data rule matches whose newest reading is older than the
    rule's ``after_seconds``; close those whose device has reported since. One transaction."""
    changes = Changes()
    with conn.transaction():
        rules = [rule for rule in active_rules(conn) if rule.kind == NO_DATA]
        for rule in rules:
            params = {
                "rule": rule.id,
                "like": glob_like(rule.device_glob),
                "smoke": SMOKE_DEVICE_ID,
                "now": now,
                "after": rule.after_seconds,
            }
            opened = _ids(
                conn.execute(
                    """
                    INSERT INTO alert (rule_id, device_id, metric_type, state, opened_at, value)
                    SELECT %(rule)s, device_id, '', 'open', %(now)s,
                           extract(epoch FROM %(now)s::timestamptz - max(timestamp))
                    FROM latest_reading
                    WHERE device_id LIKE %(like)s AND device_id <> %(smoke)s
                    GROUP BY device_id
                    HAVING max(timestamp) < %(now)s::timestamptz - %(after)s * interval '1 second'
                    ON CONFLICT (rule_id, device_id, metric_type) WHERE state = 'open' DO NOTHING
                    RETURNING id
                    """,
                    params,
                )
            )
            closed = _ids(
                conn.execute(
                    """
                    UPDATE alert a SET state = 'closed', closed_at = %(now)s
                    WHERE a.rule_id = %(rule)s AND a.state = 'open' AND EXISTS (
                        SELECT 1 FROM latest_reading l WHERE l.device_id = a.device_id
                          AND l.timestamp >= %(now)s::timestamptz - %(after)s * interval '1 second')
                    RETURNING a.id
                    """,
                    params,
                )
            )
            record(conn, "opened", opened)
            record(conn, "closed", closed)
            changes.opened += len(opened)
            changes.closed += len(closed)
    return changes


def _ids(cursor: Iterable[tuple]) -> list[int]:
    return [row[0] for row in cursor]


# -- how the API shows them ------------------------------------------------------------------------
def rule_json(row: Sequence) -> dict:
    """A rule row (RULE_COLUMNS, then created_at) as the API shows it."""
    rule = Rule(*row[:10])
    shown: dict = {"id": rule.id, "name": rule.name, "kind": rule.kind, "device": rule.device_glob}
    if rule.kind == THRESHOLD:
        shown.update(
            metric_type=rule.metric_type,
            condition=rule.condition,
            threshold=rule.threshold,
            clear_threshold=rule.clear_threshold,
            for_seconds=rule.for_seconds,
        )
    else:
        shown["after_seconds"] = rule.after_seconds
    shown["created_at"] = format_timestamp(row[10])
    return shown


ALERT_COLUMNS = (
    "a.id, a.rule_id, r.name, a.device_id, nullif(a.metric_type, ''), a.state, a.opened_at, a.closed_at,"
    " a.value, a.acknowledged_at, a.acknowledged_by"
)


def alert_json(row: Sequence) -> dict:
    """An alert row (ALERT_COLUMNS) as the API shows it."""
    names = ("id", "rule_id", "rule_name", "device_id", "metric_type", "state", "opened_at", "closed_at",
             "value", "acknowledged_at", "acknowledged_by")  # fmt: skip
    shown = dict(zip(names, row, strict=True))
    for key in ("opened_at", "closed_at", "acknowledged_at"):
        if shown[key] is not None:
            shown[key] = format_timestamp(shown[key])
    return shown
