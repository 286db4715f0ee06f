"""The shim's server process: it serves the functions and leaves nothing behind when it is killed."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from local.embedded import free_port
from local.env import ROOT


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_workers_exit_when_the_server_process_is_killed(tmp_path):
    """Granian's workers would otherwise keep answering on the port after a kill -9 of the main
    process, so a restarted shim would share its port with stale workers."""
    port = free_port()
    env = {**os.environ, "DB_PASSWORD": "unused", "DB_HOST": "127.0.0.1", "REDIS_HOST": "127.0.0.1"}
    env["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"  # nothing is connected before a request needs it
    server = subprocess.Popen(
        [sys.executable, "-m", "local.shim", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the shim did not answer /health within 30 s"
                time.sleep(0.2)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _listening(port):
            assert time.monotonic() < deadline, "workers still listen 10 s after the server was killed"
            time.sleep(0.2)
    finally:
        if server.poll() is None:
            server.kill()
