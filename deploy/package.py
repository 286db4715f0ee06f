"""Build the FunctionGraph packages: one code zip per function and the shared dependency zip.

* ``dist/<function>.zip``: the function's folder (``index.py`` at the zip root, the dashboard's
  ``static/`` beside it). Handler ``index.handler``, initializer ``index.initializer``.
* ``dist/deps.zip``: the ``common/`` layer plus the third-party packages of
  ``deploy/function-requirements.txt``, unpacked from binary wheels for the target runtime (Linux
  x86-64, CPython 3.10 for FunctionGraph's ``Python3.10``), all at the zip root as FunctionGraph wants.
* ``dist/manifest.json``: what was built (sha256, sizes, wheels), read by the deploy command.

For Kafka over SASL_SSL the functions need the DMS CA certificate as a file. Put it (``phy_ca.crt`` from
the DMS console; the same file for every instance) at ``deploy/kafka-ca.pem`` and the dependency zip
carries it as ``certs/kafka-ca.pem``, the KAFKA_SSL_CAFILE Terraform sets. It does not fit in the
functions' user data, which holds at most 4 KB in all.

Reproducible: entries are sorted, every timestamp is fixed (``SOURCE_DATE_EPOCH`` or 1980-01-01),
permissions are normalised and no bytecode is packed, so the same sources and wheels give the same
bytes. Wheels are downloaded once per target into ``build/wheels/<target>/`` (pip, binary only, for
the target platform rather than this machine) and reused while the requirements file is unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from functions import FUNCTIONS_DIR, function_names

ROOT = Path(__file__).resolve().parent.parent
COMMON_DIR = ROOT / "common"
REQUIREMENTS = Path(__file__).resolve().parent / "function-requirements.txt"
DEFAULT_DIST = ROOT / "dist"
WHEEL_CACHE = ROOT / "build" / "wheels"
DEPENDENCY_ZIP = "deps.zip"
MANIFEST = "manifest.json"
# The Kafka CA certificate, packed when present; its place in the dependency zip is the KAFKA_SSL_CAFILE
# that infra/terraform/kafka.tf sets (a path relative to the directory that holds common/).
KAFKA_CA_SOURCE = Path(__file__).resolve().parent / "kafka-ca.pem"
KAFKA_CA_ARCNAME = "certs/kafka-ca.pem"

# FunctionGraph's runtime string and the interpreter it stands for (docs/functiongraph.md, section 1).
RUNTIME = "Python3.10"
SKIPPED_NAMES = {"__pycache__", ".DS_Store", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", "~")  # FunctionGraph refuses file names ending in "~"


class PackageError(RuntimeError):
    """The packages cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class Target:
    """An interpreter and platform to fetch binary wheels for."""

    python_version: str  # "3.10"
    platforms: tuple[str, ...]  # pip --platform values, most specific first
    implementation: str = "cp"

    @property
    def abi(self) -> str:
        return f"{self.implementation}{self.python_version.replace('.', '')}"

    @property
    def machine(self) -> str:
        """The CPU architecture of the platform tags (``x86_64`` for ``manylinux2014_x86_64``)."""
        match = re.fullmatch(r"manylinux(?:\d+|_\d+_\d+)_(\w+)", self.platforms[0])
        if not match:
            raise PackageError(f"{self.platforms[0]} is not a manylinux platform tag")
        return match.group(1)

    @property
    def key(self) -> str:
        """A folder name for this target's wheel cache."""
        return f"{self.abi}-{self.platforms[0]}"

    def describe(self) -> dict:
        return {
            "python_version": self.python_version,
            "implementation": self.implementation,
            "platforms": list(self.platforms),
        }


# The FunctionGraph Python3.10 runtime: CPython 3.10 on Linux x86-64 (glibc). manylinux2014 and its
# PEP 600 name manylinux_2_17 are the same tag; both are listed so wheels tagged either way qualify.
FUNCTIONGRAPH = Target("3.10", ("manylinux2014_x86_64", "manylinux_2_17_x86_64"))


