"""Device alerts: threshold rules judged from each stored batch, no-data rules judged by maintenance.

A threshold rule opens an alert for a (device, metric) when its readings breach the threshold for
``for_seconds`` without a non-breaching reading between them, judged by the readings' own timestamps;
the alert closes at the first reading back across ``clear_threshold`` (the threshold when it has none),
so a value hovering at the threshold does not open and close it over and over.

The consumer judges the readings of a batch once it is committed, in a transaction of its own: each
(rule, device, metric) keeps its state in ``alert_state`` (when the current breach began, the newest
reading judged: the series' watermark) while a breach runs or an alert is open; a quiet series keeps
none. A reading measured before the watermark (it arrived late, or out of order) has the series judged
again from its stored readings around it (``_rejudge_many``), so alerts follow the times the readings
were measured; an alert once opened stays an event, never retracted. Judging a reading again changes
nothing, so a redelivered batch opens nothing twice. The state row is locked while it is judged, so
consumers judging the same series take turns; the partial unique index ``alert_one_open`` keeps one
open alert per rule, device and metric whatever happens.

A no-data rule opens an alert for each matching device whose newest reading is older than
``after_seconds``; the maintenance pass opens and closes them, and a batch with a fresh reading of the
device closes them at once.

A batch whose evaluation failed leaves retry marks, from which the next maintenance pass judges it
(``catch_up``); one whose consumer stopped between commit and judging is judged when it is delivered
again.

Every opening and closing writes an ``alert_outbox`` row in the same transaction. Delivering those
(webhook, SMN) is a separate job; nothing here sends them or sets ``delivered_at``.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import NamedTuple

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

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


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
        'metric_type', nullif(a.metric_type, ''), 'state', opening.state, 'opened_at', a.opened_at,
        'closed_at', opening.closed_at, 'value', a.value)
    FROM alert a JOIN alert_rule r ON r.id = a.rule_id
    -- An opening shows the alert as it opened, also one recorded already closed (a late breach).
    CROSS JOIN LATERAL (SELECT CASE WHEN %(kind)s = 'opened' THEN 'open' ELSE a.state END AS state,
                               CASE WHEN %(kind)s = 'opened' THEN NULL ELSE a.closed_at END AS closed_at) opening
    WHERE a.id = ANY(%(ids)s::bigint[])
    ORDER BY a.id
"""


def record(conn: psycopg.Connection, kind: str, alert_ids: Sequence[int]) -> None:
    """One outbox row per changed alert (``kind`` 'opened' or 'closed'), in the caller's transaction."""
    if alert_ids:
        conn.execute(_OUTBOX, {"kind": kind, "ids": list(alert_ids)})


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
    """Judge a committed batch's readings against the rules. Never raises: a failure is logged,
    counted and leaves a retry mark for the maintenance pass; the batch (already stored) stands."""
    if not readings:
        return Changes()
    try:
        return runtime.store.run(lambda conn: _evaluate(conn, readings))
    except Exception:
        log.exception(
            "alert evaluation failed for a batch of %d readings; the batch is stored", len(readings)
        )
        metrics.alert_evaluation_failed()
        _mark_for_retry(runtime, readings)
        return Changes()


class _PairRules(NamedTuple):
    """The threshold rules of one device and metric: (rule id, a high value breaches, comparison,
    threshold) for each, and the bounds a value must reach for any of them to be breached."""

    tests: list[tuple[int, bool, Callable[[float, float], bool], float]]
    high: float  # the lowest threshold of a ">" or ">=" rule (infinity: none)
    low: float  # the highest threshold of a "<" or "<=" rule (minus infinity: none)


_NO_RULES = _PairRules([], math.inf, -math.inf)


