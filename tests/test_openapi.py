"""The OpenAPI document: it is valid, it matches the routers, it is served, and a bounded fuzz run of the
live service against it finds no server error and no response that breaks it, and exercises every
operation and every query parameter it documents."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import openapi_spec_validator
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from common.query import OPENAPI_PATH
from functions import load_function

from .conftest import wait_for
from .test_service import http

DOCUMENT = json.loads(OPENAPI_PATH.read_text())
API_FUNCTIONS = ("ingest", "query")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))

# The device the document's examples name. It is given a day of readings before the fuzz run, so that the
# examples (and the fuzzing around them) reach the code that pages and buckets readings, not only the
# answers for devices without any.
EXAMPLE_DEVICE = DOCUMENT["components"]["parameters"]["DeviceIdPath"]["example"]
EXAMPLE_READINGS = 150  # more than history's default page, so its first page has a next one
EXAMPLE_SPACING = timedelta(minutes=9)  # 150 of them span 22.5 hours: all within series' default day

# Which query parameters the fuzz run sent, and which were part of a request the service accepted (2xx),
# per operation: a parameter the generator never produced, or that no generated request could use, would
# leave its code untested while the run still passed.
RAN: set[str] = set()
SENT: dict[str, set[str]] = defaultdict(set)
ACCEPTED: dict[str, set[str]] = defaultdict(set)


def documented_query_parameters() -> dict[str, set[str]]:
    """Operation label ("GET /api/devices") -> the names of its query parameters."""
    found = {}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            names = set()
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    parameter = DOCUMENT["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
                if parameter["in"] == "query":
                    names.add(parameter["name"])
            found[f"{method.upper()} {path}"] = names
    return found


def test_the_document_is_valid_openapi_3():
    openapi_spec_validator.validate(DOCUMENT)


def test_every_routed_endpoint_is_documented_and_nothing_else():
    routed = {
        (route.method, route.path) for name in API_FUNCTIONS for route in load_function(name).app.routes
    }
    documented = {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert routed == documented


def test_every_operation_documents_its_errors_as_json():
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "content" in response or "$ref" in response, f"{method} {path} {status}"


def test_every_operation_can_be_generated():
    """An operation schemathesis cannot load would be reported, not fuzzed."""
    loaded = [result.ok().label for result in schema.get_all_operations()]
    assert sorted(loaded) == sorted(documented_query_parameters())


@pytest.mark.integration
def test_the_document_is_served(service):
    status, body = http(service, "GET", "/openapi.json")
    assert status == 200 and body == DOCUMENT


def _stored_example_readings(service) -> int:
    status, body = http(service, "GET", f"/api/device/{EXAMPLE_DEVICE}/history?limit=1000")
    return len(body["data"]) if status == 200 else 0


@pytest.fixture
def example_device(service) -> str:
    """The document's example device, with a day of temperature readings (again if delete-all ran)."""
    if _stored_example_readings(service) >= EXAMPLE_READINGS:
        return EXAMPLE_DEVICE
    newest = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    readings = [
        {
            "device_id": EXAMPLE_DEVICE,
            "metric_type": "temperature",
            "value": round(21 + (i % 24) / 4, 2),
            "timestamp": (newest - i * EXAMPLE_SPACING).isoformat(),
        }
        for i in range(EXAMPLE_READINGS)
    ]
    for start in range(0, len(readings), 100):
        status, body = http(
            service, "POST", "/api/device/data/bulk", {"readings": readings[start : start + 100]}
        )
        assert status == 200, body
    wait_for(lambda: _stored_example_readings(service) >= EXAMPLE_READINGS, timeout=30, interval=0.2)
    _example_alerts(service)
    return EXAMPLE_DEVICE


EXAMPLE_ALERTS = 3  # more than one, so that a page of alerts with limit=1 has a next one


def _example_alerts(service) -> None:
    """A rule and readings that open and close it EXAMPLE_ALERTS times, so the alert list pages."""
    device = f"alerting-{uuid.uuid4().hex[:6]}"
    rule = {
        "name": "openapi example",
        "device": device,
        "metric_type": "power",
        "condition": ">",
        "threshold": 10,
    }
    status, body = http(service, "POST", "/api/alert-rules", rule)
    assert status == 201, body
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    readings = [
        {"device_id": device, "metric_type": "power", "value": 20 if n % 2 == 0 else 5,
         "timestamp": (start + timedelta(seconds=n)).isoformat()}
        for n in range(2 * EXAMPLE_ALERTS)
    ]  # fmt: skip
    status, body = http(service, "POST", "/api/device/data/bulk", {"readings": readings})
    assert status == 200, body

    def opened() -> bool:
        status, body = http(service, "GET", f"/api/alerts?device_id={device}")
        return status == 200 and len(body["alerts"]) >= EXAMPLE_ALERTS

    wait_for(opened, timeout=30, interval=0.2)


def header(response, name: str) -> str | None:
    """A response header's first value, its name matched without regard to case."""
    return next(
        (values[0] for key, values in response.headers.items() if key.lower() == name and values), None
    )


def next_page(case, response):
    """The request for the page after an accepted one that says there is one, or None.

    A valid cursor exists only in a previous answer, which no generator can invent (made-up ones are
    refused with a 400): following each page that has a next one is how the run sends real cursors.
    JSON answers carry next_cursor; CSV answers carry the next page's address in the Link header."""
    if response.status_code != 200:
        return None
    link = header(response, "link")
    if link:
        address = link[link.index("<") + 1 : link.index(">")]
        return case.operation.Case(
            path_parameters=case.path_parameters, query=dict(parse_qsl(urlsplit(address).query))
        )
    if not (header(response, "content-type") or "").startswith("application/json"):
        return None
    cursor = response.json().get("next_cursor")
    if not cursor:
        return None
    return case.operation.Case(
        path_parameters=case.path_parameters, headers=case.headers, query={**case.query, "cursor": cursor}
    )