def local_target() -> Target:
    """This machine's interpreter, for proving the packages import here (same code path)."""
    machine = platform.machine().lower() or "x86_64"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Target(version, (f"manylinux2014_{machine}", f"manylinux_2_17_{machine}"))


# --------------------------------------------------------------------------- reproducible zips


def _zip_date() -> tuple[int, int, int, int, int, int]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return (1980, 1, 1, 0, 0, 0)
    stamp = time.gmtime(max(int(epoch), 315532800))  # zip cannot hold dates before 1980
    return stamp[:6]


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED_NAMES for part in relative.parts) or relative.name.endswith(SKIPPED_SUFFIXES)


def tree_entries(root: Path, prefix: str = "") -> dict[str, tuple[bytes, int]]:
    """The files under ``root`` as zip entries ``{arcname: (data, mode)}``, skipping caches."""
    entries = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or _skipped(relative):
            continue
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        entries[prefix + relative.as_posix()] = (path.read_bytes(), mode)
    return entries


def write_zip(dest: Path, entries: dict[str, tuple[bytes, int]]) -> Path:
    """Write ``entries`` sorted, with fixed dates and modes; replace ``dest`` atomically."""
    date = _zip_date()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            data, mode = entries[name]
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below means what it says
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, data, compresslevel=9)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(dest)
    return dest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- wheels


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelName:
    distribution: str
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise PackageError(f"{filename} is not a wheel")
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            raise PackageError(f"{filename} is not a valid wheel file name")
        dist, version, python, abi, plat = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
        return cls(
            canonical_name(dist),
            version,
            tuple(python.split(".")),
            tuple(abi.split(".")),
            tuple(plat.split(".")),
        )

    @property
    def is_pure(self) -> bool:
        return self.platform_tags == ("any",) and self.abi_tags == ("none",)

    def incompatibility(self, target: Target) -> str | None:
        """Why this wheel cannot run on ``target``, or None if it can."""
        if self.is_pure:
            if not any(
                tag in ("py3", f"py{target.python_version.split('.')[0]}") for tag in self.python_tags
            ):
                return f"pure wheel for {'.'.join(self.python_tags)}, not Python 3"
            return None
        machine = target.machine
        if not all(tag.startswith("manylinux") and tag.endswith("_" + machine) for tag in self.platform_tags):
            return f"platform {'.'.join(self.platform_tags)} is not manylinux {machine}"
        if target.abi not in self.abi_tags and "abi3" not in self.abi_tags:
            return f"ABI {'.'.join(self.abi_tags)} is not {target.abi}"
        return None


