"""DMS-for-Kafka trigger events: parsing (the consumer) and building (the local trigger loop).

The trigger hands the function message values only, as strings, grouped per topic:
``{"event_version", "event_time", "trigger_type": "KAFKA", "region", "instance_id",
"records": [{"topic_id", "messages": [...]}]}``. Older Huawei templates put ``instance_id`` in
each record, or ``topic_id`` and ``messages`` at the top with no ``records``; OTC's helper tolerates
``{"message": "..."}`` objects. All of them are read here (docs/functiongraph.md, section 3).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    topic: str
    instance_id: str
    value: str


def _as_text(message: object) -> str:
    if isinstance(message, dict):
        message = message.get("message", message.get("value", ""))
    if isinstance(message, bytes):
        return message.decode("utf-8", errors="replace")
    if isinstance(message, str):
        return message
    # Anything else is kept as its text so the rejected table shows what arrived.
    return repr(message)


def iter_messages(event: dict) -> Iterator[KafkaMessage]:
    """Every message of a DMS Kafka event, in order, with its topic and instance."""
    top_instance = str(event.get("instance_id") or "")
    records = event.get("records")
    if records is None and "messages" in event:
        records = [event]  # the flat shape of an older Huawei template: one topic, no "records"
    for record in records or []:
        if not isinstance(record, dict):
            continue
        topic = str(record.get("topic_id") or "")
        instance = top_instance or str(record.get("instance_id") or "")
        for message in record.get("messages") or []:
            yield KafkaMessage(topic, instance, _as_text(message))


def build_event(
    batches: dict[str, list[bytes]], *, instance_id: str = "local", region: str = "local"
) -> dict:
    """A DMS Kafka trigger event for message values grouped by topic name."""
    records = []
    for topic, values in batches.items():
        messages = []
        for value in values:
            try:
                messages.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                # The cloud shape has only strings; keep undecodable bytes visible, not lost.
                messages.append("base64:" + base64.b64encode(value).decode("ascii"))
        records.append({"topic_id": topic, "messages": messages})
    return {
        "event_version": "v1.0",
        "event_time": int(time.time()),
        "trigger_type": "KAFKA",
        "region": region,
        "instance_id": instance_id,
        "records": records,
    }
