"""The smoke tests the deploy command runs on each freshly published version before the alias moves.

Each function gets the events its trigger sends, and each one travels the function's real path:

* consumer: a DMS-for-Kafka event (``common.dms.build_event``) with one reading of the reserved smoke
  device (``common.readings.SMOKE_DEVICE_ID``), which must be reported stored (or already stored);
* authorizer: the event APIG's frontend custom authorizer sends (docs/functiongraph.md, section 8)
  with a well-formed credential nobody was ever given, which must be denied (this looks it up in
  PostgreSQL, as the reader), and with ``IOT_SMOKE_TOKEN``, which must be allowed with a signed
  credential id. An authorizer that allows everything with no context is one whose AUTH_ENABLED is
  off: then no API uses it (infra/terraform/apig.tf), and the report says so;
* ingest: an APIG event posting one reading of the smoke device, which must be queued: "200" means
  Kafka acknowledged it. With auth on (the cloud default) that needs a token that may send for the
  smoke device (``IOT_SMOKE_TOKEN``: a device token for it, or an admin token). Without one, ingest
  refuses with 401 before Kafka, which proves the code loads and routes; Kafka itself is still
  proved reachable from the same subnet with the same dependency by the query function's ``/ready``;
* query: ``/health``, ``/ready`` (PostgreSQL, Redis and Kafka reached) and the smoke device's
  ``/latest`` (the read path through Redis or PostgreSQL). Both need a credential with auth on, so
  they send ``IOT_SMOKE_TOKEN`` the way a client does; without it they can only be refused (401), which
  proves the code loads and routes but not what it reaches, and the report says so;
* dashboard: the page;
* maintenance: the event its TIMER trigger sends, so one real maintenance pass runs, which must report
  what it did, or that it skipped because another pass held the lock. A pass is idempotent and is what
  the timer runs every few minutes anyway; running it proves the new version reaches PostgreSQL and
  that its initializer migrated the schema.

The smoke readings are real: they are stored like any other reading, under a device that
``GET /api/devices`` and ``GET /api/stats`` leave out. Testing the path a device uses is worth one
hidden reading per deploy; a side-effect free ingest check could not tell whether Kafka accepts.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from common.auth import TOKEN_PREFIX
from common.dms import build_event
from common.readings import SMOKE_DEVICE_ID, Reading, encode_message

SMOKE_TOKEN_ENV = "IOT_SMOKE_TOKEN"
SMOKE_METRIC = "voltage"
SMOKE_VALUE = 230.0
SMOKE_TOPIC = "deploy-smoke"  # what the smoke event names as its topic; the consumer only records it
SMOKE_TIMER = "deploy-smoke"  # the trigger name the maintenance smoke event carries
# The consumer's reading is stored first, so the query's /latest finds it in the same run; the
# authorizer before the functions it guards.
SMOKE_ORDER = ("consumer", "authorizer", "ingest", "query", "dashboard", "maintenance")
# What an allowing authorizer hands the backend: the credential's id (decimal) and its HMAC-SHA256
# signature (hex), the keys APIG maps to the X-Iot-Credential headers (docs/functiongraph.md, section 8).
_CREDENTIAL_ID = re.compile(r"[0-9]{1,20}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# What a maintenance pass reports (common/maintenance.py).
MAINTENANCE_COUNTS = (
    "partitions_created",
    "partitions_dropped",
    "readings_rolled_up",
    "rollup_days_backfilled",
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # what the report says after "ok" or "FAILED"


@dataclass(frozen=True)
class Smoke:
    label: str  # what the report says, e.g. "GET /health"
    event: dict
    check: Callable[[object], Verdict] = field(repr=False)
    expect: str = ""  # what a right result is, for the report


def apig_event(method: str, path: str, body: str = "", headers: dict | None = None, **params: str) -> dict:
    return {
        "httpMethod": method,
        "path": path,
        "headers": {"accept": "application/json", "user-agent": "iot-deploy-smoke", **(headers or {})},
        "queryStringParameters": {},
        "pathParameters": dict(params),
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"apiId": "deploy-smoke", "requestId": "deploy-smoke", "stage": "RELEASE"},
    }


def apig_status(result: object) -> tuple[int | None, str | None]:
    """The status of an APIG response, or why ``result`` is not one (docs/functiongraph.md, section 2)."""
    if not isinstance(result, dict):
        return None, f"not an APIG response: {str(result)[:200]}"
    problems = [
        key
        for key, kind in (("statusCode", int), ("headers", dict), ("body", str), ("isBase64Encoded", bool))
        if not isinstance(result.get(key), kind)
    ]
    if problems:
        return None, f"not an APIG response (bad or missing {', '.join(problems)})"
    return result["statusCode"], None


def _json_body(result: dict) -> object:
    try:
        return json.loads(result.get("body") or "")
    except ValueError:
        return None


def expect_status(low: int, high: int, text: str | None = None) -> Callable[[object], Verdict]:
    def check(result: object) -> Verdict:
        status, problem = apig_status(result)
        if problem:
            return Verdict(False, problem)
        if not low <= status <= high:
            return Verdict(False, f"status {status}: {str(result.get('body'))[:200]}")
        if text and text not in str(result.get("body", "")).lower():
            return Verdict(False, f"status {status} but the body has no {text!r}")
        return Verdict(True, f"status {status}")

    return check


def expect_queued(with_token: bool) -> Callable[[object], Verdict]:
    def check(result: object) -> Verdict:
        status, problem = apig_status(result)
        if problem:
            return Verdict(False, problem)
        if status == 200 and "submitted" in str(result.get("body", "")):
            return Verdict(True, "status 200: queued, Kafka acknowledged")
        if status == 401 and not with_token:
            return Verdict(
                True,
                f"status 401: auth is on and {SMOKE_TOKEN_ENV} is not set, so ingest's route to Kafka "
                "was not tried (the query's /ready checks Kafka)",
            )
        return Verdict(False, f"status {status}: {str(result.get('body'))[:200]}")

    return check


def expect_read(with_token: bool) -> Callable[[object], Verdict]:
    """A read route: 200, or, without a smoke token, the 401 of a service whose auth is on."""
    answered = expect_status(200, 200)

    def check(result: object) -> Verdict:
        status, problem = apig_status(result)
        if not problem and status == 401 and not with_token:
            return Verdict(True, _unchecked_read())
        return answered(result)

    return check


def _unchecked_read() -> str:
    return (
        f"status 401: auth is on and {SMOKE_TOKEN_ENV} is not set, so what this route reaches was not checked"
    )


def expect_smoke_latest(stored_in_this_run: bool, with_token: bool = True) -> Callable[[object], Verdict]:
    def check(result: object) -> Verdict:
        status, problem = apig_status(result)
        if problem:
            return Verdict(False, problem)
        if status == 401 and not with_token:
            return Verdict(True, _unchecked_read())
        body = _json_body(result)
        if status == 200 and isinstance(body, dict) and body.get("device_id") == SMOKE_DEVICE_ID:
            return Verdict(True, f"status 200, last updated {body.get('last_updated')}")
        if status == 404 and not stored_in_this_run and isinstance(body, dict):
            return Verdict(True, "status 404: no smoke reading stored yet (the consumer was not deployed)")
        return Verdict(False, f"status {status}: {str(result.get('body'))[:200]}")

    return check


def authorizer_event(token: str) -> dict:
    """What APIG sends a frontend custom authorizer for a request carrying ``token``: the request's
    headers (lower-cased), its query parameters and the authorizer's user data, and nothing else the
    documentation promises (docs/functiongraph.md, section 8)."""
    return {
        "headers": {"authorization": f"Bearer {token}", "user-agent": "iot-deploy-smoke"},
        "queryStringParameters": {},
        "user_data": "",
    }


def unknown_credential() -> str:
    """A credential of the right shape that was never issued (32 fresh random bytes, as new ones are)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def authorizer_answer(result: object) -> tuple[dict | None, str | None]:
    """The decoded answer of an authorizer invocation, or why ``result`` is not one APIG accepts: a
    statusCode of 200 and a body that is a JSON string of an object with "status" allow or deny (any
    other statusCode makes APIG answer with an error of its own)."""
    if not isinstance(result, dict) or not isinstance(result.get("body"), str):
        return None, f"not an authorizer answer: {json.dumps(result, default=str)[:200]}"
    if result.get("statusCode") != 200:
        return None, f"statusCode {result.get('statusCode')}: {result['body'][:200]}"
    body = _json_body(result)
    if not isinstance(body, dict) or body.get("status") not in ("allow", "deny"):
        return None, f'the body is not {{"status": "allow" | "deny", ...}}: {result["body"][:200]}'
    context = body.get("context", {})
    if not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        return None, f"the context is not a map of strings: {result['body'][:200]}"
    return body, None


