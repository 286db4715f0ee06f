"""What a reading is, how one is validated, and how readings travel through Kafka.

Validation lives here once: ingest uses it before queuing, the consumer uses it again on every
Kafka message (a message can come from anything that can write to the topic).

What a device may send, exactly (the OpenAPI document and the README say the same):
- the fields ``device_id``, ``metric_type``, ``value`` and optionally ``timestamp``, and no others: a
  field the service would drop (a ``unit``, say) could make the stored value mean something else;
- ``metric_type`` spelled as one of MetricType's values, in lower case;
- in JSON, ``value`` a number (not text); form fields are always text, so there it is a number as text;
- ``timestamp`` ISO-8601 text; a naive time means UTC.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import NamedTuple

from .errors import ValidationError

MAX_BULK_READINGS = 100
MAX_DEVICE_ID_LENGTH = 128
# A device clock a little ahead is normal; a reading from next year is a broken clock.
MAX_FUTURE_SKEW = timedelta(days=1)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
FIELDS = ("device_id", "metric_type", "value", "timestamp")
_FIELD_NAMES = frozenset(FIELDS)

# The device the deploy command's smoke tests send readings for (deploy/smoke.py). A valid id, so its
# readings travel and are stored like any other and its own /latest and /history answer, but one no
# real device is given by accident; GET /api/devices and GET /api/stats leave it out.
SMOKE_DEVICE_ID = "deploy-smoke@reserved"


class MetricType(str, Enum):
    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    PRESSURE = "pressure"
    VOLTAGE = "voltage"
    CURRENT = "current"
    POWER = "power"

    @classmethod
    def names(cls) -> list[str]:
        return [member.value for member in cls]


# Validation runs for every reading twice (ingest and consumer): plain lookups, no enum machinery.
_METRIC_NAMES = {name: name for name in MetricType.names()}
_ALLOWED_METRICS = ", ".join(MetricType.names())


class Reading(NamedTuple):
    """One validated reading. A named tuple: every reading is built twice (ingest and consumer), and
    a tuple is built several times faster than a frozen dataclass."""

    device_id: str
    metric_type: str  # one of MetricType's values
    value: float
    timestamp: datetime  # always timezone-aware UTC

    def to_json(self) -> str:
        """The reading as one JSON object (how the API shows it and Kafka carries it), written
        directly: ingest shows and queues every accepted reading, and the encoder's generic path cost
        more than the validation. No escaping is needed: a device id only ever holds the characters
        ``parse_device_id`` allows, a metric type is one of MetricType's values, and a value is a
        finite float (``repr`` is JSON's number syntax)."""
        return (
            f'{{"device_id":"{self.device_id}","metric_type":"{self.metric_type}",'
            f'"value":{self.value!r},"timestamp":"{self.timestamp.isoformat()}"}}'
        )


def format_timestamp(moment: datetime) -> str:
    """Timezone-aware ISO-8601 in UTC, e.g. ``2024-05-01T12:00:00+00:00``."""
    return moment.astimezone(timezone.utc).isoformat()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def glob_regex(glob: str) -> str:
    """A device glob (``*`` any run of characters, ``?`` one, everything else literal) as a regex
    of whole device ids (to use with ``fullmatch``)."""
    return re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".")


def glob_like(glob: str) -> str:
    """A device glob as a LIKE pattern (a backslash escapes LIKE's own wildcards)."""
    literal = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return literal.replace("*", "%").replace("?", "_")


def parse_device_id(raw: object) -> str:
    if type(raw) is str and len(raw) <= MAX_DEVICE_ID_LENGTH and _DEVICE_ID.fullmatch(raw):
        return raw  # the common case, already clean
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValidationError("device_id is required")
    if not isinstance(raw, str):
        raise ValidationError("device_id must be a string")
    device_id = raw.strip()
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ValidationError(f"device_id must be at most {MAX_DEVICE_ID_LENGTH} characters")
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValidationError(
            "device_id may contain only letters, digits and _ . : @ - and must start with a letter or digit"
        )
    return device_id


