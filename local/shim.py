"""The Flask shim: HTTP request -> APIG event -> the owning function's handler -> HTTP response.

It holds no business logic. Routes come from the functions' own routers, so the shim serves exactly
what APIG would route, and each function's initializer runs once, as FunctionGraph runs it.
"""

from __future__ import annotations

import argparse
import logging
import os
from types import ModuleType

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from common.apig import build_event, error_response, response_body

from .context import LocalContext
from .functions import HTTP_FUNCTIONS, load_function

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024


def create_app(function_names: tuple[str, ...] = HTTP_FUNCTIONS) -> Flask:
    functions: list[tuple[str, ModuleType]] = []
    for name in function_names:
        module = load_function(name)
        module.initializer(LocalContext(name))
        functions.append((name, module))

    app = Flask("iot-shim", static_folder=None)
    app.url_map.strict_slashes = False
    # APIG refuses oversized bodies before any function runs; so does the shim.
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        message = "Request body is too large" if error.code == 413 else (error.description or error.name)
        result = error_response(error.code or 400, message).to_apig()
        return Response(response_body(result), status=result["statusCode"], headers=result["headers"])

    def owner(path: str) -> tuple[str, ModuleType, dict[str, str]] | None:
        """The function whose router has a route for this path, and the path parameters."""
        for name, module in functions:
            for route in module.app.routes:
                match = route.pattern.match(path)
                if match:
                    return name, module, match.groupdict()
        return None

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def forward(path: str) -> Response:
        found = owner(request.path)
        if found is None:
            result = error_response(404, f"Not found: {request.method} {request.path}").to_apig()
        else:
            name, module, path_params = found
            event = build_event(
                request.method,
                request.path,
                headers=dict(request.headers),
                query={key: request.args.get(key) for key in request.args},
                body=request.get_data(),
                path_params=path_params,
            )
            context = LocalContext(name, request_id=event["requestContext"]["requestId"])
            result = module.handler(event, context)
        return Response(
            response_body(result), status=result["statusCode"], headers=result.get("headers") or {}
        )

    return app


def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the shim under gunicorn (a production WSGI server) with the given worker count."""
    from gunicorn.app.base import BaseApplication

    class ShimServer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread" if threads > 1 else "sync")
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("keepalive", 5)

        def load(self) -> Flask:
            return create_app()

    ShimServer().run()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the HTTP functions locally, as APIG would.")
    parser.add_argument("--host", default=os.environ.get("SHIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SHIM_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SHIM_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SHIM_THREADS", "8")))
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.threads)


if __name__ == "__main__":
    main()
