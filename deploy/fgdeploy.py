"""Push new function code to FunctionGraph with the Huawei Cloud SDK, without re-running Terraform.

For each function (Terraform names them ``<prefix>-<function>``) it:

1. publishes ``dist/deps.zip`` as a new version of the ``<prefix>-common`` dependency (``common/`` lives
   there, so a code change usually needs it; ``--keep-dependency`` skips this),
2. updates the function's code from ``dist/<function>.zip`` (other dependencies it has are kept),
3. publishes a function version, optionally moves an alias to it,
4. invokes that version with the side-effect free smoke events of ``deploy/smoke.py``,

and prints each step. Credentials come from the environment (``HUAWEICLOUD_ACCESS_KEY``,
``HUAWEICLOUD_SECRET_KEY``, ``HUAWEICLOUD_PROJECT_ID``, ``HUAWEICLOUD_REGION``; the Terraform
provider's ``HW_*`` names work too); ``HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT`` overrides the endpoint
(tests point it at a local fake). ``--dry-run`` prints the plan and calls nothing.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .package import DEFAULT_DIST, RUNTIME, PackageError, load_manifest, sha256_file
from .smoke import smokes_for

ENV = {
    "ak": ("HUAWEICLOUD_ACCESS_KEY", "HW_ACCESS_KEY"),
    "sk": ("HUAWEICLOUD_SECRET_KEY", "HW_SECRET_KEY"),
    "project_id": ("HUAWEICLOUD_PROJECT_ID", "HW_PROJECT_ID"),
    "region": ("HUAWEICLOUD_REGION", "HW_REGION_NAME"),
    "endpoint": ("HUAWEICLOUD_FUNCTIONGRAPH_ENDPOINT",),
}
# The SDK says a dependency uploaded inline (base64) may be at most 40 MB (docs/functiongraph.md, section 4).
MAX_INLINE_DEPENDENCY = 40 * 1024 * 1024
# Direct code upload limit from the 2021 docs (docs/functiongraph.md, section 4: the current limit is unconfirmed).
MAX_INLINE_CODE = 10 * 1024 * 1024


class DeployError(RuntimeError):
    """The deployment cannot go ahead; the message says why."""


@dataclass(frozen=True)
class Credentials:
    ak: str = ""
    sk: str = ""
    project_id: str = ""
    region: str = ""
    endpoint: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        values = {}
        for key, names in ENV.items():
            values[key] = next((env[name] for name in names if env.get(name)), "")
        return cls(**values)

    def missing(self) -> list[str]:
        needed = ("ak", "sk", "project_id") + (() if self.endpoint else ("region",))
        return [ENV[key][0] for key in needed if not getattr(self, key)]


@dataclass
class Options:
    dist: Path = DEFAULT_DIST
    functions: list[str] | None = None  # default: every function in the manifest
    prefix: str = "iot"  # Terraform's var.name_prefix
    app: str = "default"  # the FunctionGraph application (Terraform's `app`)
    dependency_name: str | None = None  # default: "<prefix>-common"
    publish_dependency: bool = True
    version: str | None = None  # default: v<UTC timestamp>
    alias: str | None = None
    smoke: bool = True
    dry_run: bool = False

    @property
    def dependency(self) -> str:
        return self.dependency_name or f"{self.prefix}-common"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    smoke_passed: int = 0
    smoke_failed: int = 0
    deployed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def function_urn(region: str, project_id: str, app: str, name: str, version: str = "latest") -> str:
    """``urn:fss:{region}:{project_id}:function:{app}:{name}:{version}`` (docs/functiongraph.md, section 4)."""
    return f"urn:fss:{region}:{project_id}:function:{app}:{name}:{version}"


def make_client(creds: Credentials):
    """A FunctionGraph client for ``creds``: the region's endpoint unless an endpoint is given."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkfunctiongraph.v2 import FunctionGraphClient
    from huaweicloudsdkfunctiongraph.v2.region.functiongraph_region import FunctionGraphRegion

    config = HttpConfig.get_default_config()
    config.timeout = (10, 180)  # connect, read: uploads and cold starts take a while
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


