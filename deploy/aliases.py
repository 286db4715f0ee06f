"""The alias that serves traffic, the version it pointed at before, and pruning old versions.

APIG and the Kafka trigger call an alias (``live``), never ``latest``, so a version serves traffic only
once the deploy command moves the alias to it. The alias's own description records the version it
pointed at before (``previous=<version>``): the record travels with the alias, needs no storage of its
own, and is read back by ``rollback`` and kept safe by pruning. The order of the version list is not a
substitute: versions whose smoke test failed are in it too, and were never served.

FunctionGraph keeps a limited number of versions per function (docs/functiongraph.md, section 4), so
old ones are deleted. What an alias points at (or routes a share of traffic to), the version an alias
would roll back to, and the newest few are always kept. Versions are deleted by their own URN only:
deleting through an alias URN deletes the version the alias points at.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from .fgclient import describe_error, is_not_found, sdk, with_version
from .report import Report

DEFAULT_ALIAS = "live"  # what APIG and the Kafka trigger call
_PREVIOUS = re.compile(r"\bprevious=([A-Za-z][\w.-]*)")
_ROLLED_BACK = re.compile(r"\brolled back from ([A-Za-z][\w.-]*)")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def deployed_note(previous: str | None) -> str:
    """The alias description after ``deploy`` moved it; names the version to roll back to."""
    moved = f"moved by python -m deploy at {_now()}"
    return f"{moved}; previous={previous}" if previous else moved


def rolled_back_note(version: str) -> str:
    """The alias description after ``rollback``: it names no previous version, so a second rollback
    refuses instead of going forward again to the version just rolled back from."""
    return f"rolled back from {version} by python -m deploy at {_now()}"


@dataclass(frozen=True)
class AliasState:
    name: str
    version: str
    description: str = ""
    weights: tuple[str, ...] = ()  # versions that get a share of the alias's traffic
    urn: str = ""  # the alias URN as the API reports it

    @property
    def previous(self) -> str | None:
        """The version the alias pointed at before the last deploy, if that deploy recorded one."""
        found = _PREVIOUS.search(self.description)
        return found.group(1) if found else None

    @property
    def rolled_back_from(self) -> str | None:
        found = _ROLLED_BACK.search(self.description)
        return found.group(1) if found else None


@contextmanager
def _api_times() -> Iterator[None]:
    """The API writes times as "2019-10-31T11:37:58+08:00", which the SDK cannot parse: it warns and
    keeps the text, which is what this module reads (``_epoch``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _state(reply) -> AliasState:
    return AliasState(
        name=reply.name or "",
        version=reply.version or "",
        description=reply.description or "",
        weights=tuple(sorted((reply.additional_version_weights or {}).keys())),
        urn=reply.alias_urn or "",
    )


def read_alias(client, urn: str, alias: str) -> AliasState | None:
    """The alias of the function ``urn``, or None when it does not exist."""
    v2 = sdk()
    try:
        with _api_times():
            reply = client.show_version_alias(v2.ShowVersionAliasRequest(function_urn=urn, alias_name=alias))
        return _state(reply)
    except Exception as error:
        if is_not_found(error):
            return None
        raise


def list_aliases(client, urn: str) -> list[AliasState]:
    v2 = sdk()
    with _api_times():
        reply = client.list_version_aliases(v2.ListVersionAliasesRequest(function_urn=urn))
    return [_state(item) for item in reply.body or []]


def point_alias(client, urn: str, alias: str, version: str, description: str, *, exists: bool) -> None:
    """Point ``alias`` at ``version`` (creating it when it does not exist yet)."""
    v2 = sdk()
    with _api_times():
        if exists:
            client.update_version_alias(
                v2.UpdateVersionAliasRequest(
                    function_urn=urn,
                    alias_name=alias,
                    body=v2.UpdateVersionAliasRequestBody(version=version, description=description),
                )
            )
        else:
            client.create_version_alias(
                v2.CreateVersionAliasRequest(
                    function_urn=urn,
                    body=v2.CreateVersionAliasRequestBody(
                        name=alias, version=version, description=description
                    ),
                )
            )


@dataclass(frozen=True)
class AliasMove:
    """One function's alias to move: where to, with which description, and where it was."""

    function: str
    urn: str
    version: str
    description: str
    before: AliasState | None  # None: the alias does not exist yet and is created
    done: str  # what the report says once it moved


def move_aliases(client, alias: str, moves: list[AliasMove], report: Report) -> bool:
    """Move ``alias`` of every function in ``moves``, all or none: after a failed move, the aliases
    already moved go back where they were (one created by this call stays, and says so). False when
    a move failed."""
    moved: list[AliasMove] = []
    for move in moves:
        try:
            point_alias(
                client, move.urn, alias, move.version, move.description, exists=move.before is not None
            )
        except Exception as error:
            report.fail(
                f"{move.function}: moving alias {alias} to {move.version} FAILED: {describe_error(error)}"
            )
            for done in moved:
                _move_back(client, alias, done, report)
            return False
        moved.append(move)
        report.say(move.done)
    return True


def _move_back(client, alias: str, move: AliasMove, report: Report) -> None:
    if move.before is None:
        report.fail(f"{move.function}: alias {alias} was created by this run and stays on {move.version}")
        return
    before = move.before
    try:
        point_alias(client, move.urn, alias, before.version, before.description, exists=True)
        report.say(f"{move.function}: alias {alias} moved back to {before.version}")
    except Exception as error:
        report.fail(
            f"{move.function}: moving alias {alias} back to {before.version} FAILED: {describe_error(error)}"
        )


@dataclass(frozen=True)
class PublishedVersion:
    name: str
    modified: float | None  # epoch seconds, when the API's time could be read


def _epoch(value: object) -> float | None:
    """The API's ``last_modified``: the SDK gives a datetime, or the text when it cannot parse it."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def list_versions(client, urn: str) -> list[PublishedVersion]:
    """The function's published versions (not ``latest``), oldest first: by their time, then by the
    order the API lists them in."""
    v2 = sdk()
    found: list[PublishedVersion] = []
    marker = "0"
    while True:
        with _api_times():
            reply = client.list_function_versions(
                v2.ListFunctionVersionsRequest(function_urn=urn, marker=marker, maxitems="400")
            )
        page = reply.versions or []
        found += [PublishedVersion(v.version, _epoch(v.last_modified)) for v in page if v.version != "latest"]
        # next_marker is where the next page starts; at the end it is missing, unchanged or the count.
        next_marker = reply.next_marker
        if not page or next_marker is None or str(next_marker) == marker or next_marker >= (reply.count or 0):
            break
        marker = str(next_marker)
    order = {version.name: index for index, version in enumerate(found)}
    return sorted(
        found, key=lambda v: (v.modified if v.modified is not None else float("-inf"), order[v.name])
    )


def protected_versions(aliases: list[AliasState]) -> set[str]:
    """What no pruning may delete: every alias's version, the versions it routes traffic to, and the
    version each would roll back to."""
    keep: set[str] = {"latest"}
    for alias in aliases:
        keep.add(alias.version)
        keep.update(alias.weights)
        if alias.previous:
            keep.add(alias.previous)
    return keep


def versions_to_delete(versions: list[PublishedVersion], protected: set[str], keep_newest: int) -> list[str]:
    """The versions to delete, oldest first: all but the protected ones and the newest ``keep_newest``."""
    newest = {v.name for v in versions[-keep_newest:]} if keep_newest > 0 else set()
    return [v.name for v in versions if v.name not in protected and v.name not in newest]


@dataclass(frozen=True)
class Pruned:
    deleted: list[str]
    kept: list[str]


def prune(client, urn: str, keep_newest: int) -> Pruned:
    """Delete old versions of the function ``urn``; the aliases are read again right before."""
    v2 = sdk()
    versions = list_versions(client, urn)
    doomed = versions_to_delete(versions, protected_versions(list_aliases(client, urn)), keep_newest)
    for name in doomed:
        client.delete_function(v2.DeleteFunctionRequest(function_urn=with_version(urn, name)))
    return Pruned(doomed, [v.name for v in versions if v.name not in doomed])
