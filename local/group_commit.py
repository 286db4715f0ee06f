"""Group commit for the local shim: requests that arrive together share one Kafka message.

A shim worker serves several requests at once on its threads, where a FunctionGraph instance serves
one at a time, and kafka-python spends about the same CPU on a message whatever it holds. So while one
message is in flight, the requests that arrive meanwhile are collected into the next one, and each of
them waits for that message's acknowledgement. The promises of ``ReadingProducer.send`` still hold:
a request's readings are always inside one message (queued whole or not at all) and a request answers
only once the broker acknowledged that message. A request that finds nothing in flight is sent at once.

When recent messages carried several requests, the next one may stay open up to
``GROUP_LINGER_SECONDS`` longer, until as many have joined as the largest of them carried: under a
steady concurrent load that buys fuller messages for almost no latency. A lone request never waits.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from common import logs
from common.errors import ServiceUnavailable
from common.producer import UNAVAILABLE, ReadingProducer
from common.readings import Reading

# Readings per shared message: about 250 KB at most, well inside Kafka's 1 MB default.
MAX_GROUP_READINGS = 1000
GROUP_LINGER_SECONDS = 0.001
# How many recent messages' sizes a new group aims for (the largest of them: the last one alone would
# only ever let groups shrink).
RECENT_MESSAGES = 8


class _Group:
    """The requests that travel in one message, and that message's outcome.

    The request that opened the group leads it: it sends the message when its turn comes
    (``your_turn``), after waiting up to the linger for ``expected`` requests (``all_in``); the others
    wait for ``sent``. Each event wakes only the threads it concerns."""

    __slots__ = ("readings", "requests", "spans", "expected", "key", "your_turn", "all_in", "sent", "error")

    def __init__(self, key: bytes, expected: int):
        self.readings: list[str] = []
        self.requests = 0
        # (request id, readings) of each request in the message, in order: the message names them.
        self.spans: list[tuple[str, int]] = []
        self.expected = expected
        self.key = key
        self.your_turn = threading.Event()
        self.all_in = threading.Event()
        self.sent = threading.Event()
        self.error: ServiceUnavailable | None = None


class GroupCommitProducer:
    """``ReadingProducer``'s interface (``send``, ``ping``, ``close``), sending through one of them."""

    def __init__(self, producer: ReadingProducer):
        self.producer = producer
        self._lock = threading.Lock()
        # At most one message in flight; the groups waiting their turn, oldest first; the newest group,
        # still open to requests that arrive meanwhile.
        self._waiting: deque[_Group] = deque()
        self._open: _Group | None = None
        self._sending = False
        self._recent_sizes: deque[int] = deque([0], maxlen=RECENT_MESSAGES)

    def send(self, readings: Sequence[Reading]) -> list[str]:
        shown = [reading.to_json() for reading in readings]
        if not shown:
            return shown
        group = self._join(shown, readings[0].device_id.encode(), logs.request_id())
        if group.error is not None:
            raise ServiceUnavailable(group.error.message) from group.error.__cause__
        return shown

    def ping(self) -> None:
        self.producer.ping()

    def close(self) -> None:
        self.producer.close()

    def _join(self, shown: list[str], key: bytes, request_id: str) -> _Group:
        """Add a request to the open group; return once that group's message was sent or failed."""
        with self._lock:
            group = self._open
            leader = group is None or len(group.readings) + len(shown) > MAX_GROUP_READINGS
            if leader:
                group = self._open = _Group(key, max(self._recent_sizes))
                if self._sending:
                    self._waiting.append(group)
                else:  # nothing in flight, so nothing waits either: its turn is now
                    self._sending = True
                    group.your_turn.set()
            group.readings.extend(shown)
            group.spans.append((request_id, len(shown)))
            group.requests += 1
            if group.requests == group.expected:
                group.all_in.set()
        if leader:
            self._lead(group)
        else:
            group.sent.wait()
        return group

    def _lead(self, group: _Group) -> None:
        group.your_turn.wait()
        if group.expected > 1:
            group.all_in.wait(GROUP_LINGER_SECONDS)
        with self._lock:
            if self._open is group:
                self._open = None  # from now on it is being sent: closed to new requests
            self._recent_sizes.append(group.requests)
        error: ServiceUnavailable | None = ServiceUnavailable(UNAVAILABLE)  # if publish raises otherwise
        try:
            self.producer.publish(group.readings, group.key, group.spans)
            error = None
        except ServiceUnavailable as failure:
            error = failure
        finally:
            group.error = error
            group.sent.set()
            with self._lock:  # hand the turn to the next group, or say nothing is in flight
                if self._waiting:
                    self._waiting.popleft().your_turn.set()
                else:
                    self._sending = False
