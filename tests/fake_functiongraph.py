"""A local fake of the FunctionGraph v2 API, the way moto fakes AWS: an HTTP server in a thread.

It implements the endpoints the deploy command calls (docs/functiongraph.md, section 4): code and
dependency uploads, publishing, listing and deleting versions, reading, creating and moving aliases,
reading, writing and listing asynchronous invocation configs, and sync invocations of ``latest``, a
version or an alias. It checks every request the way the real
service would, and flags what the deploy command must never do:

* the path (``/v2/{project_id}/fgs/...``), the project id header and the function URN format;
* the AK/SK signature: ``Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=...,
  Signature=...`` is recomputed twice, by an independent implementation of the documented
  algorithm below and by huaweicloudsdkcore's own signer, and must match both; ``X-Sdk-Date`` must
  be within 15 minutes;
* uploads: a function's zip must unpack with ``index.py`` at its root (defining ``handler``), a
  dependency zip must have its packages at its root (``common/`` for ours);
* deletions: only a published version, never ``latest``, never the whole function, never through an
  alias URN (the API would delete the version the alias points at), never a version an alias uses;
* a function holds at most ``version_limit`` published versions, as FunctionGraph's quota does;
* async invocation configs: written on a version URN only (never an alias, whose config would be some
  version's), with the ranges the API documents.

Async invocation configs are kept per version, as the API's paths say ("the asynchronous invocation
setting of a function version", and a list "of a function's all versions"). Reading a version without one
answers 404, the only error status the API reference documents for it; ``missing_async_config = "empty"``
answers 200 with an empty config instead, the other plausible reading. Whether a published version
really has its own config is unconfirmed: ``async_config_per_version = False`` makes every version share
latest's, and refuses writing one on a published version. ``faults`` makes chosen calls fail.

Invocations either return a canned result (a value, or a function of the event) or, with
``execute=True``, really run the published code like FunctionGraph does: both zips unpacked, a fresh
``python -I -S`` with only them on the path, ``initializer(context)`` then ``handler(event, context)``,
the user data given to ``getUserData``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

AUTH = re.compile(r"SDK-HMAC-SHA256 Access=([^,\s]+), SignedHeaders=([a-z0-9;_-]+), Signature=([0-9a-f]{64})")
URN = re.compile(
    r"urn:fss:(?P<region>[a-z0-9-]+):(?P<project>[0-9A-Za-z]+):function:(?P<app>[\w-]+):(?P<name>[\w-]+)"
    r"(?::(?P<version>!?[\w.-]+))?"
)
MAX_SKEW_SECONDS = 15 * 60
# The published versions a function may hold: the limits page says 20 including latest, the publish
# API page says 10 (docs/functiongraph.md, section 4); the fake takes the smaller by default.
DEFAULT_VERSION_LIMIT = 10
# How the API writes times: "2019-10-31T11:37:58+08:00" in the documented examples.
API_TIME = "%Y-%m-%dT%H:%M:%S+08:00"
# Async invocation config: the ranges and defaults of the API's PUT (functiongraph_06_0142) and the
# destination types of its FuncDestinationConfig.
ASYNC_MAX_AGE = (1, 86400)
ASYNC_RETRIES = (0, 3)
ASYNC_DEFAULTS = {"max_async_event_age_in_seconds": 3600, "max_async_retry_attempts": 1}
ASYNC_DESTINATIONS = {"OBS", "SMN", "DIS", "FunctionGraph"}

# Runs one invocation in a clean interpreter: argv = code dir, dependency dirs...; stdin = event.
RUNNER = r"""
import json, os, sys, traceback
sys.path[:0] = sys.argv[1:]
user_data = json.loads(os.environ.get("FAKE_FG_USER_DATA", "{}"))

class Logger:
    def info(self, *a): print(*a, file=sys.stderr)
    debug = warn = warning = error = info

class Context:
    def getUserData(self, key, default=None): return user_data.get(key, default)
    def getRequestID(self): return os.environ.get("FAKE_FG_REQUEST_ID", "")
    def getFunctionName(self): return os.environ.get("FAKE_FG_FUNCTION", "")
    def getRemainingTimeInMilliSeconds(self): return 30000
    def getRunningTimeInSeconds(self): return 30
    def getLogger(self): return Logger()

