"""Benchmarks of the whole local service, printed as JSON lines.

    python -m local.bench                 # full run (`make bench` adds --record)
    python -m local.bench --quick         # under two minutes
    python -m local.bench --soak 60       # sustained mixed load: zero errors and nothing lost?
    python -m local.bench --only bulk --repeat 3   # just the bulk ingest, three times on one stack

With --record the results are appended to benchmarks/results.jsonl, one JSON object a line, each
carrying when the run finished, its kind, the commit and the machine, so that a line stands on its own.
BENCHMARKS.md, the page that summarises them, is written by hand and never touched by a run.

It starts the stack as `make run` does (embedded servers unless the environment names others), in a
scratch data folder, and measures through the shim over HTTP, as devices and browsers meet it:
1. bulk ingest end to end: from the first request until every reading is in PostgreSQL and every
   device's latest values are in Redis; readings lost;
2. single-reading ingest: requests/s and latency at N concurrent clients;
3. queries on a database topped up to at least 1,000,000 readings;
4. the reference: the same rows loaded with COPY into the same PostgreSQL, and the ratio;
5. CPU seconds: the consumer's per 10,000 readings, the ingest handler's per request, and each
   process's share of the bulk ingest.
Load comes from wrk when it is installed (a C client: a Python one takes a tenth of the two cores the
service runs on), else from Python threads; a warm-up of 2,000 readings runs before anything is timed.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition

from common.readings import MetricType
from common.settings import Settings
from common.store import conninfo

from .env import ROOT
from .run import Stack
from .shim import WORKERS_HELP, configured_workers
from .trigger_loop import LOOPS_HELP, configured_loops

METRICS = MetricType.names()

# wrk's request generator: every request a distinct reading (thread id, counter) of PREFIX's 1,000
# devices.
WRK_SCRIPT = """
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) counter = 0; accepted = 0 end
function response(status, headers, body) if status == 200 then accepted = accepted + 1 end end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("accepted") end
  io.write(string.format("accepted %d\\n", total))
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"device_id":"PREFIX-%04d","metric_type":"power","value":%d.25,"timestamp":"READING_DAYT00:00:%02d.%06dZ"}',
    counter % 1000, counter % 5000, id, counter)
  return wrk.format("POST", "/api/device/data", {["Content-Type"] = "application/json"}, body)
end
"""


# wrk's bulk sender: each thread posts its share of the prepared bodies (one JSON body per line of
# args[2]) once, then idles on GET /health until every one of its bodies was answered, and then
# stops and creates the file args[3]..id (wrk itself runs on until it is interrupted).
WRK_BULK_SCRIPT = """
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args)
  local count = tonumber(args[1])
  marker = args[3]
  bodies = {}
  local n = 0
  for line in io.lines(args[2]) do
    if n % count == id then table.insert(bodies, line) end
    n = n + 1
  end
  sent, answered, ok, accepted, failed = 0, 0, 0, 0, 0
  -- wrk calls the first thread's request() once more, to check it, and sends nothing: give it that.
  checked = id ~= 0
end
function request()
  if not checked then
    checked = true
    return wrk.format("GET", "/health")
  end
  if sent < #bodies then
    sent = sent + 1
    return wrk.format("POST", "/api/device/data/bulk", {["Content-Type"] = "application/json"}, bodies[sent])
  end
  return wrk.format("GET", "/health")
end
function response(status, headers, body)
  local processed = string.match(body, '^{"message":"Bulk data submitted successfully","processed_count":(%d+)')
  if processed then
    answered, ok = answered + 1, ok + 1
    accepted = accepted + tonumber(processed)
  elseif status ~= 200 then
    answered = answered + 1
    failed = failed + 1
  end
  if answered == #bodies then
    io.open(marker .. id, "w"):close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local ok_all, accepted_all = 0, 0
  for _, thread in ipairs(threads) do
    ok_all = ok_all + thread:get("ok")
    accepted_all = accepted_all + thread:get("accepted")
  end
  io.write(string.format("ok %d accepted %d\\n", ok_all, accepted_all))
