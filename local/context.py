"""A local stand-in for the FunctionGraph ``context`` object handed to handlers and initializers."""

from __future__ import annotations

import logging
import os
import time
import uuid


class LocalContext:
    """The documented context methods the service uses, backed by the local environment."""

    def __init__(self, function_name: str, timeout_seconds: int = 30, request_id: str | None = None):
        self._function_name = function_name
        self._timeout = timeout_seconds
        self._request_id = request_id or uuid.uuid4().hex
        self._started = time.monotonic()

    def getRequestID(self) -> str:  # noqa: N802 (FunctionGraph's names)
        return self._request_id

    def getUserData(self, key: str, default: str | None = None) -> str | None:  # noqa: N802
        return os.environ.get(key, default)

    def getFunctionName(self) -> str:  # noqa: N802
        return self._function_name

    def getRunningTimeInSeconds(self) -> int:  # noqa: N802
        return self._timeout

    def getRemainingTimeInMilliSeconds(self) -> int:  # noqa: N802
        return max(0, int((self._timeout - (time.monotonic() - self._started)) * 1000))

    def getLogger(self) -> logging.Logger:  # noqa: N802
        return logging.getLogger(f"function.{self._function_name}")