def parse_metric_type(raw: object) -> str:
    """One of MetricType's values, exactly as it is spelled there."""
    if type(raw) is str:
        known = _METRIC_NAMES.get(raw)
        if known is not None:
            return known
    if raw is None or raw == "":
        raise ValidationError(f"metric_type is required (one of: {_ALLOWED_METRICS})")
    if not isinstance(raw, str):
        raise ValidationError(f"metric_type must be a string, one of: {_ALLOWED_METRICS}")
    meant = _METRIC_NAMES.get(raw.strip().lower())
    if meant is not None:
        raise ValidationError(f"Unknown metric_type {raw[:40]!r}; metric types are lower case: use {meant!r}")
    raise ValidationError(f"Unknown metric_type {raw[:40]!r}; use one of: {_ALLOWED_METRICS}")


# No metric here comes near it, and it keeps every sum the rollups and series add up finite: a float8
# sum that overflowed would fail its batch on every retry.
MAX_ABS_VALUE = 1e15
_VALUE_RANGE = f"value must be between -{MAX_ABS_VALUE:.0e} and {MAX_ABS_VALUE:.0e} (inclusive)"


def parse_value(raw: object, *, text: bool = False) -> float:
    """A finite number of at most MAX_ABS_VALUE. ``text``: from a form field, where every value is text."""
    if type(raw) is float:
        if math.isfinite(raw):
            if abs(raw) > MAX_ABS_VALUE:
                raise ValidationError(_VALUE_RANGE)
            return raw
        raise ValidationError("value must be a finite number (not NaN or Infinity)")
    if raw is None or raw == "":
        raise ValidationError("value is required")
    if isinstance(raw, bool):
        raise ValidationError("value must be a number, not true or false")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # an integer too large for a double
            value = math.inf
    elif isinstance(raw, str):
        if not text:
            raise ValidationError(
                f"value must be a number, not the text {raw[:40]!r}: send it without quotes"
            )
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValidationError(f"value must be a number, not {raw[:40]!r}") from None
    else:
        raise ValidationError("value must be a number")
    if not math.isfinite(value):
        raise ValidationError("value must be a finite number (not NaN or Infinity)")
    if abs(value) > MAX_ABS_VALUE:
        raise ValidationError(_VALUE_RANGE)
    return value