class _Matcher:
    """Which threshold rules take a device's readings of a metric. A rule's device glob is most often
    every device, one device or a prefix: those are found without a regular expression, and each
    device's answer is remembered while the rules stay the same (batches repeat the same devices)."""

    MEMORY = 100_000  # (device, metric) answers kept, then forgotten all at once

    def __init__(self, rules: Sequence[Rule]):
        self.any: dict[str, list[Rule]] = defaultdict(list)
        self.exact: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self.prefixes: dict[str, list[tuple[str, Rule]]] = defaultdict(list)
        self.others: dict[str, list[Rule]] = defaultdict(list)
        for rule in rules:
            glob, metric = rule.device_glob, rule.metric_type
            wildcards = glob.count("*") + glob.count("?")
            if glob == "*":
                self.any[metric].append(rule)
            elif not wildcards:
                self.exact[(glob, metric)].append(rule)
            elif wildcards == 1 and glob.endswith("*"):
                self.prefixes[metric].append((glob[:-1], rule))
            else:
                self.others[metric].append(rule)
        self.known: dict[tuple[str, str], _PairRules] = {}

    def rules_for(self, device_id: str, metric: str) -> _PairRules:
        pair = (device_id, metric)
        found = self.known.get(pair)
        if found is None:
            rules = [
                *self.any.get(metric, ()),
                *self.exact.get(pair, ()),
                *(rule for prefix, rule in self.prefixes.get(metric, ()) if device_id.startswith(prefix)),
                *(rule for rule in self.others.get(metric, ()) if rule.matches(device_id)),
            ]
            above = [rule.threshold for rule in rules if rule.condition[0] == ">"]
            below = [rule.threshold for rule in rules if rule.condition[0] == "<"]
            found = _PairRules(
                [(rule.id, rule.condition[0] == ">", _COMPARE[rule.condition], rule.threshold) for rule in rules],
                min(above, default=math.inf),
                max(below, default=-math.inf),
            ) if rules else _NO_RULES  # fmt: skip
            if len(self.known) >= self.MEMORY:
                self.known.clear()
            self.known[pair] = found
        return found


_matchers: dict[tuple[Rule, ...], _Matcher] = {}


def _matcher(rules: Sequence[Rule]) -> _Matcher:
    """The matcher of these threshold rules, kept while they stay the same (one set at a time)."""
    key = tuple(rules)
    found = _matchers.get(key)
    if found is None:
        _matchers.clear()
        found = _matchers[key] = _Matcher(rules)
    return found


def _evaluate(conn: psycopg.Connection, readings: Sequence[Reading]) -> Changes:
    rules = active_rules(conn)
    if not rules:
        return Changes()
    changes = Changes()
    rules_by_id = {rule.id: rule for rule in rules}
    threshold_rules = [rule for rule in rules if rule.kind == THRESHOLD]
    series = _worth_judging(conn, threshold_rules, readings) if threshold_rules else {}
    newest: dict[str, datetime] = {}
    if any(rule.kind == NO_DATA for rule in rules):
        silent = {row[0] for row in conn.execute(_SILENT_DEVICES)}
        for reading in readings:
            if reading.device_id in silent:
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


_SILENT_DEVICES = """
SELECT DISTINCT a.device_id FROM alert a JOIN alert_rule r ON r.id = a.rule_id
WHERE a.state = 'open' AND r.kind = 'no_data'
"""


def _worth_judging(
    conn: psycopg.Connection, rules: Sequence[Rule], readings: Sequence[Reading]
) -> dict[tuple[int, str, str], list[Reading]]:
    """The (rule, device, metric) series whose readings can change something, with the batch's readings
    of each: those with a breach running or an alert open (they have a state row), and those with a
    breaching reading. The rest, nearly all, are quiet series given readings that do not breach, which
    change nothing, late or not."""
    matcher = _matcher(rules)
    active = {
        (rule_id, device_id, metric)
        for rule_id, device_id, metric in conn.execute(
            "SELECT rule_id, device_id, metric_type::text FROM alert_state WHERE rule_id = ANY(%s)",
            ([rule.id for rule in rules],),
        )
    }
    active_pairs = {key[1:] for key in active}
    pairs: dict[tuple[str, str], list[Reading]] = defaultdict(list)
    for reading in readings:
        pairs[(reading.device_id, reading.metric_type)].append(reading)
    series = {}
    rules_for = matcher.rules_for
    for pair, found in pairs.items():
        rules = rules_for(*pair)
        if len(found) == 1:
            low = high = found[0].value
        else:
            values = [reading.value for reading in found]
            low, high = min(values), max(values)
        # Nearly every pair stops here: no value reaches a threshold, and nothing is running.
        if high < rules.high and low > rules.low and pair not in active_pairs:
            continue
        for rule_id, above, compare, threshold in rules.tests:
            key = (rule_id, *pair)
            if compare(high if above else low, threshold) or key in active:
                series[key] = list(found)
    return series


