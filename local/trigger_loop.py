"""The local Kafka trigger: a consumer group that invokes the consumer function with DMS events.

Like the DMS trigger it hands the handler batches of up to ``batch_size`` message values. Unlike
the cloud trigger (which does not redeliver after an error), it commits offsets only after the
handler returned, and on an error it rewinds to the batch's first offsets and retries with
back-off, so a batch is never skipped while PostgreSQL is down. No business logic lives here.

It also reports how far behind it is: per partition the messages not yet stored and the age of the
oldest (``Backlog``), with the consumer's counters, as Prometheus metrics (common/metrics.py) in the
multiprocess directory the local runner shares with the shim, or on ``--metrics-port`` of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError

from common import dms, metrics
from common.producer import client_security
from common.settings import Settings
from functions import load_function

from .context import LocalContext
from .env import env_int

log = logging.getLogger("trigger-loop")

# Messages per handler call when TRIGGER_BATCH_SIZE does not say. The DMS trigger allows up to 1,000;
# locally larger batches mean fewer transactions and fewer fetches of the embedded broker.
DEFAULT_BATCH_SIZE = 500

# After waiting out a window, how long the fetch of what arrived meanwhile may take.
DRAIN_MS = 50

# The batch window when TRIGGER_MAX_WAIT_MS does not set one. Each window costs the embedded broker two
# fetches, and each of those lists every batch the topic holds, so a longer window leaves the broker
# more CPU for everything else under sustained load. A reading is stored within about a window of
# being queued.
DEFAULT_MAX_WAIT_MS = 300

# Trigger loops the local stack runs side by side in one consumer group (TRIGGER_LOOPS overrides), as
# the DMS trigger invokes the consumer for different partitions at once. Even on two cores two loops
# store faster than one: one decodes while the other waits for PostgreSQL.
DEFAULT_TRIGGER_LOOPS = 2
LOOPS_HELP = (
    f"trigger loop processes in one consumer group (default: TRIGGER_LOOPS, else {DEFAULT_TRIGGER_LOOPS})"
)

# The consumer group when neither TRIGGER_GROUP_ID nor KAFKA_CONSUMER_GROUP names one.
DEFAULT_GROUP = "iot-consumer"

Handler = Callable[[dict, object], object]


def configured_loops() -> int:
    """``TRIGGER_LOOPS`` when set and not empty, else ``DEFAULT_TRIGGER_LOOPS``."""
    return env_int("TRIGGER_LOOPS", DEFAULT_TRIGGER_LOOPS)


class Backlog:
    """How far this loop's partitions are behind: per partition the messages not yet stored and
    committed (high watermark minus the first offset not stored) and the age of the oldest of them (from
    its Kafka timestamp: the batch in hand starts at the committed offset). Written by the loop after
    each fetch and commit, and published as gauges (common/metrics.py) every ``REPORT_SECONDS`` by a
    thread of its own, so the age keeps growing while a batch is retried."""

    REPORT_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highwater: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}  # the first offset not yet stored
        self._oldest_ms: dict[TopicPartition, int] = {}  # Kafka timestamp of the message at that offset

    def fetched(self, consumer: KafkaConsumer, batch: dict[TopicPartition, list]) -> None:
        """After a fetch: the batch in hand starts at each of its partitions' first offset not stored."""
        assigned = consumer.assignment()
        with self._lock:
            for partition in assigned:
                highwater = consumer.highwater(partition)
                if highwater is not None:
                    self._highwater[partition] = highwater
                records = batch.get(partition)
                if records:
                    self._next[partition] = records[0].offset
                    self._oldest_ms[partition] = records[0].timestamp
                elif partition not in self._next:
                    position = _position(consumer, partition)
                    if position is not None:
                        self._next[partition] = position

    def stored(self, batch: dict[TopicPartition, list]) -> None:
        """After a commit: nothing of the batch waits any more; what follows it is not fetched yet."""
        with self._lock:
            for partition, records in batch.items():
                self._next[partition] = records[-1].offset + 1
                self._oldest_ms.pop(partition, None)

    def released(self, partitions) -> None:
        with self._lock:
            for partition in partitions:
                for known in (self._highwater, self._next, self._oldest_ms):
                    known.pop(partition, None)
        for partition in partitions:
            metrics.partition_released(partition.topic, partition.partition)

    def snapshot(self, now_ms: float) -> dict[TopicPartition, tuple[int, float]]:
        """(lag in messages, age of the oldest waiting message in seconds) per known partition."""
        with self._lock:
            found = {}
            for partition, highwater in self._highwater.items():
                first = self._next.get(partition)
                if first is None:
                    continue
                lag = max(0, highwater - first)
                oldest = self._oldest_ms.get(partition)
                age = max(0.0, (now_ms - oldest) / 1000) if lag and oldest is not None else 0.0
                found[partition] = (lag, age)
            return found

    def report(self) -> None:
        for partition, (lag, age) in self.snapshot(time.time() * 1000).items():
            metrics.partition_backlog(partition.topic, partition.partition, lag, age)

    def report_until(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.REPORT_SECONDS):
            self.report()


