"""Screenshots of the dashboard with realistic data: docs/dashboard-overview.png and docs/dashboard-device.png.

    make dashboard-screenshots                      # the same as:
    python scripts/dashboard_screenshots.py         # a private embedded stack with a day of demo data
    python scripts/dashboard_screenshots.py --url http://127.0.0.1:8080   # a running service (adds demo devices!)

Uses Debian's `chromium` through Playwright's Python package (scripts/ensure-chromium.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DAY = 24 * 3600
DAYS = 7  # of demo readings: the device page opens on "7 days", in 30-minute buckets of six readings
STEP = 300  # seconds between demo readings


def launch_browser(playwright, *, scrollbars: bool = False):
    """Headless Debian chromium (never a downloaded browser build).

    Playwright hides scroll bars in headless chromium; ``scrollbars=True`` keeps them, taking room
    in the layout as they do on a desktop (the browser tests want that; the screenshots do not).
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (or set CHROMIUM_PATH)")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        ignore_default_args=["--hide-scrollbars"] if scrollbars else None,
    )


# device -> (seconds since its last reading, {metric: (base, daily swing, noise, decimals)})
DEMO_DEVICES = {
    "greenhouse-01": (20, {"temperature": (24.0, 4.0, 0.25, 1), "humidity": (68.0, -9.0, 1.0, 1)}),
    "greenhouse-02": (35, {"temperature": (23.2, 3.5, 0.25, 1), "humidity": (71.0, -8.0, 1.0, 1)}),
    "cold-store-a": (45, {"temperature": (3.6, 0.4, 0.15, 2), "humidity": (86.0, 2.0, 0.8, 1)}),
    "rooftop-weather": (
        15,
        {
            "temperature": (13.5, 5.5, 0.3, 1),
            "humidity": (58.0, -14.0, 1.5, 1),
            "pressure": (1012.0, 2.5, 0.3, 1),
        },
    ),
    "boiler-room": (60, {"temperature": (61.0, 6.0, 0.8, 1), "pressure": (1013.5, 1.0, 0.2, 1)}),
    "pump-station-3": (
        25,
        {"voltage": (230.5, 1.5, 0.6, 1), "current": (8.2, 2.5, 0.3, 2), "power": (1850.0, 520.0, 40.0, 0)},
    ),
    "solar-inverter-1": (
        40,
        {"voltage": (398.0, 6.0, 1.5, 1), "current": (6.0, 9.0, 0.4, 2), "power": (2400.0, 3600.0, 90.0, 0)},
    ),
    "server-rack-b2": (
        30,
        {
            "temperature": (27.5, 1.2, 0.2, 1),
            "current": (13.8, 1.1, 0.3, 2),
            "power": (3150.0, 240.0, 45.0, 0),
        },
    ),
    "warehouse-door-4": (11 * 60, {"temperature": (12.0, 3.0, 0.4, 1), "humidity": (61.0, -6.0, 1.2, 1)}),
    "substation-7": (
        3 * 3600 + 600,
        {
            "voltage": (231.0, 2.0, 0.7, 1),
            "current": (41.0, 12.0, 1.5, 1),
            "power": (9400.0, 2700.0, 160.0, 0),
        },
    ),
}


# device -> (hours ago, hours long): a silence, drawn as a gap in its charts
DEMO_OUTAGES = {"rooftop-weather": (62, 5)}


