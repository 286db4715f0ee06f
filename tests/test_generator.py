"""The sample-data generator (scripts/generate_data.py) and the original's test/test_random_data.sh.

Pure tests check the values it makes; the integration tests run it as a user does, a subprocess
against the real service, and check that what it counted as accepted is what the service stored.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.readings import _DEVICE_ID, MAX_BULK_READINGS, MetricType
from local.embedded import free_port
from local.topics import create_topics

from .conftest import ROOT, wait_for

SCRIPT = ROOT / "scripts" / "generate_data.py"
WRAPPER = ROOT / "test" / "test_random_data.sh"


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_data"] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def generate(*args: str, timeout: float = 120, token: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "IOT_TOKEN"}
    if token is not None:
        env["IOT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------- values

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()


def test_the_script_knows_the_apis_metrics_and_limits():
    assert set(gen.METRICS) == set(MetricType.names()) == set(gen.DEFAULT_RANGES)
    assert gen.MAX_BULK == MAX_BULK_READINGS
    assert gen.DEVICE_ID_PATTERN == _DEVICE_ID.pattern
    assert gen.device_ids(3, "device_") == ["device_01", "device_02", "device_03"]
    assert gen.device_ids(120, "d")[-1] == "d120" and gen.device_ids(120, "d")[0] == "d001"


@pytest.mark.parametrize("metric", [m for m in gen.METRICS if m != "power"])
def test_each_metric_moves_smoothly_inside_its_realistic_range(metric):
    limits = gen.DEFAULT_RANGES[metric]
    signals = [gen.Signal("", f"device-{n}", metric, limits) for n in range(20)]
    # A day of readings a minute apart, per device.
    series = [[signal.at(T0 + 60 * minute) for minute in range(24 * 60)] for signal in signals]
    values = [value for run in series for value in run]
    assert limits.low <= min(values) and max(values) <= limits.high
    assert all(round(v, limits.decimals) == v for v in values)
    # Curves, not noise: a step is small next to how far the value wanders within an hour.
    steps = [abs(b - a) for run in series for a, b in zip(run, run[1:], strict=False)]
    hourly = [max(run[i : i + 60]) - min(run[i : i + 60]) for run in series for i in range(0, len(run), 60)]
    mean_step, mean_hourly = sum(steps) / len(steps), sum(hourly) / len(hourly)
    assert mean_step < 0.02 * limits.span and mean_step < 0.25 * mean_hourly
    assert mean_hourly > 0.05 * limits.span  # and it does move
    # Devices differ: their baselines spread over the range.
    means = [sum(run) / len(run) for run in series]
    assert max(means) - min(means) > 0.2 * limits.span


def test_a_devices_curve_depends_only_on_its_id_the_time_and_the_seed():
    limits = gen.DEFAULT_RANGES["temperature"]
    one, again = (
        gen.Signal("", "dev-1", "temperature", limits),
        gen.Signal("", "dev-1", "temperature", limits),
    )
    moments = [T0 + 17.3 * k for k in range(500)]
    assert [one.at(t) for t in moments] == [again.at(t) for t in moments]
    other_seed = gen.Signal("7", "dev-1", "temperature", limits)
    other_device = gen.Signal("", "dev-2", "temperature", limits)
    assert [one.at(t) for t in moments] != [other_seed.at(t) for t in moments]
    assert [one.at(t) for t in moments] != [other_device.at(t) for t in moments]
    # Continuous: a tenth of a second apart, the value barely moves.
    assert all(abs(one.exact(t + 0.1) - one.exact(t)) < 0.001 * limits.span for t in moments)


def test_a_second_run_over_the_same_period_lands_on_the_same_curve():
    """`make demo-data` twice, 90 s apart: one smooth series per device, not two interleaved ones."""
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    runs = [
        list(gen.readings([gen.Device(d, gen.DEFAULT_RANGES) for d in ("dev-1", "dev-2")], 6, 60, 60, moment))
        for moment in (now, now + timedelta(seconds=90))
    ]
    for device in ("dev-1", "dev-2"):
        for metric in gen.METRICS:
            merged = sorted(
                (r["timestamp"], r["value"])
                for run in runs
                for r in run
                if r["device_id"] == device and r["metric_type"] == metric
            )
            values = [value for _, value in merged]
            steps = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
            assert max(steps) < 0.25 * (max(values) - min(values)), (device, metric)


def test_power_is_voltage_times_current_times_the_power_factor():
    moments = [datetime.fromtimestamp(T0 + 600 * k, timezone.utc) for k in range(20)]
    for number in range(50):
        device = gen.Device(f"d{number}", gen.DEFAULT_RANGES)
        assert 0.85 <= device.power_factor <= 0.99
        for moment in moments:
            values = device.sample(gen.METRICS, moment)
            apparent = values["voltage"] * values["current"]
            assert 0.849 * apparent <= values["power"] <= 0.991 * apparent
            # Reported alone, power is still what the device's voltage and current make.
            assert device.sample(["power"], moment) == {"power": values["power"]}


def test_readings_cover_every_device_metric_and_iteration_once():
    devices = [gen.Device(d, gen.DEFAULT_RANGES) for d in gen.device_ids(4, "dev-")]
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    made = list(gen.readings(devices, 10, 5, 60.0, now))
    assert len(made) == 4 * 10 * 5
    keys = {(r["device_id"], r["metric_type"], r["timestamp"]) for r in made}
    assert len(keys) == len(made)  # distinct: the service stores each one
    stamps = sorted({datetime.fromisoformat(r["timestamp"]) for r in made})
    assert stamps[-1] == now and stamps[0] == now - timedelta(seconds=4 * 60 + 30)
    assert all(stamp.tzinfo is not None for stamp in stamps)
    per_device = Counter((r["device_id"], r["metric_type"]) for r in made)
    # Ten per iteration: the six types, then temperature .. current again half an interval later.
    assert per_device[("dev-01", "temperature")] == 10 and per_device[("dev-01", "power")] == 5
    first = [r["metric_type"] for r in made[:10]]
    assert first == list(gen.METRICS) + list(gen.METRICS[:4])


def test_fewer_metrics_than_six_take_the_first_ones():
    devices = [gen.Device("only", gen.DEFAULT_RANGES)]
    made = list(gen.readings(devices, 3, 2, 1.0, datetime.now(timezone.utc)))
    assert [r["metric_type"] for r in made] == ["temperature", "humidity", "pressure"] * 2


def test_a_range_overrides_the_default():
    args = gen.parser().parse_args(["--range", "temperature=-10:0", "--range", "humidity=90:95"])
    ranges = {**gen.DEFAULT_RANGES, **dict(args.range)}
    device = gen.Device("cold", ranges)
    for minute in range(600):
        values = device.sample(
            ["temperature", "humidity"], datetime.fromtimestamp(T0 + 60 * minute, timezone.utc)
        )
        assert -10 <= values["temperature"] <= 0 and 90 <= values["humidity"] <= 95


def test_the_bulk_batches_keep_the_size():
    sizes = [len(batch) for batch in gen.batches(iter(range(250)), 100)]
    assert sizes == [100, 100, 50]


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0", "6", "1"], "must be at least 1"),
        (["ten"], "is not a whole number"),
        (["--bulk-size", "101"], "more than the API takes in one request (100)"),
        (["--bulk-size", "0"], "must be at least 1"),
        (["--range", "temperature=30:10"], "LOW must be below HIGH"),
        (["--range", "wind=1:2"], "unknown metric"),
        (["--range", "temperature"], "write METRIC=LOW:HIGH"),
        (["--interval", "0"], "positive number of seconds"),
        (["--device-prefix", "bad prefix"], "device ids may contain only"),
        (["1", "2", "3", "4"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args, message):
    result = generate(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "usage: generate_data.py" in result.stderr


def test_help_names_the_original_arguments_and_the_ranges():
    result = generate("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for word in ("device_count", "metrics_per_device", "iterations", "--url", "--bulk-size", "--token"):
        assert word in text
    assert "pressure 985-1035 hPa" in text and "voltage 220-240 V" in text


def test_an_unreachable_service_is_a_clear_error():
    started = time.monotonic()
    result = generate("2", "2", "2", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 3
    assert "error: cannot reach http://127.0.0.1:" in result.stderr
    assert "make run" in result.stderr and "--url http://localhost" in result.stderr
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- against the service


@pytest.mark.integration
def test_generated_readings_are_all_stored_and_shown(service):
    prefix = f"gen-{uuid.uuid4().hex[:6]}-"
    started = datetime.now(timezone.utc)
    result = generate(
        "3", "6", "20", "--url", service.url, "--bulk-size", "50", "--seed", "11",
        "--interval", "30", "--device-prefix", prefix,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Sent 360 readings in 8 bulk requests: 360 accepted, 0 rejected" in result.stdout
    assert "readings/s" in result.stdout and f"{service.url}/" in result.stdout
    assert "100%" in result.stderr  # the progress bar (one line per tenth when not on a terminal)

    for device_id in gen.device_ids(3, prefix):

        def stored(device_id=device_id):
            history = get_json(f"{service.url}/api/device/{device_id}/history?limit=1000")["data"]
            return history if len(history) == 6 * 20 else None

        history = wait_for(stored, timeout=20, interval=0.2)
        stamps = sorted({datetime.fromisoformat(r["timestamp"]) for r in history})
        assert len(stamps) == 20
        assert all(b - a == timedelta(seconds=30) for a, b in zip(stamps, stamps[1:], strict=False))
        assert started - timedelta(seconds=5) <= stamps[-1] <= datetime.now(timezone.utc)
        # Accepted == stored, value for value: what the device model says at each stored time.
        device = gen.Device(device_id, gen.DEFAULT_RANGES, seed="11")
        for stamp in stamps:
            stored_then = {
                r["metric_type"]: r["value"]
                for r in history
                if datetime.fromisoformat(r["timestamp"]) == stamp
            }
            assert stored_then == device.sample(gen.METRICS, stamp)

    devices = {d["device_id"]: d for d in get_json(service.url + "/api/devices")["devices"]}
    for device_id in gen.device_ids(3, prefix):
        assert set(devices[device_id]["metrics"]) == set(gen.METRICS)


@pytest.mark.integration
def test_rejected_readings_are_counted_and_fail_the_run(service):
    # Iteration 0 lands two billion seconds ago, before 1970, and iteration 1 a billion seconds ago, past
    # the raw retention: the API refuses those requests whole.
    prefix = f"old-{uuid.uuid4().hex[:6]}-"
    result = generate(
        "2", "6", "3", "--url", service.url, "--bulk-size", "6", "--interval", "1000000000",
        "--device-prefix", prefix, "--quiet",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Sent 36 readings in 6 bulk requests: 12 accepted, 24 rejected" in result.stdout
    assert "rejected: HTTP 400: Reading 0: timestamp must not be before 1970-01-01" in result.stderr
    assert "older than the raw retention of 90 days (RAW_RETENTION_DAYS)" in result.stderr
    assert "[" not in result.stderr  # --quiet: no progress bar


@pytest.mark.integration
def test_the_original_wrapper_passes_its_arguments_through(service):
    prefix = f"wrap-{uuid.uuid4().hex[:6]}-"
    result = subprocess.run(
        ["bash", str(WRAPPER), "2", "10", "3", "--url", service.url, "--device-prefix", prefix, "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",  # works from anywhere
    )
    assert result.returncode == 0, result.stderr
    assert "Sent 60 readings" in result.stdout and "60 accepted, 0 rejected" in result.stdout

    def stored():
        history = get_json(f"{service.url}/api/device/{prefix}02/history?limit=1000")["data"]
        return len(history) == 30

    wait_for(stored, timeout=20, interval=0.2)


@pytest.mark.integration
def test_the_token_goes_in_the_authorization_header(service_env, tmp_path: Path):
    """With auth on, no token is a clear 401 error; a gateway token for the devices is accepted."""
    topic = f"readings-gen-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **service_env, "AUTH_ENABLED": "true", "KAFKA_TOPIC": topic}
    create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], [topic], partitions=1)
    prefix = f"tok-{uuid.uuid4().hex[:6]}-"
    devices = gen.device_ids(2, prefix)
    made = subprocess.run(
        [sys.executable, "-m", "local.tokens", "register", f"{prefix}gw", "--device", devices[0], "--device", devices[1]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    port = free_port()
    with open(tmp_path / "shim.log", "ab") as log:
        shim = subprocess.Popen(
            [sys.executable, "-m", "local.shim", "--port", str(port), "--workers", "1", "--threads", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert shim.poll() is None, (tmp_path / "shim.log").read_text()
            try:
                return get_json(url + "/health")["status"] == "healthy"
            except OSError:
                return False

        wait_for(healthy, timeout=30, interval=0.2)
        refused = generate("2", "3", "2", "--url", url, "--device-prefix", prefix, "--quiet")
        assert refused.returncode == 3
        assert "HTTP 401" in refused.stderr and "--token" in refused.stderr
        # The hint names the command that works for `make run AUTH=1`, and how make takes the token.
        assert ".venv/bin/python -m local.tokens admin demo" in refused.stderr
        assert "make demo-data TOKEN=" in refused.stderr and "URL=" in refused.stderr
        accepted = generate("2", "3", "2", "--url", url, "--device-prefix", prefix, "--token", token)
        assert accepted.returncode == 0, accepted.stderr
        assert "12 accepted, 0 rejected" in accepted.stdout
        # From the environment, as `make demo-data TOKEN=...` passes it.
        from_env = generate("2", "3", "2", "--url", url, "--device-prefix", prefix, "--quiet", token=token)
        assert from_env.returncode == 0 and "12 accepted, 0 rejected" in from_env.stdout
        # A token for other devices is refused (403) as clearly.
        other = generate("1", "1", "1", "--url", url, "--device-prefix", "someone-else-", token=token)
        assert other.returncode == 3 and "HTTP 403" in other.stderr
    finally:
        shim.terminate()
        shim.wait(timeout=10)
