"""Reading the records FunctionGraph writes to OBS when an asynchronous invocation finally failed.

The documented body of an asynchronous-invocation result (docs/functiongraph.md, section 3) is JSON:
``timestamp``, ``request_context`` (``request_id``, ``function_urn``, ``condition``,
``approximate_invoke_count``), ``request_payload`` (the original event, as a JSON string),
``response_context`` (``status_code``, ``function_error``) and ``response_payload``. Only the Open
Telekom Cloud pages and a sample show it, and nothing documents the object itself, so the reader is
defensive: it looks for the original DMS-for-Kafka event anywhere in the record (an object, a JSON
string, or base64 of either) and refuses anything in which it finds none.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from common.dms import iter_messages
from common.readings import MessageError, decode_message

# Where the original event is expected first; any other value is searched after these.
_PAYLOAD_KEYS = ("request_payload", "requestPayload", "payload", "event", "body", "data")
_MAX_DEPTH = 5


class UnreadableRecord(ValueError):
    """No DMS-for-Kafka event could be found in an object; the message says what was there."""


@dataclass(frozen=True)
class FailureRecord:
    event: dict  # the event the consumer failed on, to invoke it with again
    messages: int
    readings: int
    unreadable_messages: int  # messages the consumer will keep in its rejected table
    request_id: str = ""
    condition: str = ""  # FunctionGraph's reason, e.g. an unhandled error
    attempts: int | None = None
    error: str = ""  # what the function answered the last time, shortened

    def describe(self) -> str:
        parts = [f"{self.messages} message(s), {self.readings} reading(s)"]
        if self.unreadable_messages:
            parts.append(f"{self.unreadable_messages} message(s) not readings")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        if self.attempts is not None:
            parts.append(f"{self.attempts} invocation(s)")
        if self.condition:
            parts.append(self.condition)
        if self.error:
            parts.append(f"last error: {self.error}")
        return "; ".join(parts)


def _is_kafka_event(value: dict) -> bool:
    records = value.get("records")
    if isinstance(records, list):
        return any(isinstance(r, dict) and isinstance(r.get("messages"), list) for r in records)
    # the flat shape of an older template: one topic, no "records" (common/dms.py reads it too)
    return isinstance(value.get("messages"), list) and "topic_id" in value


def _decoded(text: str) -> object | None:
    """``text`` as JSON, or as base64 of JSON; None when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        raw = base64.b64decode(text, validate=True)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        return None


def find_event(value: object, depth: int = 0) -> dict | None:
    """The first DMS-for-Kafka event in ``value``, searching known payload keys first."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        inner = _decoded(value)
        return find_event(inner, depth + 1) if isinstance(inner, (dict, list)) else None
    if isinstance(value, list):
        for item in value:
            found = find_event(item, depth + 1)
            if found is not None:
                return found
        return None
    if not isinstance(value, dict):
        return None
    if _is_kafka_event(value):
        return value
    keys = [k for k in _PAYLOAD_KEYS if k in value] + [k for k in value if k not in _PAYLOAD_KEYS]
    for key in keys:
        found = find_event(value[key], depth + 1)
        if found is not None:
            return found
    return None


def _count(event: dict) -> tuple[int, int, int]:
    messages = readings = unreadable = 0
    for message in iter_messages(event):
        messages += 1
        try:
            readings += len(decode_message(message.value))
        except MessageError as error:
            readings += len(error.readings)
            unreadable += 1
    return messages, readings, unreadable


def _short(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_error(record: dict) -> str:
    response = record.get("response_payload")
    parsed = _decoded(response) if isinstance(response, str) else response
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        return _short(f"{parsed.get('errorType', 'error')}: {parsed['errorMessage']}")
    context = record.get("response_context")
    if isinstance(context, dict) and context.get("function_error"):
        return _short(context["function_error"])
    return _short(response) if isinstance(response, str) and response else ""


def parse_record(data: bytes) -> FailureRecord:
    """The failure record in an object's bytes; UnreadableRecord when it holds no Kafka event."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableRecord(f"not UTF-8 text ({len(data)} bytes)") from None
    document = _decoded(text.strip())
    if document is None:
        raise UnreadableRecord(f"not JSON: {_short(text, 80)!r}")
    event = find_event(document)
    if event is None:
        keys = ", ".join(sorted(document)) if isinstance(document, dict) else type(document).__name__
        raise UnreadableRecord(f"no DMS-for-Kafka event (records/messages) in it; top level: {keys}")
    messages, readings, unreadable = _count(event)
    meta = document if isinstance(document, dict) else {}
    context = meta.get("request_context") if isinstance(meta.get("request_context"), dict) else {}
    attempts = context.get("approximate_invoke_count")
    return FailureRecord(
        event=event,
        messages=messages,
        readings=readings,
        unreadable_messages=unreadable,
        request_id=str(context.get("request_id") or ""),
        condition=str(context.get("condition") or ""),
        attempts=attempts if isinstance(attempts, int) else None,
        error=_last_error(meta),
    )
