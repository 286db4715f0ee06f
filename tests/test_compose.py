"""docker-compose.yml, the Dockerfile and .env.example, checked against the code without a Docker engine.

No engine runs on these machines, so the stack is checked statically: the YAML parses and
interpolates as compose would, every process of ours gets every setting the code reads, commands
and ports point at code that exists, the image's entry points import with only what the image
installs, and the servers have health checks, named volumes and the right listeners.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.settings import FUNCTION_SETTINGS, SECRET_SETTINGS, Settings
from local.run import SHIM_FUNCTIONS

from . import servers

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli there
    import tomli as tomllib
from .conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

INFRA = {"postgres", "redis", "kafka"}
OURS = {"init", "shim", "trigger-loop", "maintenance"}  # the services built from our Dockerfile
# The cloud functions each of our processes runs (init migrates as the consumer's initializer does).
RUNS = {
    "init": ("consumer",),
    "shim": SHIM_FUNCTIONS,
    "trigger-loop": ("consumer",),
    "maintenance": ("maintenance",),
}
OWNER_ACCOUNT = {"DB_USER", "DB_PASSWORD"}
ROLE_PASSWORDS = {"DB_READER_PASSWORD", "DB_WRITER_PASSWORD"}


# --------------------------------------------------------------------------- reading the files

_VARIABLE = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(KeyError):
    """Compose's ``${X:?message}``: the variable is required and was not set."""


