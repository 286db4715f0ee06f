"""``python -m deploy rollback``: each function's alias back to the version it pointed at before.

The version comes from the alias's description, where ``deploy`` recorded it (``deploy/aliases.py``).
Like a deploy, a rollback is all or nothing: when one function has nothing to roll back to (never
deployed by this command, already rolled back, or its earlier version is gone), no alias moves and the
command says why for each. A rollback is recorded too, so running it twice does not go forward again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from functions import function_names

from . import aliases
from .aliases import DEFAULT_ALIAS, AliasState
from .fgclient import Credentials, function_urn, make_client
from .report import Report


@dataclass
class RollbackOptions:
    functions: list[str] | None = None  # default: every function
    prefix: str = "iot"
    app: str = "default"
    alias: str = DEFAULT_ALIAS
    dry_run: bool = False


@dataclass(frozen=True)
class Step:
    function: str
    urn: str
    state: AliasState  # where the alias is now; it goes to state.previous


def _why_not(function: str, alias: str, state: AliasState | None, versions: set[str]) -> str | None:
    """Why ``function`` cannot roll back, or None when it can."""
    if state is None:
        return f"{function}: alias {alias} does not exist"
    if state.previous is None:
        if state.rolled_back_from:
            return (
                f"{function}: nothing to roll back to: {alias} ({state.version}) was already rolled back "
                f"from {state.rolled_back_from}; deploy to move forward"
            )
        return (
            f"{function}: nothing to roll back to: {alias} ({state.version}) records no earlier version "
            f"(description: {state.description or 'empty'!r})"
        )
    if state.previous not in versions:
        return f"{function}: nothing to roll back to: version {state.previous} no longer exists"
    return None


def rollback(
    options: RollbackOptions,
    environ: Mapping[str, str] | None = None,
    out: Callable[[str], None] = print,
    client=None,
) -> Report:
    creds = Credentials.from_env(environ)
    creds.require(creds.missing())
    client = client or make_client(creds)
    report = Report(out)
    alias = options.alias
    functions = options.functions or function_names()
    steps: list[Step] = []
    for function in functions:
        urn = function_urn(creds.region, creds.project_id, options.app, f"{options.prefix}-{function}")
        state = aliases.read_alias(client, urn, alias)
        versions = {v.name for v in aliases.list_versions(client, urn)} if state else set()
        problem = _why_not(function, alias, state, versions)
        if problem:
            report.fail(problem)
        else:
            steps.append(Step(function, urn, state))
    if not report.ok:
        report.say(f"nothing rolled back: every alias stays where it is ({len(report.failures)} problem(s))")
        return report
    prefix = "[dry-run] would move" if options.dry_run else "moved"
    moves = [
        aliases.AliasMove(
            step.function,
            step.urn,
            step.state.previous,
            aliases.rolled_back_note(step.state.version),
            step.state,
            f"{step.function}: {prefix} alias {alias} back from {step.state.version} to {step.state.previous}",
        )
        for step in steps
    ]
    if options.dry_run:
        for move in moves:
            report.say(move.done)
    elif not aliases.move_aliases(client, alias, moves, report):
        return report
    verb = "[dry-run] would roll back" if options.dry_run else "rolled back"
    report.say(f"{verb} {len(steps)} function(s)")
    return report
