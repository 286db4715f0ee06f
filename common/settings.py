"""One settings object, read once from the environment.

Names follow the original service's `.env` (`DB_HOST`, `REDIS_HOST`, `KAFKA_BOOTSTRAP_SERVERS`, ...).
In FunctionGraph the same names are set as the function's `user_data`; settings are read through
`context.getUserData` because whether user data is also exported to `os.environ` is not confirmed
(docs/functiongraph.md, section 1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import get_type_hints

Lookup = Callable[[str], "str | None"]


class SettingsError(ValueError):
    """A setting has a value the service cannot use."""


def _as_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def _as_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-512")


def _check_kafka_security(settings: Settings) -> None:
    """Refuse Kafka security settings that do not fit together, before any client is built: kafka-python
    would accept some of them and leave the broker to fail the connection without saying why."""
    protocol = settings.kafka_security_protocol
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(f"KAFKA_SECURITY_PROTOCOL must be PLAINTEXT or SASL_SSL, not {protocol!r}")
    if settings.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
        raise SettingsError(
            f"KAFKA_SASL_MECHANISM must be PLAIN or SCRAM-SHA-512, not {settings.kafka_sasl_mechanism!r}"
        )
    needed = {
        "KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
    }
    if protocol == "SASL_SSL":
        missing = [name for name, value in needed.items() if not value]
        if missing:
            raise SettingsError(f"KAFKA_SECURITY_PROTOCOL=SASL_SSL needs {', '.join(missing)}")
    else:
        # Credentials that would be silently ignored usually mean the protocol was forgotten.
        given = [name for name, value in needed.items() if value]
        if given:
            raise SettingsError(
                f"{', '.join(given)} set, but KAFKA_SECURITY_PROTOCOL is PLAINTEXT: set it to SASL_SSL"
            )


# urn:smn:<region>:<project id>:<topic name>, as SMN prints a topic's URN.
TOPIC_URN = re.compile(
    r"urn:smn:(?P<region>[a-z0-9-]+):(?P<project_id>[0-9A-Za-z]{1,64}):(?P<name>[A-Za-z0-9][\w-]{0,254})"
)


def _check_topic_urn(urn: str) -> None:
    if not TOPIC_URN.fullmatch(urn):
        raise SettingsError(
            f"ALERT_SMN_TOPIC_URN must be a topic's URN, urn:smn:<region>:<project id>:<topic name>, not {urn!r}"
            " (the topic's page in the SMN console shows it; Terraform outputs alert_topic_urn)"
        )


# How a setting's text becomes the type its annotation names.
_PARSERS: dict[type, Callable[[str, str], object]] = {
    int: _as_int,
    bool: _as_bool,
    str: lambda name, raw: raw,
}


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; each field maps to the upper-cased environment name."""

    db_host: str = "127.0.0.1"
    db_port: int = 5432
    db_name: str = "iot"
    db_user: str = "iot"
    db_password: str = field(default="", repr=False)
    db_pool_size: int = 4
    # Least privilege: queries connect as a read-only role (SELECT only, under a statement timeout), the
    # routes that change data as a writer role, and only the functions that migrate as DB_USER, the
    # schema's owner. Migrations create the two roles (with these passwords, where they are given) and
    # grant them their rights. Empty names mean DB_USER for everything: a development database.
    db_reader_user: str = ""
    db_reader_password: str = field(default="", repr=False)
    db_writer_user: str = ""
    db_writer_password: str = field(default="", repr=False)
    # The reader's statement timeout: no read can hold a connection longer than this.
    db_read_timeout_ms: int = 5000

    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str = field(default="", repr=False)
    redis_db: int = 0
    redis_key_prefix: str = "iot:"

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "device-metrics"
    # How long ingest waits for the broker before answering 503.
    kafka_timeout_ms: int = 5000
    # PLAINTEXT inside a private network, or SASL_SSL (DMS with ciphertext access): a SASL user, and
    # TLS to brokers whose certificate chains to KAFKA_SSL_CAFILE. The three below are then required.
    kafka_security_protocol: str = "PLAINTEXT"
    # PLAIN or SCRAM-SHA-512, the two DMS offers.
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    # The CA certificate (PEM) the brokers' certificates chain to. A relative path is taken from the
    # directory that holds common/: the repository, or in FunctionGraph the dependency package, where
    # `make package` puts deploy/kafka-ca.pem as certs/kafka-ca.pem.
    kafka_ssl_cafile: str = ""
    # The consumer group whose lag GET /api/pipeline shows. Empty: every group that committed offsets on
    # the topic (the DMS trigger's group name is not documented: docs/functiongraph.md, section 9). The
    # local trigger loops join this group unless TRIGGER_GROUP_ID names another.
    kafka_consumer_group: str = ""

    # Timeouts in seconds for connecting to PostgreSQL and Redis: a dead dependency means a quick 503.
    connect_timeout: int = 3

    # Demo mode enables POST /api/delete-all. Off unless asked for: the local runner asks.
    demo_mode: bool = False
    # Device tokens on ingest (and the admin token on delete-all). On unless turned off: the local
    # runner turns it off for its demo and says so.
    auth_enabled: bool = True
    # How long a verified (or refused) token is remembered per process, so ingest does not ask
    # PostgreSQL on every request. A revoked token stops working within this time.
    auth_cache_seconds: int = 60
    # The key the gateway's authorizer signs the credential id it hands the backend with (HMAC-SHA256),
    # so a backend never trusts a credential header a client made up. Empty: a random key per process,
    # which is enough where the authorizer runs in the same process (the local shim).
    auth_context_secret: str = field(default="", repr=False)
    # Origins (comma-separated, e.g. https://dash.example.com) whose pages may call the API. Empty: any
    # origin while auth is off, none but the API's own while it is on ("*" is refused with auth on).
    cors_origins: str = ""
    # Raw readings are kept this many days: older ones are refused (ingest answers 400, the consumer
    # keeps them as rejected messages) and their monthly partitions are dropped. Backfilling older data
    # needs a longer retention first.
    raw_retention_days: int = 90
    # Rollups (the per-minute and per-15-minute aggregates) are kept this many days; 0 keeps them.
    rollup_retention_days: int = 0
    # Where the maintenance pass sends each alert opening and closing (JSON, POST, with an
    # Idempotency-Key): empty sends nothing. Not handled as a secret: put no token in it.
    alert_webhook_url: str = ""
    # The SMN topic the maintenance pass also publishes each opening and closing to
    # (urn:smn:<region>:<project id>:<topic>; empty publishes nothing), with the credentials of the
    # function's agency (common/smn.py). The region and project come from the URN.
    alert_smn_topic_urn: str = ""
    # The SMN API's URL, when it is not the region's public endpoint (https://smn.<region>.myhuaweicloud.com
    # or what the SDK knows for the region): another domain, or a local server in the tests.
    alert_smn_endpoint: str = ""
    # Local runner only: how often it runs the maintenance pass (in the cloud a TIMER trigger does).
    maintenance_interval_seconds: int = 300
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check_kafka_security(self)
        if self.auth_enabled and "*" in self.origins:
            raise SettingsError("CORS_ORIGINS may not be * while auth is on: list the dashboard's origins")
        if self.db_read_timeout_ms < 1:
            raise SettingsError(f"DB_READ_TIMEOUT_MS must be at least 1, not {self.db_read_timeout_ms}")
        if self.raw_retention_days < 1:
            raise SettingsError(f"RAW_RETENTION_DAYS must be at least 1, not {self.raw_retention_days}")
        if self.alert_smn_topic_urn:
            _check_topic_urn(self.alert_smn_topic_urn)
        if self.alert_smn_endpoint and not self.alert_smn_endpoint.startswith(("https://", "http://")):
            raise SettingsError(
                f"ALERT_SMN_ENDPOINT must be a URL (https://smn.<region>.<domain>), not {self.alert_smn_endpoint!r}"
            )
        if self.rollup_retention_days < 0:
            raise SettingsError(
                f"ROLLUP_RETENTION_DAYS must be 0 (keep) or more, not {self.rollup_retention_days}"
            )

    @property
    def origins(self) -> tuple[str, ...]:
        """CORS_ORIGINS as a tuple of origins, without trailing slashes."""
        return tuple(origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip())

    @classmethod
    def from_lookup(cls, lookup: Lookup) -> Settings:
        """Build settings from any name -> value lookup; unset names keep their defaults."""
        types = get_type_hints(cls)
        values = {}
        for setting in fields(cls):
            name = setting.name.upper()
            raw = lookup(name)
            if raw is None or raw == "":
                continue
            values[setting.name] = _PARSERS[types[setting.name]](name, raw)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls.from_lookup(env.get)

    @classmethod
    def from_context(cls, context) -> Settings:
        """Settings from a FunctionGraph context's user data, falling back to the environment."""

        def lookup(name: str) -> str | None:
            value = None
            getter = getattr(context, "getUserData", None)
            if getter is not None:
                try:
                    value = getter(name)
                except Exception:  # the runtime's lookup is not documented to be total
                    value = None
            return value if value not in (None, "") else os.environ.get(name)

        return cls.from_lookup(lookup)

    @classmethod
    def names(cls) -> list[str]:
        """The environment names the service reads (used by docs and deployment checks)."""
        return [setting.name.upper() for setting in fields(cls)]


