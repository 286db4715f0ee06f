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

from . import logs, runtime
from .apig import ApigRequest, Response, api_error_response, cors_headers, error_response, json_response
from .errors import ApiError, MethodNotAllowed, NotFound

log = logging.getLogger(__name__)

Handler = Callable[..., "Response | dict"]
_PARAM = re.compile(r"\{(\w+)\}")


def cors_for(origin: str | None) -> dict[str, str]:
    """The CORS headers for a request from ``origin`` under this process's settings (CORS_ORIGINS, and
    any origin only while auth is off and none are configured)."""
    settings = runtime.current().settings
    any_origin = not settings.auth_enabled and not settings.origins
    return cors_headers(origin, settings.origins, any_origin=any_origin)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # APIG template, e.g. /api/device/{device_id}/latest
    function: Handler
    # Open to anyone: no credential is asked for, at the gateway or in the function.
    public: bool = False

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

    def route(self, method: str, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        def register(function: Handler) -> Handler:
            self.routes.append(Route(method.upper(), path, function, public))
            return function

        return register

    def get(self, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        return self.route("GET", path, public=public)

    def post(self, path: str, *, public: bool = False) -> Callable[[Handler], Handler]:
        return self.route("POST", path, public=public)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and ``path``, and the path's parameters (HEAD matches GET).

        Raises NotFound when no route has the path, MethodNotAllowed (which lists the methods the path
        has) when routes have the path but not this method."""
        allowed = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found.groupdict()
            allowed.append(route.method)
        if not allowed:
            raise NotFound(f"Not found: {method} {path}")
        raise MethodNotAllowed(method, path, sorted(set(allowed)))

    def resolve(self, event: dict, context: object = None) -> dict:
        """Route one APIG event to its function and return the APIG response dict."""
        request = ApigRequest.from_event(event)
        # Every line logged while it is served, and what ingest queues, names the request.
        bound = logs.bind_request(request.request_id)  # not a context manager: this runs per request
        try:
            response = self.dispatch(request)
        finally:
            logs.unbind_request(bound)
        response.headers = {**cors_for(request.headers.get("origin")), **response.headers}
        return response.to_apig()

    def dispatch(self, request: ApigRequest) -> Response:
        try:
            route, params = self.match(request.method, request.path)
        except MethodNotAllowed as error:
            if request.method == "OPTIONS":  # a CORS preflight for a path that exists
                return Response(204, "", headers={"Allow": ", ".join(error.allowed)})
            return api_error_response(error)
        except NotFound as error:
            return api_error_response(error)
        # APIG's own pathParameters win when present; the path match fills the rest.
        params.update({k: v for k, v in request.path_params.items() if k in params})
        return self._call(route, request, params)

    @staticmethod
    def _call(route: Route, request: ApigRequest, params: dict[str, str]) -> Response:
        try:
            result = route.function(request, **params)
        except ApiError as error:
            return api_error_response(error)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, route.path)
            reference = f" (request {request.request_id})" if request.request_id else ""
            return error_response(500, f"Internal error{reference}; see the function logs")
        return result if isinstance(result, Response) else json_response(result)