def interpolate(value, variables: dict[str, str], used: set[str] | None = None):
    """Compose's variable substitution (``${X}``, ``${X:-default}``, ``${X-default}``, ``${X:?error}``, ``$$``)."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables, used) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables, used) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        if used is not None:
            used.add(name)
        operator, default = match.group(2), match.group(3) or ""
        if operator == ":-":
            return variables.get(name) or default
        if operator == "-":
            return variables.get(name, default)
        if operator == ":?":
            if not variables.get(name):
                raise MissingVariable(f"{name}: {default}")
            return variables[name]
        return variables.get(name, "")

    assert "${" not in _VARIABLE.sub("", value), f"unsupported substitution in {value!r}"
    return _VARIABLE.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{path.name}:{number}: {line!r}"
        assert value == value.strip() and not value.startswith(("'", '"')), f"{path.name}:{number}: {line!r}"
        assert name not in values, f"{path.name}:{number}: {name} twice"
        values[name] = value
    return values


RAW = yaml.safe_load(COMPOSE_FILE.read_text())
USED: set[str] = set()
# The things a person must choose: compose refuses to start without the database passwords.
REQUIRED = {
    "DB_PASSWORD": "a-password-of-their-own",
    "DB_READER_PASSWORD": "another-for-the-reader",
    "DB_WRITER_PASSWORD": "another-for-the-writer",
}
WITHOUT_ENV = interpolate(RAW, REQUIRED, USED)  # a fresh clone: no .env, the password exported
WITH_EXAMPLE = interpolate(RAW, {**read_env_file(ENV_EXAMPLE), **REQUIRED})  # cp .env.example .env, then edit
SERVICES = WITHOUT_ENV["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: dict) -> list[str]:
    value = service["command"]
    assert isinstance(value, list), "exec form, so no shell splits or swallows signals"
    return value


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, rest = current.strip().partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def dockerfile(keyword: str) -> list[str]:
    return [rest for key, rest in dockerfile_instructions() if key == keyword]


def local_only_names() -> set[str]:
    """Environment names the local processes read besides the settings (SHIM_WORKERS, ...)."""
    names = set()
    for path in (ROOT / "local").glob("*.py"):
        names |= set(re.findall(r"(?:os\.environ\.get|env_int)\(\s*\"([A-Z_][A-Z0-9_]*)\"", path.read_text()))
    return names


# --------------------------------------------------------------------------- the file and .env.example


def test_the_stack_has_the_servers_and_our_processes():
    assert set(SERVICES) == INFRA | OURS
    assert SERVICES["postgres"]["image"] == servers.POSTGRES_IMAGE
    assert SERVICES["redis"]["image"] == servers.REDIS_IMAGE
    assert SERVICES["kafka"]["image"] == servers.KAFKA_IMAGE  # the official Apache Kafka image
    for name in OURS:
        assert SERVICES[name]["build"] == "." and "image" not in SERVICES[name]


def test_env_example_documents_every_variable_and_changes_nothing():
    example = read_env_file(ENV_EXAMPLE)
    # Every variable the compose file substitutes is in .env.example, and nothing else is there.
    assert USED == set(example), (
        f"only in compose: {USED - set(example)}, only in .env.example: {set(example) - USED}"
    )
    # Copying .env.example to .env gives exactly the defaults a fresh clone runs with.
    assert WITH_EXAMPLE == WITHOUT_ENV
    # The original service's names and values.
    assert {key: example[key] for key in ("DB_HOST", "DB_NAME", "DB_USER", "DB_PASSWORD", "REDIS_HOST")} == {
        "DB_HOST": "postgres",
        "DB_NAME": "iot_devices_db",
        "DB_USER": "admin",
        "DB_PASSWORD": "",  # no password in the repository: the person chooses one
        "REDIS_HOST": "redis",
    }
    for name in REQUIRED:
        chosen = {other: value for other, value in REQUIRED.items() if other != name}
        with pytest.raises(MissingVariable, match=f"{name}: set {name} in .env"):
            interpolate(RAW, {**read_env_file(ENV_EXAMPLE), **chosen})
    assert example["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert set(Settings.names()) <= set(example)


def test_a_docker_env_file_stays_out_of_the_image():
    assert ".env" in DOCKERIGNORE.read_text().split()


def without_accounts(names) -> set[str]:
    return set(names) - OWNER_ACCOUNT - ROLE_PASSWORDS


@pytest.mark.parametrize("name", sorted(OURS))
def test_each_process_of_ours_gets_every_setting_the_code_reads(name):
    env = environment(SERVICES[name])
    # Every setting but the database accounts, which go only where they are used (next test).
    missing = without_accounts(Settings.names()) - set(env)
    assert not missing, f"{name}: add {sorted(missing)} to x-app-environment and .env.example"
    needed = set().union(
        *(FUNCTION_SETTINGS[function] for function in RUNS[name] if function in FUNCTION_SETTINGS)
    )
    assert needed <= set(env), f"{name}: its functions read {sorted(needed - set(env))}"
    # Nothing set that no code reads.
    unread = set(env) - set(Settings.names()) - local_only_names()
    assert not unread, f"{name}: nothing reads {sorted(unread)}"
    settings = Settings.from_env(env)  # every value parses
    # The servers are the compose services, at the addresses they listen on.
    assert settings.db_host == "postgres" and settings.db_port == 5432
    assert settings.redis_host == "redis" and settings.redis_port == 6379
    assert settings.redis_password == ""  # the compose Redis has none
    advertised = environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert f"://{settings.kafka_bootstrap_servers}" in advertised
    postgres = environment(SERVICES["postgres"])
    assert settings.db_name == postgres["POSTGRES_DB"]
    if OWNER_ACCOUNT <= set(env):
        assert (settings.db_user, settings.db_password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
    # Secure by default, as the settings object itself: tokens on, delete-all off.
    assert settings.auth_enabled and not settings.demo_mode


def test_the_database_accounts_go_only_where_they_are_used():
    shim, init = environment(SERVICES["shim"]), environment(SERVICES["init"])
    # The shim's functions read as the reader and write as the writer, never as the schema's owner.
    assert not OWNER_ACCOUNT & set(shim)
    settings = Settings.from_env(shim)
    assert settings.db_reader_user == "iot_reader" and settings.db_writer_user == "iot_writer"
    assert settings.db_reader_password == REQUIRED["DB_READER_PASSWORD"]
    assert settings.db_writer_password == REQUIRED["DB_WRITER_PASSWORD"]
    # The processes that migrate and store are the owner, and name the roles their migrations grant to.
    for name in ("init", "trigger-loop", "maintenance"):
        owner = Settings.from_env(environment(SERVICES[name]))
        assert owner.db_user == "admin" and owner.db_password == REQUIRED["DB_PASSWORD"]
        assert (owner.db_reader_user, owner.db_writer_user) == ("iot_reader", "iot_writer")
    # Only init, whose migration creates the roles, holds their passwords besides the shim; the rest hold
    # no secret their functions are not given in the cloud.
    assert Settings.from_env(init).db_reader_password == REQUIRED["DB_READER_PASSWORD"]
    for name in ("trigger-loop", "maintenance", "shim"):
        given = set().union(*(FUNCTION_SETTINGS.get(function, frozenset()) for function in RUNS[name]))
        held = {secret for secret in SECRET_SETTINGS if environment(SERVICES[name]).get(secret)}
        assert held <= given, f"{name} holds {sorted(held - given)}"


# --------------------------------------------------------------------------- health, order, restarts


def test_servers_have_health_checks_and_our_processes_wait_for_them():
    for name in INFRA | {"shim"}:
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
        assert check["retries"] >= 3
    healthy = {name for name, service in SERVICES.items() if "healthcheck" in service}
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES
            condition = rule["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, target)
            assert condition != "service_healthy" or target in healthy, (name, target)
    init = SERVICES["init"]["depends_on"]
    assert {k: v["condition"] for k, v in init.items()} == {
        "postgres": "service_healthy",
        "kafka": "service_healthy",
    }
    for name in ("shim", "trigger-loop"):
        rules = {k: v["condition"] for k, v in SERVICES[name]["depends_on"].items()}
        assert rules == {"init": "service_completed_successfully", "redis": "service_healthy"}
    maintenance = SERVICES["maintenance"]["depends_on"]
    assert {k: v["condition"] for k, v in maintenance.items()} == {"init": "service_completed_successfully"}


def test_restart_policies():
    for name, service in SERVICES.items():
        expected = "no" if name == "init" else "unless-stopped"
        assert service["restart"] == expected, name


def test_postgres_healthcheck_uses_the_configured_user_and_tcp():
    test = " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in test and "-h 127.0.0.1" in test
    assert "${POSTGRES_USER}" in test and "${POSTGRES_DB}" in test  # $$ left for the container's shell


# --------------------------------------------------------------------------- data survives `down`


def test_data_lives_in_named_volumes_that_only_down_v_removes():
    declared = set(RAW["volumes"])
    mounts = {}
    for name in INFRA:
        for volume in SERVICES[name]["volumes"]:
            source, target = volume.split(":")[:2]
            assert source in declared, f"{name}: {source} is not a named volume, `down -v` would not wipe it"
            mounts[name] = target
    major = int(servers.POSTGRES_IMAGE.split(":")[1].split(".")[0])
    # PostgreSQL 18+ images refuse a volume at the old .../data path and keep data under it instead.
    assert mounts["postgres"] == ("/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data")
    assert mounts["redis"] == "/data"
    assert mounts["kafka"] == environment(SERVICES["kafka"])["KAFKA_LOG_DIRS"]
    for name in OURS:
        assert not SERVICES[name].get("volumes"), "our processes keep no state"


# --------------------------------------------------------------------------- Kafka


def test_kafka_is_one_kraft_node_that_other_containers_reach_as_kafka_9092():
    env = environment(SERVICES["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert advertised == {"PLAINTEXT": "kafka:9092"}
    assert listeners["PLAINTEXT"] == ":9092"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(protocols) == set(listeners) and controller in listeners and controller not in advertised
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert listeners[controller] == f":{voter_port}" and env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(
        env["KAFKA_NODE_ID"] + "@"
    )
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # one broker
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(
        SERVICES["kafka"]["healthcheck"]["test"]
    )
    # The testcontainers Kafka is configured the same way, but advertises the published port.
    container = servers.kafka_container_env("localhost", 12345)
    assert container.pop("KAFKA_ADVERTISED_LISTENERS") == "PLAINTEXT://localhost:12345"
    assert container == {
        k: v for k, v in env.items() if k not in ("KAFKA_ADVERTISED_LISTENERS", "KAFKA_LOG_DIRS")
    }


def test_the_topic_exists_before_the_trigger_loop_subscribes():
    init = command(SERVICES["init"])
    assert init[:3] == ["python", "-m", "local.compose_init"]
    assert "--partitions" in init
    assert SERVICES["trigger-loop"]["depends_on"]["init"]["condition"] == "service_completed_successfully"


# --------------------------------------------------------------------------- commands and ports


def test_the_shim_is_published_on_port_80_as_the_original():
    shim = SERVICES["shim"]
    assert shim["ports"] == ["80:80"]
    assert command(shim) == ["python", "-m", "local.shim", "--host", "0.0.0.0", "--port", "80"]
    assert "127.0.0.1/health" in " ".join(shim["healthcheck"]["test"])
    # The image runs as an ordinary user, so binding port 80 needs unprivileged low ports.
    assert shim["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0
    for name in SERVICES.keys() - {"shim"}:
        assert not SERVICES[name].get("ports"), f"{name} is reached over the compose network only"


def _program(argv: list[str]) -> tuple[str, str]:
    """('module', 'local.shim') for python -m, ('script', 'scripts/x.py') for python <file>."""
    assert argv[0] == "python"
    return ("module", argv[2]) if argv[1] == "-m" else ("script", argv[1])


ENTRY_POINTS = {name: command(SERVICES[name]) for name in OURS}
ENTRY_POINTS["Dockerfile CMD"] = json.loads(dockerfile("CMD")[-1])


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_commands_point_at_code_that_exists(name):
    kind, target = _program(ENTRY_POINTS[name])
    if kind == "module":
        assert importlib.util.find_spec(target) is not None, target
        assert (ROOT / (target.replace(".", "/") + ".py")).is_file()
    else:
        assert (ROOT / target).is_file(), target


def test_the_dockerfile_runs_the_shim_by_default():
    assert ENTRY_POINTS["Dockerfile CMD"] == ENTRY_POINTS["shim"]
    assert dockerfile("EXPOSE") == ["80"]


# --------------------------------------------------------------------------- the image


def test_the_image_copies_only_what_exists_and_the_build_context_keeps_it():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".local", ".git", ".env"} <= set(patterns)
    for rest in dockerfile("COPY"):
        *sources, _target = rest.split()
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), source
            assert not any(fnmatch.fnmatch(path, pattern) for pattern in patterns), (
                f"{source} is dockerignored"
            )
    assert dockerfile("WORKDIR") == ["/app"]
    assert "PYTHONPATH=/app" in " ".join(dockerfile("ENV"))
    users = dockerfile("USER")
    assert users and users[-1] not in ("root", "0")


def test_the_image_python_satisfies_requires_python():
    base = dockerfile("FROM")[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", base)
    assert match, base
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, match.groups())) >= tuple(map(int, minimum.split(".")))
    assert tuple(map(int, match.groups())) >= (3, 11), "the image reads pyproject.toml with tomllib"


def test_the_serve_extra_pins_what_the_local_extra_pins():
    extras = PYPROJECT["project"]["optional-dependencies"]
    local = {Requirement(r).name: str(Requirement(r)) for r in extras["local"]}
    for raw in extras["serve"]:
        requirement = Requirement(raw)
        assert local.get(requirement.name) == str(requirement), "keep serve and local in step"
    assert "optional-dependencies']['serve']" in " ".join(dockerfile("RUN"))


def _image_requirements() -> set[str]:
    """Distributions pip installs in the image: the dependencies, the serve extra, their closure."""
    project = PYPROJECT["project"]
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["serve"]]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for raw in importlib.metadata.requires(requirement.name) or []:
            sub = Requirement(raw)
            extras = requirement.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(sub)
    return {name for name, _ in seen}


PROBE = textwrap.dedent(
    """
    import importlib.metadata, importlib.util, json, sys
    from pathlib import Path

    from functions import load_function
    from local.shim import create_app
    import local.trigger_loop

    create_app()  # loads and initialises every HTTP function, as each Granian worker does
    load_function("consumer")
    load_function("maintenance")
    import local.compose_init
    import local.maintenance_timer
    spec = importlib.util.spec_from_file_location("generate_data", "scripts/generate_data.py")
    sys.modules["generate_data"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    import common, local
    ours = {"common", "local", "functions", "generate_data", "__main__",
            "cython_runtime"}  # Cython's pseudo-module, no distribution of its own
    # Private top-level names (_distutils_hack, _cffi_backend, ...) come with the interpreter's
    # start-up or with a package already counted; what our code imports has a public name.
    top = {n.split(".")[0] for n in sys.modules if not n.startswith("_")}
    top -= set(sys.stdlib_module_names) | ours
    owners = importlib.metadata.packages_distributions()
    print(json.dumps({
        "files": [common.__file__, local.__file__, str(Path(create_app.__code__.co_filename))],
        "distributions": sorted({d for name in top for d in owners.get(name, [])}),
        "unowned": sorted(name for name in top if name not in owners),
    }))
    """
)


# Libraries that an installed package imports only to see whether they are there (redis-py's utils try
# `import cryptography` for its optional OCSP support): present in the test environment, absent in the
# image, and fine either way.
PROBED_IF_PRESENT = {"cryptography"}


def test_the_image_entry_points_import_with_only_what_the_image_has(tmp_path):
    """Lay out /app as the Dockerfile's COPY lines do and import every entry point there."""
    app = tmp_path / "app"
    app.mkdir()
    for rest in dockerfile("COPY"):
        *sources, target = rest.split()
        for source in sources:
            path = ROOT / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, app / target.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
            elif target.endswith("/"):
                (app / target).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, app / target / path.name)
            else:
                shutil.copy(path, app / target)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(app),  # as the image's ENV PYTHONPATH=/app
        **environment(SERVICES["shim"]),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=app, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(path.startswith(str(app)) for path in found["files"]), found["files"]
    assert found["unowned"] == []
    missing = (
        {canonicalize_name(d) for d in found["distributions"]} - _image_requirements() - PROBED_IF_PRESENT
    )
    assert not missing, f"the entry points import {sorted(missing)}, which the image does not install"


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_option_in_a_command_exists(name):
    argv = ENTRY_POINTS[name]
    kind, target = _program(argv)
    program = ["-m", target] if kind == "module" else [target]
    options = [arg for arg in argv if arg.startswith("--")]
    result = subprocess.run(
        [sys.executable, *program, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, f"{name}: {target} has no {option}"


# --------------------------------------------------------------------------- the init entry point, for real


@pytest.mark.integration
def test_init_creates_the_topic_and_migrates_then_exits(service_env):
    from kafka import KafkaConsumer

    topic = f"init-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **service_env, "KAFKA_TOPIC": topic, "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # idempotent: `docker compose up` runs it every time
        result = subprocess.run(
            [sys.executable, "-m", "local.compose_init", "--partitions", "3"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"init: topic '{topic}' ready, schema at version" in result.stdout
    consumer = KafkaConsumer(bootstrap_servers=service_env["KAFKA_BOOTSTRAP_SERVERS"].split(","))
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        consumer.close()


def test_init_gives_up_with_a_clear_message_when_kafka_never_answers():
    from local.embedded import free_port

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "local.compose_init", "--wait", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "init: giving up: Kafka topic 'device-metrics' on 127.0.0.1:" in result.stderr


# --------------------------------------------------------------------------- make


def test_make_help_lists_the_commands_and_make_run_takes_auth():
    make = shutil.which("make")
    assert make, "make is part of the documented workflow"
    make = [make, "--no-print-directory"]  # under `make test`, make would say which directory it enters
    shown = subprocess.run([*make, "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("run", "test", "demo-data", "bench", "lint", "clean", "package", "deploy"):
        assert re.search(rf"^  {re.escape(target)}\s+\S", shown, re.M), f"make help does not list {target}"
    assert "AUTH=1" in shown
    run = subprocess.run(
        [*make, "-n", "-B", "run", "AUTH=1"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip().splitlines()[-1].endswith("-m local.run --auth")
    # make run installs the service and its local stack, not the development tools
    assert "-e '.[local]'" in run.stdout and ".[dev]" not in run.stdout
    plain = subprocess.run([*make, "-n", "-B", "run"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert plain.stdout.strip().splitlines()[-1].endswith("-m local.run")
    clean = subprocess.run(
        [*make, "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert {"build", "dist", ".venv", ".local"} <= set(clean.split())


def test_make_demo_data_runs_the_generator_with_overridable_defaults():
    make = shutil.which("make")
    assert make, "make is part of the documented workflow"
    dry = subprocess.run([make, "-n", "demo-data"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "scripts/generate_data.py 10 6 60 --url http://127.0.0.1:8080" in dry.stdout
    dry = subprocess.run(
        [make, "-n", "demo-data", "DEVICES=20", "METRICS=3", "ITERATIONS=5", "URL=http://localhost", "TOKEN=abc"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (
        "IOT_TOKEN='abc' .venv/bin/python scripts/generate_data.py 20 3 5 --url http://localhost"
        in dry.stdout
    )
    assert "--token" not in dry.stdout  # the token is not on a command line that make echoes or ps shows
