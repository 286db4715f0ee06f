"""The database schema: migrations, and the time partitions of the readings and their rollups.

Readings and rollups are partitioned by month (UTC), so that expiring data is dropping a table,
never a DELETE through billions of rows. Partitions are created ahead of time by whoever migrates (the
consumer and maintenance functions) and by the maintenance pass; a batch that still meets a missing
partition creates it (``ReadingStore.store``).

A database made before partitioning keeps its readings table as one partition, ``reading_legacy``,
attached under a CHECK constraint: one scan to validate, no rewrite. Its rollups are built afterwards,
a day at a time, by the maintenance pass (``common.maintenance``): ``rollup_horizon`` is the instant
from which the rollups are complete, and the series query reads raw readings below it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

UTC = timezone.utc
DAY = timedelta(days=1)
# A month per raw partition: a page of a sparse series' history spans months, and every partition
# it touches costs planning and opening an index scan, per metric (measured on a year of data: daily
# partitions, 300 for one page and 15-25 ms of planning; weekly, 186 index scans opened for a page
# across metrics). Retention drops whole months, so raw readings are kept up to a month past
# RAW_RETENTION_DAYS.

# Partitions are created this far past today: a whole week without a maintenance run is covered.
DAYS_AHEAD = 8
# A reading may be up to a day in the future (readings.MAX_FUTURE_SKEW): the old table, attached as a
# partition, ends at the first month boundary two days or more after the migration, past any reading
# it can hold.
LEGACY_DAYS_AHEAD = 2

# Rollup levels, finest first: (table, bucket width). Every zone's UTC offset is a multiple of 15
# minutes, so buckets of 15 minutes or finer answer hour and day buckets in any zone. The maintenance pass
# rolls the stored readings up into both (rollup_horizon.rolled_before says how far; batches merge late
# readings before it themselves), and coarser intervals aggregate the 15-minute rows.
ROLLUPS: tuple[tuple[str, timedelta], ...] = (
    ("rollup_1m", timedelta(minutes=1)),
    ("rollup_15m", timedelta(minutes=15)),
)

_ROLLUP_COLUMNS = """
    device_id   text             NOT NULL,
    metric_type metric_type      NOT NULL,
    bucket      timestamptz      NOT NULL,
    count       bigint           NOT NULL,
    sum         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    first_time  timestamptz      NOT NULL,
    first_value double precision NOT NULL,
    last_time   timestamptz      NOT NULL,
    last_value  double precision NOT NULL,
    PRIMARY KEY (device_id, metric_type, bucket)
