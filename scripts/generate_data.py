#!/usr/bin/env python3
"""Sample data for the dashboard: realistic readings for many devices, sent through the bulk API.

    python scripts/generate_data.py                       # 10 devices, 6 metrics, 60 iterations
    python scripts/generate_data.py 50 10 5 --url http://localhost --token "$TOKEN"

Each device has its own baseline per metric and wanders around it along a smooth random curve
(slow drift, medium swings and a little jitter), so the history charts look like real sensors;
power is voltage x current x the device's power factor. The curve is a function of the device,
the metric and the time only, so running the script again, or for an overlapping period, lands
on the same curves instead of drawing a second, interleaved series. Iteration i is stamped
``interval`` seconds after iteration i-1, the last one now.

``metrics_per_device`` counts readings per device and iteration: the first six are the six metric
types in order (temperature, humidity, pressure, voltage, current, power); beyond six the types
repeat, each repetition stamped a little later within the same interval, so every reading is
distinct and is stored.

Only the standard library is used, so any Python 3.10+ runs it. Exit status: 0 every reading was
accepted, 1 some were rejected, 2 bad arguments, 3 the service could not be reached or refused the
token.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TextIO

METRICS = ("temperature", "humidity", "pressure", "voltage", "current", "power")
MAX_BULK = 100  # the API's limit per bulk request
# The API's rule for device ids (common/readings.py; tests/test_generator.py keeps them equal).
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@-]*"

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Range:
    """Where a metric's values stay, and how many decimals a device reports."""

    low: float
    high: float
    decimals: int
    unit: str

    @property
    def span(self) -> float:
        return self.high - self.low


DEFAULT_RANGES: dict[str, Range] = {
    "temperature": Range(18.0, 28.0, 2, "°C"),  # indoor
    "humidity": Range(30.0, 65.0, 1, "%"),
    "pressure": Range(985.0, 1035.0, 1, "hPa"),  # sea-level weather
    "voltage": Range(220.0, 240.0, 1, "V"),  # mains
    "current": Range(0.5, 10.0, 3, "A"),
    "power": Range(90.0, 2400.0, 1, "W"),  # covers 220 V x 0.5 A x 0.85 .. 240 V x 10 A x 0.99
}