_LOCK_STATES = """
SELECT s.rule_id, s.device_id, s.metric_type::text, s.breach_start, s.judged_at, a.id
FROM alert_state s
LEFT JOIN alert a ON a.rule_id = s.rule_id AND a.device_id = s.device_id
    AND a.metric_type = s.metric_type::text AND a.state = 'open'
WHERE (s.rule_id, s.device_id, s.metric_type) IN (SELECT * FROM {unnest})
ORDER BY s.rule_id, s.device_id, s.metric_type
FOR UPDATE OF s
"""
_UNNEST_KEYS = "unnest(%(rules)s::bigint[], %(devices)s::text[], %(metrics)s::metric_type[])"
# How many readings of each (device, metric) are stored from a moment on.
_STORED_SINCE = """
SELECT k.device_id, k.metric_type, k.since, (
    SELECT count(*) FROM reading r
    WHERE r.device_id = k.device_id AND r.metric_type = k.metric_type::metric_type AND r.timestamp >= k.since)
FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(device_id, metric_type, since)
"""


def _keys(keys: Sequence[tuple[int, str, str]]) -> dict:
    return {
        "rules": [key[0] for key in keys],
        "devices": [key[1] for key in keys],
        "metrics": [key[2] for key in keys],
    }


def _lock_states(conn: psycopg.Connection, keys: list[tuple[int, str, str]]) -> list[tuple]:
    """The state rows of these series, locked (created where missing), in key order so that no two
    transactions wait on each other. A row another transaction deleted meanwhile (its series went
    quiet) is created again."""
    rows: list[tuple] = []
    while keys:
        params = _keys(keys)
        conn.execute(
            f"INSERT INTO alert_state (rule_id, device_id, metric_type) SELECT * FROM {_UNNEST_KEYS}"
            " ON CONFLICT DO NOTHING",
            params,
        )
        locked = conn.execute(_LOCK_STATES.format(unnest=_UNNEST_KEYS), params).fetchall()
        rows += locked
        found = {tuple(row[:3]) for row in locked}
        keys = [key for key in keys if key not in found]
    return rows


def _judge_series(
    conn: psycopg.Connection,
    rules: dict[int, Rule],
    series: dict[tuple[int, str, str], list[Reading]],
    changes: Changes,
) -> None:
    rows = _lock_states(conn, sorted(series))
    for value in series.values():
        value.sort(key=lambda r: r.timestamp)
    # A series without a state row was quiet: its readings are late if it has stored readings
    # (other than the batch's) after the batch's oldest.
    batch = {key[1:]: found for key, found in series.items()}  # every rule's list holds all of them
    fresh = {pair: batch[pair][0].timestamp for pair in (tuple(row[1:3]) for row in rows if row[4] is None)}
    crowded = set()
    if fresh:
        devices, metric_types = zip(*fresh, strict=True)
        for device_id, metric, _, stored in conn.execute(
            _STORED_SINCE, (list(devices), list(metric_types), list(fresh.values()))
        ):
            if stored > len({r.timestamp for r in batch[(device_id, metric)]}):
                crowded.add((device_id, metric))
    updates, events, rejudged = [], {}, []
    for rule_id, device_id, metric, breach_start, judged_at, open_id in rows:
        key = (rule_id, device_id, metric)
        rule, readings = rules[rule_id], series[key]
        late = (device_id, metric) in crowded if judged_at is None else readings[0].timestamp <= judged_at
        if late:
            # Measured before a reading judged already: judged again from the stored readings around it.
            rejudged.append((rule, device_id, metric, readings[0].timestamp))
            continue
        # Newer than every reading judged: the common case, judged from the state row alone.
        points = ((reading.value, reading.timestamp) for reading in readings)
        breach_start, changed, is_open = _walk(rule, points, breach_start, open_id is not None)
        if changed:
            events[key] = (open_id, changed)
        updates.append((*key, breach_start, readings[-1].timestamp, is_open))
    _apply(conn, events, changes)
    if rejudged:
        replayed = _rejudge_many(conn, rejudged, changes)
        still_open = {
            tuple(row)
            for row in conn.execute(
                f"SELECT rule_id, device_id, metric_type FROM alert WHERE state = 'open'"
                f" AND (rule_id, device_id, metric_type::metric_type) IN (SELECT * FROM {_UNNEST_KEYS})",
                _keys(list(replayed)),
            )
        }
        updates += [(*key, start, judged, key in still_open) for key, (start, judged) in replayed.items()]
    # A series with no breach running and no alert open keeps no state: most series, most of the time.
    quiet = [u[:3] for u in updates if u[3] is None and not u[5]]
    kept = [u[:5] for u in updates if u[3] is not None or u[5]]
    if quiet:
        conn.execute(
            f"DELETE FROM alert_state WHERE (rule_id, device_id, metric_type) IN (SELECT * FROM {_UNNEST_KEYS})",
            _keys(quiet),
        )
    if kept:
        conn.execute(
            """
            UPDATE alert_state s SET breach_start = u.breach_start, judged_at = u.judged_at
            FROM unnest(%s::bigint[], %s::text[], %s::metric_type[], %s::timestamptz[], %s::timestamptz[])
                AS u(rule_id, device_id, metric_type, breach_start, judged_at)
            WHERE s.rule_id = u.rule_id AND s.device_id = u.device_id AND s.metric_type = u.metric_type
            """,
            [list(column) for column in zip(*kept, strict=True)],
        )


