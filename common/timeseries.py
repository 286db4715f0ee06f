"""The time logic of the history and series API: instants, ranges, intervals, zones, buckets and cursors.

Pure Python, no database: the rules live here, in one place, and are tested on their own. The SQL of the
series query bins readings the same way (see *bucket_start*) and leaves the hard part, time zones, to
this module.

How readings are put into buckets
---------------------------------
Buckets follow the local wall clock of the requested zone (``tz``, UTC by default). Each interval cuts
local time into slots aligned on local midnight: 1h buckets are the local hours, 1d buckets the local
calendar days, 7d buckets the local weeks from Monday 00:00; in a zone such as Asia/Kathmandu (+05:45)
15m, 1h and 1d buckets start on its own quarter hours, hours and midnight. A new bucket starts whenever
the local clock enters another slot; the bucket's start ``t`` is the instant that happens, written with
the offset in force then. Daylight-saving changes:

- Clocks go forward (Berlin: 02:00 becomes 03:00): the bucket holding the change is shorter (a 23-hour
  day). If the change skips a slot's start, that slot's bucket starts at the change: in a zone that goes
  from 00:00 to 01:00, that day's bucket starts at 01:00.
- Clocks go back (Berlin: 03:00 becomes 02:00): the repeated time extends the bucket holding the change
  (the 00:00 3h bucket lasts 4 hours, the day 25 hours), unless it repeats that bucket's whole slot or
  other slots: then it starts buckets of its own (the 1h bucket 02:00 occurs twice, 02:00+02:00 and
  02:00+01:00, an hour each; likewise every 30m, 15m, ... bucket of the repeated hour).

Buckets never overlap and their starts always increase.

In SQL the slot is ``date_bin(step, <reading time in the zone, as a naive timestamp>, BUCKET_ORIGIN)``;
grouping by that slot and the UTC offset in force at the reading, then passing each group to
*bucket_start*, gives each group its bucket (groups that share a start are one bucket, e.g. both halves
of a 25-hour day).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from .errors import BadRequest

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The latest instant a caller may name: two days short of the end of year 9999, so that any zone's
# offset and a week's bucket arithmetic around it stay within what datetime can represent.
LATEST = datetime(9999, 12, 30, tzinfo=UTC)

# date_bin's origin for every interval: a Monday midnight, so that 7d buckets are Monday-to-Sunday weeks
# and every shorter step (each divides a day) is aligned on local midnight.
BUCKET_ORIGIN = datetime(2000, 1, 3)

AUTO_BUCKETS = 500  # interval=auto picks the finest interval with at most this many buckets
MAX_BUCKETS = 10_000  # a named interval giving more buckets than this is refused

AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last")

_INSTANT_EXAMPLE = "use ISO-8601 such as 2024-05-01T12:00:00Z or epoch milliseconds such as 1714564800000"
_EPOCH_MILLISECONDS = re.compile(r"-?([0-9]{1,17})(?:\.([0-9]{1,9}))?")
_MAX_INSTANT_TEXT = 64
# A time followed by a space and an offset: what 2024-05-01T12:00:00+02:00 becomes in an unencoded URL.
_OFFSET_LOST_IN_URL = re.compile(r"[0-9] [0-9]{2}(?::?[0-9]{2})?$")
_TICK = timedelta(microseconds=1)


# --- instants and ranges ---------------------------------------------------------------------------


def parse_instant(raw: str, name: str) -> datetime:
    """An instant given as ISO-8601 or as epoch milliseconds, returned as an aware UTC datetime.

    ISO-8601: a time without an offset means UTC, ``Z`` is accepted, a date alone means its midnight UTC.
    Epoch milliseconds (what Grafana sends): digits, optionally with a fraction for sub-millisecond
    precision (kept to the microsecond). Text made only of digits is always epoch milliseconds, never a
    compact date. ``name`` is the parameter, named in the error. The instant must lie between
    1970-01-01T00:00:00Z and LATEST.
    """
    text = raw.strip()
    if not text:
        raise BadRequest(f"{name} is empty; {_INSTANT_EXAMPLE}")
    if len(text) > _MAX_INSTANT_TEXT:
        raise BadRequest(f"{name} is too long to be a time; {_INSTANT_EXAMPLE}")
    epoch = _EPOCH_MILLISECONDS.fullmatch(text)
    moment = _from_epoch_milliseconds(text, epoch) if epoch else _from_iso(text, name)
    if moment is None or not EPOCH <= moment <= LATEST:
        raise BadRequest(
            f"{name} {text!r} is outside the times this API handles, "
            f"{format_time(EPOCH, UTC)} to {format_time(LATEST, UTC)}"
        )
    return moment


def _from_epoch_milliseconds(text: str, match: re.Match[str]) -> datetime | None:
    whole, fraction = match.group(1), match.group(2) or ""
    microseconds = int(whole) * 1000 + int(fraction[:3].ljust(3, "0"))
    if text.startswith("-"):
        microseconds = -microseconds
    if not 0 <= microseconds <= epoch_microseconds(LATEST):
        return None
    return EPOCH + timedelta(microseconds=microseconds)


def epoch_microseconds(moment: datetime) -> int:
    """Whole microseconds since 1970-01-01 UTC: how cursors and the cache write an instant."""
    return (moment - EPOCH) // _TICK


def _from_iso(text: str, name: str) -> datetime | None:
    # Python 3.10's fromisoformat does not read 'Z'.
    iso = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        hint = ""
        if _OFFSET_LOST_IN_URL.search(text):
            hint = " (in a URL a '+' means a space: write the offset as %2B01:00, or use Z)"
        raise BadRequest(f"{name} {text!r} is not a time{hint}; {_INSTANT_EXAMPLE}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        return None


def parse_range(
    from_raw: str | None,
    to_raw: str | None,
    now: datetime,
    default_span: timedelta | None = None,
) -> tuple[datetime | None, datetime | None]:
    """The [from, to) range of a request: ``from`` inclusive, ``to`` exclusive, either may be absent.

    Without ``default_span`` (the history: open ranges are fine) an absent end stays None. With it (the
    series: it needs both ends):

    - neither given: the span up to now, (now - span, now);
    - only ``from``: from then up to now;
    - only ``to``: the span before it (never before 1970).

    ``from`` not before ``to`` (given, or now when implied) is refused with both quoted.
    """
    start = None if from_raw is None or not from_raw.strip() else parse_instant(from_raw, "from")
    end = None if to_raw is None or not to_raw.strip() else parse_instant(to_raw, "to")
    end_is_now = False
    if default_span is not None:
        if end is None:
            end, end_is_now = now, True
        if start is None:
            start = max(end - default_span, EPOCH)
    if start is not None and end is not None and start >= end:
        if end_is_now:
            raise BadRequest(
                f"from {from_raw.strip()!r} is not before to, which defaults to now "
                f"({format_time(now, UTC)}); give an earlier from, or a later to"
            )
        shown_from = from_raw.strip() if from_raw and from_raw.strip() else format_time(start, UTC)
        raise BadRequest(f"from {shown_from!r} must be before to {to_raw.strip()!r} (to is exclusive)")
    return start, end


def format_time(instant: datetime, zone: ZoneInfo | timezone) -> str:
    """ISO-8601 in the zone with its offset, e.g. 2024-03-31T01:00:00+01:00; microseconds only if any."""
    local = instant.astimezone(zone)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")


# --- intervals and aggregates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A series interval: buckets are slots of ``step`` on the local clock (see the module docstring).

    ``kind`` says what a bucket is on the calendar: "fixed" (minutes and hours), "day" (a local calendar
    day) or "week" (a local week from Monday). In a zone with daylight saving any bucket holding a clock
    change is longer or shorter than ``step``; ``nominal`` is the length in seconds without one.
    """

    name: str
    step: timedelta
    kind: Literal["fixed", "day", "week"]

    @property
    def nominal(self) -> int:
        return self.step // timedelta(seconds=1)

    def buckets_between(self, start: datetime, end: datetime) -> int:
        """How many nominal steps cover [start, end), the measure the bucket limits apply to."""
        span = end - start
        return max(0, -(-span // self.step))


INTERVALS = (
    Interval("1m", timedelta(minutes=1), "fixed"),
    Interval("5m", timedelta(minutes=5), "fixed"),
    Interval("15m", timedelta(minutes=15), "fixed"),
    Interval("30m", timedelta(minutes=30), "fixed"),
    Interval("1h", timedelta(hours=1), "fixed"),
    Interval("3h", timedelta(hours=3), "fixed"),
    Interval("6h", timedelta(hours=6), "fixed"),
    Interval("12h", timedelta(hours=12), "fixed"),
    Interval("1d", timedelta(days=1), "day"),
    Interval("7d", timedelta(days=7), "week"),
)
INTERVALS_BY_NAME = {interval.name: interval for interval in INTERVALS}


def parse_interval(raw: str | None, start: datetime, end: datetime) -> Interval:
    """The interval asked for over [start, end); absent or "auto": the finest with at most AUTO_BUCKETS.

    A named interval giving more than MAX_BUCKETS buckets is refused, naming the finest that would do.
    """
    name = (raw or "").strip()
    if name in ("", "auto"):
        chosen = next(
            (each for each in INTERVALS if each.buckets_between(start, end) <= AUTO_BUCKETS), INTERVALS[-1]
        )
    elif name in INTERVALS_BY_NAME:
        chosen = INTERVALS_BY_NAME[name]
    else:
        valid = ", ".join(INTERVALS_BY_NAME)
        raise BadRequest(f"interval {name[:20]!r} is not one of {valid}, auto")
    count = chosen.buckets_between(start, end)
    if count > MAX_BUCKETS:
        between = f"from {format_time(start, UTC)} to {format_time(end, UTC)}"
        enough = next((each for each in INTERVALS if each.buckets_between(start, end) <= MAX_BUCKETS), None)
        if enough is None:
            raise BadRequest(
                f"{between} is too long for a series: even interval {chosen.name} gives {count} buckets "
                f"(at most {MAX_BUCKETS}); narrow from and to"
            )
        raise BadRequest(
            f"interval {chosen.name} gives {count} buckets {between} (at most {MAX_BUCKETS}); "
            f"use interval {enough.name} or coarser, or narrow from and to"
        )
    return chosen


def parse_aggregates(raw: str | None) -> tuple[str, ...]:
    """The aggregates asked for, comma-separated (default avg): duplicates dropped, the caller's order kept."""
    names = [part.strip().lower() for part in (raw or "").split(",")]
    names = [each for each in names if each]
    if not names:
        return ("avg",)
    unknown = [each for each in names if each not in AGGREGATES]
    if unknown:
        raise BadRequest(f"agg {unknown[0][:20]!r} is not one of {', '.join(AGGREGATES)}")
    return tuple(dict.fromkeys(names))


# --- zones -----------------------------------------------------------------------------------------

# Names in the zone directory that are not zones a caller means: the machine's own setting and tzdata's
# placeholder for "not set".
_NOT_ZONES = frozenset({"localtime", "Factory"})


@functools.lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """Each IANA zone name by its lower-case spelling (looked up once: it lists the zone directory)."""
    return {name.lower(): name for name in available_timezones() if name not in _NOT_ZONES}


def parse_zone(raw: str | None) -> ZoneInfo:
    """An IANA time zone (any letter case; ``key`` is the canonical name); absent means UTC.

    Only names from the zone list are looked up, so no text reaches the file system as a path.
    """
    text = (raw or "").strip()
    if not text:
        return ZoneInfo("UTC")
    name = _zone_names().get(text.lower())
    if name is None:
        raise BadRequest(
            f"tz {text[:64]!r} is not an IANA time zone name such as UTC, Europe/Berlin or America/New_York"
        )
    return ZoneInfo(name)


# --- buckets ---------------------------------------------------------------------------------------


def local_slot(wall: datetime, interval: Interval) -> datetime:
    """The start of the local slot holding a naive wall-clock time: SQL's date_bin(step, wall, origin)."""
    return BUCKET_ORIGIN + (wall - BUCKET_ORIGIN) // interval.step * interval.step


def bucket_start(
    local_start: datetime, utc_offset: timedelta, interval: Interval, zone: ZoneInfo
) -> datetime:
    """The start (aware UTC) of the bucket holding the readings of one SQL group.

    The group: readings whose wall-clock time in ``zone`` lies in the slot starting at ``local_start``
    (naive) and whose UTC offset was ``utc_offset``. The rule is the module docstring's.
    """
    shown = (local_start - utc_offset).replace(tzinfo=UTC)
    # The usual case: the readings' clock ran through local_start, with no clock change on the way.
    if _offset_at(shown, zone) == utc_offset and _offset_at(shown - _TICK, zone) == utc_offset:
        return shown
    return _start_near_clock_change(local_start, utc_offset, interval, zone, shown)


def bucket_of(instant: datetime, interval: Interval, zone: ZoneInfo) -> datetime:
    """The start (aware UTC) of the bucket holding one instant: what the SQL groups give, for one reading."""
    local = instant.astimezone(zone)
    return bucket_start(local_slot(local.replace(tzinfo=None), interval), local.utcoffset(), interval, zone)


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset()


# How far before a group's readings its bucket may start: a step, plus more than any clock change.
_LOOK_AROUND = timedelta(days=1)
# The window must stay where datetime and every zone offset can be represented.
_EARLIEST_WINDOW = datetime(1, 1, 3, tzinfo=UTC)
_LATEST_WINDOW = datetime(9999, 12, 29, tzinfo=UTC)


def _start_near_clock_change(
    local_start: datetime, utc_offset: timedelta, interval: Interval, zone: ZoneInfo, shown: datetime
) -> datetime:
    """bucket_start when the zone changes its clock near the group: replays the clock around it.

    Around the group, time falls into segments of constant UTC offset. The group's readings are in the
    segment with its offset whose clock passes through the slot; the first instant they can have is
    ``earliest``. The bucket starts at the last bucket-starting event at or before it: the clock running
    onto a slot's start within a segment, or a clock change that shows another slot than the clock was
    in (or repeats exactly one whole slot: the clock reached the slot's end and went back to its start).
    """
    step = interval.step
    segments = _segments(
        zone,
        max(shown - step - _LOOK_AROUND, _EARLIEST_WINDOW),
        min(shown + step + _LOOK_AROUND, _LATEST_WINDOW),
    )
    slot_end = local_start + step
    earliest = next(
        (
            max(begin, shown)
            for begin, end, offset in segments
            if offset == utc_offset and _wall(begin, offset) < slot_end and _wall(end, offset) > local_start
        ),
        None,
    )
    if earliest is None:
        # This zone's rules (Python's tzdata) never gave that offset here, though the database's did:
        # the two disagree, so take the readings' own reckoning rather than guess.
        return shown
    start = segments[0][0]
    previous_offset = None
    for begin, end, offset in segments:
        if begin > earliest:
            break
        if previous_offset is not None and _change_starts_bucket(
            _wall(begin, previous_offset), _wall(begin, offset), interval
        ):
            start = begin
        # The segment's last slot start at or before earliest, and before the segment ends (at its end
        # the clock changes instead, which the next segment's test above decides).
        latest = min(end - _TICK, earliest)
        onto_slot = (local_slot(_wall(latest, offset), interval) - offset).replace(tzinfo=UTC)
        if begin < onto_slot:
            start = max(start, onto_slot)
        previous_offset = offset
    return start


def _change_starts_bucket(reached: datetime, showing: datetime, interval: Interval) -> bool:
    """Whether a clock change from ``reached`` (the wall time it happens at) to ``showing`` starts a bucket."""
    slot = local_slot(showing, interval)
    if local_slot(reached - _TICK, interval) != slot:
        return True  # forward or back into another slot
    return showing == slot and reached == slot + interval.step  # back over exactly one whole slot


def _wall(instant: datetime, offset: timedelta) -> datetime:
    """The naive wall-clock time an instant shows under a UTC offset."""
    return instant.replace(tzinfo=None) + offset


def _segments(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime, timedelta]]:
    """[start, end) cut into (begin, end, offset) runs of constant UTC offset in the zone."""
    segments = []
    begin, offset = start, _offset_at(start, zone)
    day = start.date()
    while day <= end.date():
        for change, new_offset in _clock_changes(zone, day):
            if begin < change < end:
                segments.append((begin, change, offset))
                begin, offset = change, new_offset
        day += timedelta(days=1)
    segments.append((begin, end, offset))
    return segments


@functools.lru_cache(maxsize=4096)
def _clock_changes(zone: ZoneInfo, day: date) -> tuple[tuple[datetime, timedelta], ...]:
    """The zone's changes of UTC offset in (day 00:00Z, next day 00:00Z]: (instant, new offset), in order.

    zoneinfo does not publish its transitions, so they are found: the offset is sampled hourly (no zone
    changes twice within an hour) and each change is narrowed down to its second (zone rules change
    on whole seconds).
    """
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    changes = []
    before = _offset_at(midnight, zone)
    for hour in range(1, 25):
        sample = midnight + timedelta(hours=hour)
        after = _offset_at(sample, zone)
        if after != before:
            low, high = sample - timedelta(hours=1), sample  # the change is in (low, high]
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) // 2
                middle = middle.replace(microsecond=0)
                if _offset_at(middle, zone) == before:
                    low = middle
                else:
                    high = middle
            changes.append((high, _offset_at(high, zone)))
            before = after
    return tuple(changes)


