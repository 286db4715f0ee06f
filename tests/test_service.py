"""The whole service as users meet it: HTTP to the shim, Kafka, the trigger loop, PostgreSQL, Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import date, timedelta

import pytest

from .conftest import RECENT_DAY, wait_for

pytestmark = pytest.mark.integration


def exchange(
    service, method: str, path: str, body: object = None, *, headers=None, content_type="application/json"
):
    """One HTTP request to the service: (status, JSON body or text, response headers)."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    request = urllib.request.Request(service.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            status, raw, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, answer_headers = error.code, error.read(), error.headers
    kind = answer_headers.get("Content-Type", "")
    return (
        status,
        json.loads(raw) if kind.startswith("application/json") else raw.decode(),
        answer_headers,  # looked up without regard to case, as HTTP header names are
    )


def http(service, method: str, path: str, body: object = None, *, content_type: str = "application/json"):
    """(status, JSON body or text) of one request."""
    return exchange(service, method, path, body, content_type=content_type)[:2]


def new_device(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def devices(service) -> dict:
    status, body = http(service, "GET", "/api/devices")
    assert status == 200
    return {d["device_id"]: d for d in body["devices"]}


def test_a_reading_appears_everywhere_within_five_seconds(service):
    device = new_device()
    reading = {
        "device_id": device,
        "metric_type": "temperature",
        "value": 22.25,
        "timestamp": f"{RECENT_DAY}T08:00:00Z",
    }
    status, body = http(service, "POST", "/api/device/data", reading)
    assert status == 200
    assert body == {
        "message": "Device data submitted successfully",
        "device_id": device,
        "metric_type": "temperature",
        "value": 22.25,
        "timestamp": f"{RECENT_DAY}T08:00:00+00:00",
    }
    listed = wait_for(lambda: devices(service).get(device), timeout=5)
    assert listed == {
        "device_id": device,
        "metrics": {"temperature": {"value": 22.25, "timestamp": f"{RECENT_DAY}T08:00:00+00:00"}},
        "last_updated": f"{RECENT_DAY}T08:00:00+00:00",
    }
    status, latest = http(service, "GET", f"/api/device/{device}/latest")
    assert status == 200
    assert latest == {
        "device_id": device,
        "data": [{"metric_type": "temperature", "value": 22.25, "timestamp": f"{RECENT_DAY}T08:00:00+00:00"}],
        "metrics": {"temperature": {"value": 22.25, "timestamp": f"{RECENT_DAY}T08:00:00+00:00"}},
        "last_updated": f"{RECENT_DAY}T08:00:00+00:00",
    }
    status, history = http(service, "GET", f"/api/device/{device}/history")
    assert status == 200
    assert history == {
        "device_id": device,
        "metric_type": None,
        "data": [{"metric_type": "temperature", "value": 22.25, "timestamp": f"{RECENT_DAY}T08:00:00+00:00"}],
        "has_more": False,
        "next_cursor": None,
    }


def test_form_encoded_reading_without_timestamp_gets_the_receive_time(service):
    device = new_device("form")
    form = urllib.parse.urlencode({"device_id": device, "metric_type": "voltage", "value": "229.5"}).encode()
    status, body = http(
        service, "POST", "/api/device/data", form, content_type="application/x-www-form-urlencoded"
    )
    assert status == 200 and body["value"] == 229.5 and body["timestamp"].endswith("+00:00")
    latest = wait_for(lambda: http(service, "GET", f"/api/device/{device}/latest")[1].get("metrics"))
    assert latest["voltage"] == {"value": 229.5, "timestamp": body["timestamp"]}


def test_a_bulk_of_100_lands_whole(service):
    device = new_device("bulk")
    readings = [
        {
            "device_id": device,
            "metric_type": metric,
            "value": i,
            "timestamp": f"{RECENT_DAY}T08:{i // 6:02d}:00Z",
        }
        for i, metric in zip(
            range(100),
            ["temperature", "humidity", "pressure", "voltage", "current", "power"] * 17,
            strict=False,
        )
    ]
    status, body = http(service, "POST", "/api/device/data/bulk", {"readings": readings})
    assert status == 200
    assert body["message"] == "Bulk data submitted successfully" and body["processed_count"] == 100
    assert [r["value"] for r in body["readings"]] == list(range(100))

    def stored():
        status, history = http(service, "GET", f"/api/device/{device}/history?limit=1000")
        return len(history["data"]) == 100 and history

    history = wait_for(stored, timeout=5)
    times = [d["timestamp"] for d in history["data"]]
    assert times == sorted(times, reverse=True)
    assert len(devices(service)[device]["metrics"]) == 6


def test_late_readings_go_to_history_but_not_latest(service):
    device = new_device("late")
    http(
        service,
        "POST",
        "/api/device/data",
        {"device_id": device, "metric_type": "power", "value": 2, "timestamp": f"{RECENT_DAY}T10:00:00Z"},
    )
    wait_for(lambda: http(service, "GET", f"/api/device/{device}/latest")[0] == 200)
    http(
        service,
        "POST",
        "/api/device/data",
        {"device_id": device, "metric_type": "power", "value": 1, "timestamp": f"{RECENT_DAY}T09:00:00Z"},
    )
    history = wait_for(lambda: len(http(service, "GET", f"/api/device/{device}/history")[1]["data"]) == 2)
    assert history
    assert http(service, "GET", f"/api/device/{device}/latest")[1]["metrics"]["power"]["value"] == 2
    assert devices(service)[device]["metrics"]["power"] == {
        "value": 2,
        "timestamp": f"{RECENT_DAY}T10:00:00+00:00",
    }


def test_history_limit_is_capped_at_1000(service):
    device = new_device("cap")
    for batch in range(11):
        readings = [
            {
                "device_id": device,
                "metric_type": "current",
                "value": batch * 100 + i,
                "timestamp": f"{date.fromisoformat(RECENT_DAY) + timedelta(days=batch // 6)}"
                f"T{batch % 6:02d}:{i // 60:02d}:{i % 60:02d}Z",
            }
            for i in range(100)
        ]
        assert http(service, "POST", "/api/device/data/bulk", {"readings": readings})[0] == 200
    wait_for(
        lambda: len(http(service, "GET", f"/api/device/{device}/history?limit=1000")[1]["data"]) == 1000,
        timeout=10,
    )
    status, body = http(service, "GET", f"/api/device/{device}/history?limit=5000&metric_type=current")
    assert status == 200 and len(body["data"]) == 1000 and body["metric_type"] == "current"
    assert len(http(service, "GET", f"/api/device/{device}/history")[1]["data"]) == 100


BAD_SINGLES = [
    ({"metric_type": "temperature", "value": 1}, "device_id is required"),
    ({"device_id": "d", "value": 1}, "metric_type is required"),
    ({"device_id": "d", "metric_type": "wind", "value": 1}, "Unknown metric_type"),
    ({"device_id": "d", "metric_type": "power", "value": "high"}, "value must be a number"),
    ({"device_id": "d", "metric_type": "power", "value": True}, "not true or false"),
    ({"device_id": "d", "metric_type": "power", "value": 1, "timestamp": "soon"}, "not ISO-8601"),
    ({"device_id": "d", "metric_type": "power"}, "value is required"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SINGLES)
def test_bad_single_readings_get_400_with_a_clear_message(service, body, message):
    status, answer = http(service, "POST", "/api/device/data", body)
    assert status == 400 and message in answer["error"]


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b'{"device_id":"d","metric_type":"power","value":NaN}',
        b'{"device_id":"d","metric_type":"power","value":Infinity}',
    ],
)
def test_nan_and_infinity_are_refused(service, raw):
    status, answer = http(service, "POST", "/api/device/data", raw)
    assert status == 400 and "error" in answer


