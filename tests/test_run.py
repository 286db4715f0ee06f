"""`make run` (``python -m local.run``) as a developer starts it, on the test servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid

import pytest

from local.embedded import free_port

from .conftest import ROOT, isolated_env, wait_for

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
    )  # fmt: skip
    try:
        wait_for(lambda: b"Ready." in (tmp_path / "run.log").read_bytes() or run.poll() is not None, 90, 0.3)
        assert run.poll() is None, (tmp_path / "run.log").read_text()
        # "Ready" comes after both loops were given partitions: the topic's two are shared between them
        assert _last_assignments((tmp_path / "run.log").read_text(), 2) == [{0}, {1}]

        device = f"run-{uuid.uuid4().hex[:8]}"
        readings = [
            {"device_id": device, "metric_type": "power", "value": i, "timestamp": f"2024-05-01T12:0{i}:00Z"}
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
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
        log.close()
    assert run.returncode == 0, (tmp_path / "run.log").read_text()


def test_the_stack_refuses_no_trigger_loops(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "local.run", "--data-dir", str(tmp_path), "--consumers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--consumers must be at least 1" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was started
