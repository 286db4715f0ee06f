"""Kafka producer for accepted readings: created once per process, reused across invocations.

Ingest answers only after the broker acknowledged (``acks=all``) a message holding the request's
readings. Requests that arrive while a message is in flight are *group-committed*: the next message
carries all of them, and each waits for that one acknowledgement. A request's readings are always
inside one message, so a request is queued whole or not at all; under load, one Kafka message (and
one broker round trip, and kafka-python's sizeable per-message cost) serves many requests. When recent
messages carried several requests, the next one stays open up to a millisecond longer, until as many
have joined as the largest of them carried. With one request at a time, as a FunctionGraph instance
runs, each message holds exactly one request and none waits.

The producer's own delivery timeout is the wait bound, so a message that was not acknowledged in
time is also given up by the producer rather than written later behind the caller's back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from .errors import ServiceUnavailable
from .readings import Reading, encode_message
from .settings import Settings

log = logging.getLogger(__name__)

UNAVAILABLE = "The message queue is unavailable; nothing was queued, retry shortly"


# Readings per group-committed message: about 250 KB at most, well inside Kafka's 1 MB default.
MAX_GROUP_READINGS = 1000

# How long a group may stay open after its turn came, when recent messages carried more than one
# request: until it holds as many requests as the largest of the last RECENT_MESSAGES did, or this
# long. kafka-python costs ~1 ms of CPU per message in a busy process, so under concurrent load a
# little waiting buys larger messages: 8% more single-reading requests/s through one worker at 8
# clients (BENCHMARKS.md). Not waiting once the group is that large keeps the gain without the whole
# millisecond's latency (BENCHMARKS.md, item 17). A lone request never waits.
GROUP_LINGER_SECONDS = 0.001
RECENT_MESSAGES = 8


class _Group:
    """Requests' readings that travel in one message, and that message's outcome.

    The request that opened the group is its leader: it sends the message when its turn comes
    (``your_turn``), after lingering until ``expected`` requests are in (``all_in``) if more than one
    is expected; the others wait for ``sent``. Each wake-up goes to the threads it concerns, not to
    every waiting request thread."""

    __slots__ = ("readings", "requests", "expected", "key", "your_turn", "all_in", "sent", "error")

    def __init__(self, key: bytes, expected: int):
        self.readings: list[str] = []
        self.requests = 0
        self.expected = expected
        self.key = key
        self.your_turn = threading.Event()
        self.all_in = threading.Event()
        self.sent = threading.Event()
        self.error: KafkaError | None = None


class ReadingProducer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        # Group commit: at most one message in flight; groups waiting their turn, oldest first; the
        # newest of them still open to requests that arrive meanwhile (and, while its leader lingers,
        # the one about to be sent).
        self._groups_lock = threading.Lock()
        self._waiting: deque[_Group] = deque()
        self._open: _Group | None = None
        self._sending = False
        # Requests each of the last few messages carried: a group lingers until it is as large as the
        # largest of them (the last one alone would only ever let groups shrink).
        self._recent_sizes: deque[int] = deque([0], maxlen=RECENT_MESSAGES)

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    timeout = max(1000, self.settings.kafka_timeout_ms)
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                        acks="all",
                        # Send at once: records that arrive while a request is in flight batch anyway.
                        linger_ms=0,
                        # Kafka's idempotent producer buys nothing here (storage is idempotent by the
                        # reading's identity), costs a round trip per send, and turns fatal when a
                        # broker loses its producer state (an in-memory broker's restart).
                        enable_idempotence=False,
                        max_block_ms=timeout,
                        request_timeout_ms=timeout - 10,
                        delivery_timeout_ms=timeout,
                        bootstrap_timeout_ms=timeout,
                        client_id="iot-ingest",
                        # Its sensors cost CPU on every send and acknowledgement and nothing reads them.
                        metrics_enabled=False,
                    )
        return self._producer

    def send(self, readings: Sequence[Reading]) -> list[str]:
        """Queue one request's readings as one message; raise ServiceUnavailable unless acknowledged.

        Returns the readings as sent, each as JSON text (``Reading.to_json``), for the caller's response.
        """
        shown = [reading.to_json() for reading in readings]
        if not shown:
            return shown
        group = self._join(shown, readings[0].device_id.encode())
        if group.error is not None:
            raise ServiceUnavailable(UNAVAILABLE) from group.error
        return shown

    def _join(self, shown: list[str], key: bytes) -> _Group:
        """Add a request to the open group and return once that group's message is acknowledged or
        failed. A group's leader sends it as soon as no other message is in flight."""
        with self._groups_lock:
            group = self._open
            if group is not None and len(group.readings) + len(shown) <= MAX_GROUP_READINGS:
                leader = False
            else:
                group = self._open = _Group(key, max(self._recent_sizes))
                leader = True
                if self._sending:
                    self._waiting.append(group)
                else:  # nothing in flight, so nothing waits either: its turn is now
                    self._sending = True
                    group.your_turn.set()
            group.readings.extend(shown)
            group.requests += 1
            if group.requests == group.expected:
                group.all_in.set()
        if not leader:
            group.sent.wait()
            return group
        group.your_turn.wait()
        if group.expected > 1:
            group.all_in.wait(GROUP_LINGER_SECONDS)
        with self._groups_lock:
            if self._open is group:
                self._open = None  # from now on it is being sent: closed to new requests
            self._recent_sizes.append(group.requests)
        error: KafkaError | None = KafkaError("the message was not sent")  # if _deliver raises
        try:
            error = self._deliver(group)
        finally:
            group.error = error
            group.sent.set()
            with self._groups_lock:
                if self._waiting:
                    self._waiting.popleft().your_turn.set()
                else:
                    self._sending = False
        return group

    def _deliver(self, group: _Group) -> KafkaError | None:
        """Send one group's message and wait for the broker; the error, if it was not acknowledged."""
        try:
            future = self._client().send(
                self.settings.kafka_topic, key=group.key, value=encode_message(group.readings)
            )
            future.get(timeout=self.settings.kafka_timeout_ms / 1000 + 1)
        except KafkaError as error:
            log.warning("Kafka write failed: %r", error)
            # A producer that failed may be stuck (e.g. its idempotence state is fatal after a broker
            # restart) and may hold the unsent message: drop it; the next request builds a fresh one.
            self._discard()
            return error
        return None

    def ping(self) -> None:
        """Ask the broker itself (not the producer's cached metadata) whether the topic exists."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                client_id="iot-readiness",
                bootstrap_timeout_ms=2000,
                request_timeout_ms=2000,
            )
        except KafkaError as error:
            raise ServiceUnavailable("The Kafka broker cannot be reached") from error
        try:
            topics = admin.list_topics()
        except KafkaError as error:
            raise ServiceUnavailable("The Kafka broker does not answer") from error
        finally:
            admin.close()
        if self.settings.kafka_topic not in topics:
            raise ServiceUnavailable(f"The Kafka topic {self.settings.kafka_topic!r} does not exist")

    def _discard(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer must not hide the original error
                log.debug("closing a failed producer", exc_info=True)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
            self._producer = None
