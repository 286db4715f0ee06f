"""The local stack runner: servers (embedded unless the environment names them), shim, trigger loops.

    python -m local.run            # what `make run` does

Each of PostgreSQL, Redis and Kafka is used from the environment when its variable is set
(DB_HOST, REDIS_HOST, KAFKA_BOOTSTRAP_SERVERS) and otherwise started embedded, on loopback, as a
child process. Ctrl-C stops every child this runner started.

The runner migrates the schema (creating the reader and writer roles) before anything starts. As in
the cloud, the shim's functions (ingest, query, the authorizer) get the reader's and writer's accounts
but not the owner's; the trigger loops and the maintenance timer get the owner's.

The shim's workers and the trigger loops share one prometheus_client multiprocess directory, emptied
before they start, so the shim's ``GET /metrics`` shows the whole pipeline (common/metrics.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from common import logs, metrics
from common.producer import client_security
from common.settings import FUNCTION_SETTINGS, Settings
from common.store import ReadingStore
from functions import HTTP_FUNCTIONS

from .embedded import (
    EXTERNAL_VARIABLES,
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    die_with_parent,
    port_in_use,
)
from .env import DATA_DIR, ROOT, STACK_ENV, env_int, write_stack_env
from .shim import WORKERS_HELP, configured_workers
from .topics import create_topics
from .trigger_loop import LOOPS_HELP, configured_loops

log = logging.getLogger("local.run")

# Held (flock) while a stack runs from a data folder: a second runner on the same folder would fight
# the first over PostgreSQL's data directory.
LOCK_FILE = "run.lock"
# Where the shim's workers and the trigger loops keep their metrics, inside the data folder.
METRICS_DIR = "metrics"
# How long the shim and the trigger loops get to finish what they are doing when the stack stops.
STOP_GRACE_SECONDS = 10


class StackError(RuntimeError):
    """The stack cannot start or stopped unexpectedly; the message says what to do."""


# The functions the shim runs in one process: APIG's HTTP functions and their authorizer.
SHIM_FUNCTIONS = (*HTTP_FUNCTIONS, "authorizer")
_OWNER_ACCOUNT = ("DB_USER", "DB_PASSWORD")


def function_env(env: dict[str, str], functions: tuple[str, ...] = SHIM_FUNCTIONS) -> dict[str, str]:
    """``env`` without the service settings none of ``functions`` is given in the cloud
    (common.settings.FUNCTION_SETTINGS): the shim holds no owner password, as no HTTP function does.
    The owner's account stays where a reader or writer without a user of its own falls back to it (a
    development database with one account). Settings no function reads (the local runner's own) stay."""
    given = frozenset().union(*(FUNCTION_SETTINGS.get(name, frozenset()) for name in functions))
    everywhere = frozenset().union(*FUNCTION_SETTINGS.values())
    keep = set(given)
    if not (env.get("DB_READER_USER") and env.get("DB_WRITER_USER")):
        keep.update(_OWNER_ACCOUNT)
    return {name: value for name, value in env.items() if name in keep or name not in everywhere}


class Stack:
    def __init__(self, data_dir: Path, port: int, workers: int, partitions: int):
        self.data_dir = data_dir
        self.port = port
        self.workers = workers
        self.partitions = partitions
        self.servers: list = []
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ)
        self.stopping = False

    def start_servers(self) -> None:
        kinds = {"postgres": EmbeddedPostgres, "redis": EmbeddedRedis, "kafka": EmbeddedKafka}
        for name, kind in kinds.items():
            variable = EXTERNAL_VARIABLES[name]
            if self.env.get(variable):
                print(f"  {name:<9} external ({variable}={self.env[variable]})")
                continue
            server = kind(base_dir=self.data_dir / name)
            started = time.monotonic()
            server.start()
            self.servers.append(server)
            self.env.update(server.env())
            print(f"  {name:<9} embedded on 127.0.0.1:{server.port} ({time.monotonic() - started:.1f}s)")

    def prepare(self) -> Settings:
        settings = Settings.from_env(self.env)
        create_topics(
            settings.kafka_bootstrap_servers,
            [settings.kafka_topic],
            self.partitions,
            security=client_security(settings),
        )
        store = ReadingStore(settings)
        store.migrate()
        store.close()
        # The settings the children got, for local tools (``python -m local.tokens``).
        write_stack_env(
            self.data_dir, {name: self.env[name] for name in Settings.names() if self.env.get(name)}
        )
        return settings

    def spawn(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        """Start ``python -m module`` as a child in a session of its own: a Ctrl-C in the terminal
        reaches only this runner, which then stops the children in order. Each child still dies with
        the runner if the runner is killed."""
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=self.env if env is None else env,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self.children.append((name, process))

    def prepare_metrics(self) -> Path:
        """An empty multiprocess directory for the shim's workers and the trigger loops, named to them in
        PROMETHEUS_MULTIPROC_DIR: values a run left behind would be counted again."""
        directory = metrics.prepare_directory(self.data_dir / METRICS_DIR)
        self.env[metrics.MULTIPROC_DIR] = str(directory)
        return directory

    def start_service(self, loops: int) -> None:
        """The shim and ``loops`` trigger loops; returns once the shim answers and every loop has
        joined the consumer group, so readings accepted from then on are being consumed."""
        self.prepare_metrics()
        self.spawn(
            "shim",
            "local.shim",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            env=function_env(self.env),
        )
        joined = [self.data_dir / f"trigger-{n}.ready" for n in range(loops)]
        for n, ready in enumerate(joined):
            ready.unlink(missing_ok=True)
            self.spawn(f"trigger loop {n}", "local.trigger_loop", "--ready-file", str(ready))
        self.spawn("maintenance timer", "local.maintenance_timer")
        self.wait_healthy()
        for ready in joined:
            self.wait_for_file(ready, "the trigger loops to join their consumer group")

    def wait_healthy(self, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise StackError(f"the shim did not answer {url} within {timeout:.0f}s")

    def wait_for_file(self, path: Path, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            self.check_children()
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    def check_children(self) -> None:
        if self.stopping:
            return
        for name, process in self.children:
            if process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}")

    def stop(self) -> None:
        """Stop the children, then the servers, each group at once; a second call does nothing."""
        if self.stopping:
            return
        self.stopping = True
        # A second Ctrl-C (or SIGTERM) while stopping must not abandon the servers half stopped.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, process in self.children:
            if process.poll() is None:
                process.terminate()
        for _, process in self.children:
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The servers have nothing in common to wait for: stop them side by side. Each stop only
        # signals and waits, so it may run on any thread.
        if self.servers:
            with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
                list(pool.map(lambda server: server.stop(), self.servers))
        (self.data_dir / STACK_ENV).unlink(missing_ok=True)


@contextlib.contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[IO[str]]:
    """Hold the data folder's lock while the stack runs; a StackError naming the holder if another
    runner has it. The kernel releases the lock when this process ends, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StackError(
                f"make run is already running here (pid {holder}, data in {data_dir}); stop it with Ctrl-C"
                " in its terminal, or start another with its own data folder and port"
                " (--data-dir, and --port or SHIM_PORT)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield lock


def port_taken_message(port: int) -> str:
    return (
        f"127.0.0.1:{port} is already in use; choose another port: SHIM_PORT={port + 1} make run"
        f" (or --port), then make demo-data URL=http://127.0.0.1:{port + 1}"
    )


AUTH_ON = "on: ingest needs a device token (python -m local.tokens register <device_id>)"
AUTH_OFF = "OFF (local demo: anyone may post readings; make run AUTH=1 requires device tokens)"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the whole service locally.")
    parser.add_argument("--port", type=int, default=env_int("SHIM_PORT", 8080))
    parser.add_argument(
        "--workers",
        type=int,
        default=configured_workers(),
        help=f"shim {WORKERS_HELP}",
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the readings topic")
    parser.add_argument("--consumers", type=int, default=configured_loops(), help=LOOPS_HELP)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where embedded servers keep data")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require device tokens on ingest (make run AUTH=1; off in this local demo unless"
        " AUTH_ENABLED is set)",
    )
    args = parser.parse_args()
    if args.consumers < 1:
        parser.error("--consumers must be at least 1")
    logs.configure(logging.WARNING)
    # Local demo mode: delete-all on and device tokens off, unless the environment says otherwise.
    os.environ.setdefault("DEMO_MODE", "true")
    os.environ.setdefault("AUTH_ENABLED", "true" if args.auth else "false")
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops the stack even where this process was started with SIGINT ignored (a shell's
    # background job, some CI runners), which Python would otherwise keep.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    stack = Stack(args.data_dir, args.port, args.workers, args.partitions)
    try:
        with lock_data_dir(args.data_dir):
            # Before anything starts: a second stack on a taken port would split the requests with
            # the first (the shim's server shares ports), each side with its own database.
            if port_in_use("127.0.0.1", args.port):
                raise StackError(port_taken_message(args.port))
            print("Starting the IoT metrics service")
            ok = run(stack, args)
    except KeyboardInterrupt:  # before anything started
        return
    except StackError as error:  # nothing was started
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    if not ok:
        sys.exit(1)


def run(stack: Stack, args: argparse.Namespace) -> bool:
    """Start everything, wait for Ctrl-C (or SIGTERM) or a child that dies, then stop everything.
    False when the stack failed (the error is printed)."""
    ok = True
    try:
        stack.start_servers()
        settings = stack.prepare()
        stack.start_service(args.consumers)
        print(
            f"\nReady.\n  dashboard   http://127.0.0.1:{args.port}/\n"
            f"  API         http://127.0.0.1:{args.port}/api/devices\n"
            f"  health      http://127.0.0.1:{args.port}/health\n"
            f"  metrics     http://127.0.0.1:{args.port}/metrics\n"
            f"  topic       {settings.kafka_topic}\n"
            f"  demo mode   {'on (POST /api/delete-all enabled)' if settings.demo_mode else 'off'}\n"
            f"  auth        {AUTH_ON if settings.auth_enabled else AUTH_OFF}\n"
            "Press Ctrl-C to stop."
        )
        while True:
            stack.check_children()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
    except RuntimeError as error:  # a child that died, or a server that did not start (with its log)
        print(f"\nError: {error}", file=sys.stderr, flush=True)
        ok = False
    finally:
        started = time.monotonic()
        stack.stop()
        print(f"Stopped in {time.monotonic() - started:.1f}s.", flush=True)
    return ok


if __name__ == "__main__":
    main()
