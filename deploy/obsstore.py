"""The failure records in OBS, through Huawei's own OBS SDK (``esdk-obs-python``).

Huawei's SDK rather than boto3: it signs requests the way OBS documents by default, knows OBS's
endpoints and error fields, and it is the SDK FunctionGraph's own runtimes bundle. OBS also speaks
the S3 API, and the SDK works against an S3-compatible server, which is how the tests run it
(``HUAWEICLOUD_OBS_ENDPOINT`` pointing at a local one, with path-style addressing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .fgclient import Credentials

# How the SDK reports an object's time (UTC), e.g. "2026/11/30 10:40:59".
_SDK_TIME = "%Y/%m/%d %H:%M:%S"
PAGE_SIZE = 1000


class ObsError(RuntimeError):
    """An OBS request failed; the message names the request and OBS's answer."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime | None  # UTC


def _modified(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return datetime.strptime(str(value), _SDK_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def obs_endpoint(creds: Credentials) -> str:
    return creds.obs_endpoint or f"https://obs.{creds.region}.myhuaweicloud.com"


class FailureBucket:
    """List, read and delete the objects of one bucket."""

    def __init__(self, bucket: str, creds: Credentials):
        from obs import ObsClient

        self.bucket = bucket
        options = {}
        if creds.obs_endpoint:  # a given endpoint (a test server) is addressed by path, as it is
            options = {"path_style": True, "is_signature_negotiation": False}
        self._client = ObsClient(
            access_key_id=creds.ak, secret_access_key=creds.sk, server=obs_endpoint(creds), **options
        )

    def close(self) -> None:
        self._client.close()

    def _check(self, reply, what: str):
        if reply.status >= 300:
            raise ObsError(
                f"{what} in bucket {self.bucket}: HTTP {reply.status} {reply.errorCode or ''} "
                f"{reply.errorMessage or ''}".strip()
            )
        return reply.body

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``, oldest first."""
        found: list[StoredObject] = []
        marker = None
        while True:
            body = self._check(
                self._client.listObjects(self.bucket, prefix=prefix, marker=marker, max_keys=PAGE_SIZE),
                f"listing {prefix!r}",
            )
            contents = body.contents or []
            found += [StoredObject(o.key, int(o.size or 0), _modified(o.lastModified)) for o in contents]
            if not body.is_truncated or not contents:
                break
            marker = body.next_marker or contents[-1].key
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(found, key=lambda o: (o.modified or oldest, o.key))

    def read(self, key: str) -> bytes:
        body = self._check(
            self._client.getObject(self.bucket, key, loadStreamInMemory=True), f"reading {key!r}"
        )
        return bytes(body.buffer or b"")

    def delete(self, key: str) -> None:
        self._check(self._client.deleteObject(self.bucket, key), f"deleting {key!r}")