def demo_readings(now: datetime | None = None) -> list[dict]:
    """A week of readings every 5 minutes per device and metric, with a daily cycle and some noise."""
    now = now or datetime.now(timezone.utc)
    rng = random.Random(42)
    readings = []
    for device, (silent, metrics) in DEMO_DEVICES.items():
        last = now - timedelta(seconds=silent)
        outage_ago, outage_hours = DEMO_OUTAGES.get(device, (0, 0))
        outage_end = now - timedelta(hours=outage_ago)
        outage_start = outage_end - timedelta(hours=outage_hours)
        for metric, (base, swing, noise, decimals) in metrics.items():
            drift = 0.0
            for step in range(DAYS * DAY // STEP, -1, -1):
                moment = last - timedelta(seconds=step * STEP)
                hour = moment.hour + moment.minute / 60
                daily = math.sin((hour - 9) / 24 * 2 * math.pi)  # peaks mid-afternoon
                if metric in ("current", "power") and device.startswith("solar"):
                    daily = max(0.0, math.sin((hour - 6) / 12 * math.pi)) * 2 - 1 if 6 <= hour <= 18 else -1
                drift = drift * 0.9 + rng.gauss(0, noise)
                value = round(base + swing * daily + drift, decimals)
                if decimals == 0:
                    value = int(value)
                if outage_start <= moment < outage_end:
                    continue
                readings.append(
                    {
                        "device_id": device,
                        "metric_type": metric,
                        "value": max(value, 0) if metric in ("current", "power") else value,
                        "timestamp": moment.isoformat(timespec="seconds"),
                    }
                )
    return readings


def post_json(url: str, payload: object) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def load_demo_data(base_url: str) -> None:
    readings = demo_readings()
    for start in range(0, len(readings), 100):
        post_json(base_url + "/api/device/data/bulk", {"readings": readings[start : start + 100]})
    expected: dict[tuple[str, str], int] = {}
    for reading in readings:
        key = (reading["device_id"], reading["metric_type"])
        expected[key] = expected.get(key, 0) + 1
    # Stored readings per device and metric, counted by the API in day buckets (history pages hold 1000).
    since = min(datetime.fromisoformat(reading["timestamp"]) for reading in readings)
    span = f"from={int(since.timestamp() * 1000)}&to={int(time.time() * 1000) + 60_000}&interval=1d&agg=count"
    deadline = time.monotonic() + 180
    while expected and time.monotonic() < deadline:
        for device, metric in list(expected):
            answer = get_json(f"{base_url}/api/device/{device}/series?metric_type={metric}&{span}")
            if sum(point["count"] for point in answer["points"]) >= expected[(device, metric)]:
                del expected[(device, metric)]
        time.sleep(0.5)
    if expected:
        raise RuntimeError(f"demo readings not stored within 3 minutes: {sorted(expected)}")


def take_screenshots(base_url: str, out_dir: Path, device: str = "rooftop-weather") -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    overview_png, device_png = out_dir / "dashboard-overview.png", out_dir / "dashboard-device.png"
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-GB")
            page = context.new_page()
            page.goto(base_url + "/")
            page.wait_for_selector(f'tr[data-device-id="{device}"]', timeout=30_000)
            page.wait_for_function(
                "document.getElementById('count-today').textContent !== '–'", timeout=30_000
            )
            page.screenshot(path=str(overview_png), full_page=True)
            page.goto(base_url + "/device.html?id=" + device)
            page.wait_for_function(
                "() => { const c = Object.values(IotDashboard.charts);"
                " return c.length >= 3 && c.every(u => u.data[0].length > 100); }",
                timeout=30_000,
            )
            page.mouse.move(10, 10)
            page.screenshot(path=str(device_png), full_page=True)
        finally:
            browser.close()
    return [overview_png, device_png]


def private_stack(data_dir: Path):
    """The service on its own embedded servers (whatever the environment names), with auth off."""
    sys.path.insert(0, str(ROOT))
    from local.embedded import EXTERNAL_VARIABLES, free_port
    from local.run import Stack

    stack = Stack(data_dir, free_port(), workers=1, partitions=2)
    for name in EXTERNAL_VARIABLES.values():
        stack.env.pop(name, None)
    stack.env.update(
        KAFKA_TOPIC="dashboard-demo",
        DEMO_MODE="true",
        AUTH_ENABLED="false",
        TRIGGER_GROUP_ID="dashboard-demo",
    )
    return stack


def main() -> int:
    parser = argparse.ArgumentParser(description="Screenshots of the dashboard with demo data.")
    parser.add_argument("--url", help="use this running service instead of a private one (adds demo devices)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write the PNGs (default: docs/)")
    args = parser.parse_args()
    if args.url:
        base = args.url.rstrip("/")
        load_demo_data(base)
        paths = take_screenshots(base, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="dashboard-demo-") as folder:
            stack = private_stack(Path(folder))
            try:
                stack.start_servers()
                stack.prepare()
                stack.spawn("shim", "local.shim", "--port", str(stack.port), "--workers", "1")
                stack.spawn("trigger loop", "local.trigger_loop")
                stack.wait_healthy()
                base = f"http://127.0.0.1:{stack.port}"
                load_demo_data(base)
                paths = take_screenshots(base, args.out)
            finally:
                stack.stop()
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
