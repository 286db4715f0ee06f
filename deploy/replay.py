"""``python -m deploy replay``: failed consumer batches from OBS, back into the live consumer.

The Kafka trigger invokes the consumer asynchronously; after FunctionGraph's retries a batch that still
failed (PostgreSQL down for long, say) is written to the OBS failure destination Terraform configures
(``consumer-failures/`` in the artifacts bucket). This command lists those records (age, messages,
readings), invokes the consumer's alias synchronously with each batch's original event, so success is
known, and deletes an object only after its batch was stored. Storing is idempotent, so a batch that
was partly stored before, or is replayed twice, is stored once.

An object in which no batch can be found is never deleted: it is reported and left for a person. A
batch the consumer fails on again stays too. ``--dry-run`` lists and explains, and changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from . import aliases
from .aliases import DEFAULT_ALIAS
from .failures import FailureRecord, UnreadableRecord, parse_record
from .fgclient import Credentials, DeployError, alias_urn, describe_error, function_urn, make_client
from .invoke import Invocation, invoke
from .obsstore import FailureBucket, ObsError, StoredObject
from .report import Report

DEFAULT_KEY_PREFIX = "consumer-failures"
BUCKET_ENV = "IOT_FAILURE_BUCKET"


@dataclass
class ReplayOptions:
    bucket: str = ""  # default: $IOT_FAILURE_BUCKET
    key_prefix: str = DEFAULT_KEY_PREFIX
    prefix: str = "iot"  # Terraform's name_prefix: the consumer is <prefix>-consumer
    app: str = "default"
    alias: str = DEFAULT_ALIAS
    limit: int | None = None  # at most this many records per run, oldest first
    dry_run: bool = False


def age(modified: datetime | None, now: datetime) -> str:
    if modified is None:
        return "of unknown age"
    seconds = max(0, int((now - modified).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h old"
    if hours:
        return f"{hours} h {minutes} min old"
    return f"{minutes} min old"


def replayed_problem(outcome: Invocation, record: FailureRecord) -> str | None:
    """Why the consumer's answer does not show the batch handled, or None when it does."""
    problem = outcome.problem
    if problem:
        return problem
    result = outcome.result
    if not isinstance(result, dict) or not isinstance(result.get("messages"), int):
        return f"not a batch summary: {str(result)[:200]}"
    if result["messages"] != record.messages:
        return f"the consumer read {result['messages']} message(s), the record holds {record.messages}"
    return None


class Replayer:
    def __init__(
        self, options: ReplayOptions, creds: Credentials, client, bucket: FailureBucket, report: Report
    ):
        self.options = options
        self.creds = creds
        self.client = client
        self.bucket = bucket
        self.report = report
        self.replayed = self.failed = self.unreadable = 0

    def target(self) -> str:
        """The consumer's alias URN, as the API reports it when it can be asked."""
        opts = self.options
        urn = function_urn(
            self.creds.region or "<region>",
            self.creds.project_id or "<project_id>",
            opts.app,
            f"{opts.prefix}-consumer",
        )
        if opts.dry_run:
            return alias_urn(urn, opts.alias)
        state = aliases.read_alias(self.client, urn, opts.alias)
        if state is None:
            raise DeployError(f"{opts.prefix}-consumer has no alias {opts.alias}; deploy first")
        return state.urn or alias_urn(urn, opts.alias)

    def run(self) -> Report:
        opts = self.options
        where = f"obs://{opts.bucket}/{opts.key_prefix}"
        found = self.bucket.list(opts.key_prefix)
        if not found:
            self.report.say(f"no failure records under {where}")
            return self.report
        chosen = found[: opts.limit] if opts.limit else found
        target = self.target()
        verb = "[dry-run] would replay" if opts.dry_run else "replaying"
        self.report.say(f"{verb} {len(chosen)} of {len(found)} failure record(s) under {where} into {target}")
        now = datetime.now(timezone.utc)
        for stored in chosen:
            self._one(stored, target, now)
        self._summary(len(chosen))
        return self.report

    def _one(self, stored: StoredObject, target: str, now: datetime) -> None:
        say, fail = self.report.say, self.report.fail
        try:
            record = parse_record(self.bucket.read(stored.key))
        except UnreadableRecord as error:
            self.unreadable += 1
            fail(
                f"{stored.key}: {age(stored.modified, now)}, {stored.size:,} bytes: kept, unreadable: {error}"
            )
            return
        say(f"{stored.key}: {age(stored.modified, now)}; {record.describe()}")
        if self.options.dry_run:
            say("    [dry-run] would invoke the consumer with it, then delete the object")
            return
        outcome = invoke(self.client, target, record.event)
        problem = replayed_problem(outcome, record)
        if problem:
            self.failed += 1
            fail(f"    kept: the consumer failed again: {problem} (request {outcome.request_id})")
            self.report.log_tail(outcome.log)
            return
        result = outcome.result
        stored_text = (
            f"stored {result.get('stored')}, duplicates {result.get('duplicates')}, "
            f"rejected {result.get('rejected')} (request {outcome.request_id})"
        )
        try:
            self.bucket.delete(stored.key)
        except ObsError as error:
            fail(f"    replayed ({stored_text}) but not deleted: {error}; a new replay stores it once")
            return
        self.replayed += 1
        say(f"    replayed: {stored_text}; object deleted")

    def _summary(self, total: int) -> None:
        if self.options.dry_run:
            kept = f"; {self.unreadable} unreadable, would be kept" if self.unreadable else ""
            self.report.say(f"[dry-run] would replay {total - self.unreadable}/{total} record(s){kept}")
            return
        kept = total - self.replayed
        detail = f" ({self.failed} failed again, {self.unreadable} unreadable)" if kept else ""
        self.report.say(f"replayed {self.replayed}/{total} record(s); {kept} kept{detail}")


def replay(
    options: ReplayOptions,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
    client=None,
) -> Report:
    env = os.environ if environ is None else environ
    creds = Credentials.from_env(env)
    options.bucket = options.bucket or env.get(BUCKET_ENV, "")
    if not options.bucket:
        raise DeployError(f"name the bucket: --bucket or {BUCKET_ENV}")
    creds.require(creds.missing_for_obs())
    if not options.dry_run:
        creds.require(creds.missing(), " (or use --dry-run)")
        client = client or make_client(creds)
    report = Report(out)
    bucket = FailureBucket(options.bucket, creds)
    try:
        return Replayer(options, creds, client, bucket, report).run()
    except ObsError as error:
        raise DeployError(str(error)) from error
    except DeployError:
        raise
    except Exception as error:
        raise DeployError(f"replay stopped: {describe_error(error)}") from error
    finally:
        bucket.close()
