"""Credentials, the way IoT platforms hand them out, and what each may do.

Kinds:
- a device token sends and reads for its own device; a gateway token (a device token that lists
  several devices) for the devices it lists;
- a read key reads the devices its globs match (``*`` any run of characters, ``?`` one), or every
  device when it has none; it never sends;
- an admin token may do anything, including the demo-only delete-all.

Credentials are random (256 bits), shown once when created, and stored only as SHA-256 hashes: a fast
hash is enough for secrets with that much entropy, and it lets one be looked up by its hash. They
travel as ``Authorization: Bearer <credential>``; ingest also takes ``X-Device-Token``.

In the cloud APIG's custom authorizer (functions/authorizer) checks the credential before any other
function runs and hands the backend the credential's id, signed, in the ``X-Iot-Credential`` headers
(docs/functiongraph.md, section 8). The backend loads the credential by that id and enforces its scope;
without those headers it checks the credential itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .apig import ApigRequest
from .errors import BadRequest, Forbidden, Unauthorized
from .readings import Reading, glob_regex, parse_device_id
from .store import ReadingStore, TokenRecord

TOKEN_PREFIX = "iot_"
# What new_token makes: the prefix and 32 random bytes in URL-safe base64 (43 characters). Anything
# else is refused before a hash is computed or a lookup made.
_TOKEN_SHAPE = re.compile(r"iot_[A-Za-z0-9_-]{43}")
TOKEN_LENGTH = 47

DEVICE, ADMIN, READ = "device", "admin", "read"

# The headers that carry the authorizer's answer to the backend. A client's own copies are never
# trusted: the shim strips them, and the backend checks their signature.
CREDENTIAL_HEADER = "x-iot-credential"
SIGNATURE_HEADER = "x-iot-credential-sig"
CONTEXT_HEADERS = (CREDENTIAL_HEADER, SIGNATURE_HEADER)
# The authorizer's context keys, and the backend header each API's backend parameter maps it to
# (``$context.authorizer.frontend.<key>``; infra/terraform/apig.tf declares the same).
CONTEXT_PARAMETERS = {"cid": CREDENTIAL_HEADER, "sig": SIGNATURE_HEADER}

# Device globs: what a device id may hold, plus the two wildcards.
_GLOB = re.compile(r"[A-Za-z0-9_.:@*?-]{1,128}")
# Bounds of the per-process memory of verified and refused credentials, each on its own, so a flood of
# invalid credentials cannot push out the valid ones.
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a credential belongs to and what it may do."""

    id: int
    name: str
    kind: str
    # Device ids for a device or gateway token; globs for a read key (none: every device).
    devices: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.kind == ADMIN

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The device globs this principal may read, or None for every device."""
        if self.kind == ADMIN or (self.kind == READ and not self.devices):
            return None
        return self.devices

    @cached_property
    def _readable(self) -> re.Pattern | None:
        if self.scope is None:
            return None
        return re.compile("|".join(f"(?:{glob_regex(glob)})" for glob in self.scope))

    def may_read(self, device_id: str) -> bool:
        return self._readable is None or self._readable.fullmatch(device_id) is not None

    def may_send_for(self, device_id: str) -> bool:
        return self.kind == ADMIN or (self.kind == DEVICE and device_id in self.devices)


# Who the caller is when auth is off (the local demo): anyone may do anything.
UNRESTRICTED = Principal(0, "auth off", ADMIN)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    return len(token) == TOKEN_LENGTH and _TOKEN_SHAPE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_glob(raw: str) -> str:
    if not _GLOB.fullmatch(raw):
        raise BadRequest(
            f"{raw[:40]!r} is not a device glob: use the letters, digits and _.:@- of device ids,"
            " with * for any run of characters and ? for one"
        )
    return raw


def presented_token(request: ApigRequest) -> str | None:
    """The credential a request carries, from ``Authorization: Bearer`` or ``X-Device-Token``."""
    return presented_in(request.headers)


def presented_in(headers: dict[str, str]) -> str | None:
    """The credential in lower-cased ``headers``."""
    authorization = headers.get("authorization", "").strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = headers.get("x-device-token", "").strip()
    return token or None


class _Remembered:
    """A bounded map whose entries expire: the least recently used goes first when it is full."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[object, tuple[object, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object, now: float) -> tuple[bool, object]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if entry[1] <= now:
                del self._entries[key]
                return False, None
            self._entries.move_to_end(key)
            return True, entry[0]

    def put(self, key: object, value: object, expires: float) -> None:
        with self._lock:
            self._entries[key] = (value, expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _principal(record: TokenRecord) -> Principal:
    return Principal(record.id, record.name, record.kind, tuple(record.devices))


class TokenRegistry:
    """Creating, revoking and verifying credentials.

    What a lookup found is remembered for ``cache_seconds``: valid credentials, refused ones (apart, so
    refusals never push out valid ones) and credentials by id. A revoked credential stops working
    within that time. Admin credentials are never remembered: each use asks PostgreSQL."""

    def __init__(self, store: ReadingStore, cache_seconds: int = 60, context_secret: str = ""):
        self.store = store
        self.cache_seconds = cache_seconds
        # Where the authorizer runs in another process, both must be given the same secret.
        self._key = context_secret.encode() if context_secret else _PROCESS_KEY
        self.valid = _Remembered(MAX_REMEMBERED)
        self.refused = _Remembered(MAX_REMEMBERED)
        self.by_id = _Remembered(MAX_REMEMBERED)

    # -- issuing -----------------------------------------------------------------------------
    def register(self, name: str, devices: Sequence[str] = (), *, is_admin: bool = False) -> str:
        """Create a device, gateway or admin token and return it; it is stored only as a hash."""
        checked = sorted({parse_device_id(device) for device in devices})
        if not checked and not is_admin:
            checked = [parse_device_id(name)]  # a device token: the device is the name
        return self._issue(name, ADMIN if is_admin else DEVICE, [] if is_admin else checked)

    def register_reader(self, name: str, globs: Sequence[str] = ()) -> str:
        """Create a read key for the devices the globs match (none: every device)."""
        if not name.strip():
            raise BadRequest("a read key needs a name")
        return self._issue(name, READ, sorted({parse_glob(glob) for glob in globs}))

    def _issue(self, name: str, kind: str, devices: list[str]) -> str:
        token = new_token()
        self.store.save_token(hash_token(token), name, kind, devices)
        return token

    def revoke(self, name: str) -> int:
        revoked = self.store.revoke_tokens(name)
        for memory in (self.valid, self.by_id):
            memory.clear()
        return revoked

    # -- verifying ---------------------------------------------------------------------------
    def verify(self, token: str) -> Principal | None:
        """The principal of an active credential, or None. A credential of the wrong shape costs no
        lookup; any other costs at most one per cache period."""
        if not well_formed(token):
            return None
        key = hash_token(token)
        now = time.monotonic()
        for memory in (self.valid, self.refused):
            found, principal = memory.get(key, now)
            if found:
                return principal
        record = self.store.find_token(key)
        if record is None:
            self.refused.put(key, None, now + self.cache_seconds)
            return None
        principal = _principal(record)
        if not principal.is_admin:
            self.valid.put(key, principal, now + self.cache_seconds)
        return principal

    def principal_by_id(self, credential_id: int) -> Principal | None:
        """The principal of the active credential with this id (what the authorizer vouched for)."""
        now = time.monotonic()
        found, principal = self.by_id.get(credential_id, now)
        if found:
            return principal
        record = self.store.find_token_by_id(credential_id)
        principal = _principal(record) if record is not None else None
        if principal is None or not principal.is_admin:
            self.by_id.put(credential_id, principal, now + self.cache_seconds)
        return principal

    # -- the authorizer's signed context -----------------------------------------------------
    def sign(self, credential_id: int) -> str:
        return hmac.new(self._key, str(credential_id).encode(), hashlib.sha256).hexdigest()

    def context(self, principal: Principal) -> dict[str, str]:
        """What the authorizer hands the backend: small keys, the id and its signature."""
        return {"cid": str(principal.id), "sig": self.sign(principal.id)}

    def _from_context(self, credential: str, signature: str) -> Principal:
        if not credential.isdigit() or len(credential) > 19:
            raise Unauthorized("The gateway's credential header is not valid")
        if not hmac.compare_digest(self.sign(int(credential)), signature):
            raise Unauthorized("The gateway's credential header is not signed with this service's key")
        principal = self.principal_by_id(int(credential))
        if principal is None:
            raise Unauthorized("Invalid or revoked credential")
        return principal

    def authenticate(self, request: ApigRequest) -> Principal:
        """The caller, from the authorizer's signed context when the gateway sent one, else from the
        credential the request carries. 401 when there is none or it is not valid."""
        headers = request.headers
        credential = headers.get(CREDENTIAL_HEADER)
        if credential is not None:
            return self._from_context(credential, headers.get(SIGNATURE_HEADER, ""))
        token = presented_token(request)
        if token is None:
            raise Unauthorized(
                "Missing credential; send 'Authorization: Bearer <key>' (devices may send 'X-Device-Token')"
            )
        principal = self.verify(token)
        if principal is None:
            raise Unauthorized("Invalid or revoked credential")
        return principal

    def authorize(self, event: dict) -> dict:
        """APIG's frontend custom-authorizer answer for its event: allow with the signed context, or
        deny (APIG then answers 401 and no other function runs)."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        token = presented_in(headers)
        principal = self.verify(token) if token is not None else None
        if principal is None:
            answer: dict = {"status": "deny"}
        else:
            answer = {"status": "allow", "context": self.context(principal)}
        return {"statusCode": 200, "body": json.dumps(answer)}


_PROCESS_KEY = secrets.token_bytes(32)


def authorizer_event(event: dict, user_data: str = "") -> dict:
    """The event APIG sends a frontend custom authorizer for a request's APIG ``event``: as documented,
    only the request's headers and query parameters and the authorizer's user data (no method or
    path, so the answer may not depend on them)."""
    return {
        "headers": dict(event.get("headers") or {}),
        "queryStringParameters": dict(event.get("queryStringParameters") or {}),
        "user_data": user_data,
    }


def authorize_readings(principal: Principal, readings: Sequence[Reading], *, bulk: bool) -> None:
    """403 unless the credential may send every reading's device (bulk errors name the reading)."""
    for index, reading in enumerate(readings):
        if not principal.may_send_for(reading.device_id):
            where = f"Reading {index}: " if bulk else ""
            raise Forbidden(f"{where}this credential may not send readings for device {reading.device_id!r}")


def require_read(principal: Principal, device_id: str) -> None:
    """403 unless the credential may read the device; the same whether or not the device exists."""
    if not principal.may_read(device_id):
        raise Forbidden(f"This credential may not read device {device_id[:128]!r}")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This needs the admin token")