# --- cursors ---------------------------------------------------------------------------------------

_CURSOR_TAG_BYTES = 6
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{10,1024}")
_NOT_A_CURSOR = "cursor is not a cursor this API gave; pass next_cursor from the previous answer unchanged"


def encode_cursor(position: dict, scope: str) -> str:
    """Opaque URL-safe text for a page position, bound to ``scope`` (the request's other parameters).

    base64url (no padding) of a short hash of scope and the position, then the position as compact JSON.
    The hash is no secret: it does not stop a forged cursor, only says when a cursor is used with other
    parameters than it was given for, or was altered, so that those fail with a clear error.
    """
    payload = json.dumps(position, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(_cursor_tag(scope, payload) + payload).rstrip(b"=").decode("ascii")


def decode_cursor(raw: str, scope: str) -> dict:
    """The position an encode_cursor text carries; BadRequest if it is not one, or not for this scope."""
    text = raw.strip()
    if not _CURSOR_TEXT.fullmatch(text) or len(text) % 4 == 1:
        raise BadRequest(_NOT_A_CURSOR)
    try:
        blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(_NOT_A_CURSOR) from None
    tag, payload = blob[:_CURSOR_TAG_BYTES], blob[_CURSOR_TAG_BYTES:]
    if not hmac.compare_digest(tag, _cursor_tag(scope, payload)):
        raise BadRequest(
            "cursor does not belong to these parameters (it was given for a different request, or altered): "
            "repeat the request that returned it changing only cursor, or leave cursor out to start again"
        )
    try:
        position = json.loads(payload)
    except ValueError:
        position = None
    if not isinstance(position, dict):
        raise BadRequest(_NOT_A_CURSOR)
    return position


def _cursor_tag(scope: str, payload: bytes) -> bytes:
    material = scope.encode("utf-8", "surrogatepass") + b"\x00" + payload
    return hashlib.blake2b(material, digest_size=_CURSOR_TAG_BYTES, person=b"iot-cursor").digest()
