"""One-shot set-up for `docker compose`: create the readings topic, migrate the schema (creating the
reader and writer roles the shim connects as, with their passwords), exit 0.

The trigger loop and the shim start only after this has succeeded (depends_on
service_completed_successfully), so the consumer group never subscribes to a topic that does not
exist yet. Both steps are idempotent; while Kafka or PostgreSQL are still starting it retries for
up to ``--wait`` seconds.

    python -m local.compose_init --partitions 4
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable

from common import logs
from common.producer import client_security
from common.settings import Settings
from common.store import ReadingStore

from .topics import create_topics


def retry(what: str, action: Callable[[], object], deadline: float) -> object:
    while True:
        try:
            return action()
        except Exception as error:  # the broker or the database is still starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {error}") from error
            print(f"init: {what} not ready yet ({error}); retrying", file=sys.stderr, flush=True)
            time.sleep(2)


def create_topic(settings: Settings, partitions: int) -> None:
    # A Kafka admin client waits long for a broker that is not listening yet; a TCP check first
    # keeps each retry short.
    servers = settings.kafka_bootstrap_servers.split(",")
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
            break
        except OSError:
            continue
    else:
        raise ConnectionError("no broker is listening")
    create_topics(
        settings.kafka_bootstrap_servers,
        [settings.kafka_topic],
        partitions,
        security=client_security(settings),
    )


def migrate(settings: Settings) -> int:
    store = ReadingStore(settings)
    try:
        return store.migrate()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the Kafka topic and migrate the schema.")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the readings topic")
    parser.add_argument("--wait", type=float, default=120, help="seconds to keep retrying (default 120)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    deadline = time.monotonic() + args.wait
    try:
        retry(
            f"Kafka topic {settings.kafka_topic!r} on {settings.kafka_bootstrap_servers}",
            lambda: create_topic(settings, args.partitions),
            deadline,
        )
        version = retry(f"PostgreSQL schema on {settings.db_host}", lambda: migrate(settings), deadline)
    except RuntimeError as error:
        print(f"init: giving up: {error}", file=sys.stderr)
        return 1
    print(f"init: topic {settings.kafka_topic!r} ready, schema at version {version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