# Which settings each function reads, and so the only ones Terraform gives it: a function holds no
# secret it does not use (tests/test_terraform.py keeps infra/terraform in step with this map). Every
# function builds the same Settings object; the settings it is not given keep their defaults, which it
# never acts on. The dashboard only serves files.
_DB_SERVER = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_POOL_SIZE", "CONNECT_TIMEOUT")
# The schema's owner, and the names of the roles its migrations create and grant to.
_DB_OWNER = (*_DB_SERVER, "DB_USER", "DB_PASSWORD", "DB_READER_USER", "DB_WRITER_USER")
_DB_READER = (*_DB_SERVER, "DB_READER_USER", "DB_READER_PASSWORD", "DB_READ_TIMEOUT_MS")
_DB_WRITER = ("DB_WRITER_USER", "DB_WRITER_PASSWORD")
_REDIS = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "REDIS_KEY_PREFIX")
_KAFKA = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC",
    "KAFKA_TIMEOUT_MS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
)
_AUTH = ("AUTH_ENABLED", "AUTH_CACHE_SECONDS", "AUTH_CONTEXT_SECRET")
_RETENTION = ("RAW_RETENTION_DAYS", "ROLLUP_RETENTION_DAYS")
_ALERT_NOTIFICATIONS = ("ALERT_WEBHOOK_URL", "ALERT_SMN_TOPIC_URN", "ALERT_SMN_ENDPOINT")
FUNCTION_SETTINGS: dict[str, frozenset[str]] = {
    # queues readings (refusing those older than the raw retention); reads its credential's scope
    "ingest": frozenset((*_KAFKA, *_DB_READER, *_AUTH, "RAW_RETENTION_DAYS", "LOG_LEVEL")),
    # APIG's custom authorizer: checks every credential before any other function runs
    "authorizer": frozenset((*_DB_READER, *_AUTH, "LOG_LEVEL")),
    # stores batches in PostgreSQL (creating a missing partition), then Redis; migrates the schema
    "consumer": frozenset((*_DB_OWNER, *_REDIS, *_RETENTION, "LOG_LEVEL")),
    # on a timer: partitions ahead, expired ones dropped, rollups backfilled, no-data alerts judged, alert
    # notifications sent (webhook, SMN); migrates the schema
    "maintenance": frozenset(
        (*_DB_OWNER, *_RETENTION, *_ALERT_NOTIFICATIONS, "LOG_LEVEL"),
    ),
    # reads Redis and PostgreSQL as the reader; /ready asks Kafka, /api/pipeline its consumer group's
    # lag; delete-all (demo mode, admin) writes
    "query": frozenset(
        (
            *_DB_READER,
            *_DB_WRITER,
            *_REDIS,
            *_KAFKA,
            *_AUTH,
            "KAFKA_CONSUMER_GROUP",
            "CORS_ORIGINS",
            "DEMO_MODE",
            "LOG_LEVEL",
        )
    ),
    "dashboard": frozenset(),
}
# Settings that are secrets: Terraform passes them as encrypted user data.
SECRET_SETTINGS = frozenset(
    {
        "DB_PASSWORD",
        "DB_READER_PASSWORD",
        "DB_WRITER_PASSWORD",
        "REDIS_PASSWORD",
        "KAFKA_SASL_PASSWORD",
        "AUTH_CONTEXT_SECRET",
    }
)
