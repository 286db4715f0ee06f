"""The local stack runner: servers (embedded unless the environment names them), shim, trigger loop.

    python -m local.run            # what `make run` does

Each of PostgreSQL, Redis and Kafka is used from the environment when its variable is set
(DB_HOST, REDIS_HOST, KAFKA_BOOTSTRAP_SERVERS) and otherwise started embedded, on loopback, as a
child process. Ctrl-C stops every child this runner started.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from common.settings import Settings
from common.store import ReadingStore

from .embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, create_topics
from .env import env_int
from .functions import ROOT
from .shim import WORKERS_HELP, configured_workers
from .trigger_loop import LOOPS_HELP, configured_loops

log = logging.getLogger("local.run")

# Written into the data folder while the stack runs: the settings local tools need to reach it.
STACK_ENV = "stack.env"

# Which variable, when set, means "use the server the environment names".
EXTERNAL = {"postgres": "DB_HOST", "redis": "REDIS_HOST", "kafka": "KAFKA_BOOTSTRAP_SERVERS"}


class Stack:
    def __init__(self, data_dir: Path, port: int, workers: int, partitions: int):
        self.data_dir = data_dir
        self.port = port
        self.workers = workers
        self.partitions = partitions
        self.servers: list = []
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ)

    def start_servers(self) -> None:
        kinds = {"postgres": EmbeddedPostgres, "redis": EmbeddedRedis, "kafka": EmbeddedKafka}
        for name, kind in kinds.items():
            if self.env.get(EXTERNAL[name]):
                print(f"  {name:<9} external ({EXTERNAL[name]}={self.env[EXTERNAL[name]]})")
                continue
            server = kind(base_dir=self.data_dir / name)
            started = time.monotonic()
            server.start()
            self.servers.append(server)
            self.env.update(server.env())
            print(f"  {name:<9} embedded on 127.0.0.1:{server.port} ({time.monotonic() - started:.1f}s)")

    def prepare(self) -> Settings:
        settings = Settings.from_env(self.env)
        create_topics(settings.kafka_bootstrap_servers, [settings.kafka_topic], self.partitions)
        store = ReadingStore(settings)
        store.migrate()
        store.close()
        self.write_env_file(settings)
        return settings

    def write_env_file(self, settings: Settings) -> None:
        """The settings the children got, for local tools (``python -m local.tokens``); owner-only."""
        path = self.data_dir / STACK_ENV
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{name}={self.env[name]}" for name in Settings.names() if self.env.get(name)]
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write("\n".join(lines) + "\n")

    def spawn(self, name: str, module: str, *args: str) -> None:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=self.env)
        self.children.append((name, process))

    def start_service(self, loops: int) -> None:
        """The shim and ``loops`` trigger loops; returns once the shim answers and every loop has
        joined the consumer group, so readings accepted from then on are being consumed."""
        self.spawn("shim", "local.shim", "--port", str(self.port), "--workers", str(self.workers))
        joined = [self.data_dir / f"trigger-{n}.ready" for n in range(loops)]
        for n, ready in enumerate(joined):
            ready.unlink(missing_ok=True)
            self.spawn(f"trigger loop {n}", "local.trigger_loop", "--ready-file", str(ready))
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
        raise RuntimeError(f"the shim did not answer {url} within {timeout:.0f}s")

    def wait_for_file(self, path: Path, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            self.check_children()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    def check_children(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    def stop(self) -> None:
        # A second Ctrl-C (or SIGTERM) while stopping must not abandon the servers half stopped.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, process in self.children:
            if process.poll() is None:
                process.terminate()
        for _, process in self.children:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for server in reversed(self.servers):
            server.stop()
        (self.data_dir / STACK_ENV).unlink(missing_ok=True)


AUTH_ON = "on: ingest needs a device token (python -m local.tokens register <device_id>)"
AUTH_OFF = "OFF (local demo: anyone may post readings; start with --auth to require device tokens)"


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
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".local", help="where embedded servers keep data"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require device tokens on ingest (off in this local demo unless AUTH_ENABLED is set)",
    )
    args = parser.parse_args()
    if args.consumers < 1:
        parser.error("--consumers must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Local demo mode: delete-all on and device tokens off, unless the environment says otherwise.
    os.environ.setdefault("DEMO_MODE", "true")
    os.environ.setdefault("AUTH_ENABLED", "true" if args.auth else "false")

    stack = Stack(args.data_dir, args.port, args.workers, args.partitions)
    signal.signal(signal.SIGTERM, _interrupt)
    print("Starting the IoT metrics service")
    try:
        stack.start_servers()
        settings = stack.prepare()
        stack.start_service(args.consumers)
        print(
            f"\nReady.\n  dashboard   http://127.0.0.1:{args.port}/\n"
            f"  API         http://127.0.0.1:{args.port}/api/devices\n"
            f"  health      http://127.0.0.1:{args.port}/health\n"
            f"  topic       {settings.kafka_topic}\n"
            f"  demo mode   {'on (POST /api/delete-all enabled)' if settings.demo_mode else 'off'}\n"
            f"  auth        {AUTH_ON if settings.auth_enabled else AUTH_OFF}\n"
            "Press Ctrl-C to stop."
        )
        while True:
            stack.check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping…")
    except RuntimeError as error:
        print(f"\nError: {error}", file=sys.stderr)
        stack.stop()
        sys.exit(1)
    stack.stop()


if __name__ == "__main__":
    main()