# An alert change found by judging in order: ("open", moment, value) or ("close", moment, None).
_Change = tuple[str, datetime, float | None]


def _walk(
    rule: Rule, points: Iterable[tuple[float, datetime]], breach_start: datetime | None, is_open: bool
) -> tuple[datetime | None, list[_Change], bool]:
    """Readings (value, when), oldest first, judged from a series' state: when its breach began and
    whether an alert is open. Answers the state after them and the changes they make."""
    changed: list[_Change] = []
    for value, moment in points:
        if is_open:
            if rule.clears(value):
                changed.append(("close", moment, None))
                is_open, breach_start = False, None
        elif not rule.breaches(value):
            breach_start = None
        else:
            breach_start = breach_start or moment
            if (moment - breach_start).total_seconds() >= rule.for_seconds:
                changed.append(("open", moment, value))
                is_open = True
    return breach_start, changed, is_open


_CLOSE_MANY = """
UPDATE alert a SET state = 'closed', closed_at = u.moment
FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, moment)
WHERE a.id = u.id AND a.state = 'open'
RETURNING a.id
"""
_OPEN_MANY = """
INSERT INTO alert (rule_id, device_id, metric_type, state, opened_at, value)
SELECT rule_id, device_id, metric_type, 'open', moment, value
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::float8[])
    AS u(rule_id, device_id, metric_type, moment, value)
ON CONFLICT (rule_id, device_id, metric_type) WHERE state = 'open' DO NOTHING
RETURNING id, rule_id, device_id, metric_type
"""


def _close(conn: psycopg.Connection, closes: Sequence[tuple[int, datetime]], changes: Changes) -> None:
    """Close these open alerts (id, when), with their notifications."""
    if closes:
        closed = _ids(conn.execute(_CLOSE_MANY, ([i for i, _ in closes], [moment for _, moment in closes])))
        record(conn, "closed", closed)
        changes.closed += len(closed)