def read_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``name==version`` pins from the requirements file, as ``{canonical name: version}``."""
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if not match:
            raise PackageError(f"{path.name}:{number}: expected name==version, got {line!r}")
        pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def _cache_stamp(target: Target, requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(json.dumps(target.describe(), sort_keys=True).encode())
    return digest.hexdigest()


def _pick_wheels(folder: Path, pins: dict[str, str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for wheel in sorted(folder.glob("*.whl")):
        name = WheelName.parse(wheel.name)
        if pins.get(name.distribution) == name.version:
            found[name.distribution] = wheel
    return found


def fetch_wheels(
    target: Target = FUNCTIONGRAPH,
    requirements: Path = REQUIREMENTS,
    cache_root: Path = WHEEL_CACHE,
    log=print,
) -> list[Path]:
    """The pinned wheels for ``target``, downloaded once into ``cache_root/<target>/``."""
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f".{target.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds (two test runs) download once
        return _fetch_wheels(target, requirements, cache_root, log)


def _fetch_wheels(target: Target, requirements: Path, cache_root: Path, log) -> list[Path]:
    pins = read_requirements(requirements)
    folder = cache_root / target.key
    stamp_file = folder / "requirements.sha256"
    stamp = _cache_stamp(target, requirements)
    if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        found = _pick_wheels(folder, pins)
        if len(found) == len(pins):
            return [found[name] for name in sorted(found)]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--quiet",
        "--only-binary=:all:",
        "--implementation",
        target.implementation,
        "--python-version",
        target.python_version,
        *[arg for plat in target.platforms for arg in ("--platform", plat)],
        "--no-deps",  # exactly the pins; check_closure() below evaluates markers for the target
        "--dest",
        str(folder),
        "--requirement",
        str(requirements),
    ]
    log(f"fetching wheels for {target.key} (pip download --only-binary=:all:) ...")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PackageError(f"pip download for {target.key} failed:\n{result.stderr.strip()}")
    downloaded = {WheelName.parse(w.name): w for w in folder.glob("*.whl")}
    for name, wheel in downloaded.items():
        problem = name.incompatibility(target)
        if problem:
            raise PackageError(f"{wheel.name} does not fit {target.key}: {problem}")
    found = _pick_wheels(folder, pins)
    missing = sorted(set(pins) - set(found))
    if missing:
        raise PackageError(f"no wheel for {', '.join(missing)} on {target.key}")
    wheels = [found[name] for name in sorted(found)]
    check_closure(wheels, target, pins, requirements.name)
    stamp_file.write_text(stamp + "\n")
    return wheels


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name


def marker_environment(target: Target) -> dict[str, str]:
    """PEP 508 marker values for the target runtime (pip would use this machine's instead)."""
    return {
        "implementation_name": "cpython" if target.implementation == "cp" else target.implementation,
        "implementation_version": f"{target.python_version}.0",
        "os_name": "posix",
        "platform_machine": target.machine,
        "platform_python_implementation": "CPython" if target.implementation == "cp" else "",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{target.python_version}.0",
        "python_version": target.python_version,
        "sys_platform": "linux",
        "extra": "",
    }


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def unmet_requirements(
    requirement: str, pins: dict[str, str], wheels: dict[str, Path], target: Target
) -> list[str]:
    """What ``requirement`` needs on ``target`` (recursively, extras included) that the pins lack."""
    Requirement, canonicalize_name = _packaging()  # noqa: N806 (a class)
    env = marker_environment(target)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def need(text: str, why: str, extra: str) -> None:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({**env, "extra": extra}):
            return
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} (for {why})")
            return
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} (for {why}), but {name}=={pins[name]} is pinned")
            return
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) in seen or name not in wheels:
                continue
            seen.add((name, wanted))
            for dependency in wheel_requirements(wheels[name]):
                need(dependency, f"{name}[{wanted}]" if wanted else name, wanted)

    need(requirement, "the request", "")
    return problems


def check_closure(wheels: list[Path], target: Target, pins: dict[str, str], source: str = "the pins") -> None:
    """Every dependency of every pinned wheel, for the target, is pinned too."""
    by_name = {WheelName.parse(w.name).distribution: w for w in wheels}
    problems: list[str] = []
    for name, version in sorted(pins.items()):
        problems += unmet_requirements(f"{name}=={version}", pins, by_name, target)
    if problems:
        raise PackageError(
            f"{source} is not closed for {target.key}; pin: " + "; ".join(sorted(set(problems)))
        )


def wheel_entries(wheel: Path) -> dict[str, tuple[bytes, int]]:
    """A wheel's files as they land in site-packages (``*.data/purelib|platlib`` folded in)."""
    entries = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            first, _, rest = name.partition("/")
            if first.endswith(".data"):
                scheme, _, inner = rest.partition("/")
                if scheme not in ("purelib", "platlib"):
                    continue  # scripts, headers and data files do not belong in a dependency zip
                name = inner
            if _skipped(Path(name)):
                continue
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            entries[name] = (archive.read(info), mode)
    return entries


def _merge(into: dict, entries: dict, source: str, owners: dict) -> None:
    for name, value in entries.items():
        if name in into and into[name][0] != value[0]:
            raise PackageError(f"{name} comes from both {owners[name]} and {source}")
        into[name] = value
        owners[name] = source


# --------------------------------------------------------------------------- the packages


def build_function_zip(name: str, dist: Path) -> Path:
    folder = FUNCTIONS_DIR / name
    entries = tree_entries(folder)
    if "index.py" not in entries:
        raise PackageError(f"functions/{name} has no index.py")
    return write_zip(dist / f"{name}.zip", entries)