@functools.lru_cache(maxsize=1 << 16)
def _unit(*key: object) -> float:
    """A pseudo-random number in [-1, 1): the same for the same key on every run and machine."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


class Signal:
    """One device's metric: a smooth random function of time around the device's own baseline.

    Value noise: pseudo-random heights at knots a fixed number of seconds apart, joined by smooth
    (cosine) interpolation, in three octaves: a slow drift (knots every 30 minutes), medium
    swings (5 minutes) and a little jitter (1 minute).
    """

    OCTAVES = ((1800.0, 0.6), (300.0, 0.3), (60.0, 0.1))  # (seconds between knots, weight); weights sum to 1
    AMPLITUDE = 0.15  # furthest from the baseline, as a share of the range
    BASELINE_SPREAD = 0.3  # baselines lie within this share of the range either side of its middle

    def __init__(self, seed: str, device_id: str, metric: str, limits: Range):
        self.key = (seed, device_id, metric)
        self.limits = limits
        middle = (limits.low + limits.high) / 2
        self.baseline = middle + self.BASELINE_SPREAD * limits.span * _unit(*self.key, "baseline")

    def exact(self, seconds: float) -> float:
        """The value at a POSIX time, unrounded."""
        wander = 0.0
        for spacing, weight in self.OCTAVES:
            position = seconds / spacing
            knot = math.floor(position)
            ease = (1 - math.cos(math.pi * (position - knot))) / 2
            before, after = _unit(*self.key, spacing, knot), _unit(*self.key, spacing, knot + 1)
            wander += weight * (before + (after - before) * ease)
        value = self.baseline + self.AMPLITUDE * self.limits.span * wander
        return min(max(value, self.limits.low), self.limits.high)

    def at(self, seconds: float) -> float:
        """The value a device reports at a POSIX time: rounded as such a sensor rounds."""
        return round(self.exact(seconds), self.limits.decimals)


class Device:
    """A simulated device: one signal per metric, and a fixed power factor."""

    def __init__(self, device_id: str, ranges: dict[str, Range], seed: str = ""):
        self.device_id = device_id
        self.ranges = ranges
        self.signals = {metric: Signal(seed, device_id, metric, ranges[metric]) for metric in METRICS}
        self.power_factor = 0.92 + 0.07 * _unit(seed, device_id, "power factor")  # 0.85 .. 0.99

    def sample(self, metrics: Sequence[str], moment: datetime) -> dict[str, float]:
        """What the device reports at ``moment`` for these metrics."""
        seconds = moment.timestamp()
        values = {metric: self.signals[metric].at(seconds) for metric in metrics if metric != "power"}
        if "power" in metrics:
            limits = self.ranges["power"]
            volts = self.signals["voltage"].at(seconds)
            amps = self.signals["current"].at(seconds)
            watts = volts * amps * self.power_factor
            values["power"] = round(min(max(watts, limits.low), limits.high), limits.decimals)
        return values


def device_ids(count: int, prefix: str) -> list[str]:
    """``device_01`` .. ``device_NN``: zero-padded so they sort in order on the dashboard."""
    width = max(2, len(str(count)))
    return [f"{prefix}{number:0{width}d}" for number in range(1, count + 1)]


def readings(
    devices: Sequence[Device], metrics_per_device: int, iterations: int, interval: float, now: datetime
) -> Iterator[dict]:
    """Every reading to send, oldest iteration first, lazily."""
    repeats = math.ceil(metrics_per_device / len(METRICS))
    for iteration in range(iterations):
        moment = now - timedelta(seconds=interval * (iterations - 1 - iteration))
        for device in devices:
            for repeat in range(repeats):
                slots = range(repeat * len(METRICS), min(metrics_per_device, (repeat + 1) * len(METRICS)))
                metrics = [METRICS[slot % len(METRICS)] for slot in slots]
                stamp = moment - timedelta(seconds=interval * (repeats - 1 - repeat) / repeats)
                text = stamp.isoformat(timespec="microseconds")
                for metric, value in device.sample(metrics, stamp).items():
                    yield {
                        "device_id": device.device_id,
                        "metric_type": metric,
                        "value": value,
                        "timestamp": text,
                    }


def batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- HTTP


class Unreachable(Exception):
    """The service cannot be reached, or refuses every request (auth): nothing more to send."""


@dataclass
class Outcome:
    accepted: int = 0
    rejected: int = 0
    error: str | None = None


class Client:
    def __init__(self, url: str, token: str | None, timeout: float, retries: int):
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.retries = retries

    def check_health(self) -> None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise Unreachable(f"{self.url}/health answered HTTP {error.code}") from None
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"cannot reach {self.url} ({reason})") from None

    def send(self, batch: list[dict]) -> Outcome:
        """POST one bulk request; retry on 503 and network errors (the API queues nothing then)."""
        body = json.dumps({"readings": batch}).encode()
        delay = 0.5
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url + "/api/device/data/bulk", data=body, headers=self.headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read() or b"{}")
                    return Outcome(accepted=int(answer.get("processed_count", len(batch))))
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code in (401, 403):
                    raise Unreachable(f"HTTP {error.code}: {message}") from None
                if error.code != 503 or attempt == self.retries:
                    return Outcome(rejected=len(batch), error=f"HTTP {error.code}: {message}")
            except (OSError, ValueError) as error:  # refused, reset, timed out
                if attempt == self.retries:
                    raise Unreachable(
                        f"cannot reach {self.url} ({getattr(error, 'reason', error)})"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # the loop always returns or raises


def _error_message(error: urllib.error.HTTPError) -> str:
    raw = error.read()
    try:
        return str(json.loads(raw).get("error") or raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:200] or error.reason


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on a terminal; a line per tenth done elsewhere (logs, CI)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True):
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._tenths = 0
        self._lock = threading.Lock()
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self.full, self.empty = ("█", "░") if encoding.startswith("utf") else ("#", "-")

    def update(self, count: int) -> None:
        with self._lock:
            self.done += count
            if not self.enabled:
                return
            now = time.monotonic()
            if self.tty:
                if now - self._drawn >= 0.1 or self.done >= self.total:
                    self._drawn = now
                    self.stream.write("\r" + self.line(now))
                    self.stream.flush()
            else:
                tenths = self.done * 10 // max(self.total, 1)
                if tenths > self._tenths:
                    self._tenths = tenths
                    self.stream.write(self.line(now) + "\n")
                    self.stream.flush()

    def line(self, now: float) -> str:
        fraction = self.done / max(self.total, 1)
        width = 30
        filled = int(fraction * width)
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else 0.0
        return (
            f"[{self.full * filled}{self.empty * (width - filled)}] {fraction:4.0%} "
            f"{self.done}/{self.total} readings  {rate:,.0f}/s  ETA {eta:4.1f}s"
        )

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- running


@dataclass
class Summary:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"Sent {self.sent} readings in {self.requests} bulk requests: {self.accepted} accepted, "
            f"{self.rejected} rejected, {self.seconds:.1f}s, {self.rate:,.0f} readings/s"
        )


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    ranges = {**DEFAULT_RANGES, **args.range}
    seed = "" if args.seed is None else str(args.seed)
    devices = [
        Device(device_id, ranges, seed) for device_id in device_ids(args.device_count, args.device_prefix)
    ]
    total = args.device_count * args.metrics_per_device * args.iterations
    client = Client(args.url, args.token, args.timeout, args.retries)
    try:
        client.check_health()
    except Unreachable as error:
        print(f"error: {error}.", file=err)
        print(
            "Is the service running? Start it with `make run` (http://127.0.0.1:8080), or\n"
            "`docker compose up -d` and pass --url http://localhost.",
            file=err,
        )
        return EXIT_UNREACHABLE

    print(
        f"Sending {total} readings ({args.device_count} devices x {args.metrics_per_device} metrics x "
        f"{args.iterations} iterations, {args.interval:g}s apart) to {client.url} "
        f"in bulks of {args.bulk_size}, {args.workers} at a time",
        file=out,
        flush=True,
    )
    summary = Summary()
    progress = Progress(total, err, enabled=not args.quiet)
    now = datetime.now(timezone.utc)
    pending: dict[Future, int] = {}  # request -> how many readings it carries
    started = time.monotonic()
    failure: Unreachable | None = None

    def collect(done: set[Future]) -> None:
        nonlocal failure
        for future in done:
            size = pending.pop(future)
            try:
                outcome = future.result()
            except Unreachable as error:
                failure = failure or error
                summary.rejected += size
                continue
            summary.accepted += outcome.accepted
            summary.rejected += outcome.rejected
            if outcome.error and len(summary.errors) < 5:
                summary.errors.append(outcome.error)
            progress.update(size)

    to_send = readings(devices, args.metrics_per_device, args.iterations, args.interval, now)
    with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="sender") as pool:
        for batch in batches(to_send, args.bulk_size):
            if failure is not None:
                break
            pending[pool.submit(client.send, batch)] = len(batch)
            summary.sent += len(batch)
            summary.requests += 1
            if len(pending) >= args.workers * 2:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        done, _ = wait(pending)
        collect(done)
    progress.close()
    summary.seconds = time.monotonic() - started

    print(summary.line(), file=out)
    if failure is not None:
        print(f"error: the service stopped taking readings: {failure}", file=err)
        if "401" in str(failure) or "403" in str(failure):
            print(
                "The service requires an access token that may send for these devices: an admin token, or a\n"
                "gateway token listing them. Create one and pass it as TOKEN= to make (--token or IOT_TOKEN here):\n"
                "  .venv/bin/python -m local.tokens admin demo    # make run AUTH=1 (it finds the running stack)\n"
                "  docker compose exec -T shim python -m local.tokens admin demo    # the compose stack\n"
                "  python -m local.tokens admin demo    # elsewhere, with DB_* naming the service's PostgreSQL\n"
                "then: make demo-data TOKEN=<the token> URL=<the service's URL>",
                file=err,
            )
        return EXIT_UNREACHABLE
    for message in summary.errors:
        print(f"rejected: {message}", file=err)
    if summary.rejected:
        return EXIT_REJECTED
    print(f"They appear on the dashboard within seconds: {client.url}/", file=out)
    return EXIT_OK


# --------------------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _bulk_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_BULK:
        raise argparse.ArgumentTypeError(f"{text} is more than the API takes in one request ({MAX_BULK})")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _metric_range(text: str) -> tuple[str, Range]:
    metric, sep, bounds = text.partition("=")
    low_text, sep2, high_text = bounds.partition(":")
    metric = metric.strip().lower()
    if not sep or not sep2:
        raise argparse.ArgumentTypeError(f"{text!r}: write METRIC=LOW:HIGH, e.g. temperature=15:30")
    if metric not in DEFAULT_RANGES:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown metric; use one of {', '.join(METRICS)}")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: LOW and HIGH must be numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise argparse.ArgumentTypeError(f"{text!r}: LOW must be below HIGH")
    default = DEFAULT_RANGES[metric]
    return metric, Range(low, high, default.decimals, default.unit)


def _device_prefix(text: str) -> str:
    if not re.fullmatch(DEVICE_ID_PATTERN, text + "1") or len(text) > 100:
        raise argparse.ArgumentTypeError(
            f"{text!r}: device ids may contain only letters, digits and _ . : @ - and start with a letter or digit"
        )
    return text


def parser() -> argparse.ArgumentParser:
    ranges = ", ".join(f"{name} {r.low:g}-{r.high:g} {r.unit}" for name, r in DEFAULT_RANGES.items())
    p = argparse.ArgumentParser(
        prog="generate_data.py",
        description="Send realistic sample readings to the IoT metrics service through its bulk API.",
        epilog=f"Default ranges: {ranges}. Exit status: 0 all accepted, 1 some rejected, 2 bad arguments, "
        "3 service unreachable or token refused.",
    )
    p.add_argument("device_count", nargs="?", type=_positive_int, default=10, help="devices (default 10)")
    p.add_argument(
        "metrics_per_device",
        nargs="?",
        type=_positive_int,
        default=6,
        help="readings per device and iteration; the six metric types in order, repeating past six (default 6)",
    )
    p.add_argument(
        "iterations", nargs="?", type=_positive_int, default=60, help="rounds of readings (default 60)"
    )
    p.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the service (default http://127.0.0.1:8080)"
    )
    p.add_argument(
        "--bulk-size", type=_bulk_size, default=MAX_BULK, help=f"readings per request, 1-{MAX_BULK}"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("IOT_TOKEN") or None,
        help="access token, sent as 'Authorization: Bearer <token>' (default: $IOT_TOKEN)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="another family of curves; without it a device's values depend only on its id and the time",
    )
    p.add_argument(
        "--interval",
        type=_seconds,
        default=60.0,
        help="seconds between iterations; the last one is now (default 60)",
    )
    p.add_argument(
        "--range",
        type=_metric_range,
        action="append",
        default=[],
        metavar="METRIC=LOW:HIGH",
        help="override a metric's range, e.g. --range temperature=-10:35 (repeatable)",
    )
    p.add_argument(
        "--device-prefix", type=_device_prefix, default="device_", help="device ids (default device_)"
    )
    p.add_argument("--workers", type=_positive_int, default=4, help="requests in flight at once (default 4)")
    p.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds to wait for each request (default 10)"
    )
    p.add_argument("--retries", type=int, default=3, help="retries of a request answered 503 (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.range = dict(args.range)
    if args.retries < 0:
        parser().error("--retries must be 0 or more")
    repeats = math.ceil(args.metrics_per_device / len(METRICS))
    if args.interval / repeats < 1e-5:
        parser().error("--interval is too short to stamp every reading of an iteration apart")
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