def expect_denied(result: object) -> Verdict:
    body, problem = authorizer_answer(result)
    if problem:
        return Verdict(False, problem)
    if body["status"] == "deny":
        return Verdict(True, "denied")
    if not body.get("context"):
        return Verdict(
            True, "allowed without a credential id: AUTH_ENABLED is off, and no API uses the authorizer"
        )
    return Verdict(False, f"an unknown credential was allowed: {result['body'][:200]}")


def expect_allowed(result: object) -> Verdict:
    body, problem = authorizer_answer(result)
    if problem:
        return Verdict(False, problem)
    if body["status"] != "allow":
        return Verdict(False, f"{SMOKE_TOKEN_ENV} was denied: revoked, or made for another stack's database?")
    context = body.get("context", {})
    if not context:
        return Verdict(True, "allowed without a credential id: AUTH_ENABLED is off")
    if not (
        _CREDENTIAL_ID.fullmatch(context.get("cid", "")) and _SIGNATURE.fullmatch(context.get("sig", ""))
    ):
        return Verdict(False, f"allowed, but the context is not a credential id and its signature: {context}")
    return Verdict(True, f"allowed as credential {context['cid']}, signed")


def expect_stored(result: object) -> Verdict:
    if not isinstance(result, dict) or not all(
        isinstance(result.get(key), int)
        for key in ("messages", "readings", "stored", "duplicates", "rejected")
    ):
        return Verdict(False, f"not a batch summary: {json.dumps(result, default=str)[:200]}")
    if (result["messages"], result["readings"], result["rejected"]) != (1, 1, 0):
        return Verdict(False, f"expected 1 message with 1 reading, got {json.dumps(result)}")
    if result["stored"] + result["duplicates"] != 1:
        return Verdict(False, f"the reading was neither stored nor a duplicate: {json.dumps(result)}")
    return Verdict(True, "stored" if result["stored"] else "already stored (a duplicate)")