def parse_timestamp(raw: object, received_at: datetime) -> datetime:
    """ISO-8601 text; a naive time means UTC; absent means the time the API received the reading."""
    if raw is None or raw == "":
        return received_at
    if not isinstance(raw, str):
        raise ValidationError("timestamp must be an ISO-8601 string such as 2024-05-01T12:00:00Z")
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValidationError(
            f"timestamp {raw[:40]!r} is not ISO-8601; use e.g. 2024-05-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    elif moment.tzinfo is not timezone.utc:
        try:
            moment = moment.astimezone(timezone.utc)
        except OverflowError:  # year 1 or 9999 moved past the calendar by its offset
            raise ValidationError(
                "timestamp is out of range: it must lie between 1970-01-01 and a day from now"
            ) from None
    if moment < EARLIEST_TIMESTAMP:
        raise ValidationError("timestamp must not be before 1970-01-01")
    if moment > received_at + MAX_FUTURE_SKEW:
        raise ValidationError("timestamp is more than a day in the future; check the device clock")
    return moment


def parse_reading(data: object, received_at: datetime | None = None, *, form: bool = False) -> Reading:
    """Validate one reading given as a mapping (``form``: its values are form fields, all text);
    raise ValidationError naming the problem."""
    received_at = received_at or utc_now()
    if form:
        return _checked_reading(data, received_at, form=True)
    return _reading(data, received_at, received_at + MAX_FUTURE_SKEW)


def _reading(data: object, received_at: datetime, latest: datetime) -> Reading:
    """``_fast_reading`` for the common case, ``_checked_reading`` (which explains) for the rest.
    ``latest`` is ``received_at + MAX_FUTURE_SKEW``, computed once by callers that read many."""
    return _fast_reading(data, received_at, latest) or _checked_reading(data, received_at)


_UTC = timezone.utc
_MISSING = object()


def _fast_reading(
    data: object, received_at: datetime, latest: datetime, stamped: bool = False
) -> Reading | None:
    """The common case, a clean reading, in one pass of exact type checks; None for anything else,
    which ``_checked_reading`` then validates again and explains. Accepts nothing that one refuses
    and gives the same Reading (the tests compare the two). ``stamped``: the timestamp is required."""
    if type(data) is not dict:
        return None
    stamp = data.get("timestamp", _MISSING)
    if len(data) != (3 if stamp is _MISSING else 4):
        return None  # a key besides the four (or one missing): the checked path judges it
    device_id = data.get("device_id")
    metric = data.get("metric_type")
    value = data.get("value")
    if (
        type(device_id) is not str
        or len(device_id) > MAX_DEVICE_ID_LENGTH
        or type(metric) is not str
        or not _DEVICE_ID.fullmatch(device_id)
    ):
        return None
    metric = _METRIC_NAMES.get(metric)
    if metric is None:
        return None
    if type(value) is int:
        if -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
            value = float(value)
        else:
            return None
    elif type(value) is not float or not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:  # NaN compares false
        return None
    if stamp is _MISSING or stamp is None or stamp == "":
        if stamped:
            return None
        moment = received_at
    elif type(stamp) is str:
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        tz = moment.tzinfo
        if tz is None:
            moment = moment.replace(tzinfo=_UTC)
        elif tz is not _UTC:
            try:
                moment = moment.astimezone(_UTC)
            except OverflowError:
                return None
        if moment < EARLIEST_TIMESTAMP or moment > latest:
            return None
    else:
        return None
    return Reading(device_id, metric, value, moment)


def _checked_reading(data: object, received_at: datetime, *, form: bool = False) -> Reading:
    """Every check, one at a time, each with the message a caller can act on."""
    if not isinstance(data, dict):
        raise ValidationError("a reading must be a JSON object with device_id, metric_type and value")
    for key, value in data.items():
        if key not in _FIELD_NAMES:
            raise ValidationError(
                f"{str(key)[:40]!r} is not a field of a reading; send only {', '.join(FIELDS[:-1])}"
                f" and {FIELDS[-1]}"
            )
        if isinstance(value, (dict, list)):
            raise ValidationError(f"{str(key)[:40]!r} must be a plain value, not an object or a list")
    return Reading(
        device_id=parse_device_id(data.get("device_id")),
        metric_type=parse_metric_type(data.get("metric_type")),
        value=parse_value(data.get("value"), text=form),
        timestamp=parse_timestamp(data.get("timestamp"), received_at),
    )


def parse_bulk(body: object, received_at: datetime | None = None) -> list[Reading]:
    """Validate a bulk body ``{"readings": [...]}``: every reading, before any is queued."""
    if not isinstance(body, dict) or "readings" not in body:
        raise ValidationError('Request body must be a JSON object with a "readings" list')
    items = body["readings"]
    if not isinstance(items, list):
        raise ValidationError('"readings" must be a list of readings')
    if not items:
        raise ValidationError('"readings" is empty; send 1 to 100 readings')
    if len(items) > MAX_BULK_READINGS:
        raise ValidationError(
            f'"readings" has {len(items)} readings; send at most {MAX_BULK_READINGS} per request'
        )
    received_at = received_at or utc_now()
    latest = received_at + MAX_FUTURE_SKEW
    readings = []
    for index, item in enumerate(items):
        try:
            readings.append(_reading(item, received_at, latest))
        except ValidationError as error:
            raise ValidationError(f"Reading {index}: {error.message}") from None
    return readings


def retention_error(reading: Reading, oldest: datetime, days: int) -> str | None:
    """Why ``reading`` is too old to store (before ``oldest``, RAW_RETENTION_DAYS ago), or None."""
    if reading.timestamp >= oldest:
        return None
    return (
        f"timestamp {reading.timestamp.isoformat()} is older than the raw retention of {days} days"
        " (RAW_RETENTION_DAYS): such readings are not stored; a backfill needs a longer retention"
    )


# --- Kafka messages -------------------------------------------------------------------------
# One message per accepted request: the broker acknowledges it whole or not at all, so a request is
# never half queued. The consumer also accepts a bare reading object (one reading per message).
#
# Beside its readings a message from ingest says when it was queued and which requests it holds, so a
# reading can be followed from its request to its row (the DMS trigger hands the consumer message values
# only, no Kafka timestamps or headers):
#
#     {"readings": [...], "sent_at": 1717200000123, "requests": [{"request_id": "...", "readings": 2}]}
#
# ``sent_at`` is milliseconds since the epoch (as Kafka writes times); ``requests`` lists the requests in the order of their readings
# (several when the local shim's group commit made one message of them). Both are optional: messages
# without them are read as before. They belong to the message, never to a reading, so a device cannot
# send them: a reading with any field besides its four is refused.


class MessageTrace(NamedTuple):
    """Where a message came from: when ingest queued it and the requests whose readings it holds."""

    sent_at: float | None = None  # seconds since the epoch
    requests: tuple[tuple[str, int], ...] = ()  # (request id, how many of the readings are its)

    @property
    def request_ids(self) -> list[str]:
        return [request_id for request_id, _ in self.requests]


NO_TRACE = MessageTrace()

# A request id goes into the message as JSON text written directly: only ids made of these characters
# (APIG's and the shim's are hex or UUIDs) are written, and read back.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def json_list(objects: list[str]) -> str:
    """A JSON array of objects already written as JSON text (``Reading.to_json``)."""
    return "[" + ",".join(objects) + "]"


def encode_message(
    readings: list[str], *, sent_at_ms: int | None = None, requests: Iterable[tuple[str, int]] = ()
) -> bytes:
    """One Kafka message ``{"readings": [...]}`` for readings written as JSON (``Reading.to_json``), with
    the time it is sent and the requests it holds when they are given. A request id that is not a plain
    token is left out (its readings are still counted), never escaped into the message. Written directly,
    as the readings are: ingest writes one message per request."""
    text = '{"readings":' + json_list(readings)
    if sent_at_ms is not None:
        text += ',"sent_at":' + str(int(sent_at_ms))
    if requests:
        spans = ",".join(
            [
                '{"request_id":"' + request_id + '","readings":' + str(int(count)) + "}"
                for request_id, count in requests
                if _REQUEST_ID.fullmatch(request_id)
            ]
        )
        if spans:
            text += ',"requests":[' + spans + "]"
    return (text + "}").encode()


class MessageError(ValueError):
    """A Kafka message that cannot be (entirely) read as readings; ``reason`` says why.

    ``readings`` are the message's valid readings (kept, not lost with the bad ones), ``problems`` one
    line per refused reading (one for the whole message when it cannot be read at all), ``trace`` what
    the message said about where it came from."""

    def __init__(
        self,
        reason: str,
        readings: list[Reading] | None = None,
        problems: list[str] | None = None,
        trace: MessageTrace = NO_TRACE,
    ):
        super().__init__(reason)
        self.reason = reason
        self.readings = readings or []
        self.problems = problems or [reason]
        self.trace = trace


def _trace(data: dict) -> MessageTrace:
    """What a message says about where it came from; anything malformed there is ignored, since it
    only serves following readings through the logs and never decides what is stored."""
    sent_at = data.get("sent_at")
    sent_at = sent_at / 1000 if type(sent_at) in (int, float) and math.isfinite(sent_at) else None
    requests = []
    listed = data.get("requests")
    if isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, dict):
                request_id, count = entry.get("request_id"), entry.get("readings")
                if type(request_id) is str and _REQUEST_ID.fullmatch(request_id) and type(count) is int:
                    requests.append((request_id, count))
    return MessageTrace(sent_at, tuple(requests)) if sent_at is not None or requests else NO_TRACE


