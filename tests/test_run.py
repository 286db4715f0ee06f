"""`make run` (``python -m local.run``) as a developer starts it, on the test servers."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from local.embedded import free_port

from .conftest import RECENT_DAY, ROOT, isolated_env, wait_for

pytestmark = pytest.mark.integration


def _last_assignments(log: str, loops: int) -> list[set[int]]:
    """The partitions each trigger loop last announced (kafka-python cannot describe the embedded
    broker's groups: it fails on the authorized operations the broker reports)."""
    announced = re.findall(r"consuming partitions \[([\d, ]*)\]", log)
    return sorted(({int(p) for p in line.split(",")} for line in announced[-loops:]), key=min)


def test_the_stack_runs_two_trigger_loops_in_one_group_and_stores_what_it_accepts(service_env, tmp_path):
    group = f"run-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **isolated_env(service_env, TRIGGER_GROUP_ID=group), "PYTHONUNBUFFERED": "1"}
    env.pop("TRIGGER_LOOPS", None)  # the default is what this test is about
    port = free_port()
    log = open(tmp_path / "run.log", "w+b")
    run = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # as a background job or some CI runners start it: SIGINT ignored, which children inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    stopped_in = None
    try:
        wait_for(lambda: b"Ready." in (tmp_path / "run.log").read_bytes() or run.poll() is not None, 90, 0.3)
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        # "Ready" comes after both loops were given partitions: the topic's two are shared between them
        assert _last_assignments((tmp_path / "run.log").read_text(), 2) == [{0}, {1}]

        device = f"run-{uuid.uuid4().hex[:8]}"
        readings = [
            {
                "device_id": device,
                "metric_type": "power",
                "value": i,
                "timestamp": f"{RECENT_DAY}T12:0{i}:00Z",
            }
            for i in range(3)
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/device/data/bulk",
            data=json.dumps({"readings": readings}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["processed_count"] == 3

        def stored() -> bool:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/device/{device}/latest", timeout=2
                ) as r:
                    return json.load(r)["metrics"]["power"]["value"] == 2.0
            except OSError:
                return False

        wait_for(stored, timeout=30, interval=0.2)
    finally:
        # Ctrl-C in a terminal: SIGINT to every process of the foreground group at once.
        started = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
            stopped_in = time.monotonic() - started
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        log.close()
    output = (tmp_path / "run.log").read_text()
    assert run.returncode == 0, output
    assert "Stopped in" in output and "Error" not in output, output
    assert stopped_in is not None and stopped_in < 5, f"stopping took {stopped_in:.1f}s"


def _run(port: int, data_dir, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "local.run", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    port = free_port()
    with socket.socket() as holder:
        # As the shim's server binds: a port shared this way would otherwise be shared again.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _run(port, tmp_path / "data")
    assert result.returncode == 1
    assert f"Error: 127.0.0.1:{port} is already in use; choose another port: SHIM_PORT=" in result.stderr
    assert "Starting" not in result.stdout
    assert not (tmp_path / "data" / "postgres").exists()  # no server was started


def test_a_second_runner_on_the_same_data_folder_says_who_runs_there(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "run.lock", "w") as held:  # as a running `make run` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        result = _run(free_port(), data)
    assert result.returncode == 1
    assert "make run is already running here (pid 4242" in result.stderr
    assert not (data / "postgres").exists()


def test_the_stack_refuses_no_trigger_loops(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "local.run", "--data-dir", str(tmp_path), "--consumers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--consumers must be at least 1" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was started