"""


def _partition_readings(conn: psycopg.Connection) -> None:
    """Readings partitioned by time; the existing table becomes a partition without being rewritten."""
    conn.execute(
        """
        ALTER TABLE reading RENAME TO reading_legacy;
        ALTER INDEX reading_pkey RENAME TO reading_legacy_pkey;
        -- The key carries the value, so a page of history is read from the index alone: a sparse
        -- series' 1,000 readings lie on about 1,000 table pages, but on a few index pages.
        CREATE TABLE reading (
            device_id   text             NOT NULL,
            metric_type metric_type      NOT NULL,
            value       double precision NOT NULL,
            timestamp   timestamptz      NOT NULL,
            PRIMARY KEY (device_id, metric_type, timestamp) INCLUDE (value)
        ) PARTITION BY RANGE (timestamp);
        CREATE TABLE reading_count (
            day      date     NOT NULL,
            shard    smallint NOT NULL,
            readings bigint   NOT NULL,
            PRIMARY KEY (day, shard)
        );
        CREATE TABLE rollup_horizon (
            one           boolean     PRIMARY KEY DEFAULT true CHECK (one),
            complete_from timestamptz NOT NULL
        );
        """
    )
    for table, _ in ROLLUPS:
        conn.execute(f"CREATE TABLE {table} ({_ROLLUP_COLUMNS}) PARTITION BY RANGE (bucket)")
    # Device pages are in byte order (as Python sorts), whatever the database's collation: the key is
    # rebuilt in "C" order so the pages walk it. One row per series: a small table.
    conn.execute('ALTER TABLE latest_reading ALTER COLUMN device_id TYPE text COLLATE "C"')

    if conn.execute("SELECT EXISTS (SELECT 1 FROM reading_legacy)").fetchone()[0]:
        bound = next_month(month_start(datetime.now(UTC) + LEGACY_DAYS_AHEAD * DAY))
        # The CHECK constraint proves the partition bound, so ATTACH does not scan again. ATTACH
        # builds the old table's index of the new key (the one step that grows with the table; for
        # a table of hundreds of millions of readings, run `python -m deploy migrate` before deploying).
        conn.execute("ALTER TABLE reading_legacy DROP CONSTRAINT reading_legacy_pkey")
        conn.execute(
            f"ALTER TABLE reading_legacy ADD CONSTRAINT reading_legacy_bound CHECK (timestamp < '{bound.isoformat()}')"
        )
        conn.execute(
            f"ALTER TABLE reading ATTACH PARTITION reading_legacy FOR VALUES FROM (MINVALUE) TO ('{bound.isoformat()}')"
        )
        conn.execute("INSERT INTO rollup_horizon (complete_from) VALUES (%s)", (bound,))
        log.info("readings kept as partition reading_legacy (to %s); rollups will be backfilled", bound)
    else:
        conn.execute("DROP TABLE reading_legacy")
        conn.execute("INSERT INTO rollup_horizon (complete_from) VALUES ('-infinity')")


Migration = str | Callable[[psycopg.Connection], None]

# Ordered, append-only: each entry runs once, in one transaction, under an advisory lock.
MIGRATIONS: list[Migration] = [
    # 1: the original service's table, with identity and the enum it had.
    """
    CREATE TYPE metric_type AS ENUM
        ('temperature', 'humidity', 'pressure', 'voltage', 'current', 'power');
    CREATE TABLE reading (
        device_id   text             NOT NULL,
        metric_type metric_type      NOT NULL,
        value       double precision NOT NULL,
        timestamp   timestamptz      NOT NULL,
        PRIMARY KEY (device_id, metric_type, timestamp)
    );
    CREATE INDEX reading_device_time ON reading (device_id, timestamp DESC);
    CREATE TABLE latest_reading (
        device_id   text             NOT NULL,
        metric_type metric_type      NOT NULL,
        value       double precision NOT NULL,
        timestamp   timestamptz      NOT NULL,
        PRIMARY KEY (device_id, metric_type)
    );
    CREATE TABLE rejected_message (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at timestamptz NOT NULL DEFAULT now(),
        topic       text        NOT NULL DEFAULT '',
        raw         text        NOT NULL,
        reason      text        NOT NULL
    );
    """,
    # 2: access tokens, stored only as SHA-256 hashes of high-entropy random tokens.
    """
    CREATE TABLE api_token (
        token_hash  text        PRIMARY KEY,
        name        text        NOT NULL,
        devices     text[]      NOT NULL DEFAULT '{}',
        is_admin    boolean     NOT NULL DEFAULT false,
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz
    );
    CREATE INDEX api_token_name ON api_token (name);
    """,
    # 3: history across metrics reads the primary key once per metric instead (see store.history_page):
    # every index is maintained on every insert, and this one cost storing much of its speed.
    """
    DROP INDEX IF EXISTS reading_device_time;
    """,
    # 4: time partitions, rollups and per-day counts.
    _partition_readings,
    # 5: the device list, for pages of devices and their count (one row per device, where the
    # latest-value table has one per series).
    """
    CREATE TABLE device (
        device_id text COLLATE "C" PRIMARY KEY
    );
    INSERT INTO device SELECT DISTINCT device_id FROM latest_reading;
    """,
    # 6: credential kinds (device and gateway tokens, admin tokens, read keys), and an id that the
    # gateway's authorizer hands the backend instead of the credential. ``devices`` holds device ids
    # for device tokens and device globs for read keys (none: every device). is_admin stays, computed
    # from the kind, so that code still reading it keeps working while a deploy moves over.
    """
    ALTER TABLE api_token ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
    ALTER TABLE api_token ADD COLUMN kind text NOT NULL DEFAULT 'device'
        CONSTRAINT api_token_kind CHECK (kind IN ('device', 'admin', 'read'));
    UPDATE api_token SET kind = 'admin' WHERE is_admin;
    ALTER TABLE api_token ALTER COLUMN kind DROP DEFAULT;
    ALTER TABLE api_token DROP COLUMN is_admin;
    ALTER TABLE api_token ADD COLUMN is_admin boolean GENERATED ALWAYS AS (kind = 'admin') STORED;
    """,
    # 7: the rollups are built from the stored readings by the maintenance pass, not by every batch (a
    # rollup upsert per series and level in every batch cost storing a batch as much again). Below
    # ``rolled_before`` (15-minute aligned) they hold every reading: batches still merge readings there
    # (late data) into every level; readings at or after it wait for maintenance to roll them up. A
    # database with readings starts the boundary at the next quarter hour, so that a consumer of the
    # previous release still storing meanwhile (it merges every reading) is not rolled up twice; one
    # whose old readings are still being backfilled, at the backfill's upper bound (it rolls up every
    # reading below that bound; batches merge those above its horizon until then).
    """
    ALTER TABLE rollup_horizon ADD COLUMN rolled_before timestamptz;
    UPDATE rollup_horizon SET rolled_before = greatest(
        date_bin('15 minutes', now(), timestamptz 'epoch')
            + CASE WHEN EXISTS (SELECT 1 FROM rollup_1m) THEN interval '15 minutes' ELSE interval '0' END,
        complete_from);
    ALTER TABLE rollup_horizon ALTER COLUMN rolled_before SET NOT NULL;
    """,
    # 8: device alerts (common/alerts.py). Rules are kept when deleted (``deleted_at``) so that their
    # closed alerts still name them. ``alert.metric_type`` is text, '' for a no-data alert, so that the
    # partial unique index (one open alert per rule, device and metric) holds for both kinds without
    # NULLs, which a unique index treats as distinct. The outbox is written in the transaction of each
    # state change, for a deliverer to send (webhook, SMN) and mark delivered.
    """
    CREATE TABLE alert_rule (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name            text             NOT NULL,
        kind            text             NOT NULL CONSTRAINT alert_rule_kind CHECK (kind IN ('threshold', 'no_data')),
        device_glob     text             NOT NULL DEFAULT '*',
        metric_type     metric_type,
        condition       text             CONSTRAINT alert_rule_condition CHECK (condition IN ('>', '>=', '<', '<=')),
        threshold       double precision,
        clear_threshold double precision,
        for_seconds     double precision NOT NULL DEFAULT 0 CHECK (for_seconds >= 0),
        after_seconds   double precision CHECK (after_seconds > 0),
        created_at      timestamptz      NOT NULL DEFAULT now(),
        deleted_at      timestamptz,
        CONSTRAINT alert_rule_shape CHECK (
            (kind = 'threshold' AND metric_type IS NOT NULL AND condition IS NOT NULL AND threshold IS NOT NULL)
            OR (kind = 'no_data' AND after_seconds IS NOT NULL))
    );
    CREATE TABLE alert_state (
        rule_id      bigint      NOT NULL REFERENCES alert_rule (id) ON DELETE CASCADE,
        device_id    text        NOT NULL,
        metric_type  metric_type NOT NULL,
        breach_start timestamptz,
        judged_at    timestamptz,
        PRIMARY KEY (rule_id, device_id, metric_type)
    );
    CREATE TABLE alert (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rule_id         bigint           NOT NULL REFERENCES alert_rule (id),
        device_id       text             NOT NULL,
        metric_type     text             NOT NULL,
        state           text             NOT NULL CONSTRAINT alert_state_name CHECK (state IN ('open', 'closed')),
        opened_at       timestamptz      NOT NULL,
        closed_at       timestamptz,
        value           double precision,
        acknowledged_at timestamptz,
        acknowledged_by text
    );
    CREATE UNIQUE INDEX alert_one_open ON alert (rule_id, device_id, metric_type) WHERE state = 'open';
    CREATE INDEX alert_open_device ON alert (device_id) WHERE state = 'open';
    CREATE INDEX alert_newest ON alert (opened_at DESC, id DESC);
    CREATE INDEX alert_device_newest ON alert (device_id, opened_at DESC, id DESC);
    CREATE TABLE alert_outbox (
        event_id     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
        -- the order changes happened in (created_at is the transaction's: one batch's share it)
        seq          bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
        alert_id     bigint      NOT NULL REFERENCES alert (id),
        kind         text        NOT NULL CONSTRAINT alert_outbox_kind CHECK (kind IN ('opened', 'closed')),
        payload      jsonb       NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        -- the deliverer's bookkeeping (common/notify.py): failed tries, when to try again, why it failed
        attempts     integer     NOT NULL DEFAULT 0,
        next_try_at  timestamptz NOT NULL DEFAULT now(),
        last_error   text
    );
    CREATE INDEX alert_outbox_undelivered ON alert_outbox (seq) WHERE delivered_at IS NULL;
    """,
    # 9: a second notification destination, SMN, with delivery state of its own (common/notify.py), so
    # that a webhook that is down holds back neither SMN nor the reverse. The columns of migration 8
    # stay the webhook's. Rows already in the outbox are still to be published, like any change a
    # destination has not received yet.
    """
    ALTER TABLE alert_outbox
        ADD COLUMN smn_delivered_at timestamptz,
        ADD COLUMN smn_attempts     integer     NOT NULL DEFAULT 0,
        ADD COLUMN smn_next_try_at  timestamptz NOT NULL DEFAULT now(),
        ADD COLUMN smn_last_error   text;
    CREATE INDEX alert_outbox_smn_undelivered ON alert_outbox (seq) WHERE smn_delivered_at IS NULL;
    """,
    # 10: series whose alert evaluation failed, from their oldest reading of the batch: the maintenance
    # pass judges them again (common/alerts.py, catch_up). One row a series: marks merge.
    """
    CREATE TABLE alert_retry (
        device_id   text        NOT NULL,
        metric_type metric_type NOT NULL,
        since       timestamptz NOT NULL,
        marked_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, metric_type)
    );
    """,
]

MIGRATION_LOCK = 0x10770001  # any constants shared by every process of this service
PARTITION_LOCK = 0x10770004


class Role(NamedTuple):
    """A login role the migrations grant to: its name, and its password where the settings hold it
    (in the cloud Terraform creates the accounts and keeps their passwords; the migration only grants)."""

    name: str
    password: str = ""


def migrate(
    conn: psycopg.Connection,
    reader: Role | None = None,
    writer: Role | None = None,
    read_timeout_ms: int = 5000,
) -> int:
    """Bring the schema up to date, then create the reader and writer roles where missing and grant
    them their rights; safe to run from many processes at once. Returns the version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        for version, migration in enumerate(MIGRATIONS, start=1):
            if version > current:
                log.info("applying schema migration %d", version)
                if callable(migration):
                    migration(conn)
                else:
                    conn.execute(migration)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        grant_roles(conn, reader, writer, read_timeout_ms)
    return len(MIGRATIONS)