end
"""


def _wrk_ms(out: str, share: str) -> float:
    value, unit = re.search(rf"{re.escape(share)}\s+([\d.]+)(us|ms|s)", out).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)


# Seventy days ago at midnight: every part's readings (spread from about 14 days before it to 58 days
# after) fall between the default raw retention of 90 days and now, where the service stores them.
BASE_TIME = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=70)


def emit(record: dict, results: list[dict]) -> None:
    results.append(record)
    print(json.dumps(record), flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children (the shim's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    wanted = set(pids)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids:
                wanted.add(int(entry.name))
    total = 0.0
    for pid in wanted:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Calls:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, latency: float) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)


def call_many(
    port: int, requests: list[tuple[str, str, bytes | None]], clients: int, on_status=None
) -> tuple[float, Calls]:
    """Send (method, path, body) requests from `clients` threads, each on a keep-alive connection."""
    calls = Calls()
    shares = [requests[i::clients] for i in range(clients)]

    def run(share: list[tuple[str, str, bytes | None]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        for index, (method, path, body) in enumerate(share):
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            calls.add(status, time.perf_counter() - started)
            if on_status is not None:
                on_status(status, share, index)
        conn.close()

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, calls


def readings_for(
    prefix: str, count: int, devices: int, offset_seconds: int = 0, base: datetime = BASE_TIME
) -> list[dict]:
    """Distinct readings spread over devices and metrics, one second apart per series."""
    readings = []
    for n in range(count):
        device = n % devices
        metric = METRICS[(n // devices) % len(METRICS)]
        step = n // (devices * len(METRICS))
        moment = base + timedelta(seconds=offset_seconds + step)
        readings.append(
            {
                "device_id": f"{prefix}-{device:04d}",
                "metric_type": metric,
                "value": round(random.uniform(0, 100), 3),
                "timestamp": moment.isoformat(),
            }
        )
    return readings


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.results: list[dict] = []
        self.data_dir = Path(tempfile.mkdtemp(prefix="iot-bench-"))
        # Every part writes to the same 1,000 devices (at different times), so the queries meet
        # exactly 1,000 devices: the size the /api/devices latency target is set for.
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.bulk_runs = 0
        self.next_reading_time = datetime.min.replace(tzinfo=timezone.utc)
        os.environ.setdefault("DEMO_MODE", "true")
        os.environ.setdefault("AUTH_ENABLED", "false")
        os.environ["TRIGGER_BATCH_SIZE"] = str(args.batch_size)
        self.stack = Stack(self.data_dir, args.port, args.workers, args.partitions)
        self.settings: Settings | None = None

    # -- the stack ------------------------------------------------------------------------------
    def start(self) -> None:
        print(f"# starting the stack in {self.data_dir}", file=sys.stderr)
        self.stack.start_servers()
        self.settings = self.stack.prepare()
        self.stack.start_service(self.args.consumers)
        self.warm_up()

    def warm_up(self) -> None:
        """A few bulk requests end to end before anything is timed: the consumer group has joined,
        and every worker thread, connection pool and code path has run once (first calls pay for
        imports and connections that no later request pays for)."""
        readings = readings_for(self.prefix, 2_000, 1000, offset_seconds=-1_000_000)
        bodies = [
            ("POST", "/api/device/data/bulk", json.dumps({"readings": readings[i : i + 100]}).encode())
            for i in range(0, len(readings), 100)
        ]
        call_many(self.args.port, bodies, self.args.clients)
        if self.wait_stored(self.prefix, len(readings), timeout=60) < len(readings):
            raise RuntimeError("the consumer did not store the warm-up readings within 60s")

    def define_rules(self, count: int, breach_share: float) -> None:
        """``count`` alert rules, as an operator might define them over the 1,000 devices: every tenth
        for one metric of every device, four in ten for a hundred devices each (a prefix), the rest for
        one device; a threshold that ``breach_share`` of the uniform values (0..100) breach, with a
        clear threshold 10 below, a third of them needing a breach of 10 or 20 seconds. Each batch is
        judged against all of them."""
        threshold = round(100 * (1 - breach_share), 6)
        rows = []
        for n in range(count):
            kind = n % 10
            if kind == 0:
                device = "*"
            elif kind < 5:
                device = f"{self.prefix}-0{kind}*"
            else:
                device = f"{self.prefix}-{n % 1000:04d}"
            metric = METRICS[n % len(METRICS)]
            rows.append((f"bench rule {n}", device, metric, threshold, threshold - 10, (n % 3) * 10.0))
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO alert_rule (name, kind, device_glob, metric_type, condition, threshold,"
                " clear_threshold, for_seconds) VALUES (%s, 'threshold', %s, %s, '>', %s, %s, %s)",
                rows,
            )
        print(f"# {count} alert rules defined, threshold {threshold:g}", file=sys.stderr)

    def alerts_opened(self) -> int:
        with self.connect() as conn:
            return conn.execute("SELECT count(*) FROM alert").fetchone()[0]

    def pids(self, prefix: str) -> list[int]:
        return [process.pid for name, process in self.stack.children if name.startswith(prefix)]

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of each part of the stack (embedded servers only when embedded)."""
        used = {"shim": cpu_seconds(self.pids("shim")), "consumer": cpu_seconds(self.pids("trigger"))}
        for server in self.stack.servers:
            if server.pid is not None:
                used[type(server).__name__.removeprefix("Embedded").lower()] = cpu_seconds([server.pid])
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
        used["bench_client"] = time.process_time() + children.ru_utime + children.ru_stime
        return used

    def cpu_since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds each part of the stack used since ``before`` (a ``cpu_by_process()``)."""
        return {name: round(used - before[name], 2) for name, used in self.cpu_by_process().items()}

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(conninfo(self.settings), autocommit=True)

    def count(self, prefix: str) -> int:
        with self.connect() as conn:
            return conn.execute(
                "SELECT count(*) FROM reading WHERE device_id >= %s AND device_id < %s",
                (prefix, prefix + "\x7f"),
            ).fetchone()[0]

    # -- 1. bulk ingest end to end -----------------------------------------------------------------
    def bulk_ingest(self, total: int, devices: int, per_request: int, clients: int) -> list[dict]:
        prefix = self.prefix
        # Readings of now, as devices send them (each run a millisecond apart, so that every reading is
        # new): the rollups then see what they see in production, not only late data.
        # A run starts after the last reading of the one before (a run spans total / 6,000 seconds of
        # readings, longer than it takes to send): the series stay in order, as a device's are.
        now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(milliseconds=self.bulk_runs)
        now = max(now, self.next_reading_time)
        readings = readings_for(prefix, total, devices, base=now)
        self.next_reading_time = datetime.fromisoformat(readings[-1]["timestamp"]) + timedelta(seconds=1)
        self.bulk_runs += 1
        before = self.count(prefix)
        bodies = [
            (
                "POST",
                "/api/device/data/bulk",
                json.dumps({"readings": readings[i : i + per_request]}).encode(),
            )
            for i in range(0, total, per_request)
        ]
        expected_latest: dict[tuple[str, str], str] = {}
        for r in readings:
            key = (r["device_id"], r["metric_type"])
            if r["timestamp"] > expected_latest.get(key, ""):
                expected_latest[key] = r["timestamp"]
        use_wrk = shutil.which("wrk") is not None
        if use_wrk:
            lines = self.data_dir / "bulk-bodies.jsonl"
            lines.write_bytes(b"\n".join(body for _, _, body in bodies) + b"\n")
        cpu_before = self.cpu_by_process()
        started = time.perf_counter()
        if use_wrk:
            client, (sent_in, request_errors) = "wrk", self.send_with_wrk(lines, len(bodies), clients)
        else:
            sent_in, calls = call_many(self.args.port, bodies, clients)
            client, request_errors = "python", calls.errors
        # The trigger loop commits a batch's offsets only after the consumer stored it in PostgreSQL
        # and Redis: everything is in both once the committed offsets reach the end. Polling that
        # costs the servers almost nothing, unlike counting rows while they are being inserted.
        self.wait_consumed(timeout=max(120, total / 2000))
        elapsed = in_postgres = time.perf_counter() - started
        stored = self.count(prefix) - before
        late = stored < total  # not all there after all: wait for the rest, and time that too
        if late:
            stored = self.wait_stored(prefix, total, timeout=60, before=before)
            in_postgres = time.perf_counter() - started
        self.wait_cached(expected_latest)  # a check when on time: commits come after Redis too
        if late:
            elapsed = time.perf_counter() - started
        cpu = self.cpu_since(cpu_before)
        shim_cpu, consumer_cpu = cpu["shim"], cpu["consumer"]
        emit(
            {
                "benchmark": "bulk_ingest_end_to_end",
                "client": client,
                "readings": total,
                "devices": devices,
                "per_request": per_request,
                "clients": clients,
                "readings_per_s": round(total / elapsed),
                "seconds": round(elapsed, 2),
                "seconds_until_in_postgres": round(in_postgres, 2),
                "seconds_sending": round(sent_in, 2),
                "request_errors": request_errors,
                "stored": stored,
                "lost": total - stored,
                "consumer_cpu_s_per_10k_readings": round(consumer_cpu / total * 10_000, 3),
                "shim_cpu_ms_per_request": round(shim_cpu / len(bodies) * 1000, 3),
                "cpu_s_by_process": cpu,
            },
            self.results,
        )
        return readings

    def roll_up(self, readings: int) -> None:
        """What batches leave to the maintenance pass: rolling everything just ingested up into the
        rollups (timed here, so the bulk number hides no work)."""
        from common.maintenance import roll_up

        with self.connect() as conn:
            started = time.perf_counter()
            rows = roll_up(conn, datetime.now(timezone.utc) + timedelta(minutes=16))
            elapsed = time.perf_counter() - started
        emit(
            {
                "benchmark": "rollup_roll_up_after_bulk",
                "readings": readings,
                "readings_rolled_up": rows,
                "seconds": round(elapsed, 3),
                "readings_per_s_equivalent": round(readings / elapsed) if elapsed else None,
            },
            self.results,
        )

    def send_with_wrk(self, lines: Path, requests: int, clients: int) -> tuple[float, int]:
        """Post every body of ``lines`` (one per line) once from wrk, a C client (the Python one took
        ~10% of the two cores the service runs on); (seconds until all were answered, requests not
        answered 200)."""
        script = self.data_dir / "bulk.lua"
        script.write_text(WRK_BULK_SCRIPT)
        marker = self.data_dir / "bulk-done-"
        threads = min(2, clients)
        done = [Path(f"{marker}{n}") for n in range(threads)]
        for path in done:
            path.unlink(missing_ok=True)
        started = time.time()
        wrk = subprocess.Popen(
            ["wrk", "-t", str(threads), "-c", str(clients), "-d", "600s", "-s", str(script),
             f"http://127.0.0.1:{self.args.port}/", "--", str(threads), str(lines), str(marker)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not all(path.exists() for path in done) and wrk.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        finished = [path.stat().st_mtime for path in done if path.exists()]
        wrk.send_signal(signal.SIGINT)  # wrk prints its summary (and our counts) when interrupted
        out, _ = wrk.communicate(timeout=30)
        ok = int(m.group(1)) if (m := re.search(r"ok (\d+) accepted \d+", out)) else 0
        elapsed = (max(finished) if len(finished) == threads else time.time()) - started
        return elapsed, requests - ok  # anything but a 200 that said "submitted"

    def bulk_median(self) -> None:
        runs = [r for r in self.results if r["benchmark"] == "bulk_ingest_end_to_end"]
        emit(
            {
                "benchmark": "bulk_ingest_end_to_end_median",
                "runs": len(runs),
                "readings_per_s": statistics.median(r["readings_per_s"] for r in runs),
                "readings_per_s_each": [r["readings_per_s"] for r in runs],
                "lost": sum(r["lost"] for r in runs),
                "request_errors": sum(r["request_errors"] for r in runs),
            },
            self.results,
        )

    def wait_consumed(self, timeout: float) -> None:
        """Until the trigger loops' consumer group has committed every message in the topic."""
        topic = self.settings.kafka_topic
        # Reads the group's committed offsets without joining it (it never subscribes or polls).
        reader = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
            group_id=os.environ.get("TRIGGER_GROUP_ID") or "iot-consumer",
            enable_auto_commit=False,
            metrics_enabled=False,
        )
        try:
            partitions = [TopicPartition(topic, n) for n in reader.partitions_for_topic(topic)]
            end = reader.end_offsets(partitions)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all((reader.committed(p) or 0) >= end[p] for p in partitions):
                    return
                time.sleep(0.02)
        finally:
            reader.close(autocommit=False)

    def wait_stored(self, prefix: str, total: int, timeout: float, before: int = 0) -> int:
        """Until ``total`` readings more than ``before`` are stored for the prefix; how many are."""
        deadline = time.monotonic() + timeout
        stored = self.count(prefix) - before
        while stored < total and time.monotonic() < deadline:
            time.sleep(0.1)
            stored = self.count(prefix) - before
        return stored

    def wait_cached(self, expected: dict[tuple[str, str], str], timeout: float = 60) -> None:
        s = self.settings
        client = redis.Redis(
            host=s.redis_host, port=s.redis_port, db=s.redis_db, password=s.redis_password or None
        )
        keys = sorted(expected)
        want = [int(datetime.fromisoformat(expected[k]).timestamp() * 1_000_000) for k in keys]
        deadline = time.monotonic() + timeout
        while True:
            pipe = client.pipeline(transaction=False)
            for device, metric in keys:
                pipe.hget(f"{s.redis_key_prefix}latest", f"{device} {metric}")
            got = [int(v.split(b"|")[0]) if v else 0 for v in pipe.execute()]
            if got == want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("Redis did not reach the expected latest values")
            time.sleep(0.05)

    # -- 2. single-reading ingest --------------------------------------------------------------------
    def single_ingest_wrk(self, seconds: float, clients: int) -> None:
        """Single readings from wrk (a C load generator, so the client does not eat the cores the
        service runs on), each one unique; then every accepted reading is counted in PostgreSQL."""
        prefix = self.prefix
        before = self.count(prefix)
        script = self.data_dir / "single.lua"
        # Yesterday: inside the raw retention, whatever the day the benchmark runs.
        day = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
        script.write_text(WRK_SCRIPT.replace("PREFIX", prefix).replace("READING_DAY", day))
        cpu_before = self.cpu_by_process()
        result = subprocess.run(
            [
                "wrk",
                "-t",
                "2",
                "-c",
                str(clients),
                "-d",
                f"{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{self.args.port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu = self.cpu_since(cpu_before)
        out = result.stdout
        total = int(re.search(r"(\d+) requests in", out).group(1))
        failed = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
        errors = re.search(r"Socket errors: (.*)", out)
        accepted = int(re.search(r"accepted (\d+)", out).group(1))
        # wrk stops with requests in flight: the service may accept (and store) a few it never counts.
        stored = self.wait_stored(prefix, accepted, timeout=120, before=before)
        emit(
            {
                "benchmark": "single_reading_ingest",
                "client": "wrk",
                "seconds": seconds,
                "clients": clients,
                "requests": total,
                "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
                "p50_ms": _wrk_ms(out, "50%"),
                "p99_ms": _wrk_ms(out, "99%"),
                "errors": failed + (1 if errors else 0),
                "accepted": accepted,
                "stored": stored,
                "lost": max(0, accepted - stored),
                "accepted_in_flight_at_stop": max(0, stored - accepted),
                "shim_cpu_ms_per_request": round(cpu["shim"] / total * 1000, 3),
                "cpu_s_by_process": cpu,
            },
            self.results,
        )

    def single_ingest(self, requests: int, clients: int) -> None:
        prefix = self.prefix
        before = self.count(prefix)
        bodies = [
            ("POST", "/api/device/data", json.dumps(r).encode())
            for r in readings_for(prefix, requests, 1000, offset_seconds=5_000_000)
        ]
        elapsed, calls = call_many(self.args.port, bodies, clients)
        stored = self.wait_stored(prefix, requests, timeout=120, before=before)
        emit(
            {
                "benchmark": "single_reading_ingest",
                "client": "python",
                "requests": requests,
                "clients": clients,
                "requests_per_s": round(requests / elapsed),
                "p50_ms": round(percentile(calls.latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(calls.latencies, 0.99) * 1000, 2),
                "errors": calls.errors,
                "lost": requests - stored,
            },
            self.results,
        )

    # -- 3. queries on a big database ------------------------------------------------------------------
    def top_up(self, prefix: str, devices: int, minimum: int) -> int:
        """COPY older readings of the same devices until the table holds `minimum` rows."""
        with self.connect() as conn:
            have = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
            missing = max(0, minimum - have)
            if missing:
                rows = readings_for(prefix, missing, devices, offset_seconds=-1_200_000)
                with conn.cursor().copy(
                    "COPY reading (device_id, metric_type, value, timestamp) FROM STDIN"
                ) as copy:
                    for r in rows:
                        copy.write_row((r["device_id"], r["metric_type"], r["value"], r["timestamp"]))
                conn.execute("ANALYZE reading")
            return conn.execute("SELECT count(*) FROM reading").fetchone()[0]

    def queries(self, prefix: str, devices: int, repeat: int) -> None:
        ids = [f"{prefix}-{n:04d}" for n in range(devices)]
        rows = self.top_up(prefix, devices, self.args.query_rows)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.args.port}/api/devices", timeout=30) as answer:
            listed = len(json.load(answer)["devices"])  # what /api/devices really returns
        plans = {
            "devices": [("GET", "/api/devices", None)] * max(20, repeat // 5),
            "latest": [("GET", f"/api/device/{random.choice(ids)}/latest", None) for _ in range(repeat)],
            "history_1000": [
                ("GET", f"/api/device/{random.choice(ids)}/history?limit=1000", None) for _ in range(repeat)
            ],
        }
        for name, requests in plans.items():
            call_many(self.args.port, requests[:10], 1)  # warm caches and connections
            _, calls = call_many(self.args.port, requests, 1)
            emit(
                {
                    "benchmark": f"query_{name}",
                    "rows_in_database": rows,
                    "devices": listed,
                    "requests": len(requests),
                    "p50_ms": round(percentile(calls.latencies, 0.5) * 1000, 2),
                    "p99_ms": round(percentile(calls.latencies, 0.99) * 1000, 2),
                    "errors": calls.errors,
                },
                self.results,
            )

    # -- 4. COPY reference -------------------------------------------------------------------------------
    def copy_reference(self, readings: list[dict]) -> None:
        with self.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS reading_copy_reference")
            conn.execute("CREATE TABLE reading_copy_reference (LIKE reading INCLUDING ALL)")
            buffer = io.StringIO()
            for r in readings:
                buffer.write(f"{r['device_id']}\t{r['metric_type']}\t{r['value']}\t{r['timestamp']}\n")
            started = time.perf_counter()
            with conn.cursor().copy(
                "COPY reading_copy_reference (device_id, metric_type, value, timestamp) FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            elapsed = time.perf_counter() - started
            conn.execute("DROP TABLE reading_copy_reference")
        bulk = [r for r in self.results if r["benchmark"].startswith("bulk_ingest_end_to_end")]
        end_to_end = bulk[-1]["readings_per_s"]  # the median when there were several runs
        per_s = round(len(readings) / elapsed)
        emit(
            {
                "benchmark": "copy_reference",
                "rows": len(readings),
                "rows_per_s": per_s,
                "end_to_end_share_of_copy": round(end_to_end / per_s, 3),
            },
            self.results,
        )

    # -- 5. the ingest handler's own CPU per request ---------------------------------------------------------
    def handler_cpu(self, requests: int) -> None:
        """Call the ingest function in this process, as FunctionGraph would, and count its CPU time."""
        from common import runtime
        from common.apig import build_event
        from functions import load_function

        from .context import LocalContext

        runtime.initialize(settings=self.settings)
        ingest = load_function("ingest")
        prefix = f"cpu{uuid.uuid4().hex[:6]}"
        readings = readings_for(prefix, requests * 100, 1000)
        events = {
            "bulk_100": [
                build_event(
                    "POST",
                    "/api/device/data/bulk",
                    headers={"Content-Type": "application/json"},
                    body=json.dumps({"readings": readings[i * 100 : (i + 1) * 100]}).encode(),
                )
                for i in range(requests)
            ],
            "single": [
                build_event(
                    "POST",
                    "/api/device/data",
                    headers={"Content-Type": "application/json"},
                    body=json.dumps(readings[i]).encode(),
                )
                for i in range(requests)
            ],
        }
        context = LocalContext("ingest")
        for name, batch in events.items():
            started = time.process_time()
            for event in batch:
                assert ingest.handler(event, context)["statusCode"] == 200
            emit(
                {
                    "benchmark": f"ingest_handler_cpu_{name}",
                    "requests": requests,
                    "cpu_ms_per_request": round((time.process_time() - started) / requests * 1000, 3),
                },
                self.results,
            )
        runtime.reset()

    # -- soak: sustained mixed load ------------------------------------------------------------------------
    def soak(self, seconds: float, threads: int) -> None:
        prefix = f"soak{uuid.uuid4().hex[:6]}"
        accepted: set = set()
        lock = threading.Lock()
        calls = Calls()
        stop = time.monotonic() + seconds

        def worker(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=30)
            step = 0
            rng = random.Random(n)
            while time.monotonic() < stop:
                size = 1 if n % 2 else rng.randint(1, 100)
                batch = [
                    {
                        "device_id": f"{prefix}-{n:02d}-{rng.randrange(50):02d}",
                        "metric_type": rng.choice(METRICS),
                        "value": round(rng.uniform(0, 100), 3),
                        "timestamp": (BASE_TIME + timedelta(microseconds=step * 100 + i)).isoformat(),
                    }
                    for i in range(size)
                ]
                step += 1
                path, body = (
                    ("/api/device/data", batch[0])
                    if size == 1
                    else ("/api/device/data/bulk", {"readings": batch})
                )
                started = time.perf_counter()
                try:
                    conn.request(
                        "POST",
                        path,
                        body=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json"},
                    )
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=30)
                    status = 0
                calls.add(status, time.perf_counter() - started)
                if status == 200:
                    with lock:
                        accepted.update((r["device_id"], r["metric_type"], r["timestamp"]) for r in batch)
            conn.close()

        # Odd threads send single readings, even ones bulks of 1 to 100.
        started = time.perf_counter()
        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        sending = time.perf_counter() - started
        stored = self.wait_stored(prefix, len(accepted), timeout=120)
        with self.connect() as conn:
            distinct = conn.execute(
                "SELECT count(DISTINCT (device_id, metric_type, timestamp)) FROM reading WHERE device_id >= %s AND device_id < %s",
                (prefix, prefix + "\x7f"),
            ).fetchone()[0]
        emit(
            {
                "benchmark": "soak_mixed_load",
                "seconds": round(sending, 1),
                "threads": threads,
                "requests": len(calls.latencies),
                "errors": calls.errors,
                "accepted_readings": len(accepted),
                "stored_readings": stored,
                "lost": len(accepted) - stored,
                "duplicates": stored - distinct,
                "requests_per_s": round(len(calls.latencies) / sending),
                "readings_per_s": round(len(accepted) / sending),
                "p50_ms": round(percentile(calls.latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(calls.latencies, 0.99) * 1000, 2),
            },
            self.results,
        )

    def stop(self, keep_data: bool = False) -> None:
        """Stop the stack and delete its data (a full run leaves a database of over a million rows),
        unless ``keep_data``: after a failure its logs tell what went wrong."""
        self.stack.stop()
        if keep_data:
            print(f"# the stack's data and logs are kept in {self.data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


# Where --record appends: a file of its own, so that a run never rewrites a page people edit.
RESULTS = ROOT / "benchmarks" / "results.jsonl"


# The recorded results and their summary page are not code: a run appending to the results, or someone
# editing the page, does not change what is measured.
NOT_CODE = (":!benchmarks", ":!BENCHMARKS.md")


def code_version() -> tuple[str | None, bool | None]:
    """The commit the run measured and whether the tree had changes besides (None when git cannot tell)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(changed)


def record(results: list[dict], kind: str, path: Path = RESULTS) -> Path:
    """Append the run's results to ``path``, one self-contained JSON object a line: when the run
    finished (UTC), an id shared by the lines of one run, its kind, the commit, the machine, and then
    the benchmark's own fields."""
    now = datetime.now(timezone.utc)
    commit, uncommitted = code_version()
    run = {
        "recorded_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        "kind": kind,
        "commit": commit,
        "uncommitted_changes": uncommitted,
        "machine": machine(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write("".join(json.dumps({**run, **result}) + "\n" for result in results))
    return path


# What a run measures besides the bulk ingest (which the others build on).
PARTS = ("single", "queries", "copy", "handler")


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the local service end to end.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: finishes in under two minutes")
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="run only a sustained mixed load this long"
    )
    parser.add_argument(
        "--record", action="store_true", help=f"append the results to {RESULTS.relative_to(ROOT)}"
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--workers", type=int, default=configured_workers(), help=f"shim {WORKERS_HELP}, as make run"
    )
    parser.add_argument("--consumers", type=int, default=configured_loops(), help=LOOPS_HELP)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500, help="messages per consumer invocation")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--readings", type=int, help="bulk ingest readings (default 200,000; quick 50,000)")
    parser.add_argument(
        "--query-rows", type=int, default=1_000_000, help="rows in the database for the query benchmark"
    )
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help=f"comma-separated parts to run after the bulk ingest (which always runs): {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--rules", type=int, default=0, help="alert rules to define before anything is measured (default 0)"
    )
    parser.add_argument(
        "--breach-share",
        type=float,
        default=0.001,
        help="with --rules: the share of readings that breach a rule (default 0.001)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="run the bulk ingest this many times and report the median too (default 3; quick 1)",
    )
    args = parser.parse_args()
    if args.consumers < 1:
        parser.error("--consumers must be at least 1")
    if not 0 < args.breach_share <= 1:
        parser.error("--breach-share must be more than 0 and at most 1")
    only = set(args.only.split(",")) if args.only else set(PARTS)
    if only - {"bulk", *PARTS}:
        parser.error(f"--only takes a comma-separated list of: bulk, {', '.join(PARTS)}")

    bench = Bench(args)
    failed = True
    try:
        bench.start()
        if args.rules:
            bench.define_rules(args.rules, args.breach_share)
        if args.soak:
            bench.soak(args.soak, threads=6)
            mode = f"soak {args.soak:.0f}s"
        else:
            total = args.readings or (50_000 if args.quick else 200_000)
            # This VM's speed drifts by a fifth from minute to minute: one run alone misleads.
            runs = [
                bench.bulk_ingest(total, devices=1000, per_request=100, clients=args.clients)
                for _ in range(args.repeat or (1 if args.quick else 3))
            ]
            readings = runs[-1]
            if len(runs) > 1:
                bench.bulk_median()
            bench.roll_up(len(runs) * total)
            if "single" in only:
                if shutil.which("wrk"):
                    bench.single_ingest_wrk(5 if args.quick else 15, clients=args.clients)
                else:
                    print(
                        "# wrk not found: single-reading ingest measured with the Python client",
                        file=sys.stderr,
                    )
                    bench.single_ingest(5_000 if args.quick else 20_000, clients=args.clients)
            if "queries" in only:
                bench.queries(bench.prefix, devices=1000, repeat=200 if args.quick else 1000)
            if "copy" in only:
                bench.copy_reference(readings)
            if "handler" in only:
                bench.handler_cpu(300 if args.quick else 1000)
            mode = ("quick" if args.quick else "full") + (f" (only {args.only})" if args.only else "")
            if args.rules:
                mode += f" with {args.rules} alert rules breached by {args.breach_share:g} of readings"
                print(f"# alerts opened during the run: {bench.alerts_opened()}", file=sys.stderr)
        failed = False
    finally:
        bench.stop(keep_data=failed)
    if args.record:
        path = record(bench.results, mode)
        print(f"# {len(bench.results)} results appended to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
