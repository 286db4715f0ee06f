"""The smoke events the deploy command sends to each freshly published function version.

Each one is side-effect free: nothing is queued, stored or deleted. HTTP functions get APIG-shaped
events and must answer with a valid APIG response (``statusCode`` int, ``headers`` map, ``body``
string, ``isBase64Encoded`` bool: docs/functiongraph.md, section 2); the consumer gets a DMS Kafka
trigger event with no messages (section 3).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Smoke:
    label: str  # what the report says, e.g. "GET /health"
    event: dict
    check: Callable[[object], str | None] = field(repr=False)  # None when the result is right
    expect: str = ""  # what a right result is, for the report


def apig_event(method: str, path: str, body: str = "", headers: dict | None = None) -> dict:
    return {
        "httpMethod": method,
        "path": path,
        "headers": {"accept": "application/json", "user-agent": "iot-deploy-smoke", **(headers or {})},
        "queryStringParameters": {},
        "pathParameters": {},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"apiId": "deploy-smoke", "requestId": "deploy-smoke", "stage": "RELEASE"},
    }


def apig_status(result: object) -> tuple[int | None, str | None]:
    """The status of an APIG response, or why ``result`` is not one."""
    if not isinstance(result, dict):
        return None, f"not an APIG response: {str(result)[:200]}"
    if "errorMessage" in result:
        return None, f"the function raised {result.get('errorType', 'an error')}: {result['errorMessage']}"
    problems = [
        key
        for key, kind in (("statusCode", int), ("headers", dict), ("body", str), ("isBase64Encoded", bool))
        if not isinstance(result.get(key), kind)
    ]
    if problems:
        return None, f"not an APIG response (bad or missing {', '.join(problems)})"
    return result["statusCode"], None


def expect_status(low: int, high: int, text: str | None = None) -> Callable[[object], str | None]:
    def check(result: object) -> str | None:
        status, problem = apig_status(result)
        if problem:
            return problem
        if not low <= status <= high:
            return f"status {status}: {str(result.get('body'))[:200]}"
        if text and text not in str(result.get("body", "")).lower():
            return f"status {status} but the body has no {text!r}"
        return None

    return check


def expect_empty_batch(result: object) -> str | None:
    if isinstance(result, dict) and "errorMessage" in result:
        return f"the function raised {result.get('errorType', 'an error')}: {result['errorMessage']}"
    if not isinstance(result, dict) or result.get("messages") != 0:
        return f"expected a batch summary with messages=0, got {json.dumps(result)[:200]}"
    return None


EMPTY_KAFKA_EVENT = {
    "event_version": "v1.0",
    "event_time": 0,
    "trigger_type": "KAFKA",
    "region": "",
    "instance_id": "deploy-smoke",
    "records": [],
}

SMOKE: dict[str, list[Smoke]] = {
    "ingest": [
        Smoke(
            "POST /api/device/data (no token, no body)",
            apig_event("POST", "/api/device/data", headers={"content-type": "application/json"}),
            expect_status(400, 499),
            "a 4xx refusal: the code loads and routes, nothing is queued",
        )
    ],
    "query": [
        Smoke("GET /health", apig_event("GET", "/health"), expect_status(200, 200), "200"),
        Smoke(
            "GET /ready",
            apig_event("GET", "/ready"),
            expect_status(200, 200),
            "200: PostgreSQL, Redis, Kafka reached",
        ),
    ],
    "dashboard": [
        Smoke("GET /", apig_event("GET", "/"), expect_status(200, 200, "<html"), "200 with the page")
    ],
    "consumer": [Smoke("empty Kafka batch", EMPTY_KAFKA_EVENT, expect_empty_batch, "messages=0")],
}


def smokes_for(function: str) -> list[Smoke]:
    return SMOKE.get(function, [])