# -- roles -----------------------------------------------------------------------------------------
class RoleError(RuntimeError):
    """A role the settings name cannot be set up; the message says what to do."""


# The tables whose rows the writer may delete wholesale (POST /api/delete-all). The credentials and the
# schema's version are the owner's alone: a writer that could insert a credential could make itself an
# admin.
DATA_TABLES = (
    "reading",
    *(table for table, _ in ROLLUPS),
    "reading_count",
    "latest_reading",
    "device",
    "rejected_message",
    # A device's alerts are its data too (rules are configuration, and stay).
    "alert_outbox",
    "alert",
    "alert_state",
    "alert_retry",
)
OWNER_ONLY_TABLES = ("api_token", "schema_version")
_WRITES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def grant_roles(
    conn: psycopg.Connection, reader: Role | None, writer: Role | None, read_timeout_ms: int
) -> None:
    """Create the reader and writer where missing and (re)grant their rights: cheap when nothing is
    missing, so every migration run does it and a role made after the schema still gets them.

    Reader: CONNECT, USAGE on the schema, SELECT on every table, now and (default privileges) on tables
    and partitions the owner creates later, under ``read_timeout_ms`` as its statement timeout.
    Writer: the same, plus INSERT, UPDATE and DELETE on every table but the credentials, and TRUNCATE on
    the data tables. A role named as the owner itself needs nothing."""
    owner = conn.execute("SELECT current_user").fetchone()[0]
    roles = [role for role in (reader, writer) if role is not None and role.name and role.name != owner]
    for role in dict.fromkeys(roles):
        _ensure_role(conn, role, owner)
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    for role in dict.fromkeys(role.name for role in roles):
        _grant_access(conn, role, schema)
        _keep_out(conn, role, schema)
    if reader is not None and reader in roles:
        _grant_tables(conn, reader.name, schema, ("SELECT",))
        _default_privileges(conn, reader.name, schema, ("SELECT",))
        _set_statement_timeout(conn, reader.name, read_timeout_ms)
    if writer is not None and writer in roles:
        _grant_tables(conn, writer.name, schema, _WRITES, leave_out=OWNER_ONLY_TABLES)
        _grant_tables(conn, writer.name, schema, ("TRUNCATE",), only=DATA_TABLES)
        _default_privileges(conn, writer.name, schema, _WRITES)