def _apply(
    conn: psycopg.Connection,
    events: dict[tuple[int, str, str], tuple[int | None, list[_Change]]],
    changes: Changes,
) -> None:
    """Make the changes judging in order found, a few statements for the whole batch: round by round,
    each series' next change (most series have one; a series can open, close and open again)."""
    pending = {key: (open_id, list(changed)) for key, (open_id, changed) in events.items()}
    while pending:
        closing = [
            (alert_id, changed[0][1]) for alert_id, changed in pending.values() if changed[0][0] == "close"
        ]
        _close(conn, [(alert_id, moment) for alert_id, moment in closing if alert_id is not None], changes)
        opening = [
            (*key, changed[0][1], changed[0][2])
            for key, (_, changed) in pending.items()
            if changed[0][0] == "open"
        ]
        opened: dict[tuple[int, str, str], int] = {}
        if opening:
            columns = [list(column) for column in zip(*opening, strict=True)]
            for alert_id, *key in conn.execute(_OPEN_MANY, columns):
                opened[tuple(key)] = alert_id
            record(conn, "opened", list(opened.values()))
            changes.opened += len(opened)
            for key in {tuple(o[:3]) for o in opening} - set(opened):
                # Open already (the unique index held): later changes apply to that alert.
                found = conn.execute(
                    "SELECT id FROM alert WHERE rule_id = %s AND device_id = %s AND metric_type = %s"
                    " AND state = 'open'",
                    key,
                ).fetchone()
                opened[key] = found[0] if found else None
        following = {}
        for key, (open_id, changed) in pending.items():
            if len(changed) > 1:
                following[key] = (opened.get(key, open_id) if changed[0][0] == "open" else None, changed[1:])
        pending = following


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


# For each series judged again: the newest stored reading before its window, its stored readings from
# the window's start on (at most REJUDGE_LIMIT each), and its alerts not closed before the window.
_WINDOWS = """
FROM unnest(%(devices)s::text[], %(metrics)s::metric_type[], %(lowers)s::timestamptz[])
    WITH ORDINALITY AS k(device_id, metric_type, lower, i)
"""
_BEFORE_WINDOWS = f"""
SELECT k.i, b.value, b.timestamp {_WINDOWS}
CROSS JOIN LATERAL (
    SELECT value, timestamp FROM reading r
    WHERE r.device_id = k.device_id AND r.metric_type = k.metric_type AND r.timestamp < k.lower
    ORDER BY r.timestamp DESC LIMIT 1) b
"""
_IN_WINDOWS = f"""
SELECT k.i, w.value, w.timestamp {_WINDOWS}
CROSS JOIN LATERAL (
    SELECT value, timestamp FROM reading r
    WHERE r.device_id = k.device_id AND r.metric_type = k.metric_type AND r.timestamp >= k.lower
    ORDER BY r.timestamp LIMIT %(limit)s) w
ORDER BY k.i, w.timestamp
"""
_ALERTS_IN_WINDOWS = """
SELECT k.i, a.id, a.opened_at, a.closed_at
FROM unnest(%(rules)s::bigint[], %(devices)s::text[], %(metrics)s::text[], %(lowers)s::timestamptz[])
    WITH ORDINALITY AS k(rule_id, device_id, metric_type, lower, i)
JOIN alert a ON a.rule_id = k.rule_id AND a.device_id = k.device_id AND a.metric_type = k.metric_type
    AND (a.closed_at IS NULL OR a.closed_at > k.lower)
ORDER BY k.i, a.opened_at
"""


def _rejudge_many(
    conn: psycopg.Connection, late: list[tuple[Rule, str, str, datetime]], changes: Changes
) -> dict[tuple[int, str, str], tuple[datetime | None, datetime]]:
    """Judge these series again (rule, device, metric, the oldest late reading), reading what that needs
    for all of them in three statements; answers each one's new (breach_start, judged_at)."""
    lowers = [since - timedelta(seconds=rule.for_seconds) for rule, _, _, since in late]
    params = {
        "rules": [rule.id for rule, *_ in late],
        "devices": [device_id for _, device_id, _, _ in late],
        "metrics": [metric for _, _, metric, _ in late],
        "lowers": lowers,
        "limit": REJUDGE_LIMIT,
    }
    before = {i: (value, moment) for i, value, moment in conn.execute(_BEFORE_WINDOWS, params)}
    stored: dict[int, list[tuple[float, datetime]]] = defaultdict(list)
    for i, value, moment in conn.execute(_IN_WINDOWS, params):
        stored[i].append((value, moment))
    alerts: dict[int, list[_Episode]] = defaultdict(list)
    for i, alert_id, opened, closed in conn.execute(_ALERTS_IN_WINDOWS, params):
        alerts[i].append(_Episode(opened, closed, alert_id=alert_id))
    states = {}
    closes: list[tuple[int, datetime]] = []
    episodes: list[tuple[int, str, str, _Episode]] = []
    for i, (rule, device_id, metric, since) in enumerate(late, start=1):
        if len(stored[i]) == REJUDGE_LIMIT:
            log.warning(
                "alert rule %s judged %s/%s again over its first %d readings after %s only",
                rule.id, device_id, metric, REJUDGE_LIMIT, lowers[i - 1],
            )  # fmt: skip
        breach_start, judged_at, closing, found = _replay(rule, since, before.get(i), stored[i], alerts[i])
        states[(rule.id, device_id, metric)] = (breach_start, judged_at)
        closes += closing
        episodes += [(rule.id, device_id, metric, episode) for episode in found]
    _close_and_record(conn, closes, episodes, changes)
    return states


