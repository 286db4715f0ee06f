"""``python -m deploy deploy``: new code reaches traffic only after its smoke tests passed.

APIG and the Kafka trigger call each function's alias (``live``), never ``latest``. For the functions
deployed together, the command:

1. publishes ``dist/deps.zip`` as a new version of the ``<prefix>-common`` dependency (``common/`` lives
   there; ``--keep-dependency`` skips this),
2. per function: updates the code of ``latest`` from ``dist/<function>.zip`` (other dependencies are
   kept) and publishes a version; ``latest`` serves nothing, so this changes no traffic,
3. per function: copies the asynchronous invocation config of ``latest`` (retries, maximum event age,
   destinations) to the new version when ``latest`` has one (``deploy/asyncconfig.py``),
4. invokes each new version on its own version URN with the smoke events of ``deploy/smoke.py``,
5. only when every function published, got its config and passed: moves the alias of every function
   to its new version, recording the version it pointed at before (see ``deploy/aliases.py``),
6. deletes old versions beyond the newest ``--keep-versions``, never one an alias uses or would roll
   back to.

One failure anywhere moves no alias at all. The functions share the ``common/`` layer and talk to each
other through Kafka and the database: a set where ingest is new and the consumer old was never tested
together, and a half-moved set is also what ``rollback`` could not cleanly undo. If moving an alias
fails part-way, the aliases already moved are moved back.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import aliases
from .aliases import DEFAULT_ALIAS, AliasState
from .asyncconfig import copy_async_config, describe_async_settings
from .fgclient import (
    Credentials,
    DeployError,
    describe_error,
    function_urn,
    make_client,
    sdk,
    with_version,
)
from .invoke import invoke
from .package import DEFAULT_DIST, RUNTIME, PackageError, load_manifest, sha256_file
from .report import Report
from .smoke import SMOKE_TOKEN_ENV, Smoke, smoke_order, smokes_for

# The SDK says a dependency uploaded inline (base64) may be at most 40 MB (docs/functiongraph.md, section 4).
MAX_INLINE_DEPENDENCY = 40 * 1024 * 1024
# Direct code upload limit from the 2021 docs (docs/functiongraph.md, section 4: the current limit is unconfirmed).
MAX_INLINE_CODE = 10 * 1024 * 1024
# Besides what an alias uses and would roll back to: few enough to stay far below the 10-version quota.
DEFAULT_KEEP_VERSIONS = 3


@dataclass
class Options:
    dist: Path = DEFAULT_DIST
    functions: list[str] | None = None  # default: every function in the manifest
    prefix: str = "iot"  # Terraform's var.name_prefix
    app: str = "default"  # the FunctionGraph application (Terraform's `app`)
    dependency_name: str | None = None  # default: "<prefix>-common"
    publish_dependency: bool = True
    version: str | None = None  # default: v<UTC timestamp>
    alias: str = DEFAULT_ALIAS
    smoke: bool = True
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    dry_run: bool = False

    @property
    def dependency(self) -> str:
        return self.dependency_name or f"{self.prefix}-common"


@dataclass
class Candidate:
    """A function's new version, and where its alias pointed before."""

    function: str
    urn: str  # the function's latest URN
    version: str
    before: AliasState | None

    @property
    def version_urn(self) -> str:
        return with_version(self.urn, self.version)


