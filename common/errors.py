"""Errors as types: each carries the HTTP status and a message a person can act on."""

from __future__ import annotations


class ApiError(Exception):
    """An error the API reports to its caller as ``{"error": message}`` with ``status``."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    """No credentials, or credentials that are not valid (never says which, or echoes them)."""

    status = 401

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="iot-metrics"'})


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    """The path exists, but not for this method; ``allowed`` lists the methods that it has."""

    status = 405

    def __init__(self, method: str, path: str, allowed: list[str]):
        listed = ", ".join(allowed)
        super().__init__(f"Method {method} is not allowed for {path}; use {listed}", {"Allow": listed})
        self.allowed = allowed


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class ServiceUnavailable(ApiError):
    """A dependency (Kafka, PostgreSQL, Redis) cannot be reached; the caller may retry."""

    status = 503


class ValidationError(BadRequest):
    """A reading (or a request body) is not acceptable."""
