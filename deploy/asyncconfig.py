"""Copying a function's asynchronous invocation config from ``latest`` to a version it publishes.

FunctionGraph's API documents reading it for "a function version" (the version
in the URN) and listing it for "all versions" of a function (docs/functiongraph.md, section 3). Terraform
sets the consumer's on its ``latest`` URN, while the Kafka trigger invokes the alias, that is a version
published here. Whether a published version falls back to ``latest``'s config is unconfirmed, so every
new version gets its own copy, unless it already reports the same settings. A consumer version without
it would neither retry a failed batch nor write it to the OBS failure destination, and nobody would
notice: a failed copy therefore fails the deployment like a failed smoke test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .fgclient import DeployError, describe_error, is_not_found, json_value, sdk


@dataclass(frozen=True)
class AsyncConfigCopy:
    settings: dict[str, object]  # latest's, as async_settings reads them
    written: bool  # False: the version already reported them, so nothing was written


def _destination(config) -> tuple[str, object] | None:
    if config is None or not config.destination:
        return None
    # param is JSON text: compared parsed, so spacing and key order do not count
    return config.destination, json_value(config.param)


def async_settings(reply) -> dict[str, object] | None:
    """What an async invocation config (the SDK's show reply) says, comparable between versions;
    None when it says nothing: no retries, no maximum age and no destination."""
    if reply is None:
        return None
    targets = reply.destination_config
    settings: dict[str, object] = {
        "max_async_retry_attempts": reply.max_async_retry_attempts,
        "max_async_event_age_in_seconds": reply.max_async_event_age_in_seconds,
        "on_success": _destination(targets.on_success if targets else None),
        "on_failure": _destination(targets.on_failure if targets else None),
    }
    if all(value is None for value in settings.values()):
        return None
    settings["enable_async_status_log"] = reply.enable_async_status_log
    return settings


def settings_missing(wanted: dict[str, object], found: dict[str, object] | None) -> list[str]:
    """The settings of ``wanted`` that ``found`` lacks or holds with another value."""
    found = found or {}
    return [key for key, value in wanted.items() if value is not None and found.get(key) != value]


def describe_async_settings(settings: dict[str, object]) -> str:
    parts = [
        f"retries {settings['max_async_retry_attempts']}",
        f"max event age {settings['max_async_event_age_in_seconds']} s",
    ]
    for key in ("on_success", "on_failure"):
        if settings[key]:
            destination, param = settings[key]
            parts.append(f"{key} {destination} {json.dumps(param, sort_keys=True)}")
    if settings.get("enable_async_status_log") is not None:
        parts.append(f"status log {'on' if settings['enable_async_status_log'] else 'off'}")
    return ", ".join(parts)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """An API error, named after the step that failed."""
    try:
        yield
    except Exception as error:
        raise DeployError(f"{what}: {describe_error(error)}") from error


def read_async_config(client, urn: str):
    """The async invocation config of the version ``urn`` names (the SDK's reply), or None when it
    has none: the API documents a 404 for that, and an empty answer is taken the same way."""
    v2 = sdk()
    try:
        reply = client.show_function_async_invoke_config(
            v2.ShowFunctionAsyncInvokeConfigRequest(function_urn=urn)
        )
    except Exception as error:
        if is_not_found(error):
            return None
        raise
    return reply if async_settings(reply) else None


def _destination_body(config):
    if config is None or not config.destination:
        return None
    return sdk().FuncDestinationConfig(destination=config.destination, param=config.param)


def copy_async_config(client, latest_urn: str, version_urn: str) -> AsyncConfigCopy | None:
    """Give the version ``version_urn`` names the async invocation config of ``latest_urn``.

    None when latest has none. Nothing is written when the version already reports the same settings
    (as it would if the platform kept one config per function). What was written is read back; a
    version that does not end up with latest's settings raises DeployError.
    """
    v2 = sdk()
    version = version_urn.rsplit(":", 1)[1]
    with _step("reading latest's config"):
        source = read_async_config(client, latest_urn)
    if source is None:
        return None
    wanted = async_settings(source)
    with _step(f"reading {version}'s config"):
        before = async_settings(read_async_config(client, version_urn))
    if not settings_missing(wanted, before):
        return AsyncConfigCopy(wanted, written=False)
    targets = source.destination_config
    on_success = _destination_body(targets.on_success if targets else None)
    on_failure = _destination_body(targets.on_failure if targets else None)
    body = v2.UpdateFunctionAsyncInvokeConfigRequestBody(
        max_async_event_age_in_seconds=source.max_async_event_age_in_seconds,
        max_async_retry_attempts=source.max_async_retry_attempts,
        destination_config=(
            v2.FuncAsyncDestinationConfig(on_success=on_success, on_failure=on_failure)
            if on_success or on_failure
            else None
        ),
        enable_async_status_log=source.enable_async_status_log,
    )
    with _step(f"writing it to {version}"):
        client.update_function_async_invoke_config(
            v2.UpdateFunctionAsyncInvokeConfigRequest(function_urn=version_urn, body=body)
        )
    with _step(f"reading it back from {version}"):
        after = async_settings(read_async_config(client, version_urn))
    missing = settings_missing(wanted, after)
    if missing:
        raise DeployError(f"{version} reads back without latest's {', '.join(missing)}")
    return AsyncConfigCopy(wanted, written=True)
