"""Ingest: validate readings and queue them in Kafka; answer only after the broker acknowledged."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta

from . import metrics
from .apig import ApigRequest, Response
from .auth import Principal, authorize_readings
from .errors import PayloadTooLarge, UnsupportedMediaType, ValidationError
from .producer import send_for_request
from .readings import Reading, json_list, parse_bulk, parse_reading, retention_error, utc_now
from .runtime import current

MAX_BODY_BYTES = 256 * 1024  # 100 readings take about 10 KiB

JSON_TYPES = {"application/json", "text/json"}
FORM_TYPE = "application/x-www-form-urlencoded"


def _check_size(request: ApigRequest) -> None:
    if len(request.body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body is larger than {MAX_BODY_BYTES // 1024} KiB")


def _is_json(request: ApigRequest) -> bool:
    kind = request.content_type
    return not kind or kind in JSON_TYPES or kind.endswith("+json")


def _single_body(request: ApigRequest) -> tuple[object, bool]:
    """JSON, or form fields as the original service accepted them; and whether it was a form."""
    _check_size(request)
    if _is_json(request):
        return request.json(), False
    if request.content_type == FORM_TYPE:
        # `curl -d '{...}'` sends JSON labelled as a form; read it as the JSON it is.
        if request.body.lstrip().startswith(b"{"):
            return request.json(), False
        return request.form(), True
    raise UnsupportedMediaType(
        f"Content-Type {request.content_type} is not supported; send application/json or {FORM_TYPE}"
    )


def _principal(request: ApigRequest) -> Principal | None:
    """The token's owner when auth is on (401 before the body is even read), else None."""
    runtime = current()
    return runtime.tokens.authenticate(request) if runtime.settings.auth_enabled else None


def _check_retention(readings: list[Reading], now, *, bulk: bool) -> None:
    """Refuse readings older than the raw retention: no partition would hold them."""
    days = current().settings.raw_retention_days
    oldest = now - timedelta(days=days)
    for index, reading in enumerate(readings):
        problem = retention_error(reading, oldest, days)
        if problem is not None:
            raise ValidationError(f"Reading {index}: {problem}" if bulk else problem)


def _observed(submit: Callable[[ApigRequest], tuple[Response, int]]) -> Callable[[ApigRequest], Response]:
    """``submit`` as a route: its readings accepted, or its refusal's reason, and its time counted
    (common/metrics.py; nothing is counted where metrics are not enabled). The router has bound the
    request's id for the logs and the message (the consumer logs it with the batch)."""

    @functools.wraps(submit)
    def route(request: ApigRequest) -> Response:
        started = time.perf_counter()
        try:
            response, accepted = submit(request)
        except Exception as error:  # an ApiError is answered as such; anything else is a 500
            metrics.ingest_rejected(metrics.ingest_rejection_reason(error), time.perf_counter() - started)
            raise
        metrics.ingest_accepted(accepted, time.perf_counter() - started)
        return response

    return route


@_observed
def submit_reading(request: ApigRequest) -> tuple[Response, int]:
    """POST /api/device/data"""
    principal = _principal(request)
    body, is_form = _single_body(request)
    now = utc_now()
    reading = parse_reading(body, now, form=is_form)
    _check_retention([reading], now, bulk=False)
    if principal is not None:
        authorize_readings(principal, [reading], bulk=False)
    (shown,) = send_for_request(current().producer, [reading])
    # The reading's own JSON object with the message first, as the original service answered.
    return Response(200, '{"message":"Device data submitted successfully",' + shown[1:]), 1


@_observed
def submit_bulk(request: ApigRequest) -> tuple[Response, int]:
    """POST /api/device/data/bulk: every reading is validated before any is queued."""
    principal = _principal(request)
    _check_size(request)
    if not _is_json(request):
        raise UnsupportedMediaType(
            f"Content-Type {request.content_type} is not supported; send application/json"
        )
    now = utc_now()
    readings = parse_bulk(request.json(), now)
    _check_retention(readings, now, bulk=True)
    if principal is not None:
        authorize_readings(principal, readings, bulk=True)
    shown = send_for_request(current().producer, readings)
    response = Response(
        200,
        '{"message":"Bulk data submitted successfully",'
        f'"processed_count":{len(shown)},"readings":{json_list(shown)}}}',
    )
    return response, len(shown)