def _position(consumer: KafkaConsumer, partition: TopicPartition) -> int | None:
    """The partition's consumed position, if the client can tell without waiting long."""
    try:
        return consumer.position(partition, timeout_ms=200)
    except (KafkaError, AssertionError):
        return None


class _Announce(ConsumerRebalanceListener):
    """Logs partition assignments and, the first time, touches ``ready_file`` (the local runner
    waits for it, so "Ready" means readings are being consumed, not just accepted). Partitions taken
    away leave the backlog this loop reports."""

    def __init__(self, ready_file: Path | None, backlog: Backlog | None = None):
        self.ready_file = ready_file
        self.backlog = backlog

    def on_partitions_assigned(self, assigned) -> None:
        log.info("consuming partitions %s", sorted(p.partition for p in assigned))
        if self.ready_file is not None and assigned:
            self.ready_file.touch()

    def on_partitions_revoked(self, revoked) -> None:
        log.info("partitions revoked: %s", sorted(p.partition for p in revoked))
        if self.backlog is not None:
            self.backlog.released(revoked)


class TriggerLoop:
    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        *,
        group_id: str = DEFAULT_GROUP,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
        max_backoff_s: float = 10.0,
        ready_file: Path | None = None,
    ):
        self.settings = settings
        self.handler = handler
        self.group_id = group_id
        self.batch_size = batch_size
        self.max_wait_ms = max_wait_ms
        self.max_backoff_s = max_backoff_s
        self.stopping = threading.Event()
        self.batches = 0
        self.messages = 0
        self.ready_file = ready_file
        self.backlog = Backlog()

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            # SASL_SSL too, so the loop can consume from DMS when run on a machine in its VPC.
            **client_security(self.settings),
            bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
            group_id=self.group_id,
            client_id="iot-trigger-loop",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_records=self.batch_size,
            metrics_enabled=False,  # sensors on every fetched record that nothing reads
        )
        consumer.subscribe([self.settings.kafka_topic], listener=_Announce(self.ready_file, self.backlog))
        return consumer

    def _collect(self, consumer: KafkaConsumer) -> dict[TopicPartition, list]:
        """Up to batch_size records: those ready now, or, when they reach the end of what the broker
        holds, those plus what arrives within max_wait_ms of the first.

        A consumer that is behind takes what is there and goes: waiting would only let the backlog
        grow. One that has caught up waits the window out rather than polling through it: the
        embedded broker (tansu's in-memory store) lists every batch a partition holds on each fetch
        that finds data, so fetching as fast as records trickle in made it work harder the longer the
        stack ran; two fetches a window instead of dozens left it far less to do under load.
        The window is the local loop's own: the DMS trigger documents a batch size, not a window."""
        batch: dict[TopicPartition, list] = {}
        count = self._add(batch, consumer.poll(timeout_ms=500, max_records=self.batch_size))
        if not count or count >= self.batch_size:
            return batch  # idle (the caller checks whether to stop), or full
        timeout_ms = 0  # behind: what the last fetches brought is all this batch takes
        if self._caught_up(consumer, batch):
            if self.stopping.wait(self.max_wait_ms / 1000):
                return batch
            # One fetch for what arrived meanwhile: the broker answers at once when there is any.
            timeout_ms = min(self.max_wait_ms, DRAIN_MS)
        self._add(batch, consumer.poll(timeout_ms=timeout_ms, max_records=self.batch_size - count))
        return batch

    @staticmethod
    def _caught_up(consumer: KafkaConsumer, batch: dict[TopicPartition, list]) -> bool:
        """Whether every partition's records reach its high watermark as the last fetch reported it
        (partitions a rebalance has just taken away do not count: kafka-python refuses to say)."""
        assigned = consumer.assignment()
        for partition, records in batch.items():
            if partition not in assigned:
                continue
            highwater = consumer.highwater(partition)
            if highwater is not None and highwater > records[-1].offset + 1:
                return False
        return True

    @staticmethod
    def _add(batch: dict[TopicPartition, list], polled: dict[TopicPartition, list]) -> int:
        for partition, records in polled.items():
            batch.setdefault(partition, []).extend(records)
        return sum(len(records) for records in polled.values())

    def _invoke(self, batch: dict[TopicPartition, list]) -> None:
        by_topic: dict[str, list[bytes]] = {}
        for partition, records in batch.items():
            by_topic.setdefault(partition.topic, []).extend(record.value for record in records)
        event = dms.build_event(by_topic)
        result = self.handler(event, LocalContext("consumer"))
        log.debug("batch handled: %s", result)

    def run(self) -> None:
        consumer = self._consumer()
        backoff = 0.5
        log.info("consuming %s as group %s", self.settings.kafka_topic, self.group_id)
        if metrics.enabled():
            threading.Thread(
                target=self.backlog.report_until, args=(self.stopping,), name="backlog", daemon=True
            ).start()
        try:
            while not self.stopping.is_set():
                batch = self._collect(consumer)
                self.backlog.fetched(consumer, batch)
                if not batch:
                    continue
                try:
                    self._invoke(batch)
                except Exception as error:  # the handler failed: rewind and retry the same records
                    metrics.consumer_failed()
                    log.warning("consumer failed (%s); retrying the batch in %.1fs", error, backoff)
                    for partition, records in batch.items():
                        consumer.seek(partition, records[0].offset)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                backoff = 0.5
                try:
                    consumer.commit()
                except (CommitFailedError, KafkaError) as error:
                    # A rebalance took the partitions; their next owner re-reads from the last
                    # commit and storing is idempotent, so nothing is lost or doubled.
                    log.warning("offset commit failed: %s", error)
                else:
                    self.backlog.stored(batch)
                self.batches += 1
                self.messages += sum(len(records) for records in batch.values())
        finally:
            _close_quietly(consumer)
            log.info("stopped after %d batches, %d messages", self.batches, self.messages)

    def stop(self) -> None:
        self.stopping.set()