class Deployer:
    def __init__(
        self,
        options: Options,
        creds: Credentials,
        client=None,
        out: Callable[[str], None] = print,
        smoke_token: str = "",
    ):
        self.options = options
        self.creds = creds
        self.client = client
        self.smoke_token = smoke_token
        self.report = Report(out)
        self.smoke_passed = 0
        self.smoke_failed = 0

    def say(self, line: str) -> None:
        self.report.say(line)

    def fail(self, line: str) -> None:
        self.report.fail(line)

    def _urn(self, function: str) -> str:
        region = self.creds.region or "<region>"
        project = self.creds.project_id or "<project_id>"
        return function_urn(region, project, self.options.app, f"{self.options.prefix}-{function}")

    # ------------------------------------------------------------------ the run

    def run(self) -> Report:
        opts = self.options
        manifest = load_manifest(opts.dist)
        functions = opts.functions or sorted(manifest["functions"])
        unknown = sorted(set(functions) - set(manifest["functions"]))
        if unknown:
            raise DeployError(
                f"not in {opts.dist / 'manifest.json'}: {', '.join(unknown)}; run `make package`"
            )
        self._check_files(manifest, functions)
        version = opts.version or time.strftime("v%Y%m%d%H%M%S", time.gmtime())
        if not opts.dry_run:
            self.creds.require(self.creds.missing(), " (or use --dry-run)")
        built_for = manifest.get("runtime", "")
        if built_for != RUNTIME and not self.creds.endpoint:
            raise DeployError(
                f"{opts.dist} was built for {built_for or 'an unknown runtime'}, not FunctionGraph's {RUNTIME}; "
                "run `make package` (without --local)"
            )
        if not opts.dry_run and self.client is None:
            self.client = make_client(self.creds)
        where = self.creds.endpoint or f"region {self.creds.region or '<region>'}"
        self.say(
            f"{'[dry-run] ' if opts.dry_run else ''}deploying {len(functions)} function(s) "
            f"({', '.join(functions)}) from {opts.dist} to {where}, project "
            f"{self.creds.project_id or '<project_id>'}, runtime {manifest.get('runtime', RUNTIME)}, "
            f"version {version}, alias {opts.alias}"
        )
        if opts.dry_run:
            self._plan(manifest, functions, version)
            return self.report
        dependency_id = self._publish_dependency(manifest) if opts.publish_dependency else None
        candidates: list[Candidate] = []
        for function in functions:
            try:
                candidate = self._publish(function, manifest, version, dependency_id)
            except Exception as error:  # one function's failure must not hide the others' results
                self.fail(f"{function}: FAILED: {describe_error(error)}")
                continue
            candidates.append(candidate)
            self._carry_async_config(candidate)
        if opts.smoke:
            self._smoke_all(candidates)
        else:
            self.say(f"smoke tests skipped (--no-smoke): {opts.alias} moves to versions nobody invoked")
        if self.report.ok:
            self._promote(candidates)
        else:
            self._hold(candidates)
        self._prune(candidates)
        self._summary(functions, candidates)
        return self.report

    def _check_files(self, manifest: dict, functions: list[str]) -> None:
        files = [manifest["functions"][name] for name in functions]
        if self.options.publish_dependency:
            files.append(manifest["dependency"])
        for info in files:
            path = self.options.dist / info["file"]
            if not path.is_file():
                raise DeployError(f"{path} is missing; run `make package`")
            if sha256_file(path) != info["sha256"]:
                raise DeployError(f"{path} does not match manifest.json; run `make package` again")

    def _plan(self, manifest: dict, functions: list[str], version: str) -> None:
        opts = self.options
        if opts.publish_dependency:
            info = manifest["dependency"]
            self._check_dependency_size(info)
            self.say(
                f"[dry-run] dependency {opts.dependency}: would publish {opts.dist / info['file']} "
                f"({info['size']:,} bytes, sha256 {info['sha256'][:12]}) for {RUNTIME}"
            )
        for function in functions:
            info = manifest["functions"][function]
            self._check_code_size(info)
            self.say(
                f"[dry-run] {function}: would update the code of {self._urn(function)} from "
                f"{opts.dist / info['file']} ({info['size']:,} bytes, sha256 {info['sha256'][:12]})"
            )
            self.say(f"[dry-run] {function}: would publish version {version}")
            self.say(
                f"[dry-run] {function}: would copy the async invocation config of latest (retries, max "
                f"event age, destinations) to {version}, if latest has one"
            )
        if opts.smoke:
            now = datetime.now(timezone.utc)
            for function in smoke_order(functions):
                for smoke in smokes_for(function, now, self.smoke_token, consumer_stored=True):
                    self.say(f"[dry-run] {function}: would invoke {version} with {smoke.label}")
        self.say(f"[dry-run] would point alias {opts.alias} of every function at {version} once all pass")
        self.say(
            f"[dry-run] would delete old versions beyond the newest {opts.keep_versions}, keeping what an "
            "alias uses and the version it would roll back to"
        )
        self.say(f"[dry-run] would deploy {len(functions)}/{len(functions)} function(s)")

    # ------------------------------------------------------------------ uploading and publishing

    def _check_dependency_size(self, info: dict) -> None:
        if info["size"] > MAX_INLINE_DEPENDENCY:
            raise DeployError(
                f"{self.options.dist / info['file']} is {info['size']:,} bytes, over the 40 MB inline limit; "
                "publish it via OBS (Terraform's huaweicloud_fgs_dependency_version) and use --keep-dependency"
            )

    def _check_code_size(self, info: dict) -> None:
        if info["size"] > MAX_INLINE_CODE:
            raise DeployError(
                f"{self.options.dist / info['file']} is {info['size']:,} bytes, over the 10 MB direct upload limit"
            )

    def _publish_dependency(self, manifest: dict) -> str:
        info = manifest["dependency"]
        self._check_dependency_size(info)
        path = self.options.dist / info["file"]
        name = self.options.dependency
        v2 = sdk()
        body = v2.CreateDependencyRequestBody(
            depend_type="zip",
            depend_file=base64.b64encode(path.read_bytes()).decode("ascii"),
            runtime=RUNTIME,
            name=name,
            description=f"common/ and wheels; sha256:{info['sha256']}",
        )
        try:
            response = self.client.create_dependency_version(v2.CreateDependencyVersionRequest(body=body))
        except Exception as error:
            raise DeployError(f"dependency {name}: publishing failed: {describe_error(error)}") from error
        size = f"{info['size']:,} bytes, sha256 {info['sha256'][:12]}"
        self.say(f"dependency {name}: published version {response.version} (id {response.id}; {size})")
        return response.id

    def _dependencies(self, urn: str, new_id: str | None) -> list[str]:
        """The function's dependency version ids with ours replaced by ``new_id`` (others kept)."""
        v2 = sdk()
        current = self.client.show_function_code(v2.ShowFunctionCodeRequest(function_urn=urn))
        if new_id is None:
            return list(current.depend_version_list or [])
        if current.dependencies is None and current.depend_version_list:
            # Without names we cannot tell our old version from others: replace them all, and say so.
            self.say(
                f"    note: dependencies {', '.join(current.depend_version_list)} replaced (no names returned)"
            )
            return [new_id]
        others = [d.id for d in (current.dependencies or []) if d.name != self.options.dependency and d.id]
        return others + [new_id]

    def _publish(self, function: str, manifest: dict, version: str, dependency_id: str | None) -> Candidate:
        info = manifest["functions"][function]
        self._check_code_size(info)
        path = self.options.dist / info["file"]
        urn = self._urn(function)
        before = aliases.read_alias(self.client, urn, self.options.alias)
        v2 = sdk()
        depends = self._dependencies(urn, dependency_id)
        self.client.update_function_code(
            v2.UpdateFunctionCodeRequest(
                function_urn=urn,
                body=v2.UpdateFunctionCodeRequestBody(
                    code_type="zip",
                    code_filename=info["file"],
                    func_code=v2.FuncCode(file=base64.b64encode(path.read_bytes()).decode("ascii")),
                    depend_version_list=depends,
                ),
            )
        )
        size = f"{info['size']:,} bytes, sha256 {info['sha256'][:12]}"
        self.say(f"{function}: code updated on {urn} ({size}; dependencies {', '.join(depends) or 'none'})")
        published = self.client.create_function_version(
            v2.CreateFunctionVersionRequest(
                function_urn=urn,
                body=v2.CreateFunctionVersionRequestBody(
                    version=version, description=f"{info['file']} sha256:{info['sha256']}"
                ),
            )
        )
        version = published.version or version
        serving = (
            f"{self.options.alias} is on {before.version}" if before else f"no alias {self.options.alias} yet"
        )
        self.say(f"{function}: published version {version} ({serving})")
        return Candidate(function, urn, version, before)

    def _carry_async_config(self, candidate: Candidate) -> None:
        """The new version gets latest's async invocation config; a failure holds every alias."""
        function, version = candidate.function, candidate.version
        try:
            copied = copy_async_config(self.client, candidate.urn, candidate.version_urn)
        except DeployError as error:
            self.fail(
                f"{function}: copying the async invocation config of latest to {version} FAILED: {error}; "
                f"without it, failed invocations of {version} would be neither retried nor sent to "
                "the failure destination"
            )
            return
        if copied is not None:
            done = "copied to" if copied.written else "already on"
            self.say(
                f"{function}: async invocation config of latest {done} {version} "
                f"({describe_async_settings(copied.settings)})"
            )

    # ------------------------------------------------------------------ smoke tests

    def _smoke_all(self, candidates: list[Candidate]) -> None:
        by_function = {c.function: c for c in candidates}
        now = datetime.now(timezone.utc)
        consumer_stored = False
        for function in smoke_order(list(by_function)):
            smokes = smokes_for(function, now, self.smoke_token, consumer_stored)
            passed = [self._smoke(by_function[function], smoke) for smoke in smokes]
            consumer_stored = consumer_stored or (function == "consumer" and all(passed))

    def _smoke(self, candidate: Candidate, smoke: Smoke) -> bool:
        function, version = candidate.function, candidate.version
        outcome = invoke(self.client, candidate.version_urn, smoke.event)
        problem = outcome.problem  # the call failed, or the function raised
        if not problem:
            verdict = smoke.check(outcome.result)
            if verdict.ok:
                self.smoke_passed += 1
                self.say(
                    f"{function}: smoke {smoke.label} on {version}: ok ({verdict.detail}; request {outcome.request_id})"
                )
                return True
            problem = verdict.detail
        self.smoke_failed += 1
        self.fail(
            f"{function}: smoke {smoke.label} on {version}: FAILED: {problem} "
            f"(expected {smoke.expect}; request {outcome.request_id})"
        )
        self.report.log_tail(outcome.log)
        return False

    # ------------------------------------------------------------------ the alias

    def _hold(self, candidates: list[Candidate]) -> None:
        alias = self.options.alias
        where = ", ".join(f"{c.function} {c.before.version if c.before else '(none)'}" for c in candidates)
        self.say(f"no alias moved: {alias} stays where it was ({where or 'nothing published'})")

    def _promote(self, candidates: list[Candidate]) -> None:
        alias = self.options.alias
        moves = []
        for c in candidates:
            previous = c.before.version if c.before else None
            done = (
                f"{c.function}: alias {alias} moved from {previous} to {c.version}"
                if previous
                else f"{c.function}: alias {alias} created on {c.version}"
            )
            note = aliases.deployed_note(previous)
            moves.append(aliases.AliasMove(c.function, c.urn, c.version, note, c.before, done))
        aliases.move_aliases(self.client, alias, moves, self.report)

    def _prune(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            try:
                pruned = aliases.prune(self.client, c.urn, self.options.keep_versions)
            except Exception as error:  # the deployment stands; the next one prunes again
                self.say(f"{c.function}: warning: pruning old versions failed: {describe_error(error)}")
                continue
            if pruned.deleted:
                self.say(
                    f"{c.function}: deleted old version(s) {', '.join(pruned.deleted)}; "
                    f"kept {', '.join(pruned.kept)}"
                )

    def _summary(self, functions: list[str], candidates: list[Candidate]) -> None:
        total = self.smoke_passed + self.smoke_failed
        smoke = f"; smoke tests {self.smoke_passed}/{total} passed" if self.options.smoke and total else ""
        if self.report.ok:
            self.say(f"deployed {len(candidates)}/{len(functions)} function(s){smoke}")
        else:
            self.say(f"FAILED: {len(self.report.failures)} problem(s){smoke}")


def deploy(options: Options, environ: Mapping[str, str] | None = None, out=print, client=None) -> Report:
    env = os.environ if environ is None else environ
    creds = Credentials.from_env(env)
    token = env.get(SMOKE_TOKEN_ENV, "")
    try:
        return Deployer(options, creds, client=client, out=out, smoke_token=token).run()
    except PackageError as error:
        raise DeployError(str(error)) from error