def _describe_error(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    if status is None:
        return f"{type(error).__name__}: {error}"
    code = getattr(error, "error_code", "") or ""
    message = getattr(error, "error_msg", "") or str(error)
    request = getattr(error, "request_id", "") or ""
    return f"HTTP {status} {code} {message}".strip() + (f" (request {request})" if request else "")


def _parse_result(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


class Deployer:
    def __init__(
        self,
        options: Options,
        creds: Credentials,
        client=None,
        out: Callable[[str], None] = print,
    ):
        self.options = options
        self.creds = creds
        self.client = client
        self.report = Report()
        self._out = out

    # ------------------------------------------------------------------ helpers

    def say(self, line: str) -> None:
        self.report.lines.append(line)
        self._out(line)

    def fail(self, line: str) -> None:
        self.report.failures.append(line)
        self.say(line)

    def _urn(self, function: str, version: str = "latest") -> str:
        region = self.creds.region or "<region>"
        project = self.creds.project_id or "<project_id>"
        return function_urn(region, project, self.options.app, f"{self.options.prefix}-{function}", version)

    def _sdk(self):
        from huaweicloudsdkfunctiongraph import v2

        return v2

    # ------------------------------------------------------------------ the steps

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
            missing = self.creds.missing()
            if missing:
                raise DeployError(f"set {', '.join(missing)} in the environment (or use --dry-run)")
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
            f"{self.creds.project_id or '<project_id>'}, runtime {manifest.get('runtime', RUNTIME)}, version {version}"
        )
        dependency_id = self._publish_dependency(manifest) if opts.publish_dependency else None
        for function in functions:
            try:
                self._deploy_function(function, manifest, version, dependency_id)
            except Exception as error:  # one function's failure must not hide the others' results
                self.fail(f"{function}: FAILED: {_describe_error(error)}")
        total = self.report.smoke_passed + self.report.smoke_failed
        smoke = f"; smoke tests {self.report.smoke_passed}/{total} passed" if opts.smoke and total else ""
        prefix = "[dry-run] would deploy" if opts.dry_run else "deployed"
        self.say(f"{prefix} {len(self.report.deployed)}/{len(functions)} function(s){smoke}")
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

    def _publish_dependency(self, manifest: dict) -> str | None:
        info = manifest["dependency"]
        path = self.options.dist / info["file"]
        name = self.options.dependency
        size = f"{info['size']:,} bytes, sha256 {info['sha256'][:12]}"
        if info["size"] > MAX_INLINE_DEPENDENCY:
            raise DeployError(
                f"{path} is {info['size']:,} bytes, over the 40 MB inline limit; publish it via OBS "
                "(Terraform's huaweicloud_fgs_dependency_version) and use --keep-dependency"
            )
        if self.options.dry_run:
            self.say(f"[dry-run] dependency {name}: would publish {path} ({size}) for {RUNTIME}")
            return None
        v2 = self._sdk()
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
            raise DeployError(f"dependency {name}: publishing failed: {_describe_error(error)}") from error
        self.say(f"dependency {name}: published version {response.version} (id {response.id}; {size})")
        return response.id

    def _dependencies(self, urn: str, new_id: str | None) -> list[str] | None:
        """The function's dependency version ids with ours replaced by ``new_id`` (others kept)."""
        v2 = self._sdk()
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

    def _deploy_function(
        self, function: str, manifest: dict, version: str, dependency_id: str | None
    ) -> None:
        opts = self.options
        info = manifest["functions"][function]
        path = opts.dist / info["file"]
        urn = self._urn(function)
        size = f"{info['size']:,} bytes, sha256 {info['sha256'][:12]}"
        if info["size"] > MAX_INLINE_CODE:
            raise DeployError(f"{path} is {info['size']:,} bytes, over the 10 MB direct upload limit")
        if opts.dry_run:
            self.say(f"[dry-run] {function}: would update the code of {urn} from {path} ({size})")
            self.say(f"[dry-run] {function}: would publish version {version}")
            if opts.alias:
                self.say(f"[dry-run] {function}: would point alias {opts.alias} at {version}")
            if opts.smoke:
                for smoke in smokes_for(function):
                    self.say(f"[dry-run] {function}: would invoke {version} with {smoke.label}")
            self.report.deployed.append(function)
            return
        v2 = self._sdk()
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
        self.say(f"{function}: published version {version}")
        if opts.alias:
            self._move_alias(function, urn, version)
        self.report.deployed.append(function)
        if opts.smoke:
            for smoke in smokes_for(function):
                self._smoke(function, self._urn(function, version), version, smoke)

    def _move_alias(self, function: str, urn: str, version: str) -> None:
        from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

        v2 = self._sdk()
        alias = self.options.alias
        try:
            self.client.update_version_alias(
                v2.UpdateVersionAliasRequest(
                    function_urn=urn, alias_name=alias, body=v2.UpdateVersionAliasRequestBody(version=version)
                )
            )
            self.say(f"{function}: alias {alias} moved to {version}")
        except ClientRequestException as error:
            if error.status_code != 404:
                raise
            self.client.create_version_alias(
                v2.CreateVersionAliasRequest(
                    function_urn=urn, body=v2.CreateVersionAliasRequestBody(name=alias, version=version)
                )
            )
            self.say(f"{function}: alias {alias} created on {version}")

    def _smoke(self, function: str, urn: str, version: str, smoke) -> None:
        v2 = self._sdk()
        try:
            response = self.client.invoke_function(
                v2.InvokeFunctionRequest(
                    function_urn=urn, x_cff_log_type="tail", x_cff_request_version="v1", body=smoke.event
                )
            )
        except Exception as error:
            self.report.smoke_failed += 1
            self.fail(f"{function}: smoke {smoke.label} on {version}: FAILED: {_describe_error(error)}")
            return
        result = _parse_result(response.result)
        problem = smoke.check(result)
        request = response.request_id or response.x_cff_request_id or "?"
        if problem is None and response.status not in (None, 200):
            problem = f"invocation status {response.status}"
        if problem is None:
            self.report.smoke_passed += 1
            status = result.get("statusCode") if isinstance(result, dict) else None
            shown = f"status {status}" if status is not None else json.dumps(result)[:120]
            self.say(f"{function}: smoke {smoke.label} on {version}: ok ({shown}; request {request})")
        else:
            self.report.smoke_failed += 1
            self.fail(
                f"{function}: smoke {smoke.label} on {version}: FAILED: {problem} "
                f"(expected {smoke.expect}; request {request})"
            )
            if response.log:
                for line in str(response.log).splitlines()[-10:]:
                    self.say(f"    log: {line}")


def deploy(options: Options, environ: Mapping[str, str] | None = None, out=print, client=None) -> Report:
    try:
        return Deployer(options, Credentials.from_env(environ), client=client, out=out).run()
    except PackageError as error:
        raise DeployError(str(error)) from error
