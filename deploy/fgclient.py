"""Credentials, the FunctionGraph client and URNs: what every deploy subcommand needs to talk to the API.

Credentials come from the environment (``HUAWEICLOUD_ACCESS_KEY``, ``HUAWEICLOUD_SECRET_KEY``,
``HUAWEICLOUD_PROJECT_ID``, ``HUAWEICLOUD_REGION``; the Terraform provider's ``HW_*`` names work too).
``HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT`` and ``HUAWEICLOUD_OBS_ENDPOINT`` override the endpoints (the tests
point them at a local fake FunctionGraph and a local S3-compatible server).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV = {
    "ak": ("HUAWEICLOUD_ACCESS_KEY", "HW_ACCESS_KEY"),
    "sk": ("HUAWEICLOUD_SECRET_KEY", "HW_SECRET_KEY"),
    "project_id": ("HUAWEICLOUD_PROJECT_ID", "HW_PROJECT_ID"),
    "region": ("HUAWEICLOUD_REGION", "HW_REGION_NAME"),
    "endpoint": ("HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT",),
    "obs_endpoint": ("HUAWEICLOUD_OBS_ENDPOINT",),
}


class DeployError(RuntimeError):
    """The command cannot go ahead; the message says why."""


@dataclass(frozen=True)
class Credentials:
    ak: str = ""
    sk: str = ""
    project_id: str = ""
    region: str = ""
    endpoint: str = ""
    obs_endpoint: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        values = {}
        for key, names in ENV.items():
            values[key] = next((env[name] for name in names if env.get(name)), "")
        return cls(**values)

    def missing(self) -> list[str]:
        """The variables FunctionGraph calls need and the environment lacks."""
        needed = ("ak", "sk", "project_id") + (() if self.endpoint else ("region",))
        return [ENV[key][0] for key in needed if not getattr(self, key)]

    def missing_for_obs(self) -> list[str]:
        needed = ("ak", "sk") + (() if self.obs_endpoint else ("region",))
        return [ENV[key][0] for key in needed if not getattr(self, key)]

    def require(self, missing: list[str], hint: str = "") -> None:
        if missing:
            raise DeployError(f"set {', '.join(missing)} in the environment{hint}")


# How long a call may take: uploads and cold starts take a while, and a synchronous invocation (a smoke
# test, a replayed batch) waits for the function, so a function that must be smoke-tested needs a
# timeout below READ_TIMEOUT_SECONDS (infra/terraform/variables.tf, var.functions).
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 180


def function_urn(region: str, project_id: str, app: str, name: str, version: str = "latest") -> str:
    """``urn:fss:{region}:{project_id}:function:{app}:{name}:{version}`` (docs/functiongraph.md, section 4)."""
    return f"urn:fss:{region}:{project_id}:function:{app}:{name}:{version}"


def with_version(urn: str, version: str) -> str:
    """The same function's URN for another version (``latest`` or a published one)."""
    return urn.rsplit(":", 1)[0] + ":" + version


def alias_urn(urn: str, alias: str) -> str:
    """``{URN without version}:!{alias}``, the form APIG and triggers use (docs/functiongraph.md, section 4)."""
    return with_version(urn, "!" + alias)


def make_client(creds: Credentials):
    """A FunctionGraph client for ``creds``: the region's endpoint unless an endpoint is given."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkfunctiongraph.v2 import FunctionGraphClient
    from huaweicloudsdkfunctiongraph.v2.region.functiongraph_region import FunctionGraphRegion

    config = HttpConfig.get_default_config()
    config.timeout = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
    builder = (
        FunctionGraphClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(creds.ak, creds.sk, creds.project_id))
    )
    if creds.endpoint:
        return builder.with_endpoints([creds.endpoint.rstrip("/")]).build()
    try:
        region = FunctionGraphRegion.value_of(creds.region)
    except (KeyError, ValueError):
        return builder.with_endpoints([f"https://functiongraph.{creds.region}.myhuaweicloud.com"]).build()
    return builder.with_region(region).build()


def sdk():
    """The SDK's v2 module (request and body classes), imported when a call is made."""
    from huaweicloudsdkfunctiongraph import v2

    return v2


def json_value(raw: object) -> object:
    """The API returns some JSON values as text (an invocation's result, a destination's param): that
    text parsed, or ``raw`` as it is when it is not JSON text."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def describe_error(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    if status is None:
        return f"{type(error).__name__}: {error}"
    code = getattr(error, "error_code", "") or ""
    message = getattr(error, "error_msg", "") or str(error)
    request = getattr(error, "request_id", "") or ""
    return f"HTTP {status} {code} {message}".strip() + (f" (request {request})" if request else "")


def is_not_found(error: Exception) -> bool:
    return getattr(error, "status_code", None) == 404