def kafka_ca_entries(source: Path = KAFKA_CA_SOURCE) -> dict[str, tuple[bytes, int]]:
    """The Kafka CA certificate as a dependency-zip entry, or nothing when ``source`` does not exist.

    Refused unless it is a PEM certificate an SSL context accepts, and refused if it holds a private
    key: the functions only verify the brokers, and a key does not belong in a package."""
    if not source.is_file():
        return {}
    data = source.read_bytes()
    text = data.decode("ascii", errors="replace")
    if "PRIVATE KEY-----" in text:
        raise PackageError(f"{source} holds a private key; put only the CA certificate there")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise PackageError(f"{source} is not a PEM certificate (phy_ca.crt from the DMS console is)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:  # ValueError: text that is not ASCII
        raise PackageError(f"{source} is not a usable CA certificate: {error}") from error
    return {KAFKA_CA_ARCNAME: (data, 0o644)}


def build_dependency_zip(
    wheels: Iterable[Path],
    dist: Path,
    name: str = DEPENDENCY_ZIP,
    kafka_ca: Path = KAFKA_CA_SOURCE,
) -> Path:
    entries: dict[str, tuple[bytes, int]] = {}
    owners: dict[str, str] = {}
    _merge(entries, tree_entries(COMMON_DIR, "common/"), "common/", owners)
    for wheel in wheels:
        _merge(entries, wheel_entries(wheel), wheel.name, owners)
    _merge(entries, kafka_ca_entries(kafka_ca), kafka_ca.name, owners)
    return write_zip(dist / name, entries)


def _describe(path: Path) -> dict:
    return {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def build(
    dist: Path = DEFAULT_DIST,
    target: Target = FUNCTIONGRAPH,
    functions: Iterable[str] | None = None,
    cache_root: Path = WHEEL_CACHE,
    log=print,
    kafka_ca: Path = KAFKA_CA_SOURCE,
) -> dict:
    """Build every package into ``dist`` and write ``manifest.json``; return the manifest."""
    names = list(functions) if functions is not None else function_names()
    unknown = sorted(set(names) - set(function_names()))
    if unknown:
        raise PackageError(f"no such function: {', '.join(unknown)}")
    wheels = fetch_wheels(target, cache_root=cache_root, log=log)
    dist.mkdir(parents=True, exist_ok=True)
    manifest = {
        "runtime": RUNTIME if target == FUNCTIONGRAPH else f"local CPython {target.python_version}",
        "target": target.describe(),
        "handler": "index.handler",
        "initializer": "index.initializer",
        "functions": {name: _describe(build_function_zip(name, dist)) for name in names},
        "dependency": {
            **_describe(build_dependency_zip(wheels, dist, kafka_ca=kafka_ca)),
            "wheels": [wheel.name for wheel in wheels],
        },
    }
    if kafka_ca.is_file():  # infra/terraform/kafka.tf checks this entry when kafka_sasl_ssl is on
        manifest["dependency"]["kafka_ca"] = {"file": KAFKA_CA_ARCNAME, "sha256": sha256_file(kafka_ca)}
    (dist / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for name, info in sorted(manifest["functions"].items()):
        log(f"  {info['file']:<16} {info['size']:>10,} bytes  sha256 {info['sha256'][:16]}  ({name})")
    dep = manifest["dependency"]
    log(
        f"  {dep['file']:<16} {dep['size']:>10,} bytes  sha256 {dep['sha256'][:16]}  (common/ + {len(wheels)} wheels)"
    )
    if "kafka_ca" in dep:
        log(f"  {'':<16} + {KAFKA_CA_ARCNAME}, the Kafka CA certificate from {kafka_ca}")
    return manifest


def load_manifest(dist: Path = DEFAULT_DIST) -> dict:
    path = dist / MANIFEST
    if not path.is_file():
        raise PackageError(f"{path} not found; run `make package` first")
    return json.loads(path.read_text())
