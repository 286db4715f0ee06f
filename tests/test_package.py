"""`make package`: one zip per function, the dependency zip, reproducible, importable.

The real dependency zip is for FunctionGraph's Python3.10 (CPython 3.10, manylinux x86-64), which
cannot be imported by this machine's interpreter when their versions differ (C extensions are built
per minor version). So the import test builds the same packages for this interpreter's tags, by the
same code path (only pip's --python-version/--platform differ), and imports each handler from them
in a clean interpreter; the FunctionGraph build is checked for its layout and that every wheel in it
is pure Python or manylinux x86-64 for cp310.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import package
from deploy.package import FUNCTIONGRAPH, WheelName
from functions import HTTP_FUNCTIONS

ROOT = package.ROOT
EM_X86_64 = 62


def quiet(*_args) -> None:
    pass


@pytest.fixture(scope="module")
def cloud_dist(tmp_path_factory) -> tuple[Path, dict]:
    dist = tmp_path_factory.mktemp("dist-functiongraph")
    return dist, package.build(dist, FUNCTIONGRAPH, log=quiet)


@pytest.fixture(scope="module")
def local_dist(tmp_path_factory) -> tuple[Path, dict]:
    dist = tmp_path_factory.mktemp("dist-local")
    return dist, package.build(dist, package.local_target(), log=quiet)


def names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_one_zip_per_function_with_the_handler_at_its_root(cloud_dist):
    dist, manifest = cloud_dist
    assert (
        sorted(manifest["functions"])
        == package.function_names()
        == ["authorizer", "consumer", "dashboard", "ingest", "maintenance", "query"]
    )
    for name, info in manifest["functions"].items():
        entries = names(dist / info["file"])
        assert "index.py" in entries, f"{name}: index.py must be at the zip root"
        with zipfile.ZipFile(dist / info["file"]) as archive:
            assert archive.read("index.py") == (ROOT / "functions" / name / "index.py").read_bytes()
        assert not [e for e in entries if e.startswith("common/")], "common/ belongs in the dependency"
        assert not [e for e in entries if "__pycache__" in e or e.endswith(".pyc")]
    assert manifest["handler"] == "index.handler" and manifest["initializer"] == "index.initializer"


def test_the_dashboard_zip_carries_its_static_folder(cloud_dist):
    dist, manifest = cloud_dist
    entries = set(names(dist / manifest["functions"]["dashboard"]["file"]))
    static = ROOT / "functions" / "dashboard" / "static"
    expected = {
        "static/" + p.relative_to(static).as_posix()
        for p in static.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected and expected <= entries
    assert "static/index.html" in entries


def test_the_dependency_zip_has_common_and_the_packages_at_its_root(cloud_dist):
    dist, manifest = cloud_dist
    entries = names(dist / manifest["dependency"]["file"])
    top = {e.split("/", 1)[0] for e in entries}
    for source in sorted((ROOT / "common").glob("*.py")):
        assert f"common/{source.name}" in entries
    for module in ("kafka", "psycopg", "psycopg_binary", "psycopg_pool", "redis", "typing_extensions.py"):
        assert module in top, f"{module} is not at the root of the dependency zip"
    for dist_name, version in package.read_requirements().items():
        assert any(t.lower() == f"{dist_name.replace('-', '_')}-{version}.dist-info" for t in top), dist_name
    assert not [t for t in top if t.endswith(".data") or t in ("site-packages", "lib", "python")]
    assert not [e for e in entries if e.endswith((".pyc", "~")) or "__pycache__" in e]
    assert manifest["dependency"]["size"] < 40 * 1024 * 1024, "over the SDK's 40 MB inline dependency limit"


def test_the_dependency_wheels_are_for_functiongraph_not_this_machine(cloud_dist):
    dist, manifest = cloud_dist
    wheels = [WheelName.parse(w) for w in manifest["dependency"]["wheels"]]
    assert {w.distribution for w in wheels} == set(package.read_requirements())
    for wheel in wheels:
        assert wheel.incompatibility(FUNCTIONGRAPH) is None, wheel
        if not wheel.is_pure:
            assert "cp310" in wheel.abi_tags and all(
                t.startswith("manylinux") and t.endswith("_x86_64") for t in wheel.platform_tags
            ), wheel
    assert any(w.distribution == "psycopg-binary" and not w.is_pure for w in wheels)
    # Every compiled module in the zip is a 64-bit x86-64 ELF built for CPython 3.10.
    with zipfile.ZipFile(dist / manifest["dependency"]["file"]) as archive:
        shared = [n for n in archive.namelist() if n.endswith(".so") or ".so." in n]
        assert shared, "psycopg_binary ships compiled modules"
        for name in shared:
            header = archive.read(name)[:20]
            assert header[:4] == b"\x7fELF" and header[4] == 2, f"{name} is not a 64-bit ELF"
            assert int.from_bytes(header[18:20], "little") == EM_X86_64, f"{name} is not x86-64"
            if ".cpython-" in name:
                assert ".cpython-310-x86_64-linux-gnu.so" in name, name


def test_the_pins_satisfy_pyproject_and_close_over_their_dependencies(cloud_dist):
    """function-requirements.txt meets pyproject's ranges (extras included) and holds every package
    they pull in on CPython 3.10 (markers evaluated for the target, not for this interpreter)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    dist, manifest = cloud_dist
    pins = package.read_requirements()
    folder = package.WHEEL_CACHE / FUNCTIONGRAPH.key
    wheels = {WheelName.parse(w).distribution: folder / w for w in manifest["dependency"]["wheels"]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert package.unmet_requirements(requirement, pins, wheels, FUNCTIONGRAPH) == [], requirement
    package.check_closure(list(wheels.values()), FUNCTIONGRAPH, pins)
    # The check sees what pip's resolver misses: redis needs async-timeout only below Python 3.11.3.
    without = {name: version for name, version in pins.items() if name != "async-timeout"}
    assert package.unmet_requirements("redis", without, wheels, FUNCTIONGRAPH)
    assert not package.unmet_requirements(
        "redis", without, wheels, package.Target("3.12", FUNCTIONGRAPH.platforms)
    )


def test_building_twice_gives_identical_bytes(cloud_dist, tmp_path):
    """The second build goes through the CLI (`make package` runs the same command)."""
    first, _ = cloud_dist
    second = tmp_path / "again"
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "package", "--dist", str(second)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    built = sorted(p.name for p in first.iterdir())
    assert built == sorted(p.name for p in second.iterdir())
    for name in built:
        a = hashlib.sha256((first / name).read_bytes()).hexdigest()
        b = hashlib.sha256((second / name).read_bytes()).hexdigest()
        assert a == b, f"{name} differs between two builds"
    with zipfile.ZipFile(first / "deps.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos), "entries must be sorted"
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}, "timestamps must be fixed"
    assert "deps.zip" in result.stdout and "ingest.zip" in result.stdout


IMPORT_CHECK = r"""
import json, sys
code, deps = sys.argv[1], sys.argv[2]
sys.path[:0] = [code, deps]
import index
report = {"handler": callable(getattr(index, "handler", None)),
          "initializer": callable(getattr(index, "initializer", None))}
import common, kafka, psycopg, redis
report["origins"] = {m.__name__: m.__file__ for m in (index, common, kafka, psycopg, redis)}
report["psycopg_impl"] = psycopg.pq.__impl__
import importlib, os
report["broken"] = {}
for entry in sorted(os.listdir(deps)):  # every package in the dependency zip, C extensions included
    name = entry[:-3] if entry.endswith(".py") else entry
    if entry.endswith((".dist-info", ".libs")) or entry == "__pycache__" or not (entry.endswith(".py") or os.path.isdir(os.path.join(deps, entry))):
        continue
    try:
        module = importlib.import_module(name)
        assert module.__file__.startswith(deps), module.__file__
    except Exception as error:
        report["broken"][name] = repr(error)
report["outside"] = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith((code, deps, sys.base_prefix, sys.base_exec_prefix))
)
if hasattr(index, "app"):
    def event(path):
        return {"httpMethod": "GET", "path": path, "headers": {}, "queryStringParameters": {},
                "pathParameters": {}, "body": "", "isBase64Encoded": False,
                "requestContext": {"requestId": "package-test"}}
    report["unknown_route"] = index.handler(event("/no/such/route"), None)["statusCode"]
    if any(route.path == "/" for route in index.app.routes):
        page = index.handler(event("/"), None)
        report["page"] = [page["statusCode"], "<html" in page["body"].lower()]
print(json.dumps(report))
"""


@pytest.mark.parametrize("function", package.function_names())
def test_each_function_imports_in_a_clean_interpreter_with_only_its_packages(local_dist, tmp_path, function):
    """FunctionGraph unpacks the code and the dependency; so does this test (C extensions cannot be
    imported from inside a zip). `python -I -S`: no site-packages, no PYTHONPATH, no project dir."""
    dist, manifest = local_dist
    code, deps = tmp_path / "code", tmp_path / "deps"
    zipfile.ZipFile(dist / manifest["functions"][function]["file"]).extractall(code)
    zipfile.ZipFile(dist / manifest["dependency"]["file"]).extractall(deps)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", IMPORT_CHECK, str(code), str(deps)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["handler"] and report["initializer"]
    assert report["origins"]["index"].startswith(str(code))
    for module in ("common", "kafka", "psycopg", "redis"):
        assert report["origins"][module].startswith(str(deps)), (module, report["origins"][module])
    assert report["psycopg_impl"] == "binary", "psycopg must use the packaged psycopg_binary"
    assert report["broken"] == {}, "packages in the dependency zip that do not import"
    assert report["outside"] == [], "modules came from outside the packages and the standard library"
    if function in HTTP_FUNCTIONS:
        assert report["unknown_route"] == 404
    else:  # driven by a trigger's events, not routed HTTP requests
        assert "unknown_route" not in report, f"{function} has a router but no HTTP route reaches it"
    if function == "dashboard":
        assert report["page"] == [200, True]


def test_the_makefile_has_a_package_target():
    makefile = (ROOT / "Makefile").read_text()
    assert "\npackage:" in makefile and "-m deploy package" in makefile
    assert (
        "build/" in (ROOT / ".gitignore").read_text().split() and "dist/" in (ROOT / ".gitignore").read_text()
    )