event = json.loads(sys.stdin.read() or "{}")
try:
    import index
    if hasattr(index, "initializer"):
        index.initializer(Context())
    result = index.handler(event, Context())
except Exception as error:
    traceback.print_exc()
    result = {"errorMessage": str(error), "errorType": type(error).__name__}
print("\n@@RESULT@@" + json.dumps(result, default=str))
"""


class FakeError(Exception):
    """An error answer. ``violation``: the client did something wrong (vs. a normal "not found")."""

    def __init__(self, status: int, code: str, message: str, violation: bool = True):
        super().__init__(message)
        self.status, self.code, self.message, self.violation = status, code, message, violation


@dataclass
class Dependency:
    id: str
    name: str
    version: int
    runtime: str
    data: bytes

    def describe(self) -> dict:
        return {
            "id": self.id,
            "dep_id": f"dep-{self.name}",
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "owner": "private",
            "link": f"https://fake-obs/{self.name}/{self.version}.zip",
            "etag": hashlib.md5(self.data).hexdigest(),
            "size": len(self.data),
            "file_name": f"{self.name}.zip",
            "description": "",
            "last_modified": 0,
        }


@dataclass
class Function:
    name: str
    app: str = "default"
    runtime: str = "Python3.10"
    code: bytes = b""
    code_filename: str = ""
    depend_version_list: list[str] = field(default_factory=list)
    user_data: dict = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)  # name -> {"code", "depends", "description", ...}
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version
    alias_descriptions: dict[str, str] = field(default_factory=dict)  # alias -> description
    alias_weights: dict[str, dict[str, int]] = field(default_factory=dict)  # alias -> {version: percent}
    invocations: list[dict] = field(default_factory=list)
    deleted_versions: list[str] = field(default_factory=list)
    async_configs: dict[str, dict] = field(default_factory=dict)  # "latest" or version -> the config


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes
    status: int = 0
    problem: str = ""


def canonical_request(
    method: str, raw_path: str, query: str, headers: dict, signed: list[str], body: bytes
) -> str:
    """The documented SDK-HMAC-SHA256 canonical request, written independently of the SDK."""
    segments = [quote(unquote(part), safe="~") for part in raw_path.split("/")]
    uri = "/".join(segments)
    if not uri.endswith("/"):
        uri += "/"
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    query_string = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)
    lowered = {k.lower(): str(v).strip() for k, v in headers.items()}
    header_lines = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed)
    content = lowered.get("x-sdk-content-sha256") or hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), uri, query_string, header_lines, ";".join(signed), content])


def signature(secret_key: str, date: str, canonical: str) -> str:
    to_sign = "\n".join(["SDK-HMAC-SHA256", date, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def sdk_signature(
    ak: str, sk: str, method: str, host: str, raw_path: str, query: str, headers: dict, body: bytes
):
    """The same request signed by huaweicloudsdkcore's signer, for a second opinion."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    request = SdkRequest(
        method=method,
        schema="http",
        host=host,
        resource_path=raw_path,
        query_params=parse_qsl(query, keep_blank_values=True),
        header_params=dict(headers),
        body=body,
    )
    Signer(BasicCredentials(ak, sk)).sign(request)
    return AUTH.fullmatch(request.header_params["Authorization"]).group(3)


