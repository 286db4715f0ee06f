"""APIG events in, APIG responses out.

APIG hands a function ``{"httpMethod", "path", "headers", "queryStringParameters",
"pathParameters", "body", "isBase64Encoded", "requestContext"}`` and wants back exactly
``{"statusCode": int, "headers": map, "body": str, "isBase64Encoded": bool}`` (anything else
becomes a 500 at the gateway). See docs/functiongraph.md, section 2.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from .errors import ApiError, BadRequest

_CORS_ALLOWED = {
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Device-Token",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    # A CSV page names the next one in its Link header; a dashboard on another origin follows it.
    "Access-Control-Expose-Headers": "Link",
    "Access-Control-Max-Age": "600",
}


def cors_headers(origin: str | None, allowed: tuple[str, ...], *, any_origin: bool) -> dict[str, str]:
    """The CORS headers for a request from ``origin``: any origin while auth is off and no origins are
    configured (the local demo), else only the configured ones, named back one at a time (a browser
    then refuses every other origin's page the answer, and the preflight of a write)."""
    if any_origin:
        return {"Access-Control-Allow-Origin": "*", **_CORS_ALLOWED}
    if origin and origin.rstrip("/") in allowed:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", **_CORS_ALLOWED}
    return {"Vary": "Origin"}


def _first(value: object) -> str | None:
    """Query values may arrive as lists (repeated keys); the first one wins."""
    if isinstance(value, list):
        return str(value[0]) if value else None
    return None if value is None else str(value)


@dataclass
class ApigRequest:
    """A typed view of an APIG event."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    path_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_id: str = ""

    @classmethod
    def from_event(cls, event: dict) -> ApigRequest:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        query = {}
        for key, value in (event.get("queryStringParameters") or {}).items():
            first = _first(value)
            if first is not None:
                query[str(key)] = first
        path_params = {str(k): unquote(str(v)) for k, v in (event.get("pathParameters") or {}).items() if k}
        context = event.get("requestContext") or {}
        return cls(
            method=str(event.get("httpMethod") or "GET").upper(),
            path=str(event.get("path") or "/"),
            headers=headers,
            query=query,
            path_params=path_params,
            body=_decode_body(event.get("body"), bool(event.get("isBase64Encoded"))),
            request_id=str(context.get("requestId") or ""),
        )

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> object:
        """The body parsed as JSON, or a 400 that says what is wrong with it."""
        if not self.body.strip():
            raise BadRequest("Request body is empty; send a JSON object")
        try:
            return json.loads(self.body.decode("utf-8"), object_pairs_hook=_unique_keys)
        except DuplicateKeyError as error:
            raise BadRequest(
                f"Request body has the key {error.key!r} more than once; send each key once"
            ) from None
        except UnicodeDecodeError:
            raise BadRequest("Request body is not UTF-8 text") from None
        except ValueError as error:
            raise BadRequest(f"Request body is not valid JSON: {error}") from None
        except RecursionError:
            raise BadRequest("Request body is nested too deeply") from None

    def form(self) -> dict[str, str]:
        """A form-encoded body as a dict (the last of repeated fields wins)."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Form body is not UTF-8 text") from None
        return dict(parse_qsl(text, keep_blank_values=True))


class DuplicateKeyError(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key[:40]


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """JSON objects with a key twice are ambiguous (parsers disagree on which wins): refuse them."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return result


def _decode_body(raw: object, is_base64: bool) -> bytes:
    """APIG sends base64 by default; some templates set the flag over plain text, so fall back."""
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raw = json.dumps(raw)
    if is_base64 and raw:
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            pass
    return raw.encode("utf-8")


@dataclass
class Response:
    status: int
    body: str | bytes = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def to_apig(self) -> dict:
        # A 204 (a CORS preflight) has no body, so no type.
        headers = (
            {"Content-Type": self.content_type, **self.headers} if self.status != 204 else dict(self.headers)
        )
        if isinstance(self.body, bytes):
            return {
                "statusCode": self.status,
                "headers": headers,
                "body": base64.b64encode(self.body).decode("ascii"),
                "isBase64Encoded": True,
            }
        return {
            "statusCode": self.status,
            "headers": headers,
            "body": self.body,
            "isBase64Encoded": False,
        }


def json_response(payload: object, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(payload))


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def api_error_response(error: ApiError) -> Response:
    """The response for an ApiError: its status, its message and any headers it carries."""
    response = error_response(error.status, error.message)
    response.headers.update(error.headers)
    return response


def response_body(response: dict) -> bytes:
    """The bytes an APIG response dict carries (used by the shim and the tests)."""
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8")


def build_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: bytes = b"",
    path_params: dict[str, str] | None = None,
) -> dict:
    """An APIG event as the gateway sends it: lower-cased headers and a base64 body."""
    return {
        "httpMethod": method.upper(),
        "path": path,
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "queryStringParameters": dict(query or {}),
        "pathParameters": dict(path_params or {}),
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
        "requestContext": {
            "apiId": "local",
            "requestId": uuid.uuid4().hex,
            "stage": "RELEASE",
        },
    }