def _database(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT current_database()").fetchone()[0]


def _grant_access(conn: psycopg.Connection, role: str, schema: str) -> None:
    """CONNECT to the database and USAGE of the schema, where the role lacks them."""
    connect, usage = conn.execute(
        "SELECT has_database_privilege(%(role)s, current_database(), 'CONNECT'),"
        " has_schema_privilege(%(role)s, %(schema)s, 'USAGE')",
        {"role": role, "schema": schema},
    ).fetchone()
    if not connect:
        database = sql.Identifier(_database(conn))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, sql.Identifier(role)))
    if not usage:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role))
        )


def _ensure_role(conn: psycopg.Connection, role: Role, owner: str) -> None:
    """Create a missing role (LOGIN, with its password when given); set a given password on one that
    exists, so a changed password applies. Where the owner may not create roles (RDS accounts are
    made through the RDS API: Terraform's huaweicloud_rds_pg_account), the role must exist already."""
    name = sql.Identifier(role.name)
    password = sql.SQL("")
    if role.password:
        # The server gets the password's SCRAM verifier, never the password: nothing to leak into its logs.
        verifier = conn.pgconn.encrypt_password(role.password.encode(), role.name.encode()).decode()
        password = sql.SQL(" PASSWORD {}").format(sql.Literal(verifier))
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,)).fetchone()
    try:
        with conn.transaction():
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN{}").format(name, password))
                log.info("created database role %s", role.name)
            elif role.password:
                conn.execute(sql.SQL("ALTER ROLE {}{}").format(name, password))
    except psycopg.errors.DuplicateObject:
        pass  # created meanwhile by a migration of another database on the same server
    except psycopg.errors.InsufficientPrivilege as error:
        if exists is None:
            raise RoleError(
                f"database role {role.name!r} does not exist and {owner!r} may not create roles: create it"
                " (in the cloud Terraform's huaweicloud_rds_pg_account does), or migrate as a role with"
                " CREATEROLE"
            ) from error
        log.warning("could not set the password of role %s (%s); it keeps the one it has", role.name, error)


