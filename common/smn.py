"""Publishing to a Huawei Cloud SMN topic with the official SDK, as the function's agency.

FunctionGraph hands a function the temporary credentials of its agency through the invocation's
context (``getSecurityAccessKey``, ``getSecuritySecretKey``, ``getSecurityToken``: docs/functiongraph.md,
section 10). They expire, so the maintenance handler hands each invocation's context to
:func:`use_context` and a publish signs with the newest ones. Outside FunctionGraph (a test, a server
of one's own) the SDK's own environment names are read instead: ``HUAWEICLOUD_SDK_AK``,
``HUAWEICLOUD_SDK_SK`` and, for temporary keys, ``HUAWEICLOUD_SDK_SECURITY_TOKEN``.

The region and the project come from the topic's URN, so nothing else needs configuring; the
endpoint is the SDK's for the region (or ``https://smn.<region>.myhuaweicloud.com``) unless
ALERT_SMN_ENDPOINT names another. The SDK is imported on the first publish: only the maintenance
function publishes, and the other functions never pay for loading it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from .settings import TOPIC_URN

# One publish may take this long (connect, read): a maintenance pass sends up to a batch of them.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 10
# SMN's limit on a subject, in bytes of UTF-8 (PublishMessageRequestBody.subject in the SDK).
MAX_SUBJECT_BYTES = 512


class SmnError(Exception):
    """A message was not published; the message says why and, where it can, what to change."""


@dataclass(frozen=True)
class Topic:
    urn: str
    region: str
    project_id: str
    name: str

    @classmethod
    def parse(cls, urn: str) -> Topic:
        match = TOPIC_URN.fullmatch(urn)
        if match is None:
            raise SmnError(f"not an SMN topic URN (urn:smn:<region>:<project id>:<topic name>): {urn!r}")
        return cls(urn, match["region"], match["project_id"], match["name"])


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the security token that temporary (agency) keys need."""

    ak: str
    sk: str = field(repr=False)
    security_token: str = field(default="", repr=False)

    @classmethod
    def from_context(cls, context: object) -> Credentials | None:
        """The agency's temporary credentials of a FunctionGraph context; None without an agency."""
        values = []
        for method in ("getSecurityAccessKey", "getSecuritySecretKey", "getSecurityToken"):
            getter = getattr(context, method, None)
            try:
                values.append(getter() if getter is not None else "")
            except Exception:  # the runtime's methods are not documented to be total
                values.append("")
        ak, sk, token = (value or "" for value in values)
        return cls(ak, sk, token) if ak and sk else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials | None:
        env = os.environ if environ is None else environ
        ak, sk = env.get("HUAWEICLOUD_SDK_AK", ""), env.get("HUAWEICLOUD_SDK_SK", "")
        return cls(ak, sk, env.get("HUAWEICLOUD_SDK_SECURITY_TOKEN", "")) if ak and sk else None


_lock = threading.Lock()
_from_context: Credentials | None = None


def use_context(context: object) -> None:
    """Keep the agency credentials of this invocation's context for the publishes that follow."""
    global _from_context
    credentials = Credentials.from_context(context)
    if credentials is not None:
        with _lock:
            _from_context = credentials


def use_credentials(credentials: Credentials | None) -> None:
    """Use these credentials (None: forget them); for tests and for callers without a context."""
    global _from_context
    with _lock:
        _from_context = credentials


def current_credentials() -> Credentials | None:
    with _lock:
        credentials = _from_context
    return credentials or Credentials.from_env()


def subject(kind: str, alert: dict) -> str:
    """A subject a person reads in a mail client: "[iot] alert opened: <rule> on <device>/<metric>"
    (no metric for a no-data alert), cut to SMN's limit."""
    where = alert.get("device_id") or "?"
    if alert.get("metric_type"):
        where += f"/{alert['metric_type']}"
    text = f"[iot] alert {kind}: {alert.get('rule_name') or 'rule ' + str(alert.get('rule_id'))} on {where}"
    text = " ".join(text.split())  # no line breaks in a mail header
    encoded = text.encode()
    if len(encoded) <= MAX_SUBJECT_BYTES:
        return text
    return encoded[: MAX_SUBJECT_BYTES - 3].decode(errors="ignore") + "..."


class Publisher:
    """Publishes to one topic; builds its SDK client on first use."""

    def __init__(self, topic_urn: str, endpoint: str = "", credentials: Credentials | None = None):
        self.topic = Topic.parse(topic_urn)
        self.endpoint = endpoint.rstrip("/")
        self._credentials = credentials
        self._client = None

    def _make_client(self, credentials: Credentials):
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdksmn.v2 import SmnClient
        from huaweicloudsdksmn.v2.region.smn_region import SmnRegion

        config = HttpConfig.get_default_config()
        config.timeout = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
        # With the project id given, the SDK asks IAM for nothing; with empty keys it would ask the ECS
        # metadata server, which is why a Publisher never starts without credentials.
        sdk_credentials = BasicCredentials(credentials.ak, credentials.sk, self.topic.project_id)
        if credentials.security_token:
            sdk_credentials.with_security_token(credentials.security_token)
        builder = SmnClient.new_builder().with_http_config(config).with_credentials(sdk_credentials)
        if self.endpoint:
            return builder.with_endpoints([self.endpoint]).build()
        try:
            return builder.with_region(SmnRegion.value_of(self.topic.region)).build()
        except (KeyError, ValueError):  # a region this SDK release does not list
            return builder.with_endpoints([f"https://smn.{self.topic.region}.myhuaweicloud.com"]).build()

    def _client_for(self, credentials: Credentials):
        if self._client is None or self._client[0] != credentials:
            self._client = (credentials, self._make_client(credentials))
        return self._client[1]

    def publish(self, subject: str, message: str) -> str:
        """Publish ``message`` under ``subject``; returns SMN's message id. Raises SmnError."""
        credentials = self._credentials or current_credentials()
        if credentials is None:
            raise SmnError(
                "no credentials to publish to SMN with: give the maintenance function an agency that may"
                " publish to the topic (infra/terraform/iam.tf), or set HUAWEICLOUD_SDK_AK and"
                " HUAWEICLOUD_SDK_SK outside FunctionGraph"
            )
        from huaweicloudsdkcore.exceptions.exceptions import SdkException, ServiceResponseException
        from huaweicloudsdksmn.v2 import PublishMessageRequest, PublishMessageRequestBody

        request = PublishMessageRequest(
            topic_urn=self.topic.urn, body=PublishMessageRequestBody(subject=subject, message=message)
        )
        try:
            response = self._client_for(credentials).publish_message(request)
        except ServiceResponseException as error:
            raise SmnError(_describe(error)) from error
        except SdkException as error:  # no connection, a timeout
            raise SmnError(f"no answer from SMN: {error.error_msg}") from error
        return response.message_id or ""


def _describe(error) -> str:
    status, code = error.status_code, error.error_code or ""
    text = f"SMN answered {status} {code} {error.error_msg or ''}".rstrip()
    if error.request_id:
        text += f" (request {error.request_id})"
    if status in (401, 403):
        text += ": check that the function's agency may publish to the topic (smn:topic:publish)"
    elif status == 404:
        text += ": check ALERT_SMN_TOPIC_URN names a topic of this project and region"
    return text
