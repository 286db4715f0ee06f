"""Where the tests' PostgreSQL, Redis and Kafka come from.

For each server, in this order:

1. **external**: the environment names it (``DB_HOST``, ``REDIS_HOST``, ``KAFKA_BOOTSTRAP_SERVERS``);
2. **containers**: official images started through testcontainers, where a Docker engine answers
   (a developer's laptop);
3. **embedded**: the PyPI-wheel servers of ``local.embedded`` (no Docker: these machines and CI).

``TEST_SERVERS=containers`` or ``TEST_SERVERS=embedded`` forces the choice for the servers the
environment does not name (``auto``, the default, asks the Docker engine). Whichever provider runs,
the tests get the same thing: environment variables naming real servers, and one function that
stops whatever was started.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from local.embedded import EXTERNAL_VARIABLES

log = logging.getLogger(__name__)

# Server name -> the variable that, when set, names an external server (the local runner's map).
SERVERS: dict[str, str] = EXTERNAL_VARIABLES
SWITCH = "TEST_SERVERS"
SWITCH_VALUES = ("auto", "containers", "embedded")

# The images the containers provider runs: the same ones docker-compose.yml runs
# (tests/test_compose.py keeps the two in step).
POSTGRES_IMAGE = "postgres:18"
REDIS_IMAGE = "redis:7.4"
KAFKA_IMAGE = "apache/kafka:4.1.0"
# A KRaft cluster needs an id: 16 bytes, base64url without padding.
KAFKA_CLUSTER_ID = "c3RJvNY5SXq2m0P6Yq1l4g"

# What the servers are told to accept, whichever provider starts them; the password is made per run.
PG_DATABASE = PG_USER = "iot"
PG_PASSWORD = secrets.token_urlsafe(16)
# The read-only and writing roles the service's functions connect as, with passwords made per run. The
# schema's migration creates them: the containers' owner is a superuser, the embedded one (which names
# roles of its own) may create roles.
PG_ROLES = {
    "DB_READER_USER": "iot_reader",
    "DB_READER_PASSWORD": secrets.token_urlsafe(16),
    "DB_WRITER_USER": "iot_writer",
    "DB_WRITER_PASSWORD": secrets.token_urlsafe(16),
}

Stop = Callable[[], None]
Started = tuple[dict[str, str], Stop]


class ServerChoiceError(RuntimeError):
    """The requested provider cannot run here; the message says what to do."""


# --------------------------------------------------------------------------- choosing


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """True when testcontainers is installed and a Docker engine answers a ping within ``timeout``."""
    try:
        import docker
        import testcontainers  # noqa: F401 (only whether it is installed matters here)
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:  # no socket, refused, TLS trouble: all mean "no engine here"
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def choose(environ: Mapping[str, str], engine_answers: Callable[[], bool]) -> dict[str, str]:
    """Which provider gives each server: ``external``, ``containers`` or ``embedded``.

    ``engine_answers`` is asked at most once, and only when some server is not external and the
    switch is not ``embedded``.
    """
    switch = (environ.get(SWITCH) or "auto").strip().lower()
    if switch not in SWITCH_VALUES:
        raise ServerChoiceError(f"{SWITCH}={environ.get(SWITCH)!r} is not one of {', '.join(SWITCH_VALUES)}")
    missing = [name for name, variable in SERVERS.items() if not environ.get(variable)]
    provider = "embedded"
    if missing and switch != "embedded":
        answers = engine_answers()
        if switch == "containers" and not answers:
            raise ServerChoiceError(
                f"{SWITCH}=containers, but no Docker engine answers (or testcontainers is not installed: "
                "pip install -e '.[dev]'). Start Docker, or unset "
                f"{SWITCH} to use the embedded servers."
            )
        provider = "containers" if answers else "embedded"
    return {name: "external" if name not in missing else provider for name in SERVERS}


def start_servers(environ: Mapping[str, str], base_dir: Path) -> tuple[dict[str, str], dict[str, str], Stop]:
    """Start the servers the environment does not name.

    Returns the chosen providers, the environment variables naming the started servers (to be
    laid over ``environ``'s own), and a function that stops every started server. A started
    PostgreSQL comes with reader and writer roles to use; ``database_roles`` names them for one the
    environment names.
    """
    plan = choose(environ, docker_engine_answers)
    starters = {"embedded": EMBEDDED, "containers": CONTAINERS}
    env: dict[str, str] = {}
    stops: list[Stop] = []

    def stop_all() -> None:
        for stop in reversed(stops):
            try:
                stop()
            except Exception:
                log.exception("stopping a test server failed")
        stops.clear()

    try:
        for name, provider in plan.items():
            if provider == "external":
                continue
            started = time.monotonic()
            server_env, stop = starters[provider][name](base_dir)
            stops.append(stop)
            env.update(server_env)
            log.info("%s from %s in %.1fs", name, provider, time.monotonic() - started)
    except BaseException:
        stop_all()
        raise
    return plan, env, stop_all


def database_roles(environ: Mapping[str, str]) -> dict[str, str]:
    """The reader and writer settings for a database: the environment's own where it names the role
    (its password too, even when empty), else ``PG_ROLES``' (which the migration creates)."""
    roles = {}
    for user, password in (
        ("DB_READER_USER", "DB_READER_PASSWORD"),
        ("DB_WRITER_USER", "DB_WRITER_PASSWORD"),
    ):
        if environ.get(user):
            roles.update({user: environ[user], password: environ.get(password, "")})
        else:
            roles.update({user: PG_ROLES[user], password: PG_ROLES[password]})
    return roles


# --------------------------------------------------------------------------- embedded


def _embedded(kind_name: str) -> Callable[[Path], Started]:
    def start(base_dir: Path) -> Started:
        from local import embedded

        server = getattr(embedded, kind_name)(base_dir=base_dir)
        server.start()
        return server.env(), server.stop

    return start


EMBEDDED: dict[str, Callable[[Path], Started]] = {
    "postgres": _embedded("EmbeddedPostgres"),
    "redis": _embedded("EmbeddedRedis"),
    "kafka": _embedded("EmbeddedKafka"),
}


# --------------------------------------------------------------------------- containers


def kafka_container_env(advertised_host: str, advertised_port: int) -> dict[str, str]:
    """The official apache/kafka image as one KRaft node (broker and controller).

    Clients reach the broker on container port 9092, published on the Docker host as
    ``advertised_port``; the broker must advertise that same host and port.
    """
    return {
        "CLUSTER_ID": KAFKA_CLUSTER_ID,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{advertised_host}:{advertised_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


def _poll(what: str, probe: Callable[[], object], container, timeout: float = 90) -> None:
    """Call ``probe`` until it stops raising; on timeout fail with the end of the container's log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                stdout, stderr = container.get_logs()
                tail = (stdout + stderr).decode(errors="replace")[-3000:]
                raise RuntimeError(
                    f"{what} container not ready after {timeout:.0f}s: {error}\n{tail}"
                ) from error
            time.sleep(0.5)


def _stopper(container) -> Stop:
    return lambda: container.stop()


def _postgres_container(base_dir: Path) -> Started:
    import psycopg
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(POSTGRES_IMAGE).with_exposed_ports(5432)
    for key, value in {
        "POSTGRES_DB": PG_DATABASE,
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": PG_PASSWORD,
    }.items():
        container.with_env(key, value)
    container.start()
    try:
        env = {
            "DB_HOST": container.get_container_host_ip(),
            "DB_PORT": str(container.get_exposed_port(5432)),
            "DB_NAME": PG_DATABASE,
            "DB_USER": PG_USER,
            "DB_PASSWORD": PG_PASSWORD,
            **PG_ROLES,
        }

        def probe() -> None:
            # The image's first start runs a socket-only server for initdb scripts, so a TCP login
            # succeeds only once the real server is up.
            with psycopg.connect(
                host=env["DB_HOST"],
                port=int(env["DB_PORT"]),
                dbname=PG_DATABASE,
                user=PG_USER,
                password=PG_PASSWORD,
                connect_timeout=2,
            ) as conn:
                conn.execute("select 1")

        _poll("PostgreSQL", probe, container)
    except BaseException:
        container.stop()
        raise
    return env, _stopper(container)


def _redis_container(base_dir: Path) -> Started:
    import redis
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(REDIS_IMAGE).with_exposed_ports(6379)
    container.start()
    try:
        env = {
            "REDIS_HOST": container.get_container_host_ip(),
            "REDIS_PORT": str(container.get_exposed_port(6379)),
        }

        def probe() -> None:
            client = redis.Redis(host=env["REDIS_HOST"], port=int(env["REDIS_PORT"]), socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()

        _poll("Redis", probe, container)
    except BaseException:
        container.stop()
        raise
    return env, _stopper(container)


def _kafka_container(base_dir: Path) -> Started:
    from kafka.admin import KafkaAdminClient
    from testcontainers.core.container import DockerContainer

    from local.embedded import free_port

    # The broker must advertise the address clients use, which is known before the start only
    # when we pick the published port ourselves.
    port = free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    host = container.get_docker_client().host()
    for key, value in kafka_container_env(host, port).items():
        container.with_env(key, value)
    container.start()
    try:
        bootstrap = f"{host}:{port}"

        def probe() -> None:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="test-kafka-probe",
                bootstrap_timeout_ms=3000,
                request_timeout_ms=3000,
            )
            try:
                admin.list_topics()
            finally:
                admin.close()

        _poll("Kafka", probe, container)
    except BaseException:
        container.stop()
        raise
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}, _stopper(container)


CONTAINERS: dict[str, Callable[[Path], Started]] = {
    "postgres": _postgres_container,
    "redis": _redis_container,
    "kafka": _kafka_container,
}


def describe(plan: Mapping[str, str]) -> str:
    """One line for the test report, e.g. ``postgres: containers, redis: containers, kafka: external``."""
    return ", ".join(f"{name}: {provider}" for name, provider in plan.items())


if __name__ == "__main__":  # python -m tests.servers: which provider would the tests use here?
    print(describe(choose(os.environ, docker_engine_answers)))
