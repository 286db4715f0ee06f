"""Synchronous invocations through the SDK, for the smoke tests and for replaying failed batches.

``X-Cff-Log-Type: tail`` asks for the last 4 KB of the function's log and ``X-CFF-Request-Version: v1``
for a JSON answer (docs/functiongraph.md, section 4). The function's return value arrives as text in
``result``; an exception in the function arrives as ``{"errorMessage", "errorType", ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fgclient import describe_error, json_value, sdk


@dataclass(frozen=True)
class Invocation:
    result: object = None  # the function's return value, parsed when it is JSON
    request_id: str = "?"
    log: str = ""  # the function's log tail
    error: str = ""  # why the invocation itself failed; empty when the function ran

    @property
    def problem(self) -> str | None:
        """Why this is not a normal return: the call failed or the function raised; None otherwise."""
        if self.error:
            return self.error
        if isinstance(self.result, dict) and "errorMessage" in self.result:
            kind = self.result.get("errorType") or "an error"
            return f"the function raised {kind}: {self.result['errorMessage']}"
        return None


def invoke(client, urn: str, event: dict) -> Invocation:
    """Invoke ``urn`` (a version or alias URN) with ``event`` and wait for the result."""
    v2 = sdk()
    try:
        response = client.invoke_function(
            v2.InvokeFunctionRequest(
                function_urn=urn, x_cff_log_type="tail", x_cff_request_version="v1", body=event
            )
        )
    except Exception as error:
        return Invocation(error=describe_error(error))
    request = response.request_id or response.x_cff_request_id or "?"
    log = str(response.log or "")
    if response.status not in (None, 200):
        return Invocation(json_value(response.result), request, log, f"invocation status {response.status}")
    return Invocation(json_value(response.result), request, log)