def _replay(
    rule: Rule,
    since: datetime,
    before: tuple[float, datetime] | None,
    stored: list[tuple[float, datetime]],
    alerts: list[_Episode],
) -> tuple[datetime | None, datetime, list[tuple[int, datetime]], list[_Episode]]:
    """Judge a series again from its stored readings, from ``for_seconds`` before ``since`` (the oldest
    reading that arrived late) to its newest, as if they had arrived in order, and find what the
    alerts do not show yet. An alert that was opened stays opened (an event is not retracted): a
    replayed episode that overlaps an alert is that alert, and can only close it.

    A late breaching reading can so open an alert (closed at once when a later reading already
    cleared it); a late clearing reading closes the open alert it falls in, and the readings after
    it may open a new one. ``before`` is the newest reading before the window, ``alerts`` those not
    closed before it. Answers the new (breach_start, judged_at), the alerts to close (id, when) and
    the episodes to record as alerts."""
    # The state just before the window: an alert open then, or a breach running into it.
    first = stored[0][1] if stored else since
    current = next((a for a in alerts if a.opened < first and (a.closed is None or a.closed > first)), None)
    replayed: list[_Episode] = []
    episode = _Episode(current.opened, alert_id=current.alert_id) if current else None
    breach_start = before[1] if before is not None and episode is None and rule.breaches(before[0]) else None
    breach_start, changed, _ = _walk(rule, stored, breach_start, episode is not None)
    for kind, moment, value in changed:
        if kind == "close":
            episode.closed = moment
            replayed.append(episode)
            episode = None
        else:
            episode = _Episode(moment, value=value)
    if episode is not None:
        replayed.append(episode)
    closes, new = [], []
    for found in replayed:
        known = [a for a in alerts if a.overlaps(found) or (found.alert_id and a.alert_id == found.alert_id)]
        if not known:
            # Open now only when no alert is (the one open alert of a series is the newest episode).
            if found.closed is not None or all(a.closed is not None for a in alerts):
                new.append(found)
                alerts.append(found)
            continue
        if found.closed is not None:
            for alert in known:
                if alert.closed is None and alert.opened < found.closed and alert.alert_id is not None:
                    closes.append((alert.alert_id, found.closed))
                    alert.closed = found.closed
    return breach_start, stored[-1][1] if stored else since, closes, new


_RECORD_CLOSED = """
INSERT INTO alert (rule_id, device_id, metric_type, state, opened_at, closed_at, value)
SELECT rule_id, device_id, metric_type, 'closed', opened_at, closed_at, value
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::float8[])
    AS u(rule_id, device_id, metric_type, opened_at, closed_at, value)
RETURNING id
"""


def _close_and_record(
    conn: psycopg.Connection,
    closes: list[tuple[int, datetime]],
    episodes: list[tuple[int, str, str, _Episode]],
    changes: Changes,
) -> None:
    """What judging series again found, in a few statements: the open alerts to close first, then the
    episodes no alert showed: those that ended recorded opened and closed, the others opened."""
    _close(conn, closes, changes)
    ended = [(r, d, m, e.opened, e.closed, e.value) for r, d, m, e in episodes if e.closed is not None]
    if ended:
        ids = _ids(conn.execute(_RECORD_CLOSED, [list(c) for c in zip(*ended, strict=True)]))
        record(conn, "opened", ids)
        record(conn, "closed", ids)
        changes.opened += len(ids)
        changes.closed += len(ids)
    running = [(r, d, m, e.opened, e.value) for r, d, m, e in episodes if e.closed is None]
    if running:
        ids = _ids(conn.execute(_OPEN_MANY, [list(c) for c in zip(*running, strict=True)]))
        record(conn, "opened", ids)
        changes.opened += len(ids)


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
RETRY_MARKS = 1_000  # series whose retry marks one pass takes up

