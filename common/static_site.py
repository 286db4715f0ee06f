"""Serving the dashboard's static files from the dashboard function's own package."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from .apig import ApigRequest, Response
from .errors import NotFound

TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


class StaticSite:
    """Files under ``root``; names outside it (``..``, absolute paths) are simply not found."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def file(self, name: str, *, cache_seconds: int = 60) -> Response:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise NotFound(f"No such file: {name}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = path.read_bytes()
        headers = {"Cache-Control": f"public, max-age={cache_seconds}"}
        if kind.startswith(TEXT_TYPES):
            return Response(200, data.decode("utf-8"), content_type=f"{kind}; charset=utf-8", headers=headers)
        return Response(200, data, content_type=kind, headers=headers)

    def page(self, request: ApigRequest, **_: str) -> Response:
        """The overview page for ``/``; the device page reads its id from the URL itself."""
        return self.file("index.html", cache_seconds=0)

    def device_page(self, request: ApigRequest, **_: str) -> Response:
        """The device page for ``/device/{device_id}`` and ``/device.html?id=``; it reads the id itself."""
        return self.file("device.html", cache_seconds=0)

    def asset(self, request: ApigRequest, name: str) -> Response:
        # config.js is the file operators edit: a change takes effect on the next page load.
        return self.file(name, cache_seconds=0 if name == "config.js" else 60)
