"""The dashboard's alert views in a real browser (headless Debian chromium through Playwright), against
the service: rules made through the API, breaching readings posted through it and judged by the
consumer, then the overview's open alerts, the device page's banner and marked charts, acknowledging
from both pages, and the rules page adding (a bad rule's 400 shown by the form) and deleting rules.
With auth on, a read key is told that acknowledging needs an admin key, and an admin key acknowledges.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import Page, expect

from . import test_dashboard_browser as ui
from .conftest import LocalService, isolated_env, wait_for
from .test_dashboard_browser import ARTIFACTS, iso, sign_in, token_cli

# The browser fixtures of the dashboard's other browser tests: chromium once per module, a page per test
# that fails on JavaScript errors and Content-Security-Policy complaints.
playwright, browser, page = ui.playwright, ui.browser, ui.page

pytestmark = pytest.mark.integration

# What the device page draws where an alert opened (device.js, ALERT_LINE).
ALERT_LINE_RGB = (220, 38, 38)


def call(
    service, method: str, path: str, body: object = None, *, token: str | None = None
) -> tuple[int, dict]:
    """One API request: its status and JSON answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(service.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def make_rule(service, rule: dict, *, token: str | None = None) -> dict:
    status, body = call(service, "POST", "/api/alert-rules", rule, token=token)
    assert status == 201, body
    return body


def open_alerts(service, device: str, *, token: str | None = None) -> list[dict]:
    status, body = call(service, "GET", f"/api/alerts?state=open&device_id={device}", token=token)
    assert status == 200, body
    return body["alerts"]


def post(service, readings: list[dict], *, token: str | None = None) -> None:
    status, body = call(service, "POST", "/api/device/data/bulk", {"readings": readings}, token=token)
    assert status == 200 and body["processed_count"] == len(readings), body


def breach(service, device: str, rules: list[dict], *, token: str | None = None) -> list[dict]:
    """Readings that breach every rule of ``rules`` (temperature above 50, humidity below 20), posted
    through the API; waits until the consumer has opened an alert per rule, and returns them."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    readings = [
        {
            "device_id": device,
            "metric_type": metric,
            "value": value,
            "timestamp": iso(now - timedelta(minutes=ago)),
        }
        for metric, values in (("temperature", (21.5, 55.0, 61.25)), ("humidity", (45.0, 15.0, 12.5)))
        for ago, value in zip((6, 4, 2), values, strict=True)
    ]
    post(service, readings, token=token)
    wanted = {rule["id"] for rule in rules}
    return wait_for(
        lambda: (
            (found := open_alerts(service, device, token=token))
            and {a["rule_id"] for a in found} == wanted
            and found
        ),
        timeout=30,
        interval=0.2,
    )


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alert_line_drawn(page: Page, metric: str) -> bool:
    """Is the red line of an open alert on ``metric``'s chart, where its alert opened?"""
    return page.evaluate(
        """([metric, rgb]) => {
          const u = IotDashboard.charts[metric];
          const from = IotDashboard.chartAlerts[metric];
          if (!u || from == null) return false;
          const x = Math.round(u.valToPos(from, "x", true));
          const y = Math.round(u.bbox.top + u.bbox.height / 2);
          const [r, g, b, a] = u.ctx.getImageData(x, y, 1, 1).data;
          return a === 255 && [r, g, b].every((c, i) => Math.abs(c - rgb[i]) <= 8);
        }""",
        [metric, list(ALERT_LINE_RGB)],
    )


@pytest.fixture
def device_with_alerts(service) -> Iterator[dict]:
    """A device of its own with two open alerts (temperature above 50, humidity below 20); the rules
    are deleted afterwards."""
    run = uuid.uuid4().hex[:6]
    device = f"alerting-{run}"
    hot = make_rule(
        service,
        {
            "name": f"Too hot {run}",
            "device": device,
            "metric_type": "temperature",
            "condition": ">",
            "threshold": 50,
        },
    )
    dry = make_rule(
        service,
        {
            "name": f"Too dry {run}",
            "device": device,
            "metric_type": "humidity",
            "condition": "<",
            "threshold": 20,
        },
    )
    alerts = breach(service, device, [hot, dry])
    by_metric = {alert["metric_type"]: alert for alert in alerts}
    yield {"device": device, "run": run, "hot": hot, "dry": dry, "alerts": by_metric}
    for rule in (hot, dry):
        call(service, "DELETE", f"/api/alert-rules/{rule['id']}")


def test_open_alerts_are_listed_marked_on_the_charts_and_acknowledged_from_the_pages(
    service, device_with_alerts, page
):
    device = device_with_alerts["device"]
    hot, dry = device_with_alerts["alerts"]["temperature"], device_with_alerts["alerts"]["humidity"]
    assert hot["value"] == 55.0 and dry["value"] == 15.0  # the first breaching reading opened each

    # The overview: the count (of every open alert the API lists) and one row per alert of the device.
    page.goto(service.url + "/")
    status, everything = call(service, "GET", "/api/alerts?state=open&limit=1000")
    assert status == 200 and not everything["has_more"]
    expect(page.locator("#count-alerts")).to_have_text(f"{len(everything['alerts']):,}")
    expect(page.locator("#stat-alerts")).to_have_class("stat stat-alerts stat-alerting")
    rows = page.locator(f'#alerts tbody tr[data-device-id="{device}"]')
    expect(rows).to_have_count(2)
    hot_row = page.locator(f'#alerts tbody tr[data-alert-id="{hot["id"]}"]')
    expect(hot_row).to_contain_text("Temperature")
    expect(hot_row).to_contain_text(hot["rule_name"])
    expect(hot_row).to_contain_text("55 °C")
    expect(hot_row.locator("time")).to_have_text(re.compile(r"^\d+ min ago$"))
    expect(hot_row.locator("a.device-link")).to_have_attribute("href", f"/device.html?id={device}")

    # Acknowledged from the overview (auth off: anyone may); who and when replace the button.
    hot_row.get_by_role("button", name="Acknowledge").click()
    expect(hot_row.locator(".acknowledged")).to_contain_text("✓ auth off")
    expect(hot_row.get_by_role("button", name="Acknowledge")).to_be_hidden()
    acknowledged = {a["id"]: a for a in open_alerts(service, device)}
    assert acknowledged[hot["id"]]["acknowledged_by"] == "auth off"
    assert acknowledged[dry["id"]]["acknowledged_at"] is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#open-alerts").screenshot(path=str(ARTIFACTS / "dashboard-open-alerts.png"))

    # The device page: a banner with both alerts, and both metrics' charts marked from their opening.
    hot_row.locator("a.device-link").click()
    page.wait_for_url(f"{service.url}/device.html?id={device}")
    banner = page.locator("#device-alerts")
    expect(banner).to_be_visible()
    expect(page.locator("#device-alerts-title")).to_have_text("2 open alerts on this device")
    expect(banner.locator(f'tr[data-alert-id="{hot["id"]}"] .acknowledged')).to_contain_text("✓ auth off")
    for metric, alert in (("temperature", hot), ("humidity", dry)):
        card = page.locator(f'.chart-card[data-metric="{metric}"]')
        expect(card).to_have_class("panel chart-card alerting")
        expect(card.locator(".alert-badge")).to_be_visible()
        expect(card.locator(".alert-badge")).to_contain_text("Alert since")
        page.wait_for_function(
            "m => IotDashboard.charts[m] && IotDashboard.chartAlerts[m] != null", arg=metric
        )
        assert page.evaluate("m => IotDashboard.chartAlerts[m]", metric) == epoch(alert["opened_at"])
        wait_for(lambda metric=metric: alert_line_drawn(page, metric), timeout=10, interval=0.1)

    # Acknowledged from the device page's banner.
    dry_row = banner.locator(f'tr[data-alert-id="{dry["id"]}"]')
    dry_row.get_by_role("button", name="Acknowledge").click()
    expect(dry_row.locator(".acknowledged")).to_contain_text("✓ auth off")
    assert all(a["acknowledged_by"] == "auth off" for a in open_alerts(service, device))
    page.screenshot(path=str(ARTIFACTS / "dashboard-device-alerts.png"))

    # Back within bounds: the alert closes, and the next refresh unmarks the chart and shrinks the banner.
    moment = datetime.now(timezone.utc).replace(microsecond=0)
    post(
        service,
        [{"device_id": device, "metric_type": "temperature", "value": 22.0, "timestamp": iso(moment)}],
    )
    wait_for(lambda: [a["id"] for a in open_alerts(service, device)] == [dry["id"]], timeout=30, interval=0.2)
    expect(page.locator("#device-alerts-title")).to_have_text("1 open alert on this device")
    expect(page.locator('.chart-card[data-metric="temperature"]')).to_have_class("panel chart-card")
    expect(page.locator('.chart-card[data-metric="humidity"]')).to_have_class("panel chart-card alerting")


def test_the_rules_page_adds_shows_a_bad_rules_message_deletes_and_lists_closed_alerts(
    service, device_with_alerts, page
):
    device, run = device_with_alerts["device"], device_with_alerts["run"]
    hot = device_with_alerts["alerts"]["temperature"]
    # One alert closed already: the history below the rules lists it.
    moment = datetime.now(timezone.utc).replace(microsecond=0)
    post(
        service,
        [{"device_id": device, "metric_type": "temperature", "value": 20.0, "timestamp": iso(moment)}],
    )
    wait_for(
        lambda: hot["id"] not in [a["id"] for a in open_alerts(service, device)], timeout=30, interval=0.2
    )

    page.goto(service.url + "/")
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Alerts").click()
    page.wait_for_url(service.url + "/alerts.html")
    rules = page.locator("#rules tbody")
    expect(rules.locator(f'tr[data-rule-id="{device_with_alerts["hot"]["id"]}"]')).to_contain_text(
        "Temperature > 50 °C"
    )
    closed = page.locator(f'#closed-alerts tbody tr[data-alert-id="{hot["id"]}"]')
    expect(closed).to_contain_text(device)
    expect(closed).to_contain_text(hot["rule_name"])
    expect(closed).to_contain_text("55 °C")

    # A threshold rule without its threshold: the API's 400 message, next to the form; nothing added.
    before = call(service, "GET", "/api/alert-rules")[1]["rules"]
    page.fill("#rule-name", f"Voltage sag {run}")
    page.fill("#rule-device", f"{device}*")
    page.select_option("#rule-metric", "voltage")
    page.select_option("#rule-condition", "<")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#rule-error")).to_have_text("threshold is required: a number")
    # And a clear threshold on the wrong side of it.
    page.fill("#rule-threshold", "210")
    page.fill("#rule-clear", "200")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#rule-error")).to_contain_text(
        "clear_threshold must be at or above the threshold (210)"
    )
    assert call(service, "GET", "/api/alert-rules")[1]["rules"] == before

    # Fixed: added, listed, the form cleared and the error gone.
    page.fill("#rule-clear", "215")
    page.fill("#rule-for", "30")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#rule-error")).to_be_hidden()
    expect(page.locator("#rules-message")).to_contain_text(f"Added the rule “Voltage sag {run}”")
    sag = next(
        r for r in call(service, "GET", "/api/alert-rules")[1]["rules"] if r["name"] == f"Voltage sag {run}"
    )
    assert sag | {"id": 0, "created_at": ""} == {
        "id": 0,
        "name": f"Voltage sag {run}",
        "kind": "threshold",
        "device": f"{device}*",
        "metric_type": "voltage",
        "condition": "<",
        "threshold": 210.0,
        "clear_threshold": 215.0,
        "for_seconds": 30.0,
        "created_at": "",
    }
    sag_row = rules.locator(f'tr[data-rule-id="{sag["id"]}"]')
    expect(sag_row).to_contain_text("Voltage < 210 V for 30 s, clears at or above 215 V")
    expect(page.locator("#rule-name")).to_have_value("")

    # A no-data rule.
    page.select_option("#rule-kind", "no_data")
    expect(page.locator("#rule-threshold")).to_be_hidden()
    page.fill("#rule-name", f"Silent {run}")
    page.fill("#rule-device", device)
    page.fill("#rule-after", "600")
    page.get_by_role("button", name="Add rule").click()
    silent = wait_for(
        lambda: next(
            (r for r in call(service, "GET", "/api/alert-rules")[1]["rules"] if r["name"] == f"Silent {run}"),
            None,
        )
    )
    assert silent["kind"] == "no_data" and silent["after_seconds"] == 600.0 and silent["device"] == device
    silent_row = rules.locator(f'tr[data-rule-id="{silent["id"]}"]')
    expect(silent_row).to_contain_text("No reading for 10 min")

    # Deleting asks first: dismissed, the rule stays; accepted, it goes.
    page.once("dialog", lambda dialog: dialog.dismiss())
    sag_row.get_by_role("button", name="Delete").click()
    expect(sag_row).to_be_visible()
    assert any(r["id"] == sag["id"] for r in call(service, "GET", "/api/alert-rules")[1]["rules"])
    messages: list[str] = []
    for row in (sag_row, silent_row):
        page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
        row.get_by_role("button", name="Delete").click()
        expect(row).to_have_count(0)
    assert messages == [
        f"Delete the rule “Voltage sag {run}”? Its open alerts close.",
        f"Delete the rule “Silent {run}”? Its open alerts close.",
    ]
    left = {r["id"] for r in call(service, "GET", "/api/alert-rules")[1]["rules"]}
    assert sag["id"] not in left and silent["id"] not in left
    page.screenshot(path=str(ARTIFACTS / "dashboard-alert-rules.png"), full_page=True)


