"""The OpenAPI document: it matches the routers, it is served, and a bounded fuzz run of the live
service against it finds no server error and no response that breaks it."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from common.query import OPENAPI_PATH
from functions import load_function

from .test_service import http

DOCUMENT = json.loads(OPENAPI_PATH.read_text())
API_FUNCTIONS = ("ingest", "query")

schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))


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


@pytest.mark.integration
def test_the_document_is_served(service):
    status, body = http(service, "GET", "/openapi.json")
    assert status == 200 and body == DOCUMENT


@pytest.mark.integration
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_finds_no_server_error_and_no_undocumented_response(case, service):
    case.call_and_validate(
        base_url=service.url,
        timeout=15,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