_MARK = """
INSERT INTO alert_retry (device_id, metric_type, since)
SELECT * FROM unnest(%s::text[], %s::metric_type[], %s::timestamptz[])
ON CONFLICT (device_id, metric_type) DO UPDATE SET since = least(alert_retry.since, excluded.since)
"""
_TAKE_MARKS = """
DELETE FROM alert_retry WHERE (device_id, metric_type) IN (
    SELECT device_id, metric_type FROM alert_retry ORDER BY marked_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING device_id, metric_type::text, since - interval '1 microsecond'
"""
# Series with a breach running or an alert open that have stored readings newer than their watermark.
_BEHIND = """
SELECT s.rule_id, s.device_id, s.metric_type::text, s.judged_at FROM alert_state s
JOIN latest_reading l ON l.device_id = s.device_id AND l.metric_type = s.metric_type
WHERE s.judged_at IS NOT NULL AND l.timestamp > s.judged_at
"""
_UNJUDGED = """
SELECT value, timestamp FROM reading
WHERE device_id = %(device)s AND metric_type = %(metric)s::metric_type AND timestamp > %(mark)s
ORDER BY timestamp LIMIT %(limit)s
"""


def _mark_for_retry(runtime: Runtime, readings: Sequence[Reading]) -> None:
    """Remember, for the maintenance pass, each series of a batch whose evaluation failed and its
    oldest reading. When even that fails, the series with a breach running or an alert open are still
    caught up from their watermarks; a breaching reading of a quiet series is then judged only if the
    batch is delivered again."""
    oldest: dict[tuple[str, str], datetime] = {}
    for reading in readings:
        pair = (reading.device_id, reading.metric_type)
        if pair not in oldest or reading.timestamp < oldest[pair]:
            oldest[pair] = reading.timestamp
    devices, metric_types = zip(*oldest, strict=True)
    try:
        runtime.store.run(
            lambda conn: conn.execute(_MARK, (list(devices), list(metric_types), list(oldest.values())))
        )
    except Exception:
        log.exception(
            "the %d series of a batch whose alert evaluation failed could not be marked", len(oldest)
        )


def catch_up(conn: psycopg.Connection) -> int:
    """Judge the stored readings a batch's evaluation missed: from each retry mark a failed evaluation
    left, and after the watermark (the newest reading judged) of each series with a breach running or
    an alert open. Answers how many readings were judged. A batch whose evaluation was only slow finds
    them judged and judges them again, to the same result."""
    rules = [rule for rule in active_rules(conn) if rule.kind == THRESHOLD]
    rules_by_id = {rule.id: rule for rule in rules}
    matcher = _matcher(rules)
    budget = CATCH_UP_READINGS
    judged = 0

    def unjudged(device_id: str, metric: str, mark: datetime) -> list[Reading]:
        nonlocal budget
        rows = conn.execute(
            _UNJUDGED, {"device": device_id, "metric": metric, "mark": mark, "limit": max(budget, 1)}
        ).fetchall()
        budget -= len(rows)
        return [Reading(device_id, metric, value, moment) for value, moment in rows]

    with conn.transaction():
        series: dict[tuple[int, str, str], list[Reading]] = {}
        for device_id, metric, mark in conn.execute(_TAKE_MARKS, (RETRY_MARKS,)).fetchall():
            found = unjudged(device_id, metric, mark)
            for rule_id, *_ in matcher.rules_for(device_id, metric).tests if found else ():
                series[(rule_id, device_id, metric)] = list(found)
        for rule_id, device_id, metric, mark in conn.execute(_BEHIND).fetchall():
            if budget > 0 and rule_id in rules_by_id and (rule_id, device_id, metric) not in series:
                found = unjudged(device_id, metric, mark)
                if found:
                    series[(rule_id, device_id, metric)] = found
        if series:
            _judge_series(conn, rules_by_id, series, Changes())
            judged = len(
                {(r.device_id, r.metric_type, r.timestamp) for found in series.values() for r in found}
            )
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