def _keep_out(conn: psycopg.Connection, role: str, schema: str) -> None:
    """PostgreSQL lets every role (PUBLIC) make temporary tables, and before version 15 tables in schema
    public; a role cannot be denied what PUBLIC holds. So take those from PUBLIC where the owner may (it
    keeps them as the owner), and say so where it may not."""
    temporary, create, owns_database, owns_schema = conn.execute(
        """
        SELECT has_database_privilege(%(role)s, current_database(), 'TEMPORARY'),
               has_schema_privilege(%(role)s, %(schema)s, 'CREATE'),
               pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'),
               pg_has_role((SELECT nspowner FROM pg_namespace WHERE nspname = %(schema)s), 'USAGE')
        """,
        {"role": role, "schema": schema},
    ).fetchone()
    if temporary:
        if owns_database:
            database = sql.Identifier(_database(conn))
            conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
        else:
            log.warning("role %s may create temporary tables: only the database's owner can revoke it", role)
    if create:
        if owns_schema:
            conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
        else:
            log.warning("role %s may create tables in schema %s: only its owner can revoke it", role, schema)


def _grant_tables(
    conn: psycopg.Connection,
    role: str,
    schema: str,
    privileges: tuple[str, ...],
    *,
    only: tuple[str, ...] | None = None,
    leave_out: tuple[str, ...] = (),
) -> None:
    """Grant ``privileges`` on the schema's tables (``only`` these, or all but ``leave_out``) where the
    role lacks one: a catalog query when nothing is missing (GRANT rewrites the catalog row each time)."""
    lacking = " OR ".join(
        f"NOT has_table_privilege(%(role)s, c.oid, '{privilege}')" for privilege in privileges
    )
    tables = conn.execute(
        f"""
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
          AND (%(only)s::text[] IS NULL OR c.relname = ANY(%(only)s::text[]))
          AND c.relname <> ALL(%(leave_out)s::text[])
          AND ({lacking})
        ORDER BY c.relname
        """,
        {
            "schema": schema,
            "role": role,
            "only": list(only) if only is not None else None,
            "leave_out": list(leave_out),
        },
    ).fetchall()
    if tables:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges),
                sql.SQL(", ").join(sql.Identifier(schema, table) for (table,) in tables),
                sql.Identifier(role),
            )
        )


