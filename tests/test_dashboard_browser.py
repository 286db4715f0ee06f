"""The dashboard in a real browser: headless Debian chromium driven by Playwright, against the service.

Readings go in through the API (shim -> Kafka -> trigger loop -> PostgreSQL + Redis); the pages are
opened from the dashboard function (through the shim) and from a plain static file server laid out as
the files are uploaded to OBS. The charts draw the API's buckets (`/series`), so what a chart holds is
compared with the buckets the posted readings make. With auth on (a service of its own), the pages ask
for a read key and keep it for the tab. No page may break its Content-Security-Policy. Screenshots land
in test-artifacts/.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from local.embedded import free_port

from .conftest import ROOT, LocalService, isolated_env, wait_for

pytestmark = pytest.mark.integration


def _script(name: str) -> ModuleType:
    """A module of scripts/, loaded by its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_dashboard_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


launch_browser = _script("dashboard_screenshots").launch_browser  # Debian's chromium, fixed flags
build = _script("dashboard_site").build  # the files laid out as they are uploaded to OBS
generate_data = _script("generate_data")  # what `make demo-data` sends

ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "functions" / "dashboard" / "static"
TIMEOUT_MS = 30_000  # generous: other suites may share the two cores
UNITS = {
    "temperature": "°C",
    "humidity": "%",
    "pressure": "hPa",
    "voltage": "V",
    "current": "A",
    "power": "W",
}
COLORS = {"temperature": "#e8590c", "humidity": "#1c7ed6", "pressure": "#7048e8", "voltage": "#e67700"}
COLORS |= {"current": "#0ca678", "power": "#d6336c"}

DEVICE_LIST = re.compile(r"/api/devices(\?[^/]*)?$")  # GET /api/devices, whatever its page

expect.set_options(timeout=TIMEOUT_MS)


