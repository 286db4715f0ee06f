"""Serving the dashboard's static files from the dashboard function's own package, with the headers
that confine the pages in the browser.

Only the regular files directly in the static folder are served, looked up by name in a listing of
that folder: a name never reaches the file system, so a NUL byte, a name longer than the file system
allows, ``..``, a deep path or a directory's name is simply not one of them (400 or 404 with a JSON
message, never a 500).

The Content-Security-Policy allows scripts, styles and images from the dashboard's own origin only,
and API calls to it and to the API named by ``apiBase`` in config.js. The pages also carry the policy
in a ``<meta>`` element for hosts that cannot set headers (an OBS static website): its connect-src
names only ``'self'`` in the source files, and whoever serves the pages with ``apiBase`` pointing
elsewhere adds that origin to it (``with_api_origin``: this module for the dashboard function,
scripts/dashboard_site.py and Terraform for OBS). docs/dashboard.md, "Security headers", says what a
meta policy cannot do.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from .apig import ApigRequest, Response
from .errors import BadRequest, NotFound

log = logging.getLogger(__name__)

TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")
CONFIG = "config.js"
# The pages (served at the site's root, each with the Content-Security-Policy meta to widen); every
# other file is an asset under /static/.
PAGES = ("index.html", "device.html", "alerts.html")
# The longest file name Linux file systems (and OBS keys' last part, in practice) hold.
MAX_NAME_LENGTH = 255

# What the source pages' meta policy allows API calls to; the origin of apiBase is added after it.
CONNECT_SELF = "connect-src 'self'"
_CSP_META = re.compile(r'(<meta http-equiv="Content-Security-Policy" content=")([^"]*)(">)')
_API_BASE = re.compile(r'^\s*apiBase\s*:\s*"([^"\n]*)"', re.MULTILINE)
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidApiBase(ValueError):
    """apiBase in config.js is not an http(s) URL the pages can be allowed to call."""


def content_security_policy(api_origins: Iterable[str] = (), *, meta: bool = False) -> str:
    """The dashboard's Content-Security-Policy: everything from its own origin, API calls also to
    ``api_origins``, no inline script or style, no framing. ``meta`` leaves out what a ``<meta>``
    policy may not carry (browsers ignore frame-ancestors there, and say so in the console)."""
    connect = " ".join([CONNECT_SELF, *dict.fromkeys(api_origins)])
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        connect,
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
    if not meta:
        directives.append("frame-ancestors 'none'")
    return "; ".join(directives)


def security_headers(api_origin: str | None = None) -> dict[str, str]:
    """The headers every dashboard response carries.

    Referrer-Policy is no-referrer: the device page's URL names a device (``?id=``), and nothing the
    dashboard calls needs to know which page called it, so no URL leaves the page as a Referer."""
    return {
        "Content-Security-Policy": content_security_policy([api_origin] if api_origin else []),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # For browsers that predate frame-ancestors.
        "X-Frame-Options": "DENY",
    }


def api_base_of(config_text: str) -> str:
    """The ``apiBase: "..."`` value of config.js ("" when it has none: the page's own origin)."""
    found = _API_BASE.search(config_text)
    return found.group(1).strip() if found else ""


def api_origin(api_base: str) -> str | None:
    """The origin (``scheme://host[:port]``) of an apiBase URL, as a CSP source; None for ""."""
    api_base = api_base.strip()
    if not api_base:
        return None
    parts = urlsplit(api_base)
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(parts.netloc):
        raise InvalidApiBase(
            f"apiBase must be an http(s) URL such as https://api.example.com, not {api_base!r}"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def with_api_origin(page: str, origin: str | None) -> str:
    """``page`` with ``origin`` added to its meta policy's connect-src (the page as it is for ``None``).

    The same as replacing the one ``connect-src 'self'`` in the page by ``connect-src 'self' <origin>``,
    which is how Terraform does it for OBS."""
    if origin is None:
        return page

    def widen(meta: re.Match) -> str:
        policy = meta.group(2)
        if policy.count(CONNECT_SELF) != 1:
            raise ValueError(f"the page's Content-Security-Policy meta has no single {CONNECT_SELF!r}")
        return meta.group(1) + policy.replace(CONNECT_SELF, f"{CONNECT_SELF} {origin}") + meta.group(3)

    text, count = _CSP_META.subn(widen, page, count=1)
    if count != 1:
        raise ValueError('the page has no <meta http-equiv="Content-Security-Policy"> to widen')
    return text


def _shown(name: str) -> str:
    """A requested name as an error message may quote it: escaped and at most 80 characters."""
    quoted = json.dumps(name)[1:-1]
    return quoted if len(quoted) <= 80 else quoted[:77] + "..."


class StaticSite:
    """The files directly in ``root``, each served by its name; anything else is not found."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self._config: tuple[str, str | None] | None = None  # (config.js's text, its API origin)

    def names(self) -> frozenset[str]:
        """The files served: regular files directly in the folder (not symbolic links), hidden ones
        aside. Listed on each request, so an edited or added file is served at once."""
        with os.scandir(self.root) as entries:
            return frozenset(
                entry.name
                for entry in entries
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
            )

    def api_origin(self) -> str | None:
        """The origin config.js's apiBase points at, None for the page's own. A config.js whose
        apiBase is not a URL is logged and treated as the page's own origin: the pages then cannot
        reach the API, and say so."""
        try:
            text = (self.root / CONFIG).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot read %s: %s; the pages call their own origin", CONFIG, error)
            return None
        if self._config is None or self._config[0] != text:
            try:
                origin = api_origin(api_base_of(text))
            except InvalidApiBase as error:
                log.warning("%s: %s; the pages may call their own origin only", CONFIG, error)
                origin = None
            self._config = (text, origin)
        return self._config[1]

    def security_headers(self) -> dict[str, str]:
        return security_headers(self.api_origin())

    def secure(self, response: dict) -> dict:
        """An APIG response (a page, an asset or an error) with the security headers added."""
        return {**response, "headers": {**(response.get("headers") or {}), **self.security_headers()}}

    def file(self, name: str, *, cache_seconds: int = 60) -> Response:
        if _CONTROL.search(name):
            raise BadRequest(
                f"No such file: /static/{_shown(name)}: asset names hold no control characters (such as NUL)"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise BadRequest(
                f"No such file: asset names are at most {MAX_NAME_LENGTH} characters, this one has {len(name)}"
            )
        if name not in self.names():
            raise NotFound(f"No such file: /static/{_shown(name)} (the dashboard's files: docs/dashboard.md)")
        path = self.root / name
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            data = path.read_bytes()
        except OSError:  # removed since the listing: as if it never was
            raise NotFound(f"No such file: /static/{_shown(name)}") from None
        headers = {"Cache-Control": f"public, max-age={cache_seconds}"}
        if not kind.startswith(TEXT_TYPES):
            return Response(200, data, content_type=kind, headers=headers)
        text = data.decode("utf-8")
        if name in PAGES:
            text = with_api_origin(text, self.api_origin())
        return Response(200, text, content_type=f"{kind}; charset=utf-8", headers=headers)

    def page(self, request: ApigRequest, **_: str) -> Response:
        """The overview page for ``/``; the device page reads its id from the URL itself."""
        return self.file("index.html", cache_seconds=0)

    def device_page(self, request: ApigRequest, **_: str) -> Response:
        """The device page for ``/device/{device_id}`` and ``/device.html?id=``; it reads the id itself."""
        return self.file("device.html", cache_seconds=0)

    def alerts_page(self, request: ApigRequest, **_: str) -> Response:
        """The alert rules and closed alerts for ``/alerts.html`` (the same name on an OBS website)."""
        return self.file("alerts.html", cache_seconds=0)

    def asset(self, request: ApigRequest, name: str) -> Response:
        # config.js is the file operators edit: a change takes effect on the next page load.
        return self.file(name, cache_seconds=0 if name == CONFIG else 60)
