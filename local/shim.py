"""The Flask shim: HTTP request -> APIG event -> the owning function's handler -> HTTP response.

It holds no business logic. Routes come from the functions' own routers, so the shim serves exactly
what APIG would route, and each function's initializer runs once, as FunctionGraph runs it.

Besides them it serves ``GET /metrics``: the pipeline's metrics (common/metrics.py) of every worker, and
under ``make run`` of every trigger loop too, all through one prometheus_client multiprocess directory.
It is the shim's own page, not an API route: APIG has no such route, and no function answers it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from types import ModuleType

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from common import logs, metrics, runtime
from common.apig import build_event, error_response, response_body
from common.auth import CONTEXT_HEADERS, CONTEXT_PARAMETERS, authorizer_event
from common.errors import MethodNotAllowed, NotFound, Unauthorized
from common.router import cors_for
from functions import HTTP_FUNCTIONS, load_function

from .context import LocalContext
from .embedded import port_in_use
from .env import env_int
from .group_commit import GroupCommitProducer

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-Id"
# Headers only the gateway may set (the authorizer's context): a client's copies are dropped.
_GATEWAY_ONLY = frozenset("HTTP_" + header.upper().replace("-", "_") for header in CONTEXT_HEADERS)


def create_app(function_names: tuple[str, ...] = HTTP_FUNCTIONS) -> Flask:
    functions: list[tuple[str, ModuleType]] = []
    for name in function_names:
        module = load_function(name)
        module.initializer(LocalContext(name))
        functions.append((name, module))
    # APIG's custom authorizer, run before any other function as the gateway runs it.
    authorizer = load_function("authorizer")
    authorizer.initializer(LocalContext("authorizer"))
    # Unlike a FunctionGraph instance, a shim worker serves requests on several threads at once, so
    # concurrent ingest requests can share Kafka messages.
    shared = runtime.current()
    shared.producer = GroupCommitProducer(shared.producer)

    app = Flask("iot-shim", static_folder=None)
    app.url_map.strict_slashes = False
    # APIG refuses oversized bodies before any function runs; so does the shim.
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    @app.get("/metrics")
    def metrics_page() -> Response:
        """Prometheus's text format; open, like the rest of the local operator's view (README,
        "Pipeline metrics"). Not a function's route: in the cloud there is nothing to scrape."""
        body, content_type = metrics.exposition(lambda: database_gauges(runtime.current()))
        return Response(body, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        message = "Request body is too large" if error.code == 413 else (error.description or error.name)
        return _http_response(error_response(error.code or 400, message).to_apig())

    def owner(method: str, path: str) -> tuple[str, ModuleType, dict[str, str], bool] | None:
        """The function whose router has this path, the path's parameters and whether the route is
        public. A router that has the path but not the method owns it too: its handler answers the 405
        (or the CORS preflight), and no credential is asked for that."""
        for name, module in functions:
            try:
                route, params = module.app.match(method, path)
            except MethodNotAllowed:
                return name, module, {}, True
            except NotFound:
                continue
            return name, module, params, route.public
        return None

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def forward(path: str) -> Response:
        method, url_path = request.method, request.path
        found = owner(method, url_path)
        if found is None:
            result = error_response(404, f"Not found: {method} {url_path}").to_apig()
        else:
            name, module, path_params, public = found
            environ = request.environ
            event = build_event(
                method,
                url_path,
                headers=_headers(environ),
                query={key: request.args[key] for key in request.args} if environ.get("QUERY_STRING") else {},
                body=_body(environ),
                path_params=path_params,
            )
            request_id = event["requestContext"]["requestId"]
            refusal = None if public else _authorize(authorizer, event)
            if refusal is not None:
                result = refusal
            else:
                result = module.handler(event, LocalContext(name, request_id=request_id))
            # As APIG does: the caller can quote it, and the consumer's log names the batch that
            # stored the request's readings by it.
            result.setdefault("headers", {})[REQUEST_ID_HEADER] = request_id
        return _http_response(result)

    return app


def _authorize(authorizer: ModuleType, event: dict) -> dict | None:
    """What APIG does for an API with a custom authorizer: call it with the request's identity; on
    deny answer 401 without running the backend; on allow hand the backend the answer's context as
    the headers the APIs' backend parameters declare. Returns the refusal, or None (event updated)."""
    if not runtime.current().settings.auth_enabled:
        return None
    answer = authorizer.handler(authorizer_event(event), LocalContext("authorizer"))
    if answer.get("statusCode") != 200:
        return error_response(500, "The authorizer failed; try again shortly").to_apig()
    decision = json.loads(answer["body"])
    if decision.get("status") != "allow":
        refusal = error_response(
            401, "Missing, invalid or revoked credential; send 'Authorization: Bearer <key>'"
        )
        refusal.headers.update(Unauthorized("").headers)
        # so that a dashboard on another origin can read the 401
        refusal.headers.update(cors_for(event["headers"].get("origin")))
        return refusal.to_apig()
    context = decision.get("context") or {}
    for key, header in CONTEXT_PARAMETERS.items():
        if key in context:
            event["headers"][header] = str(context[key])
    return None


def _http_response(result: dict) -> Response:
    """The HTTP response for an APIG-shaped one.

    Its body goes to the server as the list it is (``direct_passthrough``), not through Werkzeug's
    encoding iterator: Granian writes a list in one call but steps through an iterator from Rust,
    which costs every request. Werkzeug still sends no body for HEAD, 204 and 304."""
    return Response(
        response_body(result),
        status=result["statusCode"],
        headers=result.get("headers") or {},
        direct_passthrough=True,
    )


def _headers(environ: dict) -> dict[str, str]:
    """The request's headers, lower-cased as APIG hands them on, read straight from the WSGI environ.

    Flask's header view builds the same pairs through a case-insensitive multi-dict, and that, with the
    body read through Flask's stream, was a sizeable part of a single reading's CPU."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and key not in _GATEWAY_ONLY
    }
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers[name] = environ[key]
    return headers


def _body(environ: dict) -> bytes:
    """The request body: read whole when its length is declared and allowed, else through Flask
    (which refuses an oversized body with 413 and reads a chunked one)."""
    length = request.content_length
    if length is not None and length <= MAX_REQUEST_BYTES:
        return environ["wsgi.input"].read(length)
    return request.get_data()


def worker_app() -> Flask:
    """The app as each Granian worker builds it. The worker also exits if the server's main process
    is gone: Granian's workers outlive a killed main process and keep answering on its port."""
    _exit_with_parent()
    metrics.enable()
    return create_app()


def database_gauges(service: runtime.Runtime) -> dict[str, float]:
    """The values of metrics.DATABASE_GAUGES, read as the reader role (one index scan)."""
    (open_alerts,) = service.store.read(
        lambda conn: conn.execute("SELECT count(*) FROM alert WHERE state = 'open'").fetchone()
    )
    return {"iot_alerts_open": open_alerts}


def metrics_directory() -> str:
    """The prometheus_client multiprocess directory the workers share, made before they start.

    One given in PROMETHEUS_MULTIPROC_DIR belongs to whoever set it (the local runner prepares it for the
    shim and the trigger loops together). Otherwise the shim makes an empty one of its own and removes
    it when it stops: a directory kept from an earlier run would count that run's requests again."""
    given = os.environ.get(metrics.MULTIPROC_DIR)
    if given:
        return given
    own = tempfile.mkdtemp(prefix="iot-shim-metrics-")
    atexit.register(shutil.rmtree, own, ignore_errors=True)
    os.environ[metrics.MULTIPROC_DIR] = own  # the workers inherit it
    return own


def _exit_with_parent(interval: float = 0.5) -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("the shim's main process is gone; this worker exits")
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def default_workers() -> int:
    """Worker processes for this machine: half its cores, at least two.

    The local stack runs PostgreSQL, Kafka, Redis and the consumer on the same machine, so the shim
    leaves them the other half. But one worker is one interpreter lock, so it never uses more than
    one core: under single-reading load with one worker a 2-core machine stood partly idle, and two
    workers took clearly more single readings per second than one, and as many bulk readings.
    """
    return max(2, (os.cpu_count() or 2) // 2)


def configured_workers() -> int:
    """``SHIM_WORKERS`` when set and not empty (compose passes it empty for the default), else
    ``default_workers``."""
    return env_int("SHIM_WORKERS", default_workers())


# Request threads per worker: about as many requests as a worker has in hand under load. Threads
# beyond those only add wake-ups; requests beyond its threads wait in Granian, outside Python.
DEFAULT_THREADS = 4

WORKERS_HELP = "worker processes (default: SHIM_WORKERS, else half the CPU cores, at least 2)"


def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the shim under Granian, a production HTTP server (Rust) speaking WSGI to Flask.

    Granian parses HTTP outside the GIL and costs about half of gunicorn's CPU per request, and on
    two shared cores the server is a large part of what ingest costs."""
    from granian.constants import HTTPModes, Interfaces
    from granian.server import Server

    # Granian's workers share their port (SO_REUSEPORT), so a second shim on the same port would
    # start without a complaint and take half the requests.
    if port_in_use(host, port):
        raise SystemExit(f"Error: {host}:{port} is already in use; choose another port (--port, SHIM_PORT)")

    metrics_directory()
    server = Server(
        "local.shim:worker_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=workers,
        blocking_threads=threads,
        respawn_failed_workers=True,
        # The server's own lines as JSON too, like every process's (common/logs.py).
        log_dictconfig=logs.dict_config(os.environ.get("LOG_LEVEL") or "INFO"),
    )
    # Granian warns when threads outnumber 2 x cores + 1, as SHIM_THREADS may ask. Ours mostly wait
    # for the broker's acknowledgement, so more threads than cores is no fault in itself.
    logging.getLogger("_granian").addFilter(
        lambda record: "Python threads, which seems quite high" not in record.getMessage()
    )
    try:
        server.serve()
    except RuntimeError as error:  # Granian reports a taken port as a RuntimeError from Rust
        if "Address already in use" not in str(error):
            raise
        raise SystemExit(
            f"Error: {host}:{port} is already in use; choose another port (--port, SHIM_PORT)"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the HTTP functions locally, as APIG would.")
    parser.add_argument("--host", default=os.environ.get("SHIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env_int("SHIM_PORT", 8080))
    parser.add_argument(
        "--workers",
        type=int,
        default=configured_workers(),
        help=WORKERS_HELP,
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=env_int("SHIM_THREADS", DEFAULT_THREADS),
        help=f"request threads per worker (default: SHIM_THREADS, else {DEFAULT_THREADS}); concurrent ingest"
        " requests share Kafka messages",
    )
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.threads)


if __name__ == "__main__":
    main()