# ---- helpers -------------------------------------------------------------------------------------
def api(service, path: str, body: object = None, *, token: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(service.url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def all_devices(service, *, token: str | None = None) -> list[dict]:
    """Every device of GET /api/devices, its pages followed."""
    devices, cursor = [], None
    while True:
        query = "?limit=1000" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        answer = api(service, "/api/devices" + query, token=token)
        devices += answer["devices"]
        if not answer["has_more"]:
            return devices
        cursor = answer["next_cursor"]


def history_all(service, device: str, *, token: str | None = None, **params: object) -> list[dict]:
    """Every reading of GET /api/device/<id>/history for ``params``, its pages followed."""
    rows, cursor = [], None
    while True:
        query = urllib.parse.urlencode({**params, "limit": 1000, **({"cursor": cursor} if cursor else {})})
        answer = api(service, f"/api/device/{device}/history?{query}", token=token)
        rows += answer["data"]
        if not answer["has_more"]:
            return rows
        cursor = answer["next_cursor"]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def shown(value: float, metric: str) -> str:
    """The page's number format in the en-US locale: grouping, at most three decimals, then the unit."""
    return f"{value:,.3f}".rstrip("0").rstrip(".") + " " + UNITS[metric]


def post_readings(service, readings: list[dict], *, token: str | None = None) -> None:
    for start in range(0, len(readings), 100):  # the API's limit per bulk request
        chunk = readings[start : start + 100]
        answer = api(service, "/api/device/data/bulk", {"readings": chunk}, token=token)
        assert answer["processed_count"] == len(chunk)


def wait_stored(service, readings: list[dict]) -> None:
    """Until every posted (device, metric) has all its posted readings in the history."""

    def stored() -> bool:
        for device in {r["device_id"] for r in readings}:
            history = api(service, f"/api/device/{device}/history?limit=1000")["data"]
            have = {(h["metric_type"], h["timestamp"]) for h in history}
            want = {
                (r["metric_type"], r["timestamp"].replace("Z", "+00:00"))
                for r in readings
                if r["device_id"] == device
            }
            if not want <= have:
                return False
        return True

    wait_for(stored, timeout=30, interval=0.2)


def series(readings: list[dict], device: str, metric: str) -> list[tuple[float, float]]:
    """(epoch seconds, value) of one device's metric, oldest first."""
    return sorted(
        (datetime.fromisoformat(r["timestamp"]).timestamp(), r["value"])
        for r in readings
        if r["device_id"] == device and r["metric_type"] == metric
    )


def buckets(readings: list[dict], device: str, metric: str, seconds: int) -> list[tuple[float, float]]:
    """(bucket start, average) of one device's metric in buckets of ``seconds`` from the epoch (UTC):
    what the chart draws when the window's interval is that long."""
    groups: dict[float, list[float]] = {}
    for moment, value in series(readings, device, metric):
        groups.setdefault(math.floor(moment / seconds) * seconds, []).append(value)
    return [(start, sum(values) / len(values)) for start, values in sorted(groups.items())]


def chart_data(page: Page, metric: str) -> list[tuple[float, float]]:
    """(bucket start, average) of the buckets the chart draws (the gaps' null rows left out)."""
    xs, ys = page.evaluate("m => IotDashboard.charts[m].data.slice(0, 2).map(a => Array.from(a))", metric)
    return [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]


def wait_chart_points(page: Page, metric: str, count: int) -> None:
    """Until the chart draws ``count`` buckets."""
    page.wait_for_function(
        "([m, n]) => IotDashboard.charts && IotDashboard.charts[m]"
        " && IotDashboard.charts[m].data[1].filter(y => y != null).length === n",
        arg=[metric, count],
        timeout=TIMEOUT_MS,
    )


def wait_chart(page: Page, metric: str, expected: list[tuple[float, float]]) -> None:
    """Until the chart draws exactly these (bucket start, average) pairs (averages to 1e-9)."""
    page.wait_for_function(
        """([m, want]) => {
          const u = IotDashboard.charts && IotDashboard.charts[m];
          if (!u) return false;
          const have = [];
          u.data[0].forEach((t, i) => { if (u.data[1][i] != null) have.push([t, u.data[1][i]]); });
          return have.length === want.length
            && have.every(([t, y], i) => t === want[i][0] && Math.abs(y - want[i][1]) <= 1e-9 * Math.max(1, Math.abs(y)));
        }""",
        arg=[metric, [list(pair) for pair in expected]],
        timeout=TIMEOUT_MS,
    )


def wait_span(page: Page, metric: str, seconds: int, slack: int) -> tuple[float, float]:
    """Until the chart's x axis spans the window (``seconds``, plus at most ``slack``: the window's first
    bucket may start before it); returns the axis's (min, max)."""
    page.wait_for_function(
        "([m, low, high]) => { const u = IotDashboard.charts && IotDashboard.charts[m];"
        " if (!u) return false; const span = u.scales.x.max - u.scales.x.min;"
        " return span >= low && span <= high; }",
        arg=[metric, seconds - 1, seconds + slack + 1],
        timeout=TIMEOUT_MS,
    )
    return x_range(page, metric)


# For each point: is there a pixel of the series colour on the canvas where uPlot put that point?
DRAWN_POINTS_JS = """
([metric, color]) => {
  const u = IotDashboard.charts[metric];
  const rgb = [1, 3, 5].map(i => parseInt(color.slice(i, i + 2), 16));
  const ctx = u.ctx;
  const w = ctx.canvas.width, h = ctx.canvas.height;
  const image = ctx.getImageData(0, 0, w, h).data;
  const near = (x, y) => {
    const i = (y * w + x) * 4;
    return image[i + 3] > 200 && rgb.every((c, k) => Math.abs(image[i + k] - c) < 48);
  };
  let coloured = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (near(x, y)) coloured++;
  const drawn = u.data[0].map((t, i) => {
    if (u.data[1][i] == null) return true; // a gap between buckets: nothing to draw
    const cx = Math.round(u.valToPos(t, "x", true)), cy = Math.round(u.valToPos(u.data[1][i], "y", true));
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) {
      if (cx + dx >= 0 && cx + dx < w && cy + dy >= 0 && cy + dy < h && near(cx + dx, cy + dy)) return true;
    }
    return false;
  });
  const xs = u.data[0].filter((t, i) => u.data[1][i] != null).map(t => u.valToPos(t, "x", true));
  const span = xs.length ? Math.max(...xs) - Math.min(...xs) : 0;
  return { coloured, drawn, span, points: u.data[1].filter(v => v != null).length };
}
"""


def assert_chart_drawn(page: Page, metric: str) -> None:
    result = page.evaluate(DRAWN_POINTS_JS, [metric, COLORS[metric]])
    # A floor per point drawn: a few isolated buckets (a gap on each side) colour only their points; a
    # line through buckets closer than that colours at least a pixel per column it spans. Where each
    # point is, is checked below.
    floor = min(10 * max(1, result["points"]), max(10, result["span"]))
    assert result["coloured"] >= floor, (
        f"{metric}: hardly any pixels of the series colour on the canvas ({result['coloured']})"
    )
    assert all(result["drawn"]), f"{metric}: some points are not drawn where they belong: {result['drawn']}"


def pump_until(page: Page, check, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait for ``check()`` while letting Playwright deliver events (route handlers run meanwhile)."""
    for _ in range(timeout_ms // 50):
        if check():
            return
        page.wait_for_timeout(50)
    raise AssertionError("condition not met in time")


def no_horizontal_overflow(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def x_range(page: Page, metric: str) -> tuple[float, float]:
    return tuple(
        page.evaluate(
            "m => [IotDashboard.charts[m].scales.x.min, IotDashboard.charts[m].scales.x.max]", metric
        )
    )


# Chromium reports what a Content-Security-Policy blocks (and a policy it cannot apply) as console errors.
CSP_MESSAGE = re.compile(r"Refused to|Content.Security.Policy", re.I)


def watch_errors(page: Page) -> list[str]:
    """The page's JavaScript errors and Content-Security-Policy complaints, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and CSP_MESSAGE.search(message.text)
            else None
        ),
    )
    return errors


@contextmanager
def desktop_page(browser: Browser, width: int, height: int = 900, **options) -> Iterator[Page]:
    """A page in a context of its own, ``width`` px wide; fails on JavaScript errors and Content-Security-
    Policy complaints, as ``page`` does."""
    options = {"locale": "en-US", "timezone_id": "UTC", **options}
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors = watch_errors(opened)
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors or CSP complaints on the page: {errors}"


# Every piece of text drawn on a canvas (uPlot draws its axes so), with its extent in canvas pixels;
# a canvas's list starts again when uPlot clears the canvas to redraw it.
RECORD_CANVAS_TEXT_JS = """
window.__canvasText = new Map();
const proto = CanvasRenderingContext2D.prototype;
const clearRect = proto.clearRect, fillText = proto.fillText;
proto.clearRect = function (x, y, w, h) {
  if (x === 0 && y === 0 && w === this.canvas.width && h === this.canvas.height) window.__canvasText.set(this.canvas, []);
  return clearRect.call(this, x, y, w, h);
};
proto.fillText = function (text, x, y, ...rest) {
  const m = this.getTransform();
  const width = this.measureText(text).width * m.a;
  const at = m.a * x + m.e;
  const align = this.textAlign;
  const left = align === "center" ? at - width / 2 : align === "right" || align === "end" ? at - width : at;
  const list = window.__canvasText.get(this.canvas) || [];
  list.push({ text: String(text), left, right: left + width, y: m.d * y + m.f });
  window.__canvasText.set(this.canvas, list);
  return fillText.call(this, text, x, y, ...rest);
};
"""

# The x axis's labels as drawn: one list per line of labels (top line first), each left to right.
X_LABELS_JS = """
m => {
  const u = IotDashboard.charts[m];
  const below = u.bbox.top + u.bbox.height;
  const lines = new Map();
  for (const label of window.__canvasText.get(u.ctx.canvas) || []) {
    if (label.y <= below) continue; // the y axis's labels
    const key = Math.round(label.y);
    if (!lines.has(key)) lines.set(key, []);
    lines.get(key).push(label);
  }
  const ordered = Array.from(lines.keys()).sort((a, b) => a - b).map(k => lines.get(k).sort((a, b) => a.left - b.left));
  return { width: u.ctx.canvas.width, lines: ordered };
}
"""


class QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_directory(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    """A plain static file server on another port, as an OBS static website serves the keys."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietStaticHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright) -> Iterator[Browser]:
    launched = launch_browser(playwright)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def scrollbar_browser(playwright) -> Iterator[Browser]:
    """Chromium whose scroll bars take room in the layout, as on a desktop (full-page screenshots of its
    pages lose a scroll bar's width at the right, so the other tests use ``browser``)."""
    launched = launch_browser(playwright, scrollbars=True)
    yield launched
    launched.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors = watch_errors(opened)
    yield opened
    context.close()
    assert not errors, f"JavaScript errors or CSP complaints on the page: {errors}"


@pytest.fixture(scope="module")
def fleet(service) -> dict:
    """Several devices posted through the API: three reporting now, one stale, one offline."""
    run = uuid.uuid4().hex[:6]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    names = {key: f"ui-{run}-{key}" for key in ("alpha", "beta", "gamma", "stale", "offline")}
    values = {
        "alpha": {"temperature": [21.5, 22.25, 21.75, 23.125], "humidity": [40.5, 41, 43.25, 42]},
        "beta": {
            "voltage": [229.5, 230.25, 231, 230.5],
            "current": [1.5, 2.25, 1.75, 2],
            "power": [345, 518, 404.5, 461],
        },
        "gamma": {"pressure": [1012.5, 1013.25, 1011.75, 1013.5]},
    }
    readings = []
    for key, metrics in values.items():
        for metric, points in metrics.items():
            for minutes_ago, value in zip((4, 3, 2, 1), points, strict=True):
                moment = now - timedelta(minutes=minutes_ago)
                readings.append(
                    {"device_id": names[key], "metric_type": metric, "value": value, "timestamp": iso(moment)}
                )
    readings.append(
        {
            "device_id": names["stale"],
            "metric_type": "temperature",
            "value": 18.5,
            "timestamp": iso(now - timedelta(minutes=20)),
        }
    )
    readings.append(
        {
            "device_id": names["offline"],
            "metric_type": "humidity",
            "value": 55.5,
            "timestamp": iso(now - timedelta(hours=2)),
        }
    )
    post_readings(service, readings)
    wait_stored(service, readings)
    return {"names": names, "readings": readings, "prefix": f"ui-{run}-"}


@pytest.fixture(scope="module")
def demo_device(service) -> dict:
    """One device with what `make demo-data` sends it: six metrics, a reading a minute, the last hour."""
    device = f"demo-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    simulated = generate_data.Device(device, generate_data.DEFAULT_RANGES)
    readings = list(generate_data.readings([simulated], 6, 60, 60.0, now))
    assert {r["metric_type"] for r in readings} == set(UNITS)
    post_readings(service, readings)
    wait_for(
        lambda: len(api(service, f"/api/device/{device}/history?limit=1000")["data"]) == len(readings),
        timeout=30,
        interval=0.2,
    )
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in readings]
    return {"id": device, "readings": readings, "oldest": min(times), "newest": max(times)}


# ---- tests ---------------------------------------------------------------------------------------
def test_vendored_chart_library_matches_its_recorded_checksums():
    text = (STATIC / "VENDORED.md").read_text()
    block = re.search(r"```sha256\n(.*?)```", text, re.S)
    assert block, "VENDORED.md has no ```sha256 block"
    lines = [line.split() for line in block.group(1).strip().splitlines()]
    assert {name for _, name in lines} == {"uplot.iife.min.js", "uplot.min.css", "uplot.LICENSE.txt"}
    for digest, name in lines:
        data = (STATIC / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert len(data) < 2 * 1024 * 1024
    assert "| version | 1.6.32 |" in text
    assert "uPlot (v1.6.32)" in (STATIC / "uplot.iife.min.js").read_text()[:200]


def test_overview_and_device_page_show_posted_readings_and_update_in_place(service, fleet, page):
    names, readings = fleet["names"], fleet["readings"]
    ARTIFACTS.mkdir(exist_ok=True)
    navigations: list[str] = []
    page.on(
        "framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None
    )

    # --- overview: every device, its latest values with units, its status and the counts (the search
    # keeps this run's devices among the first rows, however many other tests have sent)
    page.goto(f"{service.url}/?q={fleet['prefix']}")
    for key in ("alpha", "beta", "gamma"):
        row = page.locator(f'tr[data-device-id="{names[key]}"]')
        expect(row).to_be_visible()
        expect(row.locator(".badge")).to_have_text("Online")
        for metric in {r["metric_type"] for r in readings if r["device_id"] == names[key]}:
            newest = series(readings, names[key], metric)[-1][1]
            expect(row.locator(f'td[data-metric="{metric}"]')).to_have_text(shown(newest, metric))
        expect(row.locator("td.cell-last time")).to_have_text(re.compile(r"^(\d+ s|\d+ min|just now)"))
    expect(page.locator(f'tr[data-device-id="{names["stale"]}"] .badge')).to_have_text("Stale")
    expect(page.locator(f'tr[data-device-id="{names["offline"]}"] .badge')).to_have_text("Offline")
    expect(page.locator(f'tr[data-device-id="{names["offline"]}"] td[data-metric="humidity"]')).to_have_text(
        "55.5 %"
    )
    listed = all_devices(service)
    stats = api(service, "/api/stats")
    expect(page.locator("#count-devices")).to_have_text(f"{len(listed):,}")
    expect(page.locator("#count-today")).to_have_text(f"{stats['readings_today']:,}")
    expect(page.locator("#count-rejected")).to_have_text(f"{stats['rejected_messages']:,}")
    expect(page.locator("#connection")).to_have_text(re.compile("^Live"))

    # --- sorting by a header, then the search filter (kept in the URL)
    page.locator('th button[data-sort="device"]').click()
    expect(page.locator('th[data-sort="device"]')).to_have_attribute("aria-sort", "descending")
    order = page.evaluate(
        "p => Array.from(document.querySelectorAll('#devices tbody tr')).map(r => r.dataset.deviceId)"
        ".filter(id => id.startsWith(p))",
        fleet["prefix"],
    )
    assert order == sorted(names.values(), reverse=True)
    page.fill("#search", names["alpha"])
    expect(page.locator(f'tr[data-device-id="{names["beta"]}"]')).to_be_hidden()
    expect(page.locator(f'tr[data-device-id="{names["alpha"]}"]')).to_be_visible()
    expect(page.locator("#shown-count")).to_have_text(re.compile(r"^Showing 1 of [\d,]+$"))
    assert "q=" in page.url

    # --- a new reading shows up in place: no navigation, the filter and the page's state survive
    page.evaluate("window.__sameDocument = true")
    newer = {
        "device_id": names["alpha"],
        "metric_type": "temperature",
        "value": 25.75,
        "timestamp": iso(datetime.now(timezone.utc).replace(microsecond=0)),
    }
    post_readings(service, [newer])
    readings.append(newer)
    expect(page.locator(f'tr[data-device-id="{names["alpha"]}"] td[data-metric="temperature"]')).to_have_text(
        "25.75 °C"
    )
    assert page.evaluate("window.__sameDocument") is True
    assert page.input_value("#search") == names["alpha"]
    expect(page.locator(f'tr[data-device-id="{names["beta"]}"]')).to_be_hidden()
    page.fill("#search", fleet["prefix"])
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    # --- the device page: one chart per metric, the posted readings' minutes (the last hour: 1m buckets)
    page.locator(f'tr[data-device-id="{names["alpha"]}"] a').click()
    page.wait_for_url(re.compile(r"/device\.html\?id="))
    expect(page.locator("#title")).to_have_text(names["alpha"])
    expect(page.locator("#device-status")).to_have_text("Online")
    for metric in ("temperature", "humidity"):
        expected = buckets(readings, names["alpha"], metric, 60)
        wait_chart(page, metric, expected)
        assert_chart_drawn(page, metric)
        expect(page.locator(f'.chart-card[data-metric="{metric}"] .chart-interval')).to_have_text(
            "1m buckets"
        )
        expect(page.locator(f'.latest-card[data-metric="{metric}"] .latest-value')).to_have_text(
            shown(expected[-1][1], metric)
        )
    alpha_count = len([r for r in readings if r["device_id"] == names["alpha"]])
    expect(page.locator("#history tbody tr")).to_have_count(alpha_count)
    expect(page.locator("#history tbody tr").first.locator("td.num")).to_have_text("25.75 °C")

    # --- one more reading: the chart, the latest value and the table update without a reload
    navigations.clear()
    page.evaluate("window.__sameDocument = 'device page'")
    newest = {
        "device_id": names["alpha"],
        "metric_type": "temperature",
        "value": 30.125,
        "timestamp": iso(datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)),
    }
    post_readings(service, [newest])
    readings.append(newest)
    expected = buckets(readings, names["alpha"], "temperature", 60)
    wait_chart(page, "temperature", expected)
    assert_chart_drawn(page, "temperature")
    expect(page.locator('.latest-card[data-metric="temperature"] .latest-value')).to_have_text("30.125 °C")
    expect(page.locator("#history tbody tr").first.locator("td.num")).to_have_text("30.125 °C")
    assert page.evaluate("window.__sameDocument") == "device page"
    assert navigations == []

    # --- windows and the metric filter
    page.get_by_role("button", name="1 hour", exact=True).click()
    expect(page.get_by_role("button", name="1 hour", exact=True)).to_have_attribute("aria-pressed", "true")
    wait_span(page, "temperature", 3600, 60)
    wait_chart(page, "temperature", expected)
    page.get_by_role("button", name="7 days", exact=True).click()
    wait_span(page, "temperature", 7 * 86400, 1800)
    expect(page.locator('.chart-card[data-metric="temperature"] .chart-interval')).to_have_text("30m buckets")
    page.locator('.chip[data-metric="humidity"] input').uncheck()
    expect(page.locator('.chart-card[data-metric="humidity"]')).to_be_hidden()
    expect(page.locator('#history tbody tr[data-metric="humidity"]')).to_have_count(0)
    assert "hide=humidity" in page.url
    page.locator('.chip[data-metric="humidity"] input').check()
    expect(page.locator('.chart-card[data-metric="humidity"]')).to_be_visible()
    page.get_by_role("button", name="1 day", exact=True).click()
    summary = page.locator('.chart-card[data-metric="temperature"] .chart-summary')
    expect(summary).to_have_text(re.compile(r"^6 readings · min 21.5 °C · max 30.125 °C"))
    page.locator('.chart-card[data-metric="temperature"] .u-over').hover()
    expect(summary).to_have_class(re.compile("hovering"))
    expect(summary).to_have_text(re.compile(r"^[A-Z][a-z]{2} \d+, \d\d:\d\d:\d\d · (avg )?[\d.]+ °C"))
    page.mouse.move(5, 5)
    expect(summary).to_have_text(re.compile(r"^6 readings"))
    page.get_by_role("button", name="1 hour", exact=True).click()  # the posted minutes fill the width
    wait_span(page, "temperature", 3600, 60)
    page.screenshot(path=str(ARTIFACTS / "dashboard-device.png"), full_page=True)

    # --- the dashboard function's own form of the device URL, /device/<id>
    page.goto(f"{service.url}/device/{names['beta']}")
    for metric in ("voltage", "current", "power"):
        wait_chart(page, metric, buckets(readings, names["beta"], metric, 60))
        assert_chart_drawn(page, metric)


def test_pages_fit_a_phone_screen(service, fleet, browser):
    names = fleet["names"]
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        locale="en-US",
        timezone_id="UTC",
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        phone = context.new_page()
        phone.goto(f"{service.url}/?q={fleet['prefix']}")
        row = phone.locator(f'tr[data-device-id="{names["beta"]}"]')
        expect(row).to_be_visible()
        expect(row.locator('td[data-metric="power"]')).to_have_text("461 W")
        assert phone.input_value("#search") == fleet["prefix"]
        assert no_horizontal_overflow(phone)
        phone.screenshot(path=str(ARTIFACTS / "dashboard-overview-phone.png"), full_page=True)
        phone.goto(f"{service.url}/device.html?id={names['beta']}")
        wait_chart_points(phone, "power", 4)
        assert_chart_drawn(phone, "power")
        assert phone.evaluate("IotDashboard.charts.power.width") <= 390
        assert no_horizontal_overflow(phone)
        phone.screenshot(path=str(ARTIFACTS / "dashboard-device-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_same_files_from_a_plain_static_server_show_the_same_data(service, fleet, page, tmp_path):
    names, readings = fleet["names"], fleet["readings"]
    site = tmp_path / "site"
    keys = build(site, api_base=service.url)
    assert {
        "index.html",
        "device.html",
        "static/config.js",
        "static/app.js",
        "static/uplot.iife.min.js",
    } <= set(keys)
    assert not (site / "static" / "index.html").exists()
    assert f'apiBase: "{service.url}"' in (site / "static" / "config.js").read_text()
    server, static_url = serve_directory(site)
    api_calls: list[str] = []
    page.on("request", lambda request: api_calls.append(request.url) if "/api/" in request.url else None)
    try:
        page.goto(f"{static_url}/?q={fleet['prefix']}")
        listed = {
            d["device_id"]: d for d in all_devices(service) if d["device_id"].startswith(fleet["prefix"])
        }
        expect(page.locator("#devices tbody tr")).to_have_count(len(listed))
        shown_ids = page.evaluate(
            "Array.from(document.querySelectorAll('#devices tbody tr')).map(r => r.dataset.deviceId)"
        )
        assert sorted(shown_ids) == sorted(listed)
        for device in (names["alpha"], names["gamma"]):
            for metric, latest in listed[device]["metrics"].items():
                cell = page.locator(f'tr[data-device-id="{device}"] td[data-metric="{metric}"]')
                expect(cell).to_have_text(shown(latest["value"], metric))
        page.screenshot(path=str(ARTIFACTS / "dashboard-static-overview.png"), full_page=True)

        page.locator(f'tr[data-device-id="{names["gamma"]}"] a').click()
        page.wait_for_url(f"{static_url}/device.html?id={names['gamma']}")
        wait_chart(page, "pressure", buckets(readings, names["gamma"], "pressure", 60))
        assert_chart_drawn(page, "pressure")
        expect(page.locator('.latest-card[data-metric="pressure"] .latest-value')).to_have_text("1,013.5 hPa")
        page.screenshot(path=str(ARTIFACTS / "dashboard-static-device.png"), full_page=True)
        assert api_calls and all(url.startswith(service.url + "/api/") for url in api_calls)
    finally:
        server.shutdown()
        server.server_close()


def test_loading_empty_error_and_unknown_device_states_say_what_is_going_on(service, page, tmp_path):
    # Loading, then empty: the device list is held back, then answered with no devices.
    held = []
    page.route(DEVICE_LIST, lambda route: held.append(route))
    page.goto(service.url + "/")
    expect(page.locator("#loading")).to_have_text("Loading devices…")
    expect(page.locator("#loading")).to_be_visible()
    pump_until(page, lambda: held)
    held[0].fulfill(json={"devices": [], "has_more": False, "next_cursor": None})
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#empty")).to_contain_text("No devices yet")
    expect(page.locator("#empty")).to_contain_text(f"{service.url}/api/device/data")
    expect(page.locator("#loading")).to_be_hidden()
    page.unroute(DEVICE_LIST)

    # A device that has never reported.
    page.goto(service.url + "/device.html?id=never-reported-" + uuid.uuid4().hex[:6])
    expect(page.locator("#not-found")).to_be_visible()
    expect(page.locator("#not-found")).to_contain_text("No readings from")

    # The API cannot be reached: config.js points at a port where nothing listens.
    site = tmp_path / "site"
    dead = f"http://127.0.0.1:{free_port()}"
    build(site, api_base=dead)
    server, static_url = serve_directory(site)
    try:
        page.goto(static_url + "/")
        banner = page.locator("#error-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(f"Cannot load data from {dead}")
        expect(banner).to_contain_text("apiBase in config.js")
        expect(page.locator("#connection")).to_have_text("API unreachable")
        expect(page.locator("#loading")).to_be_hidden()
        expect(page.locator("#no-data")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-api-error.png"))
        page.goto(static_url + "/device.html?id=sensor-1")
        expect(page.locator("#error-banner")).to_contain_text(f"Cannot load data from {dead}")
        expect(page.locator("#no-data")).to_be_visible()
        expect(page.locator("#loading")).to_be_hidden()
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def six_metric_device(service) -> dict:
    """A device reporting all six metrics with three decimals (the most the page shows), each minute."""
    device = f"six-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    bases = {"temperature": 21.125, "humidity": 45.375, "pressure": 1013.125}
    bases |= {"voltage": 231.625, "current": 9.875, "power": 2284.125}
    readings = [
        {
            "device_id": device,
            "metric_type": metric,
            "value": round(base + 0.111 * minute, 3),
            "timestamp": iso(now - timedelta(minutes=minute)),
        }
        for minute in range(12)
        for metric, base in bases.items()
    ]
    post_readings(service, readings)
    wait_stored(service, readings)
    return {"id": device, "readings": readings}


@pytest.mark.parametrize("width", [1360, 1600])
def test_recent_readings_show_whole_values_beside_the_scroll_bar(
    service, six_metric_device, scrollbar_browser, width
):
    """Six metrics fill the table; its scroll bar must not hide the right-aligned values."""
    device, readings = six_metric_device["id"], six_metric_device["readings"]
    with desktop_page(scrollbar_browser, width) as page:
        page.goto(f"{service.url}/device.html?id={device}")
        expect(page.locator("#history tbody tr")).to_have_count(len(readings))
        for metric in UNITS:  # the newest readings, one per metric, come first
            row = page.locator(f'#history tbody tr[data-metric="{metric}"]').first
            expect(row.locator("td.num")).to_have_text(shown(series(readings, device, metric)[-1][1], metric))
        layout = page.evaluate(
            """() => {
              const wrap = document.querySelector('.readings-wrap');
              const box = wrap.getBoundingClientRect();
              const visibleRight = box.left + wrap.clientLeft + wrap.clientWidth;
              const cells = Array.from(document.querySelectorAll('#history td.num, #history th.num'));
              const textRight = cell => { const r = document.createRange(); r.selectNodeContents(cell);
                                          return r.getBoundingClientRect().right; };
              return {
                scrollbar: wrap.offsetWidth - wrap.clientWidth - wrap.clientLeft * 2,
                scrolls: wrap.scrollHeight > wrap.clientHeight,
                hiddenWidth: wrap.scrollWidth - wrap.clientWidth,
                cut: cells.filter(c => textRight(c) > visibleRight + 0.5).map(c => c.textContent),
                // The latest-value cards above: each value inside its card's border.
                spilt: Array.from(document.querySelectorAll('.latest-card'))
                  .filter(card => textRight(card.querySelector('.latest-value')) > card.getBoundingClientRect().right - 1)
                  .map(card => card.querySelector('.latest-value').textContent),
              };
            }"""
        )
        assert layout["scrolls"] and layout["scrollbar"] > 0, f"the test needs a visible scroll bar: {layout}"
        assert layout["cut"] == [], f"values cut off at {width} px: {layout}"
        assert layout["hiddenWidth"] <= 0, f"the table is wider than its visible area: {layout}"
        assert layout["spilt"] == [], f"latest values wider than their cards at {width} px: {layout}"
        page.screenshot(path=str(ARTIFACTS / f"dashboard-readings-{width}.png"))


def test_device_page_opens_on_the_window_that_holds_its_readings(service, demo_device, fleet, page):
    # An hour of readings (`make demo-data`): "last hour", and the lines fill the charts' width.
    page.goto(f"{service.url}/device.html?id={demo_device['id']}")
    wait_chart_points(page, "power", 60)
    expect(page.get_by_role("button", name="1 hour", exact=True)).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="1 day", exact=True)).to_have_attribute("aria-pressed", "false")
    oldest, newest = demo_device["oldest"], demo_device["newest"]
    for metric in UNITS:
        low, high = wait_span(page, metric, 3600, 60)
        assert low <= oldest and newest <= high, f"{metric}: the data is not all inside the chart"
        assert (newest - oldest) / (high - low) >= 0.8, f"{metric}: the data is squeezed into a corner"
    assert_chart_drawn(page, "temperature")
    assert "window=" not in page.url
    page.screenshot(path=str(ARTIFACTS / "dashboard-device-auto-window.png"), full_page=True)

    # A window the user picks wins, and is kept in the URL: a reload opens on it again.
    page.get_by_role("button", name="7 days", exact=True).click()
    assert "window=week" in page.url
    page.reload()
    wait_span(page, "power", 7 * 86400, 1800)
    expect(page.get_by_role("button", name="7 days", exact=True)).to_have_attribute("aria-pressed", "true")

    # One reading two hours old: the last day (the last hour would be empty).
    page.goto(f"{service.url}/device.html?id={fleet['names']['offline']}")
    wait_chart_points(page, "humidity", 1)
    expect(page.get_by_role("button", name="1 day", exact=True)).to_have_attribute("aria-pressed", "true")
    low, high = wait_span(page, "humidity", 86400, 300)
    assert low <= chart_data(page, "humidity")[0][0] <= high


# Eight days of hourly readings up to a minute before a moment just after the last midnight (UTC), seen
# at that moment: the x axis's first tick carries the year ("22 Nov 2026"), and the next may carry the
# date. (Recent, because readings older than the raw retention are refused.)
AXIS_NOW = datetime.now(timezone.utc).replace(hour=0, minute=0, second=30, microsecond=0)
AXIS_DAY = f"{AXIS_NOW.day} {AXIS_NOW:%b}"


@pytest.mark.parametrize("width", [1280, 1360])
def test_time_axis_labels_are_whole_and_do_not_run_into_each_other(service, browser, width):
    device = f"axis-{uuid.uuid4().hex[:6]}"
    readings = [
        {
            "device_id": device,
            "metric_type": "pressure",
            "value": 1010 + hour % 7,
            "timestamp": iso(AXIS_NOW - timedelta(hours=hour, minutes=1)),
        }
        for hour in range(8 * 24)
    ]
    post_readings(service, readings)
    wait_stored(service, readings)
    with desktop_page(browser, width, locale="en-GB") as page:
        page.clock.set_fixed_time(AXIS_NOW)
        page.add_init_script(RECORD_CANVAS_TEXT_JS)
        page.goto(f"{service.url}/device.html?id={device}&window=week")
        for window, points in (("7 days", 7 * 24), ("1 day", 24), ("1 hour", 1)):
            page.get_by_role("button", name=window, exact=True).click()
            wait_chart_points(page, "pressure", points)
            axis = page.evaluate(X_LABELS_JS, "pressure")
            labels = [label for line in axis["lines"] for label in line]
            texts = [label["text"] for label in labels]
            # Whole labels only: times, days ("29 Nov", the first with its year) and years.
            assert all(
                re.fullmatch(r"\d\d:\d\d|\d{1,2} [A-Z][a-z]{2}( \d{4})?|\d{4}", text) for text in texts
            ), texts
            assert AXIS_DAY in texts and any(str(AXIS_NOW.year) in text for text in texts), texts
            for line in axis["lines"]:
                assert line[0]["left"] >= 0 and line[-1]["right"] <= axis["width"], (
                    f"{window}: a label is cut: {line}"
                )
                for before, after in zip(line, line[1:], strict=False):
                    gap = after["left"] - before["right"]
                    assert gap >= 6, (
                        f"{window}: {before['text']!r} runs into {after['text']!r} ({gap:.1f} px apart)"
                    )
            if window == "7 days":
                page.locator('.chart-card[data-metric="pressure"]').screenshot(
                    path=str(ARTIFACTS / f"dashboard-axis-{width}.png")
                )


def test_empty_dashboard_says_how_to_get_data(service, page, tmp_path):
    cors = {"Access-Control-Allow-Origin": "*"}

    def no_devices(route):
        route.fulfill(json={"devices": [], "has_more": False, "next_cursor": None}, headers=cors)

    page.route(DEVICE_LIST, no_devices)
    # From the service itself: the command sends to this API (`make demo-data` alone would use :8080).
    page.goto(service.url + "/")
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No devices yet.")
    expect(empty).to_contain_text(f"Send readings to POST {service.url}/api/device/data")
    expect(page.locator("#demo-command")).to_have_text(f"make demo-data URL={service.url}")
    expect(empty).to_contain_text("to fill the dashboard with an hour of sample readings")
    page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"))

    # From a static website (OBS) calling the API elsewhere: that API's URL, never the page's.
    site = tmp_path / "site"
    build(site, api_base=service.url)
    server, static_url = serve_directory(site)
    try:
        page.goto(static_url + "/")
        expect(page.locator("#demo-command")).to_have_text(f"make demo-data URL={service.url}")
        expect(page.locator("#ingest-url")).to_have_text(f"{service.url}/api/device/data")

        # The API at `make run`'s address (answered here, whatever listens there): plain `make demo-data`.
        local = "http://127.0.0.1:8080"
        page.route(local + "/api/stats", lambda route: route.fulfill(status=404, json={}, headers=cors))
        build(site, api_base=local)
        page.goto(static_url + "/")
        expect(page.locator("#demo-command")).to_have_text("make demo-data")
        expect(page.locator("#ingest-url")).to_have_text(f"{local}/api/device/data")
    finally:
        server.shutdown()
        server.server_close()


# ---- windows of any length, the readings' pages, the CSV file, a fleet of more than a page -------------
@pytest.fixture(scope="module")
def month_device(service) -> dict:
    """A device with 30 days of readings: temperature every half hour, humidity every two hours, and a
    day and a quarter of silence in the middle. Temperature swings within each 3-hour bucket (the
    30-day window's), so its chart has a band."""
    device = f"month-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = now - timedelta(days=29, hours=18)
    silence = (start + timedelta(days=10), start + timedelta(days=11, hours=6))
    readings = []
    for step in range(int((now - start) / timedelta(minutes=30))):
        moment = start + timedelta(minutes=30 * step)
        if silence[0] <= moment < silence[1]:
            continue
        temperature = round(21 + 4 * math.sin(step / 40) + 1.5 * (step % 4), 3)
        readings.append(
            {
                "device_id": device,
                "metric_type": "temperature",
                "value": temperature,
                "timestamp": iso(moment),
            }
        )
        if step % 4 == 0:
            humidity = round(45 + 10 * math.cos(step / 60), 3)
            readings.append(
                {"device_id": device, "metric_type": "humidity", "value": humidity, "timestamp": iso(moment)}
            )
    post_readings(service, readings)
    wait_for(lambda: len(history_all(service, device)) == len(readings), timeout=60, interval=0.5)
    return {"id": device, "readings": readings, "silence": silence}


def reading_keys(readings: list[dict]) -> set[tuple[float, str, float]]:
    return {(epoch(r["timestamp"]), r["metric_type"], r["value"]) for r in readings}


def test_a_30_day_chart_draws_the_whole_window_from_the_api_series(service, month_device, page):
    device, readings = month_device["id"], month_device["readings"]
    page.goto(f"{service.url}/device.html?id={device}")
    page.get_by_role("button", name="30 days", exact=True).click()
    expect(page.get_by_role("button", name="30 days", exact=True)).to_have_attribute("aria-pressed", "true")
    low, high = wait_span(page, "temperature", 30 * 86400, 3 * 3600)
    times = [moment for moment, _ in series(readings, device, "temperature")]
    assert low <= times[0] and times[-1] <= high, "the chart does not span the first to the last reading"
    card = page.locator('.chart-card[data-metric="temperature"]')
    expect(card.locator(".chart-interval")).to_have_text("3h buckets")

    # What uPlot holds is the API's answer to the request the page made: same buckets, same numbers.
    source = page.evaluate("IotDashboard.chartSources.temperature")
    assert "interval=auto" in source and "agg=avg%2Cmin%2Cmax" in source and "tz=UTC" in source
    answer = api(service, source)
    assert answer["interval"] == "3h"
    held = page.evaluate("IotDashboard.charts.temperature.data.map(a => Array.from(a))")
    drawn = [(t, avg, low_, high_) for t, avg, low_, high_ in zip(*held, strict=True) if avg is not None]
    assert drawn == [(epoch(p["t"]), p["avg"], p["min"], p["max"]) for p in answer["points"]]
    assert sum(p["count"] for p in answer["points"]) == len(times), "the window lost readings"
    assert drawn[0][0] <= times[0] and times[-1] - 3 * 3600 < drawn[-1][0] <= times[-1]

    # The silence is a gap in the line (a null), not a line across.
    silence_start, silence_end = (moment.timestamp() for moment in month_device["silence"])
    gaps = [t for t, avg in zip(held[0], held[1], strict=True) if avg is None]
    assert gaps and all(silence_start - 3 * 3600 < t < silence_end for t in gaps), gaps

    # The min-max band is drawn: half-way between a wide bucket's maximum and its average, the canvas
    # holds the band's translucent colour.
    band = page.evaluate(
        """([color]) => {
          const u = IotDashboard.charts.temperature;
          const rgb = [1, 3, 5].map(i => parseInt(color.slice(i, i + 2), 16));
          const w = u.ctx.canvas.width;
          const image = u.ctx.getImageData(0, 0, w, u.ctx.canvas.height).data;
          const checked = [];
          u.data[0].forEach((t, i) => {
            if (u.data[1][i] == null || i === 0 || i === u.data[0].length - 1) return;
            const x = Math.round(u.valToPos(t, "x", true));
            const top = u.valToPos(u.data[3][i], "y", true), mid = u.valToPos(u.data[1][i], "y", true);
            if (mid - top < 16) return;
            const at = ((Math.round((top + mid) / 2)) * w + x) * 4;
            const alpha = image[at + 3];
            checked.push(alpha > 20 && alpha < 200 && rgb.every((c, k) => Math.abs(image[at + k] - c) < 60));
          });
          return checked;
        }""",
        [COLORS["temperature"]],
    )
    assert len(band) > 20 and sum(band) >= 0.9 * len(band), f"no min-max band where buckets vary: {band}"
    assert_chart_drawn(page, "temperature")
    ARTIFACTS.mkdir(exist_ok=True)
    card.screenshot(path=str(ARTIFACTS / "dashboard-30-days.png"))


def test_a_year_is_drawn_in_day_buckets_from_the_readers_midnights(service, month_device, browser):
    """The browser's time zone goes with the request: days begin at its midnight, also across the
    change from summer time (New York's falls in November, so one of the days lasts 25 hours)."""
    device, readings = month_device["id"], month_device["readings"]
    zone = "America/New_York"
    with desktop_page(browser, 1280, timezone_id=zone) as page:
        page.goto(f"{service.url}/device.html?id={device}&window=year")
        low, high = wait_span(page, "temperature", 365 * 86400, 86400)
        card = page.locator('.chart-card[data-metric="temperature"]')
        expect(card.locator(".chart-interval")).to_have_text("1d buckets")
        source = page.evaluate("IotDashboard.chartSources.temperature")
        assert "tz=America%2FNew_York" in source
        answer = api(service, source)
        assert answer["interval"] == "1d" and answer["tz"] == zone
        held = page.evaluate("IotDashboard.charts.temperature.data.map(a => Array.from(a))")
        drawn = [(t, avg, least, most) for t, avg, least, most in zip(*held, strict=True) if avg is not None]
        assert drawn == [(epoch(p["t"]), p["avg"], p["min"], p["max"]) for p in answer["points"]]
        starts = [datetime.fromisoformat(p["t"]).astimezone(ZoneInfo(zone)) for p in answer["points"]]
        assert all((start.hour, start.minute) == (0, 0) for start in starts), starts
        assert sum(p["count"] for p in answer["points"]) == len(series(readings, device, "temperature"))
        expect(card.locator(".chart-summary")).to_have_text(
            re.compile(rf"^{len(series(readings, device, 'temperature')):,} readings")
        )


def test_the_readings_table_pages_through_a_custom_range_with_older_and_newest(service, month_device, page):
    device, readings = month_device["id"], month_device["readings"]
    to = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=2)
    since = to - timedelta(days=5)
    page.goto(f"{service.url}/device.html?id={device}")
    expect(page.locator("#history tbody tr").first).to_be_visible()
    # The browser runs in UTC here, so the local times typed are UTC.
    page.fill("#range-from", since.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#range-to", to.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Show range").click()
    assert "from=" in page.url and "to=" in page.url
    page.wait_for_function(
        "to => { const row = document.querySelector('#history tbody tr[data-ts]');"
        " return row && Number(row.dataset.ts) < to; }",
        arg=to.timestamp(),
    )
    for button in page.locator("#windows button").all():
        expect(button).to_have_attribute("aria-pressed", "false")
    wait_span(page, "temperature", 5 * 86400, 1800)

    expected = {
        key
        for key in reading_keys(readings)
        if since.timestamp() <= key[0] < to.timestamp()  # from inclusive, to exclusive
    }
    assert len(expected) > 250, "the test needs a window of several pages"
    older = page.get_by_role("button", name="Older", exact=True)
    newest = page.get_by_role("button", name="Newest", exact=True)
    count = page.locator("#history-count")
    expect(count).to_have_text(re.compile(r"^1–100, newest first$"))
    expect(newest).to_be_disabled()
    seen: list[tuple[float, str, float]] = []
    for number in range(1, 10):
        expect(count).to_have_text(re.compile(rf"^{(number - 1) * 100 + 1:,}–"))
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('#history tbody tr'))"
            ".map(r => [Number(r.dataset.ts), r.dataset.metric, Number(r.cells[2].dataset.value)])"
        )
        seen += [tuple(row) for row in rows]
        assert [row[0] for row in rows] == sorted((row[0] for row in rows), reverse=True), "not newest first"
        if older.is_disabled():
            break
        older.click()
    else:
        raise AssertionError("more pages than the window holds")
    assert len(seen) == len(set(seen)), "a reading shown twice"
    assert set(seen) == expected
    expect(count).to_have_text(re.compile(r", the oldest$"))
    newest.click()
    expect(count).to_have_text("1–100, newest first")
    expect(newest).to_be_disabled()
    first = page.evaluate("Number(document.querySelector('#history tbody tr').dataset.ts)")
    assert first == max(key[0] for key in expected)

    # One metric chosen: its readings only, through the API's own filter.
    page.locator('.chip[data-metric="temperature"] input').uncheck()
    expect(page.locator('#history tbody tr[data-metric="temperature"]')).to_have_count(0)
    expect(page.locator('#history tbody tr[data-metric="humidity"]')).to_have_count(
        min(100, sum(1 for key in expected if key[1] == "humidity"))
    )


def test_download_csv_follows_the_link_header_through_every_page_of_the_window(service, month_device, page):
    device, readings = month_device["id"], month_device["readings"]
    csv_requests: list[str] = []
    page.on(
        "request", lambda request: csv_requests.append(request.url) if "format=csv" in request.url else None
    )
    page.goto(f"{service.url}/device.html?id={device}&window=month")
    wait_span(page, "temperature", 30 * 86400, 3 * 3600)
    with page.expect_download(timeout=TIMEOUT_MS) as started:
        page.get_by_role("button", name="Download CSV").click()
    download = started.value
    assert re.fullmatch(rf"{device}-\d{{8}}T\d{{6}}Z-\d{{8}}T\d{{6}}Z\.csv", download.suggested_filename)
    text = Path(download.path()).read_text()
    lines = text.splitlines()
    assert lines[0] == "timestamp,device_id,metric_type,value"
    assert lines.count(lines[0]) == 1, "the header line is repeated"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(readings) > 1000
    assert {row["device_id"] for row in rows} == {device}
    got = [(epoch(row["timestamp"]), row["metric_type"], float(row["value"])) for row in rows]
    assert len(set(got)) == len(got) and set(got) == reading_keys(readings)
    assert len(csv_requests) >= 2 and "cursor=" in csv_requests[-1], csv_requests
    expect(page.locator("#csv-status")).to_have_text(
        f"Saved {len(readings):,} readings as {download.suggested_filename}."
    )


def test_download_csv_stops_cleanly_with_the_apis_message(service, month_device, page):
    def refuse(route):
        route.fulfill(status=400, json={"error": "cursor does not belong to this listing"})

    page.goto(f"{service.url}/device.html?id={month_device['id']}&window=month")
    wait_span(page, "temperature", 30 * 86400, 3 * 3600)
    page.route(re.compile(r"format=csv.*cursor=|cursor=.*format=csv"), refuse)
    page.get_by_role("button", name="Download CSV").click()
    status = page.locator("#csv-status")
    expect(status).to_have_text(
        re.compile(r"^Download stopped after 1,000 readings, nothing saved: cursor does not belong")
    )
    expect(status).to_have_class(re.compile("error-text"))
    expect(page.get_by_role("button", name="Download CSV")).to_be_enabled()


def test_the_overview_lists_every_device_when_there_are_more_than_a_page(service, page):
    prefix = f"fleet-{uuid.uuid4().hex[:6]}-"
    now = iso(datetime.now(timezone.utc).replace(microsecond=0))
    readings = [
        {"device_id": f"{prefix}{n:04d}", "metric_type": "power", "value": float(n), "timestamp": now}
        for n in range(1100)
    ]
    post_readings(service, readings)
    wait_for(
        lambda: len([d for d in all_devices(service) if d["device_id"].startswith(prefix)]) == 1100,
        timeout=60,
        interval=0.5,
    )
    list_requests: list[str] = []
    page.on(
        "request",
        lambda request: list_requests.append(request.url) if "/api/devices" in request.url else None,
    )
    page.goto(f"{service.url}/?q={prefix}")
    expect(page.locator("#shown-count")).to_have_text(re.compile(r"^Showing 1,100 of [\d,]+$"))
    total = len(all_devices(service))
    assert total > 1100
    expect(page.locator("#count-devices")).to_have_text(f"{total:,}")
    expect(page.locator("#count-online")).to_have_text(re.compile(r"^[\d,]+$"))
    assert int(page.inner_text("#count-online").replace(",", "")) >= 1100
    assert any("cursor=" in url for url in list_requests), "the second page was never asked for"

    # The table holds the first 500 matching rows and grows by 500 with "Show more", to all of them.
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(500)
    expect(page.locator("#more-count")).to_have_text("500 of 1,100 listed")
    page.get_by_role("button", name="Show 500 more").click()
    expect(rows).to_have_count(1000)
    page.get_by_role("button", name="Show 100 more").click()
    expect(rows).to_have_count(1100)
    expect(page.locator("#more")).to_be_hidden()
    ids = page.evaluate(
        "Array.from(document.querySelectorAll('#devices tbody tr')).map(r => r.dataset.deviceId)"
    )
    assert ids == [f"{prefix}{n:04d}" for n in range(1100)]
    last = page.locator(f'tr[data-device-id="{prefix}1099"] td[data-metric="power"]')
    expect(last).to_have_text("1,099 W")

    # Sorting is of the whole fleet, not of the rows on the page: the highest power first.
    page.select_option("#sort", "power:desc")
    expect(rows.first).to_have_attribute("data-device-id", f"{prefix}1099")


# ---- auth on: signing in with a read key --------------------------------------------------------------
KEY_ITEM = "iotDashboard.readKey"  # the sessionStorage item app.js keeps the key in
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
# Chromium notes every refused request in the console; a 401 or 403 the page handles is no fault.
REFUSED_REQUEST = re.compile(r"Failed to load resource: the server responded with a status of 40[13]\b")


def token_cli(env: dict[str, str], *args: str) -> str:
    """``python -m local.tokens ARGS`` against the database ``env`` names; what it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "local.tokens", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Secured:
    """A service with auth on, its keys, and the OBS layout on another origin pointing at it."""

    def __init__(self, service: LocalService, env: dict[str, str], static_url: str, run: str, gateway: str):
        self.service, self.env, self.static_url, self.run = service, env, static_url, run
        self.url = service.url
        self.prefix = f"sec-{run}-"
        self.devices = [f"sec-{run}-a", f"sec-{run}-b"]
        self.gateway = gateway  # sends (and reads) for both devices
        self.reader = self.tokens("read", f"viewer-{run}")  # reads every device
        self.scoped = self.tokens("read", f"viewer-a-{run}", "--device", f"sec-{run}-a*")
        self.readings: list[dict] = []

    def tokens(self, *args: str) -> str:
        return token_cli(self.env, *args)


@pytest.fixture(scope="module")
def secured(service, service_env, tmp_path_factory) -> Iterator[Secured]:
    """Auth on, two devices (``a`` with more readings than one CSV page), a read key for every device
    and one for ``a`` only. The static server is started first, so the API can name its origin in
    CORS_ORIGINS; revocation takes effect within AUTH_CACHE_SECONDS (1 s here)."""
    site = tmp_path_factory.mktemp("secured-site")
    server, static_url = serve_directory(site)
    run = uuid.uuid4().hex[:6]
    env = isolated_env(
        service_env, AUTH_ENABLED="true", AUTH_CACHE_SECONDS="1", CORS_ORIGINS=static_url, DEMO_MODE="false"
    )
    cli_env = {**os.environ, **env}
    a, b = f"sec-{run}-a", f"sec-{run}-b"
    gateway = token_cli(cli_env, "register", f"gw-{run}", "--device", a, "--device", b)
    running = LocalService(
        env,
        tmp_path_factory.mktemp("secured-logs"),
        warmup_device=a,
        warmup_headers={"Authorization": f"Bearer {gateway}"},
    )
    running.start()
    try:
        secured = Secured(running, cli_env, static_url, run, gateway)
        build(site, api_base=running.url)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        readings = [
            {
                "device_id": a,
                "metric_type": "temperature",
                "value": 20 + (n % 50) / 8,
                "timestamp": iso(now - timedelta(minutes=n)),
            }
            for n in range(1, 1051)
        ]
        readings += [
            {
                "device_id": b,
                "metric_type": "humidity",
                "value": 40.5 + n,
                "timestamp": iso(now - timedelta(minutes=n)),
            }
            for n in range(1, 4)
        ]
        post_readings(running, readings, token=gateway)
        wait_for(
            lambda: (
                len(history_all(running, a, token=gateway)) == 1050 + 1  # and the warm-up reading
                and len(history_all(running, b, token=gateway)) == 3
            ),
            timeout=60,
            interval=0.5,
        )
        secured.readings = readings
        yield secured
    finally:
        running.stop()
        server.shutdown()
        server.server_close()


def watch_console(page: Page) -> list[str]:
    """Console errors other than the browser's note on a 401 or 403 the page handles: a blocked CORS
    request or anything the Content-Security-Policy refused shows up here."""
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and not REFUSED_REQUEST.search(message.text)
            else None
        ),
    )
    return problems


def sign_in(page: Page, key: str) -> None:
    expect(page.locator("#sign-in")).to_be_visible()
    page.fill("#sign-in-key", key)
    page.get_by_role("button", name="Sign in").click()


def stored_keys(page: Page) -> tuple[str | None, int]:
    """The key in sessionStorage, and how many items localStorage holds."""
    key, kept = page.evaluate(f"[sessionStorage.getItem('{KEY_ITEM}'), localStorage.length]")
    return key, kept


def test_with_auth_on_the_overview_asks_for_a_read_key_and_keeps_it_for_the_tab_only(secured, page):
    problems = watch_console(page)
    a, b = secured.devices
    responses = []
    page.on("response", lambda response: responses.append(response))
    page.goto(f"{secured.url}/?q={secured.prefix}")

    # Asked, in the page: nothing of the fleet is shown, no "Sign out" yet.
    form = page.locator("#sign-in")
    expect(form).to_be_visible()
    expect(page.locator("#sign-in-reason")).to_contain_text("asks for a read key")
    expect(page.locator("#connection")).to_have_text("Sign-in needed")
    expect(page.locator("#sign-out")).to_be_hidden()
    expect(page.locator("#devices")).to_be_hidden()
    expect(page.locator("#error-banner")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-sign-in.png"))
    page.fill("#sign-in-key", "not a key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("That is not a key")

    sign_in(page, secured.reader)
    expect(form).to_be_hidden()
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f'tr[data-device-id="{b}"] td[data-metric="humidity"]')).to_have_text("41.5 %")
    expect(page.locator("#connection")).to_have_text(re.compile(r"^Live"))
    expect(page.locator("#sign-out")).to_be_visible()
    assert stored_keys(page) == (secured.reader, 0)
    assert secured.reader not in page.url

    # The same tab keeps it: the device page reads with it, no second sign-in.
    page.locator(f'tr[data-device-id="{a}"] a').click()
    page.wait_for_url(re.compile(r"/device\.html\?id="))
    latest = max(secured.readings, key=lambda r: (r["device_id"] == a, r["timestamp"]))
    expect(page.locator('.latest-card[data-metric="temperature"] .latest-value')).to_have_text(
        shown(latest["value"], "temperature")
    )
    page.wait_for_function("() => IotDashboard.charts && IotDashboard.charts.temperature")
    expect(form).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "dashboard-signed-in-device.png"))

    # Every API request sent after signing in carried the key; nothing was asked with it in a URL.
    api_answers = [r for r in responses if "/api/" in r.url]
    answered = [r for r in api_answers if r.status == 200]
    assert answered and all(
        r.request.all_headers().get("authorization") == f"Bearer {secured.reader}" for r in answered
    )
    assert {r.status for r in api_answers} <= {200, 401}
    assert not any(secured.reader in r.url for r in responses)

    # Every answer of the dashboard function carries the security headers.
    served = [r for r in responses if r.url.startswith(secured.url) and "/api/" not in r.url]
    paths = {urllib.parse.urlsplit(r.url).path for r in served}
    assert {"/", "/device.html", "/static/app.js", "/static/style.css", "/static/config.js"} <= paths
    for response in served:
        headers = response.all_headers()
        assert headers.items() >= SECURITY_HEADERS.items(), response.url
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, response.url
        assert "unsafe-inline" not in policy

    # Signing out forgets the key and asks again.
    page.get_by_role("button", name="Sign out").click()
    expect(form).to_be_visible()
    expect(page.locator("#sign-in-reason")).to_contain_text("Signed out")
    expect(page.locator("#sign-out")).to_be_hidden()
    expect(page.locator("#content")).to_be_hidden()
    assert stored_keys(page) == (None, 0)
    assert not problems, problems


def test_a_refused_or_revoked_key_is_said_and_asked_for_again(secured, page):
    problems = watch_console(page)
    page.goto(f"{secured.url}/?q={secured.prefix}")
    sign_in(page, "iot_" + "A" * 43)  # the shape of a key, but no key
    reason = page.locator("#sign-in-reason")
    expect(reason).to_contain_text("refused the key")
    assert stored_keys(page) == (None, 0)

    name = f"revocable-{secured.run}"
    key = secured.tokens("read", name)
    sign_in(page, key)
    expect(page.locator("#devices tbody tr")).to_have_count(2)
    secured.tokens("revoke", name)
    # The next refresh (5 s) after the authorizer's memory of the key (1 s here) has run out.
    expect(page.locator("#sign-in")).to_be_visible(timeout=30_000)
    expect(reason).to_contain_text("revoked")
    expect(page.locator("#devices")).to_be_hidden()
    assert stored_keys(page) == (None, 0)
    page.screenshot(path=str(ARTIFACTS / "dashboard-key-refused.png"))
    sign_in(page, secured.reader)  # and a good key picks up where it was
    expect(page.locator("#devices tbody tr")).to_have_count(2)
    assert not problems, problems


def test_a_key_for_some_devices_lists_those_and_says_which_it_may_not_read(secured, page):
    problems = watch_console(page)
    a, b = secured.devices
    page.goto(f"{secured.url}/?q={secured.prefix}")
    sign_in(page, secured.scoped)
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-device-id", a)
    page.goto(f"{secured.url}/device.html?id={b}")
    refused = page.locator("#not-found")
    expect(refused).to_be_visible()
    expect(refused).to_contain_text(f"This key may not read device “{b}”")
    expect(page.locator("#sign-in")).to_be_hidden()
    expect(page.locator("#content")).to_be_hidden()
    expect(page.locator("#error-banner")).to_be_hidden()
    assert not problems, problems


def test_from_another_origin_the_key_goes_with_every_request_and_the_csv_pages(secured, page):
    """The OBS layout on a plain static server (no headers: the meta is the policy) calling the API on
    another origin: with a key each request is preflighted, and the CSV download follows the Link
    pages with the key."""
    problems = watch_console(page)
    a, _ = secured.devices
    page.goto(f"{secured.static_url}/?q={secured.prefix}")
    sign_in(page, secured.reader)
    expect(page.locator("#devices tbody tr")).to_have_count(2)
    page.locator(f'tr[data-device-id="{a}"] a').click()
    page.wait_for_url(f"{secured.static_url}/device.html?id={a}")
    page.wait_for_function("() => IotDashboard.charts && IotDashboard.charts.temperature")
    expect(page.locator("#sign-in")).to_be_hidden()
    csv_pages: list[str] = []
    page.on(
        "request", lambda r: csv_pages.append(r.url) if "format=csv" in r.url and r.method == "GET" else None
    )
    with page.expect_download(timeout=TIMEOUT_MS) as started:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(started.value.path()).read_text())))
    expected = [r for r in secured.readings if r["device_id"] == a]
    assert len(rows) >= len(expected) > 1000 and len(csv_pages) >= 2
    assert {(epoch(r["timestamp"]), float(r["value"])) for r in expected} <= {
        (epoch(r["timestamp"]), float(r["value"])) for r in rows
    }
    expect(page.locator("#sign-in")).to_be_hidden()
    assert stored_keys(page) == (secured.reader, 0)
    assert not problems, problems