def decode_message(raw: str) -> list[Reading]:
    """Readings of one Kafka message.

    Raises MessageError when the message is not JSON or has an invalid reading; the error still
    carries the valid readings of a multi-reading message so they are not lost with the bad one.
    """
    return read_message(raw)[0]


def read_message(raw: str) -> tuple[list[Reading], MessageTrace]:
    """Readings of one Kafka message and its trace (``MessageTrace``); raises MessageError as
    ``decode_message`` does."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError) as error:
        raise MessageError(f"not JSON: {error}") from None
    enveloped = isinstance(data, dict) and "readings" in data
    items = data.get("readings") if enveloped else [data]
    trace = _trace(data) if enveloped and len(data) > 1 else NO_TRACE
    if not isinstance(items, list) or not items:
        raise MessageError('"readings" must be a non-empty list', trace=trace)
    received_at = utc_now()
    latest = received_at + MAX_FUTURE_SKEW
    readings, problems = [], []
    for index, item in enumerate(items):
        reading = _fast_reading(item, received_at, latest, stamped=True)
        if reading is not None:
            readings.append(reading)
            continue
        try:
            if not isinstance(item, dict) or item.get("timestamp") in (None, ""):
                raise ValidationError("a queued reading must carry its timestamp")
            readings.append(_checked_reading(item, received_at))  # the fast path said no already
        except ValidationError as error:
            problems.append(f"Reading {index}: {error.message}")
    if problems:
        raise MessageError("; ".join(problems), readings, problems, trace)
    return readings, trace