# ---- auth on: acknowledging needs an admin key ----------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(service, service_env, tmp_path_factory) -> Iterator[dict]:
    """Auth on (a service of its own), a device with an open alert, a read key and an admin key."""
    run = uuid.uuid4().hex[:6]
    device = f"guarded-{run}"
    env = isolated_env(service_env, AUTH_ENABLED="true", AUTH_CACHE_SECONDS="1", DEMO_MODE="false")
    cli_env = {**os.environ, **env}
    gateway = token_cli(cli_env, "register", f"gw-{run}", "--device", device)
    running = LocalService(
        env,
        tmp_path_factory.mktemp("guarded-logs"),
        warmup_device=device,
        warmup_headers={"Authorization": f"Bearer {gateway}"},
    )
    running.start()
    try:
        admin = token_cli(cli_env, "admin", f"ops-{run}")
        rule = make_rule(
            running,
            {
                "name": f"Hot {run}",
                "device": device,
                "metric_type": "temperature",
                "condition": ">",
                "threshold": 50,
            },
            token=admin,
        )
        (alert,) = [a for a in breach(running, device, [rule], token=gateway) if a["rule_id"] == rule["id"]]
        yield {
            "service": running,
            "device": device,
            "alert": alert,
            "admin": admin,
            "admin_name": f"ops-{run}",
            "reader": token_cli(cli_env, "read", f"viewer-{run}"),
        }
        call(running, "DELETE", f"/api/alert-rules/{rule['id']}", token=admin)
    finally:
        running.stop()