def _close_quietly(consumer: KafkaConsumer) -> None:
    """Close the consumer without the client's tracebacks about its own sockets.

    kafka-python 3.0 can log a socket it is closing as an ERROR with a traceback when a metadata
    refresh is in flight at close (a race inside the client: nothing is lost, offsets are committed
    after each batch). Stopping is the operator's Ctrl-C; a traceback then reads as a failure.
    The loop runs in its own process and is stopping, so quieting the client's logger is contained.
    """
    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        consumer.close(autocommit=False)
    finally:
        client_log.setLevel(level)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Invoke the consumer function from Kafka, as the DMS trigger does."
    )
    parser.add_argument(
        "--group",
        default=os.environ.get("TRIGGER_GROUP_ID") or os.environ.get("KAFKA_CONSUMER_GROUP") or DEFAULT_GROUP,
        help=f"the consumer group (default: TRIGGER_GROUP_ID, else KAFKA_CONSUMER_GROUP, else {DEFAULT_GROUP})",
    )
    parser.add_argument("--batch-size", type=int, default=env_int("TRIGGER_BATCH_SIZE", DEFAULT_BATCH_SIZE))
    parser.add_argument(
        "--max-wait-ms", type=int, default=env_int("TRIGGER_MAX_WAIT_MS", DEFAULT_MAX_WAIT_MS)
    )
    parser.add_argument(
        "--ready-file", help="touched once partitions are assigned (the local runner waits for it)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=env_int("TRIGGER_METRICS_PORT", 0),
        help="serve this loop's metrics on GET /metrics at this port (default: TRIGGER_METRICS_PORT, else"
        " none: under `make run` the shim's /metrics shows every loop's)",
    )
    args = parser.parse_args()

    # Before the handler is loaded: its counters go where this process's metrics go.
    metrics.enable()
    if args.metrics_port:
        metrics.serve(args.metrics_port)

    function = load_function("consumer")
    function.initializer(LocalContext("consumer"))
    loop = TriggerLoop(
        Settings.from_env(),
        function.handler,
        group_id=args.group,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        ready_file=Path(args.ready_file) if args.ready_file else None,
    )
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())
    loop.run()


if __name__ == "__main__":
    main()