@pytest.mark.parametrize(
    ("path", "raw", "content_type", "expected_status", "message"),
    [
        ("/api/device/data", b"{not json", "application/json", 400, "not valid JSON"),
        ("/api/device/data", b"", "application/json", 400, "body is empty"),
        ("/api/device/data", b"<reading/>", "application/xml", 415, "not supported"),
        ("/api/device/data/bulk", b'{"readings": []}', "application/json", 400, "is empty"),
        (
            "/api/device/data/bulk",
            json.dumps({"readings": [{"device_id": "d", "metric_type": "power", "value": 1}] * 101}).encode(),
            "application/json",
            400,
            "at most 100",
        ),
        (
            "/api/device/data/bulk",
            b'{"readings": [{"device_id": "d", "metric_type": "power", "value": 1}, {"device_id": "d", "metric_type": "x", "value": 1}]}',
            "application/json",
            400,
            "Reading 1: Unknown metric_type",
        ),
        ("/api/device/data/bulk", b"[1, 2]", "application/json", 400, '"readings" list'),
        ("/api/device/data/bulk", b"[" * 100000, "application/json", 400, "nested too deeply"),
    ],
)
def test_bad_bodies_get_4xx_never_500(service, path, raw, content_type, expected_status, message):
    status, answer = http(service, "POST", path, raw, content_type=content_type)
    assert status == expected_status and message in answer["error"]