def test_with_auth_on_a_read_key_is_told_acknowledging_needs_an_admin_key(guarded, page):
    service, device, alert = guarded["service"], guarded["device"], guarded["alert"]
    page.goto(service.url + "/")
    sign_in(page, guarded["reader"])
    row = page.locator(f'#alerts tbody tr[data-alert-id="{alert["id"]}"]')
    expect(row).to_contain_text(device)
    row.get_by_role("button", name="Acknowledge").click()
    expect(row.locator(".ack-error")).to_have_text(
        "Acknowledging needs an admin key: this tab's key may only read. Sign out and sign in with an admin key."
    )
    expect(row.get_by_role("button", name="Acknowledge")).to_be_enabled()
    assert open_alerts(service, device, token=guarded["admin"])[0]["acknowledged_at"] is None

    # The rules page says the same of a change.
    page.goto(service.url + "/alerts.html")
    expect(page.locator("#rules tbody tr")).not_to_have_count(0)
    page.fill("#rule-name", "not allowed")
    page.fill("#rule-threshold", "1")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#rule-error")).to_contain_text("Changing rules needs an admin key")

    # Signed in with the admin key, the same button acknowledges, in the admin key's name.
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{service.url}/device.html?id={device}")
    sign_in(page, guarded["admin"])
    row = page.locator(f'#device-alerts tr[data-alert-id="{alert["id"]}"]')
    row.get_by_role("button", name="Acknowledge").click()
    expect(row.locator(".acknowledged")).to_contain_text(f"✓ {guarded['admin_name']}")
    assert open_alerts(service, device, token=guarded["admin"])[0]["acknowledged_by"] == guarded["admin_name"]


def test_the_alert_views_fit_a_phone_screen(service, device_with_alerts, browser):
    device = device_with_alerts["device"]
    with ui.desktop_page(browser, 390, 844, is_mobile=True, has_touch=True) as phone:
        for path, shown in (
            ("/", f'#alerts tr[data-device-id="{device}"]'),
            (f"/device.html?id={device}", "#device-alerts"),
            ("/alerts.html", f'#rules tr[data-rule-id="{device_with_alerts["hot"]["id"]}"]'),
        ):
            phone.goto(service.url + path)
            expect(phone.locator(shown).first).to_be_visible()
            assert ui.no_horizontal_overflow(phone), path
        phone.screenshot(path=str(ARTIFACTS / "dashboard-alert-rules-phone.png"), full_page=True)
