"""Real PostgreSQL, Redis and Kafka for the tests.

Each server comes from the environment when its variable is set (DB_HOST, REDIS_HOST,
KAFKA_BOOTSTRAP_SERVERS: e.g. a developer's own servers or CI services), otherwise it is started in
a container where a Docker engine answers, else embedded (PyPI wheels, loopback, child processes);
``TEST_SERVERS=containers|embedded`` forces the choice (tests/servers.py). Every run uses its own
Kafka topic and Redis key prefix; tests that need a clean database truncate the service's tables, so
do not point the tests at a database whose data you want to keep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common import runtime as runtime_module
from common.runtime import Runtime
from common.settings import Settings
from common.store import ReadingStore
from local.embedded import free_port
from local.run import function_env
from local.topics import create_topics

from . import servers

ROOT = Path(__file__).resolve().parent.parent
# A day well inside the raw retention (readings older than RAW_RETENTION_DAYS are refused), at a time
# of day the tests choose: two days ago.
RECENT_DAY = (datetime.now(timezone.utc) - timedelta(days=2)).date().isoformat()


def migrate(env: dict[str, str]) -> None:
    """Migrate the database ``env`` names (creating its reader and writer roles), as the consumer's
    initializer and `make run` do: nothing migrates on a query's first use."""
    store = ReadingStore(Settings.from_env(env))
    try:
        store.migrate()
    finally:
        store.close()


@pytest.fixture(scope="session")
def service_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment variables naming real servers (the database migrated, with its reader and writer
    roles), plus a topic and key prefix of this run's own."""
    env = {name: value for name, value in os.environ.items() if name in Settings.names()}
    _plan, started, stop = servers.start_servers(os.environ, tmp_path_factory.mktemp("servers"))
    try:
        env.update(started)
        env.update(servers.database_roles(env))
        migrate(env)
        run_id = uuid.uuid4().hex[:8]
        env.update(
            KAFKA_TOPIC=f"readings-test-{run_id}",
            REDIS_KEY_PREFIX=f"iot-test-{run_id}:",
            DEMO_MODE="true",
            AUTH_ENABLED="false",
            KAFKA_TIMEOUT_MS="3000",
        )
        create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [env["KAFKA_TOPIC"]], partitions=4)
        yield env
    finally:
        stop()


@pytest.fixture(scope="session")
def settings(service_env) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture
def runtime(settings) -> Iterator[Runtime]:
    """The process runtime on the test servers, with empty tables and an empty cache."""
    rt = runtime_module.initialize(settings=settings)
    rt.store.migrate()
    rt.store.delete_all()
    rt.cache.clear()
    yield rt
    runtime_module.reset()


def isolated_env(service_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The test servers with a Kafka topic and Redis prefix of its own, plus overrides."""
    run_id = uuid.uuid4().hex[:8]
    env = {
        **service_env,
        "KAFKA_TOPIC": f"readings-{run_id}",
        "REDIS_KEY_PREFIX": f"iot-{run_id}:",
        **overrides,
    }
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [env["KAFKA_TOPIC"]], partitions=2)
    return env


def wait_for(check, timeout: float = 5.0, interval: float = 0.05):
    """Poll ``check`` until it returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last result: {result!r})")
        time.sleep(interval)


class LocalService:
    """The shim and the trigger loop as real child processes, on the test servers: the database is
    migrated first, and the shim gets the reader's and writer's accounts, not the owner's (as `make
    run` starts them)."""

    workers = 1  # shim worker processes

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        warmup_device: str | None = None,
        warmup_headers: dict[str, str] | None = None,
    ):
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.warmup_device = warmup_device
        self.warmup_headers = warmup_headers or {}
        self.group = f"test-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start_process(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        migrate(self.env)
        self.start_process(
            "shim",
            "local.shim",
            *("--port", str(self.port), "--workers", str(self.workers), "--threads", "4"),
            env=function_env(self.env),
        )
        self.start_trigger_loop()
        wait_for(self._healthy, timeout=30, interval=0.2)
        self._wait_consuming()

    def start_trigger_loop(self) -> None:
        self.start_process("trigger", "local.trigger_loop", "--group", self.group)

    def _wait_consuming(self) -> None:
        """Send one reading and wait until it is stored: the trigger loop has joined its group. The
        warm-up headers (a credential, where auth is on) go with both requests."""
        device = self.warmup_device or f"warmup-{uuid.uuid4().hex[:8]}"
        body = json.dumps({"device_id": device, "metric_type": "power", "value": 0}).encode()
        request = urllib.request.Request(
            self.url + "/api/device/data",
            data=body,
            headers={"Content-Type": "application/json", **self.warmup_headers},
        )
        urllib.request.urlopen(request, timeout=10).close()

        def stored() -> bool:
            self._healthy()
            try:
                latest = urllib.request.Request(
                    f"{self.url}/api/device/{device}/latest", headers=self.warmup_headers
                )
                urllib.request.urlopen(latest, timeout=2).close()
                return True
            except OSError:
                return False

        wait_for(stored, timeout=30, interval=0.2)

    def _healthy(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: see {self.log_dir / (name + '.log')}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def service(service_env, tmp_path_factory) -> Iterator[LocalService]:
    running = LocalService(service_env, tmp_path_factory.mktemp("service-logs"))
    running.start()
    yield running
    running.stop()
