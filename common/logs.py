"""Structured logs: one JSON object a line, from every function and every local process.

Each line has ``time`` (UTC, ISO-8601 with milliseconds), ``level``, ``logger`` and ``message``, the
``request_id`` of the request or invocation being served when one is bound (``request_scope``), any
fields a call passes as ``extra={...}``, and ``exception`` with the traceback when there is one. LTS
(and ``jq`` locally) can then search and count by field instead of by pattern.

    log.info("batch stored", extra={"stored": 480, "duplicates": 20})
    -> {"time": "...", "level": "INFO", "logger": "common.consume", "message": "batch stored",
        "request_id": "...", "stored": 480, "duplicates": 20}
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator

# The request (or trigger invocation) this thread of execution serves: every line logged meanwhile
# carries its id. A context variable, so concurrent requests on a shim worker's threads keep theirs.
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# What every LogRecord has; anything else on a record came from ``extra`` and is written as a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def request_id() -> str:
    """The id bound by the innermost ``request_scope`` of this context, or ``""``."""
    return _request_id.get()


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Bind ``request_id`` to every line logged inside the block (and to what ingest queues)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def bind_request(request_id: str) -> contextvars.Token:
    """``request_scope`` without the generator, for the request path: pass the result to
    ``unbind_request`` in a ``finally``."""
    return _request_id.set(request_id)


def unbind_request(token: contextvars.Token) -> None:
    _request_id.reset(token)


def _timestamp(created: float) -> str:
    seconds = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON; values JSON cannot hold are written as their text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        bound = _request_id.get()
        if bound:
            entry["request_id"] = bound
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str | int = "INFO") -> None:
    """Log JSON lines at ``level`` from this process. Idempotent: each initializer may call it.

    A root logger without handlers gets one writing to stderr. Handlers that something else installed
    first and that write to stdout or stderr (a FunctionGraph runtime's own, if it has one:
    docs/functiongraph.md, section 9; Granian's in a shim worker) keep their place but write JSON, so
    no line comes out twice or in another shape. Handlers writing elsewhere (a test's capture) are left
    as they are."""
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    formatter = JsonFormatter()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        if getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            handler.setFormatter(formatter)
    # kafka-python narrates every metadata refresh at INFO; its warnings are what matter.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def dict_config(level: str = "INFO") -> dict:
    """The same JSON lines as a ``logging.config.dictConfig`` mapping, for servers that configure
    logging themselves in each process they start (Granian's ``log_dictconfig``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "kafka": {"level": "WARNING"},
            # Granian's own loggers propagate to the root (JSON) rather than print lines of their own.
            "_granian": {"level": level.upper(), "handlers": [], "propagate": True},
            "granian.access": {"level": level.upper(), "handlers": [], "propagate": True},
        },
    }