def call_and_record(case, service):
    """One request, its parameters recorded, its response checked against the document."""
    response = case.call(base_url=service.url, timeout=15)
    label = case.operation.label
    RAN.add(label)
    # Only requests with the operation's own method count (the run also tries others, e.g. OPTIONS, which
    # a CORS preflight answers with 204), and an empty value is the same as none to the service.
    if case.method.upper() == case.operation.method.upper():
        sent = {name for name, value in (case.query or {}).items() if value not in ("", None, [])}
        SENT[label] |= sent
        if 200 <= response.status_code < 300:
            ACCEPTED[label] |= sent
    case.validate_response(response, checks=CHECKS)
    return response


@pytest.mark.integration
@pytest.mark.usefixtures("example_device")
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_finds_no_server_error_and_no_undocumented_response(case, service):
    response = call_and_record(case, service)
    if (following := next_page(case, response)) is not None:
        call_and_record(following, service)


def one_device_per_partition(service) -> list[str]:
    """Device ids whose readings land on each partition of the service's topic (ingest keys a message by
    its device id; the producer's default partitioner picks murmur2(key) modulo the partitions)."""
    consumer = KafkaConsumer(bootstrap_servers=service.env["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        partitions = len(consumer.partitions_for_topic(service.env["KAFKA_TOPIC"]) or ())
    finally:
        consumer.close()
    assert partitions, "the service's topic has no partitions"
    by_partition: dict[int, str] = {}
    for number in range(1000):
        device = f"after-fuzz-{uuid.uuid4().hex[:6]}-{number}"
        by_partition.setdefault((murmur2(device.encode()) & 0x7FFFFFFF) % partitions, device)
        if len(by_partition) == partitions:
            break
    return sorted(by_partition.values())


@pytest.mark.integration
def test_the_service_still_stores_readings_after_the_fuzz_run(service):
    """Everything ingest accepted during the run was storable: a reading sent now is stored behind it,
    on every partition.

    Ingest answers 200 once Kafka has a reading, so a reading the consumer cannot store shows in no
    response of the run; it holds up every reading queued after it on its partition instead."""
    devices = one_device_per_partition(service)
    for device in devices:
        status, body = http(
            service, "POST", "/api/device/data", {"device_id": device, "metric_type": "power", "value": 1}
        )
        assert status == 200, body

    def stuck() -> list[str]:
        return [
            device for device in devices if http(service, "GET", f"/api/device/{device}/latest")[0] != 200
        ]

    try:
        wait_for(lambda: not stuck(), timeout=30, interval=0.2)
    except AssertionError:
        pytest.fail(f"not stored within 30 s: {stuck()}; the consumer is stuck on a batch (see trigger.log)")


@pytest.mark.integration
def test_the_fuzz_run_exercised_every_query_parameter():
    """Runs after the fuzz run (pytest keeps the file's order) and checks what that run did: run the
    file whole, never this test alone."""
    assert RAN, "the fuzz run did not run before this check: run tests/test_openapi.py whole"
    documented = documented_query_parameters()
    assert RAN == set(documented), f"not fuzzed: {sorted(set(documented) - RAN)}"
    never_sent = {label: names - SENT[label] for label, names in documented.items() if names - SENT[label]}
    assert not never_sent, f"never sent: {never_sent}"
    never_accepted = {
        label: missing for label, names in documented.items() if (missing := names - ACCEPTED[label])
    }
    assert not never_accepted, f"never part of an accepted request: {never_accepted}"


# Values that have broken parsers elsewhere: offsets that push the calendar's first and last days out of
# Python's range, numbers past a double or a 64-bit integer, NUL and other control characters, text too
# long for a file name or an index entry, and malformed percent-encoding.
HOSTILE_VALUES = (
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999-14:00",
    "-62135596800001",
    "253402300800000",
    "1" * 400,
    "1e400",
    "-0",
    "nan",
    "a\x00b",
    "\x00",
    "\u202e\ufeff",
    "x" * 5000,
    "%",
    "%zz",
    "../../etc/passwd",
)


@pytest.mark.integration
def test_hostile_values_in_every_query_parameter_are_answered_4xx(example_device, service):
    """Each documented GET query parameter, and each device path, given each hostile value: never a 500,
    and the service still answers and stores afterwards."""
    from urllib.parse import quote

    checked = 0
    for label, names in documented_query_parameters().items():
        method, path = label.split(" ", 1)
        if method != "GET":
            continue
        target = path.replace("{device_id}", example_device)
        for name in sorted(names):
            for value in HOSTILE_VALUES:
                query = f"{name}={quote(value, safe='%')}"
                if "series" in path and name != "metric_type":
                    query += "&metric_type=temperature"
                status, body = http(service, "GET", f"{target}?{query}")
                assert status < 500, (label, name, value, status, body)
                checked += 1
        if "{device_id}" in path:
            for value in HOSTILE_VALUES:
                status, body = http(service, "GET", path.replace("{device_id}", quote(value, safe="")))
                assert status < 500, (label, "device_id", value, status, body)
                checked += 1
    assert checked > 200
    assert http(service, "GET", "/health")[0] == 200
