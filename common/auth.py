"""Access tokens, the way IoT platforms hand them out.

A device token may send readings for its own device; a gateway token for the devices it lists; an
admin token may do anything, including the demo-only delete-all. Tokens are random (256 bits), shown
once when created, and stored only as SHA-256 hashes: a fast hash is enough for secrets with that
much entropy, and it lets a token be looked up by its hash.

Ingest accepts ``Authorization: Bearer <token>`` or ``X-Device-Token: <token>``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .apig import ApigRequest
from .errors import Forbidden, Unauthorized
from .readings import Reading, parse_device_id
from .store import ReadingStore

TOKEN_PREFIX = "iot_"
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to and what it may do."""

    name: str
    devices: frozenset[str]
    is_admin: bool = False

    def may_send_for(self, device_id: str) -> bool:
        return self.is_admin or device_id in self.devices


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def presented_token(request: ApigRequest) -> str | None:
    """The token a request carries, from ``Authorization: Bearer`` or ``X-Device-Token``."""
    authorization = request.headers.get("authorization", "").strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = request.headers.get("x-device-token", "").strip()
    return token or None


class TokenRegistry:
    """Creating, revoking and verifying tokens; verification results are remembered briefly."""

    def __init__(self, store: ReadingStore, cache_seconds: int = 60):
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, devices: Sequence[str] = (), *, is_admin: bool = False) -> str:
        """Create a token and return it; it is not stored anywhere in clear text."""
        checked = sorted({parse_device_id(device) for device in devices})
        if not checked and not is_admin:
            checked = [parse_device_id(name)]  # a device token: the device is the name
        token = new_token()
        self.store.save_token(hash_token(token), name, checked, is_admin)
        return token

    def revoke(self, name: str) -> int:
        revoked = self.store.revoke_tokens(name)
        with self._lock:
            self._cache.clear()
        return revoked

    def verify(self, token: str) -> Principal | None:
        key = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = self.store.find_token(key)
        principal = Principal(row[0], frozenset(row[1]), row[2]) if row else None
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (principal, now + self.cache_seconds)
        return principal

    def authenticate(self, request: ApigRequest) -> Principal:
        token = presented_token(request)
        if token is None:
            raise Unauthorized(
                "Missing access token; send 'Authorization: Bearer <token>' or 'X-Device-Token: <token>'"
            )
        principal = self.verify(token)
        if principal is None:
            raise Unauthorized("Invalid or revoked access token")
        return principal


def authorize_readings(principal: Principal, readings: Sequence[Reading], *, bulk: bool) -> None:
    """403 unless the token may send every reading's device (bulk errors name the reading)."""
    for index, reading in enumerate(readings):
        if not principal.may_send_for(reading.device_id):
            where = f"Reading {index}: " if bulk else ""
            raise Forbidden(f"{where}this token may not send readings for device {reading.device_id!r}")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This needs the admin token")
