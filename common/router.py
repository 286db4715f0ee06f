"""A small router: routes declared with decorators, ``app.resolve(event, context)`` as the handler.

Paths use APIG's template syntax (``/api/device/{device_id}/latest``) so the same table drives
the function, the local shim and the Terraform APIG APIs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from .apig import CORS_HEADERS, ApigRequest, Response, error_response, json_response
from .errors import ApiError

log = logging.getLogger(__name__)

Handler = Callable[..., "Response | dict"]
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # APIG template, e.g. /api/device/{device_id}/latest
    function: Handler

    @cached_property
    def pattern(self) -> re.Pattern:
        """The path template as a regex; a trailing slash is tolerated."""
        segments = [
            f"(?P<{name.group(1)}>[^/]+)" if (name := _PARAM.fullmatch(part)) else re.escape(part)
            for part in self.path.strip("/").split("/")
        ]
        return re.compile("^/" + "/".join(segments) + "/?$")

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(function: Handler) -> Handler:
            self.routes.append(Route(method.upper(), path, function))
            return function

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("POST", path)

    def _match(self, path: str) -> list[tuple[Route, dict[str, str]]]:
        found = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                found.append((route, match.groupdict()))
        return found

    def resolve(self, event: dict, context: object = None) -> dict:
        """Route one APIG event to its function and return the APIG response dict."""
        request = ApigRequest.from_event(event)
        return self.dispatch(request).to_apig()

    def dispatch(self, request: ApigRequest) -> Response:
        candidates = self._match(request.path)
        if not candidates:
            return error_response(404, f"Not found: {request.method} {request.path}")
        allowed = sorted({route.method for route, _ in candidates})
        if request.method == "OPTIONS":
            return Response(204, "", headers={**CORS_HEADERS, "Allow": ", ".join(allowed)})
        for route, params in candidates:
            if route.method == request.method or (request.method == "HEAD" and route.method == "GET"):
                # APIG's own pathParameters win when present; the path match fills the rest.
                params.update({k: v for k, v in request.path_params.items() if k in params})
                return self._call(route, request, params)
        response = error_response(
            405, f"Method {request.method} is not allowed for {request.path}; use {', '.join(allowed)}"
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response

    @staticmethod
    def _call(route: Route, request: ApigRequest, params: dict[str, str]) -> Response:
        try:
            result = route.function(request, **params)
        except ApiError as error:
            response = error_response(error.status, error.message)
            response.headers.update(error.headers)
            return response
        except Exception:
            log.exception("unhandled error in %s %s", request.method, route.path)
            reference = f" (request {request.request_id})" if request.request_id else ""
            return error_response(500, f"Internal error{reference}; see the function logs")
        return result if isinstance(result, Response) else json_response(result)