def test_a_rejected_bulk_queues_nothing(service):
    device = new_device("atomic")
    readings = [
        {"device_id": device, "metric_type": "power", "value": i, "timestamp": f"{RECENT_DAY}T00:00:0{i}Z"}
        for i in range(5)
    ]
    readings[4]["value"] = "broken"
    assert http(service, "POST", "/api/device/data/bulk", {"readings": readings})[0] == 400
    marker = new_device("after")
    http(service, "POST", "/api/device/data", {"device_id": marker, "metric_type": "power", "value": 1})
    wait_for(lambda: marker in devices(service))  # later readings landed, so earlier ones would have too
    assert http(service, "GET", f"/api/device/{device}/history")[1]["data"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [("limit=ten", "whole number"), ("limit=0", "at least 1"), ("metric_type=wind", "Unknown metric_type")],
)
def test_bad_history_queries_get_400(service, query, message):
    status, answer = http(service, "GET", f"/api/device/some-device/history?{query}")
    assert status == 400 and message in answer["error"]


def test_unknown_device_and_routes(service):
    assert http(service, "GET", f"/api/device/{new_device('ghost')}/latest") == (
        404,
        {"error": "Device not found"},
    )
    status, answer = http(service, "GET", "/api/nothing-here")
    assert status == 404 and "Not found" in answer["error"]
    status, answer = http(service, "GET", "/api/device/data")
    assert status in (404, 405) and "error" in answer
    assert http(service, "GET", "/health") == (200, {"status": "healthy"})


def test_dashboard_pages_are_served(service):
    status, page = http(service, "GET", "/")
    assert status == 200 and '<script src="/static/overview.js"></script>' in page
    status, page = http(service, "GET", "/device/anything")
    assert status == 200 and '<script src="/static/device.js"></script>' in page
    status, script = http(service, "GET", "/static/config.js")
    assert status == 200 and "IOT_CONFIG" in script


def test_delete_all_clears_database_cache_and_alerts_but_keeps_the_rules(service):
    device = new_device("doomed")
    rule = {"name": "doomed", "device": device, "metric_type": "power", "condition": ">", "threshold": 0}
    status, made = http(service, "POST", "/api/alert-rules", rule)
    assert status == 201, made
    http(service, "POST", "/api/device/data", {"device_id": device, "metric_type": "power", "value": 1})
    wait_for(lambda: device in devices(service))
    wait_for(lambda: http(service, "GET", f"/api/alerts?device_id={device}")[1]["alerts"])
    assert http(service, "POST", "/api/delete-all", {}) == (
        200,
        {"message": "All device data deleted successfully"},
    )
    assert devices(service) == {}
    assert http(service, "GET", f"/api/device/{device}/latest")[0] == 404
    assert http(service, "GET", f"/api/device/{device}/history")[1]["data"] == []
    assert http(service, "GET", "/api/alerts")[1]["alerts"] == []
    assert made in http(service, "GET", "/api/alert-rules")[1]["rules"]