def _default_privileges(
    conn: psycopg.Connection, role: str, schema: str, privileges: tuple[str, ...]
) -> None:
    """The same rights on every table the owner creates later: new monthly partitions (which the
    reader may read directly) and the tables of later migrations."""
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            sql.Identifier(schema),
            sql.SQL(", ").join(sql.SQL(privilege) for privilege in privileges),
            sql.Identifier(role),
        )
    )


def _set_statement_timeout(conn: psycopg.Connection, role: str, milliseconds: int) -> None:
    """The reader's statement timeout on the role, for every client that logs in as it; the store also
    sets it on each reader connection, so the setting applies where the owner may not alter the role."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                    sql.Identifier(role), sql.Literal(int(milliseconds))
                )
            )
    except psycopg.errors.InsufficientPrivilege as error:
        log.info("statement_timeout of role %s is set per connection only (%s)", role, error)


# -- partitions ------------------------------------------------------------------------------------
def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(moment: datetime) -> datetime:
    return day_start(moment).replace(day=1)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def raw_partition(lower: datetime) -> str:
    """The name of the raw partition starting at ``lower`` (the first of a month, but for partitions that fill the
    gap next to another)."""
    return f"reading_p{lower:%Y%m%d}"


def rollup_partition(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y%m}"


def partitions(conn: psycopg.Connection, table: str) -> dict[str, tuple[datetime | None, datetime]]:
    """The partitions of ``table``: name -> (lower bound or None for MINVALUE, upper bound)."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = %s::regclass
        """,
        (table,),
    ).fetchall()
    found = {}
    for name, bound in rows:
        # FOR VALUES FROM ('2024-05-01 00:00:00+00') TO ('2024-05-02 00:00:00+00'), or FROM (MINVALUE)
        lower_text, upper_text = bound.split(" FROM (", 1)[1].split(") TO (", 1)
        upper_text = upper_text.rstrip(")")
        lower = None if lower_text == "MINVALUE" else _bound_time(conn, lower_text)
        found[name] = (lower, _bound_time(conn, upper_text))
    return found


def _bound_time(conn: psycopg.Connection, literal: str) -> datetime:
    text = literal.strip("'")
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:  # a session time zone other than UTC prints it otherwise: ask PostgreSQL
        return conn.execute("SELECT %s::timestamptz", (text,)).fetchone()[0].astimezone(UTC)


# Rollup rows are updated by every batch that reaches their bucket: room left on each page lets
# PostgreSQL update them in place without touching the index (measured: 3 - 9% less server CPU per batch).
ROLLUP_FILLFACTOR = 80


def _create(conn: psycopg.Connection, table: str, name: str, lower: datetime, upper: datetime) -> None:
    storage = "" if table == "reading" else f" WITH (fillfactor = {ROLLUP_FILLFACTOR})"
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
        f" FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}'){storage}"
    )


def _gaps(
    existing: dict[str, tuple[datetime | None, datetime]], lower: datetime, upper: datetime
) -> list[tuple[datetime, datetime]]:
    """The parts of [lower, upper) no partition holds yet: all of it, none of it, or (next to the
    legacy partition, or partitions of another width) what is left between them."""
    gaps = [(lower, upper)]
    for lo, hi in existing.values():
        lo = lo or datetime.min.replace(tzinfo=UTC)
        gaps = [
            part
            for start, end in gaps
            for part in ((start, min(end, lo)), (max(start, hi), end))
            if part[0] < part[1]
        ]
    return gaps


def ensure_raw_partitions(conn: psycopg.Connection, first_day: datetime, last_day: datetime) -> int:
    """Monthly reading partitions for every instant from ``first_day`` to ``last_day`` (inclusive), and
    the monthly rollup partitions of those days. Returns how many were created. Call it in a transaction:
    it holds a lock until the end of it, so processes creating the same day wait for one another."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
    created = 0
    existing = partitions(conn, "reading")
    month = month_start(first_day)
    while month <= last_day:
        for lower, upper in _gaps(existing, month, next_month(month)):
            _create(conn, "reading", raw_partition(lower), lower, upper)
            existing[raw_partition(lower)] = (lower, upper)
            created += 1
        month = next_month(month)
    for table, _ in ROLLUPS:
        existing = partitions(conn, table)
        month = month_start(first_day)
        while month <= last_day:
            following = next_month(month)
            for lower, upper in _gaps(existing, month, following):
                _create(conn, table, rollup_partition(table, lower), lower, upper)
                existing[rollup_partition(table, lower)] = (lower, upper)
                created += 1
            month = following
    return created


def retention_limit(now: datetime, days: int) -> datetime:
    """The oldest instant kept: readings before it are refused and their partitions dropped."""
    return now - days * DAY


def ensure_partitions(conn: psycopg.Connection, now: datetime, raw_retention_days: int) -> int:
    """Partitions from the retention limit to a week past today."""
    first = retention_limit(now, raw_retention_days)
    return ensure_raw_partitions(conn, first, day_start(now) + DAYS_AHEAD * DAY)


def drop_expired(conn: psycopg.Connection, table: str, limit: datetime) -> list[str]:
    """Drop the partitions of ``table`` whose every possible row is older than ``limit``."""
    dropped = []
    for name, (_, upper) in sorted(partitions(conn, table).items()):
        if upper <= limit:
            conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
    return dropped