def expect_maintenance_pass(result: object) -> Verdict:
    if not isinstance(result, dict) or not (
        all(type(result.get(key)) is int for key in MAINTENANCE_COUNTS)
        and type(result.get("skipped")) is bool
    ):
        return Verdict(False, f"not a maintenance summary: {json.dumps(result, default=str)[:200]}")
    if result["skipped"]:
        return Verdict(True, "skipped: another maintenance pass held the lock")
    created, dropped, rolled, backfilled = (result[key] for key in MAINTENANCE_COUNTS)
    return Verdict(
        True,
        f"{created} partition(s) created, {dropped} dropped, {rolled} reading(s) rolled up,"
        f" {backfilled} day(s) of rollups backfilled",
    )


def timer_event(now: datetime, name: str = SMOKE_TIMER) -> dict:
    """What a FunctionGraph TIMER trigger passes (docs/functiongraph.md, section 3b)."""
    return {
        "version": "v1.0",
        "time": now.isoformat(timespec="seconds"),
        "trigger_type": "TIMER",
        "trigger_name": name,
        "user_event": "deploy smoke test",
    }


def smoke_reading(now: datetime) -> Reading:
    return Reading(SMOKE_DEVICE_ID, SMOKE_METRIC, SMOKE_VALUE, now)


def smokes_for(function: str, now: datetime, token: str = "", consumer_stored: bool = False) -> list[Smoke]:
    """The smoke tests of ``function``. ``now`` stamps the smoke readings; ``token`` authorizes ingest's
    reading; ``consumer_stored``: the consumer's smoke reading was stored in this run."""
    if function == "consumer":
        message = encode_message([smoke_reading(now).to_json()])
        event = build_event({SMOKE_TOPIC: [message]}, instance_id="deploy-smoke", region="")
        return [Smoke("Kafka batch with one smoke reading", event, expect_stored, "the reading stored")]
    if function == "authorizer":
        smokes = [
            Smoke(
                "a well-formed unknown credential",
                authorizer_event(unknown_credential()),
                expect_denied,
                "deny",
            )
        ]
        if token:
            smokes.append(
                Smoke(
                    f"the credential in {SMOKE_TOKEN_ENV}",
                    authorizer_event(token),
                    expect_allowed,
                    "allow, signed",
                )
            )
        return smokes
    if function == "ingest":
        body = json.dumps({"device_id": SMOKE_DEVICE_ID, "metric_type": SMOKE_METRIC, "value": SMOKE_VALUE})
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        event = apig_event("POST", "/api/device/data", body, headers)
        return [
            Smoke("POST /api/device/data (smoke device)", event, expect_queued(bool(token)), "200 queued")
        ]
    if function == "query":
        latest = f"/api/device/{SMOKE_DEVICE_ID}/latest"
        credential = {"authorization": f"Bearer {token}"} if token else {}
        return [
            Smoke("GET /health", apig_event("GET", "/health"), expect_status(200, 200), "200"),
            Smoke(
                "GET /ready",
                apig_event("GET", "/ready", headers=credential),
                expect_read(bool(token)),
                "200: PostgreSQL, Redis, Kafka",
            ),
            Smoke(
                f"GET {latest}",
                apig_event("GET", latest, headers=credential, device_id=SMOKE_DEVICE_ID),
                expect_smoke_latest(consumer_stored, bool(token)),
                "200 with the smoke device",
            ),
        ]
    if function == "dashboard":
        return [Smoke("GET /", apig_event("GET", "/"), expect_status(200, 200, "<html"), "200 with the page")]
    if function == "maintenance":
        return [
            Smoke(
                "timer event: one maintenance pass",
                timer_event(now),
                expect_maintenance_pass,
                "a pass summary",
            )
        ]
    return []


def smoke_order(functions: list[str]) -> list[str]:
    known = [name for name in SMOKE_ORDER if name in functions]
    return known + sorted(name for name in functions if name not in SMOKE_ORDER)