def check_code_zip(data: bytes) -> str | None:
    """Why a function's zip would not run, or None: ``index.py`` at the root defining ``handler``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return "func_code.file is not a zip archive"
    names = archive.namelist()
    if "index.py" not in names:
        nested = [n for n in names if n.endswith("/index.py")]
        where = f" (found {nested[0]}: the handler must be at the zip root)" if nested else ""
        return f"the zip has no index.py at its root{where}"
    source = archive.read("index.py").decode("utf-8")
    try:
        compile(source, "index.py", "exec")
    except SyntaxError as error:
        return f"index.py does not compile: {error}"
    if not re.search(r"^def handler\(", source, re.M):
        return "index.py defines no handler(event, context)"
    return None


def check_dependency_zip(data: bytes, name: str) -> str | None:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return "depend_file is not a zip archive"
    if any(n.startswith(("site-packages/", "python/", "lib/")) for n in names):
        return "packages must be at the zip root, not under site-packages/, python/ or lib/"
    if any(n.endswith("~") for n in names):
        return "file names may not end with ~"
    if not any("/" in n or n.endswith(".py") for n in names):
        return "the dependency zip holds no Python package"
    return None


class FakeFunctionGraph:
    def __init__(
        self,
        ak: str,
        sk: str,
        project_id: str,
        region: str = "ap-southeast-1",
        execute: bool = False,
        python: str = sys.executable,
        version_limit: int = DEFAULT_VERSION_LIMIT,
    ):
        self.ak, self.sk, self.project_id, self.region = ak, sk, project_id, region
        self.execute = execute
        self.python = python
        self.version_limit = version_limit
        self.functions: dict[str, Function] = {}
        self.dependencies: dict[str, Dependency] = {}
        self.requests: list[Recorded] = []
        # function name -> result, or a function of the event returning one (without execute=True)
        self.canned: dict[str, object] = {}
        self.canned_logs: dict[str, str] = {}  # function name -> the log tail a canned invocation returns
        self.async_config_per_version = True  # False: every version shares latest's config
        self.missing_async_config = "404"  # or "empty": what reading a version without a config answers
        # (method, action) -> the error that call answers, e.g. ("PUT", "async-invoke-config")
        self.faults: dict[tuple[str, str], FakeError] = {}
        self._clock = time.time()  # versions published by the fake get increasing times
        self._lock = threading.Lock()
        self._work = Path(tempfile.mkdtemp(prefix="fake-fg-"))
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ set-up

    def add_function(self, name: str, **fields) -> Function:
        self.functions[name] = Function(name=name, **fields)
        return self.functions[name]

    def add_version(self, fn: Function, name: str, description: str = "") -> None:
        """Publish ``name`` from the function's current code, as the API does."""
        self._clock += 1
        fn.versions[name] = {
            "code": fn.code,
            "depends": list(fn.depend_version_list),
            "description": description,
            "last_modified": time.strftime(API_TIME, time.gmtime(self._clock + 8 * 3600)),
        }

    def set_async_config(self, fn: Function, version: str = "latest", **config) -> dict:
        """Give ``version`` an async invocation config, as Terraform's resource does for latest."""
        fn.async_configs[version] = self._async_config(fn, version, config)
        return fn.async_configs[version]

    def add_dependency(self, name: str, data: bytes, runtime: str = "Python3.10") -> Dependency:
        version = 1 + max((d.version for d in self.dependencies.values() if d.name == name), default=0)
        dep = Dependency(uuid.uuid4().hex, name, version, runtime, data)
        self.dependencies[dep.id] = dep
        return dep

    def urn(self, name: str, version: str = "latest") -> str:
        return f"urn:fss:{self.region}:{self.project_id}:function:default:{name}:{version}"

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeFunctionGraph:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                fake._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 (http.server names)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-functiongraph", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeFunctionGraph:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def problems(self) -> list[str]:
        return [f"{r.method} {r.path}: {r.problem}" for r in self.requests if r.problem]

    # ------------------------------------------------------------------ HTTP

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        split = urlsplit(http.path)
        record = Recorded(http.command, unquote(split.path), dict(http.headers.items()), body)
        with self._lock:
            self.requests.append(record)
        try:
            self._authenticate(http, split.path, split.query, body)
            status, payload = self._route(http.command, split.path, split.query, body)
        except FakeError as error:
            status, payload = error.status, {"error_code": error.code, "error_msg": error.message}
            if error.violation:
                record.problem = f"{error.code}: {error.message}"
        except Exception as error:  # a bug in the fake: say so instead of hanging the client
            status, payload = 500, {"error_code": "FAKE.500", "error_msg": repr(error)}
            record.problem = repr(error)
        record.status = status
        data = b"" if status == 204 else json.dumps(payload).encode()  # 204: no body, as HTTP says
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.send_header("X-Request-Id", uuid.uuid4().hex)
        http.end_headers()
        http.wfile.write(data)

    def _authenticate(self, http, raw_path: str, query: str, body: bytes) -> None:
        auth = http.headers.get("Authorization", "")
        match = AUTH.fullmatch(auth)
        if not match:
            raise FakeError(401, "APIGW.0301", f"Authorization is not SDK-HMAC-SHA256 AK/SK: {auth[:60]!r}")
        access, signed_list, given = match.groups()
        if access != self.ak:
            raise FakeError(401, "APIGW.0301", f"unknown access key {access}")
        signed = signed_list.split(";")
        if signed != sorted(signed) or not {"host", "x-sdk-date"} <= set(signed):
            raise FakeError(
                401, "APIGW.0301", f"SignedHeaders must be sorted and cover host and x-sdk-date: {signed}"
            )
        missing = [h for h in signed if http.headers.get(h) is None]
        if missing:
            raise FakeError(401, "APIGW.0301", f"signed headers not sent: {missing}")
        date = http.headers["X-Sdk-Date"]
        try:
            when = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise FakeError(401, "APIGW.0303", f"bad X-Sdk-Date {date!r}") from None
        if abs(time.time() - when.timestamp()) > MAX_SKEW_SECONDS:
            raise FakeError(401, "APIGW.0303", f"X-Sdk-Date {date} is more than 15 minutes off")
        headers = {h: http.headers[h] for h in signed}
        expected = signature(
            self.sk, date, canonical_request(http.command, raw_path, query, headers, signed, body)
        )
        if not hmac.compare_digest(expected, given):
            raise FakeError(401, "APIGW.0301", "signature does not match (independent check)")
        host = http.headers["Host"]
        if sdk_signature(self.ak, self.sk, http.command, host, raw_path, query, headers, body) != given:
            raise FakeError(401, "APIGW.0301", "signature does not match huaweicloudsdkcore's signer")
        if http.headers.get("X-Project-Id") not in (None, self.project_id):
            raise FakeError(403, "APIGW.0302", "X-Project-Id is not this project")

    def _route(self, method: str, raw_path: str, query: str, body: bytes) -> tuple[int, object]:
        path = unquote(raw_path)
        prefix = f"/v2/{self.project_id}/fgs/"
        if not path.startswith(prefix):
            raise FakeError(404, "FSS.0404", f"no such API {method} {path}")
        rest = path[len(prefix) :]
        data = json.loads(body) if body else {}
        if method == "POST" and rest == "dependencies/version":
            return 200, self._create_dependency(data)
        match = re.fullmatch(
            r"functions/(?P<urn>[^/]+)"
            r"(?:/(?P<action>code|versions|invocations|aliases|async-invoke-configs?)(?:/(?P<alias>[^/]+))?)?",
            rest,
        )
        if not match:
            raise FakeError(404, "FSS.0404", f"no such API {method} {path}")
        fn, version = self._function(match["urn"])
        action, alias = match["action"], match["alias"]
        fault = self.faults.get((method, action or ""))
        if fault is not None:
            raise fault
        with self._lock:
            if action is None and method == "DELETE":
                return 204, self._delete_version(fn, version, match["urn"])
            if action == "code" and method == "GET":
                return 200, self._code_info(fn)
            if action == "code" and method == "PUT":
                return 200, self._update_code(fn, version, data)
            if action == "versions" and method == "POST":
                return 200, self._publish(fn, version, data)
            if action == "versions" and method == "GET":
                return 200, self._list_versions(fn, dict(parse_qsl(query)))
            if action == "aliases" and method == "GET" and alias is None:
                return 200, [self._describe_alias(fn, name) for name in fn.aliases]
            if action == "aliases" and method == "GET":
                if alias not in fn.aliases:
                    raise FakeError(404, "FSS.1052", f"alias {alias} not found", violation=False)
                return 200, self._describe_alias(fn, alias)
            if action == "aliases" and method == "POST" and alias is None:
                return 200, self._alias(fn, data.get("name"), data, create=True)
            if action == "aliases" and method == "PUT" and alias:
                return 200, self._alias(fn, alias, data, create=False)
            if action == "async-invoke-config" and method == "GET" and alias is None:
                return 200, self._show_async_config(fn, version)
            if action == "async-invoke-config" and method == "PUT" and alias is None:
                return 200, self._update_async_config(fn, version, data)
            if action == "async-invoke-configs" and method == "GET" and alias is None:
                return 200, self._list_async_configs(fn, dict(parse_qsl(query)))
        if action == "invocations" and method == "POST":
            return 200, self._invoke(fn, version, data)
        raise FakeError(405, "FSS.0405", f"{method} not allowed on {action or 'a function'}")

    # ------------------------------------------------------------------ the API

    def _function(self, urn: str) -> tuple[Function, str]:
        match = URN.fullmatch(urn)
        if not match:
            raise FakeError(400, "FSS.0400", f"malformed function URN {urn!r}")
        if match["region"] != self.region or match["project"] != self.project_id:
            raise FakeError(403, "FSS.0403", f"URN {urn} is not in {self.region}/{self.project_id}")
        fn = self.functions.get(match["name"])
        if fn is None or fn.app != match["app"]:
            raise FakeError(404, "FSS.1051", f"function {match['app']}:{match['name']} not found")
        return fn, match["version"] or "latest"

    def _create_dependency(self, data: dict) -> dict:
        if data.get("depend_type") != "zip" or not data.get("depend_file"):
            raise FakeError(400, "FSS.0400", "depend_type must be zip with depend_file (base64)")
        for key in ("name", "runtime"):
            if not data.get(key):
                raise FakeError(400, "FSS.0400", f"{key} is required")
        raw = base64.b64decode(data["depend_file"], validate=True)
        problem = check_dependency_zip(raw, data["name"])
        if problem:
            raise FakeError(400, "FSS.0400", problem)
        with self._lock:
            return self.add_dependency(data["name"], raw, data["runtime"]).describe()

    def _code_info(self, fn: Function) -> dict:
        return {
            "func_urn": self.urn(fn.name),
            "func_name": fn.name,
            "runtime": fn.runtime,
            "code_type": "zip",
            "code_filename": fn.code_filename,
            "code_size": len(fn.code),
            "digest": hashlib.sha512(fn.code).hexdigest(),
            "depend_version_list": list(fn.depend_version_list),
            "dependencies": [
                self.dependencies[d].describe() for d in fn.depend_version_list if d in self.dependencies
            ],
        }

    def _update_code(self, fn: Function, version: str, data: dict) -> dict:
        if version != "latest":
            raise FakeError(400, "FSS.0400", "only the latest version's code can change")
        if data.get("code_type") != "zip":
            raise FakeError(400, "FSS.0400", f"code_type must be zip, got {data.get('code_type')!r}")
        if not str(data.get("code_filename", "")).endswith(".zip"):
            raise FakeError(400, "FSS.0400", "code_filename must name a .zip")
        try:
            raw = base64.b64decode((data.get("func_code") or {}).get("file") or "", validate=True)
        except ValueError:
            raise FakeError(400, "FSS.0400", "func_code.file is not base64") from None
        problem = check_code_zip(raw)
        if problem:
            raise FakeError(400, "FSS.0400", problem)
        depends = data.get("depend_version_list")
        if depends is not None:
            unknown = [d for d in depends if d not in self.dependencies]
            if unknown:
                raise FakeError(400, "FSS.0400", f"unknown dependency versions {unknown}")
            fn.depend_version_list = list(depends)
        fn.code, fn.code_filename = raw, data["code_filename"]
        return self._code_info(fn)

    def _publish(self, fn: Function, version: str, data: dict) -> dict:
        if version != "latest":
            raise FakeError(400, "FSS.0400", "versions are published from latest")
        name = data.get("version") or f"{len(fn.versions) + 1}"
        if not re.fullmatch(r"[A-Za-z][\w.-]{0,41}", name):
            raise FakeError(400, "FSS.0400", f"bad version name {name!r}")
        if name in fn.versions:
            raise FakeError(409, "FSS.0409", f"version {name} exists")
        if len(fn.versions) >= self.version_limit:
            raise FakeError(
                400, "FSS.0412", f"{fn.name} already has {len(fn.versions)} versions, the most allowed"
            )
        self.add_version(fn, name, data.get("description", ""))
        return {
            "func_urn": self.urn(fn.name, name),
            "func_name": fn.name,
            "version": name,
            "runtime": fn.runtime,
        }

    def _describe_version(self, fn: Function, name: str) -> dict:
        info = fn.versions.get(name, {})
        return {
            "func_urn": self.urn(fn.name, name),
            "func_name": fn.name,
            "runtime": fn.runtime,
            "version": name,
            "last_modified": info.get("last_modified", time.strftime(API_TIME)),
        }

    def _list_versions(self, fn: Function, query: dict) -> dict:
        """``latest`` first, then the published versions in the order they were published."""
        names = ["latest", *fn.versions]
        start = int(query.get("marker") or 0)
        size = int(query.get("maxitems") or 400)
        page = names[start : start + size]
        next_marker = start + len(page) if start + len(page) < len(names) else len(names)
        return {
            "versions": [self._describe_version(fn, name) for name in page],
            "next_marker": next_marker,
            "count": len(names),
        }

    def _delete_version(self, fn: Function, version: str, urn: str) -> None:
        if not URN.fullmatch(urn)["version"]:
            raise FakeError(
                400, "FSS.0400", f"{urn} names the whole function: deleting it deletes every version"
            )
        if version.startswith("!"):
            raise FakeError(
                400, "FSS.0400", f"{urn} is an alias: deleting it deletes the version it points at"
            )
        if version == "latest":
            raise FakeError(400, "FSS.0400", "latest cannot be deleted")
        if version not in fn.versions:
            raise FakeError(404, "FSS.1051", f"version {version} of {fn.name} not found", violation=False)
        users = [a for a, v in fn.aliases.items() if v == version or version in fn.alias_weights.get(a, {})]
        if users:
            raise FakeError(400, "FSS.0400", f"version {version} is used by alias {', '.join(users)}")
        del fn.versions[version]
        fn.async_configs.pop(version, None)
        fn.deleted_versions.append(version)

    def _describe_alias(self, fn: Function, alias: str) -> dict:
        return {
            "name": alias,
            "version": fn.aliases[alias],
            "description": fn.alias_descriptions.get(alias, ""),
            "last_modified": time.strftime(API_TIME),
            "alias_urn": self.urn(fn.name, "!" + alias),
            "additional_version_weights": fn.alias_weights.get(alias, {}),
        }

    def _alias(self, fn: Function, alias: str | None, data: dict, create: bool) -> dict:
        version = data.get("version")
        if not alias or version not in fn.versions:
            raise FakeError(400, "FSS.0400", f"alias {alias!r} needs an existing version, not {version!r}")
        if create and alias in fn.aliases:
            raise FakeError(409, "FSS.0409", f"alias {alias} exists")
        if not create and alias not in fn.aliases:
            raise FakeError(404, "FSS.1052", f"alias {alias} not found", violation=False)
        fn.aliases[alias] = version
        fn.alias_descriptions[alias] = data.get("description", "")
        return self._describe_alias(fn, alias)

    # ------------------------------------------------------------------ async invocation config

    def _config_version(self, fn: Function, version: str) -> str:
        """Which stored config a version URN reads: its own, or latest's when configs are per function."""
        if version.startswith("!"):
            raise FakeError(
                400, "FSS.0400", f"alias {version[1:]}: its async config is the config of a version"
            )
        if version != "latest" and version not in fn.versions:
            raise FakeError(404, "FSS.1052", f"version {version} of {fn.name} not found")
        return version if self.async_config_per_version else "latest"

    def _show_async_config(self, fn: Function, version: str) -> dict:
        config = fn.async_configs.get(self._config_version(fn, version))
        if config is not None:
            return {**config, "func_urn": self.urn(fn.name, version)}
        if self.missing_async_config == "empty":
            return {}
        raise FakeError(
            404, "FSS.0404", f"{fn.name}:{version} has no async invocation config", violation=False
        )

    def _update_async_config(self, fn: Function, version: str, data: dict) -> dict:
        stored = self._config_version(fn, version)
        if stored != version:
            raise FakeError(400, "FSS.0400", f"the async invocation config of {fn.name} is set on latest")
        fn.async_configs[version] = self._async_config(fn, version, data)
        return {**fn.async_configs[version], "func_urn": self.urn(fn.name, version)}

    def _async_config(self, fn: Function, version: str, data: dict) -> dict:
        config = {**ASYNC_DEFAULTS, **{k: v for k, v in data.items() if k in ASYNC_DEFAULTS}}
        for key, (low, high) in (
            ("max_async_event_age_in_seconds", ASYNC_MAX_AGE),
            ("max_async_retry_attempts", ASYNC_RETRIES),
        ):
            if not isinstance(config[key], int) or not low <= config[key] <= high:
                raise FakeError(400, "FSS.0400", f"{key} must be {low}-{high}, not {config[key]!r}")
        targets = data.get("destination_config") or {}
        unknown = sorted(set(targets) - {"on_success", "on_failure"})
        if unknown:
            raise FakeError(400, "FSS.0400", f"unknown destination_config keys {unknown}")
        for key, target in targets.items():
            if target.get("destination") not in ASYNC_DESTINATIONS:
                raise FakeError(
                    400, "FSS.0400", f"{key}.destination must be one of {sorted(ASYNC_DESTINATIONS)}"
                )
            try:
                json.loads(target.get("param") or "")
            except ValueError:
                raise FakeError(400, "FSS.0400", f"{key}.param must be JSON text") from None
        config["destination_config"] = {key: dict(target) for key, target in targets.items()}
        if "enable_async_status_log" in data:
            config["enable_async_status_log"] = bool(data["enable_async_status_log"])
        now = time.strftime(API_TIME, time.gmtime(time.time() + 8 * 3600))
        previous = fn.async_configs.get(version)
        config["created_time"] = previous["created_time"] if previous else now
        config["last_modified"] = now
        return config

    def _list_async_configs(self, fn: Function, query: dict) -> dict:
        """Every version's config, latest first; ``marker`` and ``limit`` (default 10, at most 100)."""
        names = [name for name in ["latest", *fn.versions] if name in fn.async_configs]
        start = int(query.get("marker") or 0)
        limit = min(int(query.get("limit") or 0) or 10, 100)
        page = names[start : start + limit]
        return {
            "async_invoke_configs": [
                {**fn.async_configs[name], "func_urn": self.urn(fn.name, name)} for name in page
            ],
            "count": len(names),
            "page_info": {
                "next_marker": start + len(page),
                "previous_marker": start,
                "current_count": len(page),
            },
        }

    def _invoke(self, fn: Function, version: str, event: object) -> dict:
        if version.startswith("!"):
            version = fn.aliases.get(version[1:], "")
        if version == "latest":
            code, depends = fn.code, fn.depend_version_list
        elif version in fn.versions:
            code, depends = fn.versions[version]["code"], fn.versions[version]["depends"]
        else:
            raise FakeError(404, "FSS.1051", f"version {version} of {fn.name} not found")
        request_id = uuid.uuid4().hex
        fn.invocations.append({"version": version, "event": event, "request_id": request_id})
        if not self.execute:
            result = self.canned.get(fn.name, {"ok": True})
            if callable(result):
                result = result(event)
            log = self.canned_logs.get(fn.name, "")
            return {"request_id": request_id, "result": json.dumps(result), "log": log, "status": 200}
        result, log = self._run(fn, code, depends, event, request_id)
        return {"request_id": request_id, "result": json.dumps(result), "log": log[-4000:], "status": 200}

    def _unpack(self, key: str, data: bytes) -> Path:
        folder = self._work / hashlib.sha256(data).hexdigest()[:16] / key
        if not folder.exists():
            zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
        return folder

    def _run(self, fn: Function, code: bytes, depends: list[str], event: object, request_id: str):
        paths = [str(self._unpack("code", code))]
        paths += [str(self._unpack("dep", self.dependencies[d].data)) for d in depends]
        env = {
            "FAKE_FG_USER_DATA": json.dumps(fn.user_data),
            "FAKE_FG_REQUEST_ID": request_id,
            "FAKE_FG_FUNCTION": fn.name,
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run(
            [self.python, "-I", "-S", "-c", RUNNER, *paths],
            input=json.dumps(event),
            capture_output=True,
            text=True,
            env=env,
            cwd=self._work,
            timeout=120,
        )
        out, _, tail = done.stdout.rpartition("@@RESULT@@")
        if not _:
            return {
                "errorMessage": f"runtime exited {done.returncode}",
                "errorType": "RuntimeError",
            }, done.stderr
        return json.loads(tail), done.stderr + out
