"""The database roles against the real PostgreSQL: what the reader and the writer may do, that the
migrations create and grant them (and nothing migrates by itself), credential kinds, and the reads a
scoped credential makes (device globs)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from common import schema
from common.errors import ServiceUnavailable
from common.readings import SMOKE_DEVICE_ID, MetricType, Reading, utc_now
from common.runtime import Runtime
from common.settings import Settings
from common.store import NOT_MIGRATED, READER, WRITER, ReadingStore, TokenRecord, conninfo

pytestmark = pytest.mark.integration


class SchemaStore(ReadingStore):
    """The store in a PostgreSQL schema of its own: a database of its own, as far as it can tell."""

    def __init__(self, settings: Settings, schema_name: str):
        super().__init__(settings)
        self.schema_name = schema_name

    def _conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            super()._conninfo(), options=f"-c timezone=UTC -c search_path={self.schema_name}"
        )


@pytest.fixture
def own_schema(settings: Settings) -> Iterator[str]:
    """An empty schema, dropped afterwards with everything in it."""
    name = f"roles_{random.randrange(10**9)}"
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(conninfo(settings), autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


def connect(settings: Settings, role: str) -> psycopg.Connection:
    return psycopg.connect(conninfo(settings, role), autocommit=True)


def refused(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_the_roles_are_their_own_accounts(settings: Settings):
    # The tests' servers name both roles, so everything below runs with least privilege.
    assert settings.db_reader_user and settings.db_reader_user != settings.db_user
    assert settings.db_writer_user and settings.db_writer_user not in (
        settings.db_user,
        settings.db_reader_user,
    )
    with connect(settings, READER) as conn:
        user, superuser, createrole = conn.execute(
            "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert (user, superuser, createrole) == (settings.db_reader_user, False, False)


def test_the_reader_may_read_everything_and_change_nothing(runtime: Runtime, settings: Settings):
    runtime.store.store([Reading("reader-1", "power", 1.0, utc_now())])
    with connect(settings, READER) as conn:
        assert conn.execute("SELECT count(*) FROM reading").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM api_token").fetchone() is not None
        for statement in (
            "INSERT INTO device VALUES ('intruder')",
            "UPDATE latest_reading SET value = 0",
            "DELETE FROM reading",
            "TRUNCATE device",
            "INSERT INTO api_token (token_hash, name, kind) VALUES ('x', 'x', 'admin')",
            "UPDATE api_token SET revoked_at = NULL",
            "SELECT * FROM device FOR UPDATE",
            "CREATE TABLE intruder (x int)",
            "CREATE TEMP TABLE intruder (x int)",
            "CREATE VIEW intruder AS SELECT 1",
            "CREATE SCHEMA intruder",
            "CREATE ROLE intruder",
            "ALTER TABLE device ADD COLUMN x int",
            "DROP TABLE rejected_message",
        ):
            assert refused(conn, statement), f"the reader may: {statement}"
    assert runtime.store.latest("reader-1")[0].value == 1.0


def test_the_reader_reads_partitions_made_after_the_grant(runtime: Runtime, settings: Settings):
    month = schema.month_start(utc_now() + timedelta(days=365 * 150))
    name = schema.raw_partition(month)
    with runtime.store.pool.connection() as conn, conn.transaction():
        assert schema.ensure_raw_partitions(conn, month, month) >= 1
    try:
        with connect(settings, READER) as conn:
            assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 0
            assert refused(conn, f"DELETE FROM {name}")
    finally:
        with runtime.store.pool.connection() as conn:
            for table in (name, *(schema.rollup_partition(t, month) for t, _ in schema.ROLLUPS)):
                conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_the_readers_statement_timeout_stops_a_long_read(settings: Settings):
    # On the role, for any client that logs in as the reader ...
    with psycopg.connect(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=settings.db_reader_user,
        password=settings.db_reader_password,
        autocommit=True,
    ) as conn:
        setting = conn.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    assert setting == (str(settings.db_read_timeout_ms),)
    # ... and on the store's reader connections, so a changed DB_READ_TIMEOUT_MS applies at once.
    store = ReadingStore(Settings(**{**settings.__dict__, "db_read_timeout_ms": 400}))
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match=r"did not answer within 400 ms \(DB_READ_TIMEOUT_MS\)"):
            store._run(lambda conn: conn.execute("SELECT pg_sleep(10)"), READER)
        assert time.monotonic() - started < 3
        # The owner (storing, maintenance) has no such limit.
        assert store.run(lambda conn: conn.execute("SHOW statement_timeout").fetchone()) == ("0",)
    finally:
        store.close()


def test_the_writer_empties_the_data_and_cannot_touch_credentials(runtime: Runtime, settings: Settings):
    runtime.store.store([Reading("writer-1", "power", 1.0, utc_now())])
    runtime.store.reject([("t", "x", "not JSON")])
    token_id = runtime.store.save_token(f"hash-{random.random()}", "kept", "read", [])
    runtime.store.delete_all()
    assert runtime.store.stats() == {"devices": 0, "readings_today": 0, "rejected_messages": 0}
    assert runtime.store.find_token_by_id(token_id) == TokenRecord(token_id, "kept", "read", ())
    with connect(settings, WRITER) as conn:
        for statement in (
            "TRUNCATE api_token",
            "DELETE FROM api_token",
            "INSERT INTO api_token (token_hash, name, kind) VALUES ('x', 'x', 'admin')",
            "UPDATE schema_version SET version = 0",
            "CREATE TABLE intruder (x int)",
            "DROP TABLE device",
        ):
            assert refused(conn, statement), f"the writer may: {statement}"
    runtime.store.revoke_tokens("kept")


def test_nothing_migrates_on_first_use_a_query_answers_503(settings: Settings, own_schema: str):
    store = SchemaStore(settings, own_schema)
    try:
        for read in (
            store.latest,
            store.stats,
            lambda: store.stats(scope=["a*"]),
            lambda: store.devices_page(None, "", 10),
            lambda: store.history_page("d", None, None, None, None, 10),
            lambda: store.find_token("x"),
        ):
            with pytest.raises(ServiceUnavailable, match="schema is not migrated yet") as caught:
                read()
            assert caught.value.message == NOT_MIGRATED
        with pytest.raises(ServiceUnavailable, match="schema is not migrated yet"):
            store.store([Reading("d", "power", 1.0, utc_now())])
        store.ping()  # the database itself answers
        tables = store.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (own_schema,)
            ).fetchone()[0]
        )
        assert tables == 0
        # Migrating is asked for, and then the same reads answer.
        assert store.migrate() == len(schema.MIGRATIONS)
        assert store.latest() == [] and store.stats(scope=["a*"])["devices"] == 0
    finally:
        store.close()


def test_migration_6_gives_every_credential_a_kind_and_an_id(
    settings: Settings, own_schema: str, monkeypatch: pytest.MonkeyPatch
):
    old = SchemaStore(settings, own_schema)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:5])
    old.migrate()
    old.run(
        lambda conn: conn.execute(
            "INSERT INTO api_token (token_hash, name, devices, is_admin) VALUES"
            " ('h1', 'sensor-1', '{sensor-1}', false), ('h2', 'ops', '{}', true),"
            " ('h3', 'gateway', '{s1,s2}', false)"
        )
    )
    old.close()
    monkeypatch.undo()

    new = SchemaStore(settings, own_schema)
    try:
        assert new.migrate() == len(schema.MIGRATIONS)
        rows = new.run(
            lambda conn: conn.execute(
                "SELECT token_hash, kind, is_admin, devices FROM api_token ORDER BY token_hash"
            ).fetchall()
        )
        assert rows == [
            ("h1", "device", False, ["sensor-1"]),
            ("h2", "admin", True, []),
            ("h3", "device", False, ["s1", "s2"]),
        ]
        found = [new.find_token(h) for h in ("h1", "h2", "h3")]
        assert [(r.name, r.kind, r.devices) for r in found] == [
            ("sensor-1", "device", ("sensor-1",)),
            ("ops", "admin", ()),
            ("gateway", "device", ("s1", "s2")),
        ]
        assert len({r.id for r in found}) == 3
        assert all(new.find_token_by_id(r.id) == r for r in found)
        # New credentials get the next ids; only the three kinds exist.
        read_id = new.save_token("h4", "dashboard", "read", ["plant-a-*"])
        assert read_id > max(r.id for r in found)
        assert new.find_token("h4") == TokenRecord(read_id, "dashboard", "read", ("plant-a-*",))
        with pytest.raises(psycopg.errors.CheckViolation):
            new.save_token("h5", "odd", "superuser", [])
        assert new.revoke_tokens("dashboard") == 1
        assert new.find_token_by_id(read_id) is None and new.find_token("h4") is None
        assert [row[:3] for row in new.list_tokens()] == [
            ("sensor-1", "device", ["sensor-1"]),
            ("ops", "admin", []),
            ("gateway", "device", ["s1", "s2"]),
            ("dashboard", "read", ["plant-a-*"]),
        ]
    finally:
        new.close()


def _drop_role(settings: Settings, role: str, schema_name: str) -> None:
    with psycopg.connect(conninfo(settings), autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]
        for statement in (
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema_name} FROM {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema_name} REVOKE ALL ON TABLES FROM {role}",
            f"REVOKE ALL ON SCHEMA {schema_name} FROM {role}",
            f'REVOKE ALL ON DATABASE "{database}" FROM {role}',
            f"DROP ROLE {role}",
        ):
            admin.execute(statement)


def test_a_role_named_after_the_schema_exists_is_created_and_granted(settings: Settings, own_schema: str):
    role = f"late_reader_{random.randrange(10**9)}"
    named = Settings(**{**settings.__dict__, "db_reader_user": role, "db_reader_password": "pw-" + role})
    store = SchemaStore(settings, own_schema)
    late = SchemaStore(named, own_schema)
    try:
        store.migrate()
        store.store([Reading("late-1", "power", 2.0, utc_now())])
        assert late.migrate() == len(schema.MIGRATIONS)  # creates the role, grants what exists
        assert [v.value for v in late.latest("late-1")] == [2.0]
        assert late.run(
            lambda conn: conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
        )
        late.migrate()  # again: nothing missing, nothing fails
    finally:
        store.close()
        late.close()
        _drop_role(settings, role, own_schema)


def test_an_owner_that_may_not_create_roles_is_told_to_create_the_missing_one(settings: Settings):
    missing = f"missing_{random.randrange(10**9)}"
    with connect(settings, READER) as conn, conn.transaction():  # the reader may not create roles
        with pytest.raises(schema.RoleError, match=f"role '{missing}' does not exist and .* may not create"):
            schema.grant_roles(conn, schema.Role(missing, "pw"), None, 5000)


# -- scoped reads ------------------------------------------------------------------------------
FLEET = ["plant-a-1", "plant-a-2", "plant-a-10", "plant-b-1", "x_1", "xa1", "solo", "zeta-9"]


@pytest.fixture
def fleet(runtime: Runtime) -> Runtime:
    now = utc_now() - timedelta(seconds=5)
    yesterday = now - timedelta(days=1)
    readings = [Reading(device, "power", float(n), now) for n, device in enumerate(FLEET)]
    readings += [Reading(device, "voltage", 230.0, now - timedelta(seconds=1)) for device in FLEET[:2]]
    readings += [Reading(device, "power", 0.0, yesterday) for device in FLEET]
    readings.append(Reading(SMOKE_DEVICE_ID, "power", 1.0, now))
    runtime.store.store(readings)
    return runtime


def page_ids(
    store: ReadingStore, scope, prefix: str = "", limit: int = 100, after: str | None = None
) -> list[str]:
    return [device for device, _ in store.devices_page(after, prefix, limit, scope=scope)]


def test_a_scoped_device_list_leaves_other_devices_out(fleet: Runtime):
    store = fleet.store
    assert page_ids(store, None) == sorted(FLEET)
    assert page_ids(store, ["*"]) == sorted(FLEET)
    assert page_ids(store, ["plant-a-*"]) == ["plant-a-1", "plant-a-10", "plant-a-2"]
    assert page_ids(store, ["plant-?-1"]) == ["plant-a-1", "plant-b-1"]
    assert page_ids(store, ["plant-a-?"]) == ["plant-a-1", "plant-a-2"]
    # _ and % are literal in a glob, not LIKE's wildcards
    assert page_ids(store, ["x_1"]) == ["x_1"] and page_ids(store, ["x_*"]) == ["x_1"]
    assert page_ids(store, ["x%"]) == []
    # exact ids (a gateway's devices), an unknown one, overlapping globs, a glob with no literal prefix
    assert page_ids(store, ["solo", "plant-b-1", "nowhere"]) == ["plant-b-1", "solo"]
    assert page_ids(store, ["plant-*", "plant-a-1", "*-1"]) == [
        "plant-a-1",
        "plant-a-10",
        "plant-a-2",
        "plant-b-1",
    ]
    assert page_ids(store, ["*9"]) == ["zeta-9"]
    assert page_ids(store, []) == [] and page_ids(store, ["nothing-*"]) == []
    # the smoke device is never listed, whatever matches it
    assert page_ids(store, ["deploy-*", SMOKE_DEVICE_ID]) == []
    # a prefix narrows the scope (and may be longer or shorter than a glob's literal part)
    assert page_ids(store, ["plant-*", "solo"], prefix="plant-a") == ["plant-a-1", "plant-a-10", "plant-a-2"]
    assert page_ids(store, ["plant-a-1*"], prefix="plant") == ["plant-a-1", "plant-a-10"]
    assert page_ids(store, ["plant-a-*"], prefix="solo") == []
    # each device's latest values, as the unscoped page has them
    unscoped = dict(store.devices_page(None, "", 100))
    assert dict(store.devices_page(None, "", 100, scope=["plant-a-1", "x_1"])) == {
        "plant-a-1": unscoped["plant-a-1"],
        "x_1": unscoped["x_1"],
    }


def test_scoped_pages_follow_one_another_without_gaps_or_repeats(fleet: Runtime):
    scope = ["plant-*", "solo", "x*", "plant-a-1"]
    expected = [device for device in sorted(FLEET) if device.startswith(("plant-", "x")) or device == "solo"]
    seen, after = [], None
    while True:
        page = page_ids(fleet.store, scope, limit=2, after=after)
        seen += page
        if len(page) < 2:
            break
        after = page[-1]
    assert seen == expected


def test_scoped_stats_count_only_the_scopes_devices_and_their_readings_today(fleet: Runtime):
    everything = fleet.store.stats()
    assert everything["devices"] == len(FLEET) and everything["rejected_messages"] == 0
    today = {device: 1 for device in FLEET}
    today.update({device: 2 for device in FLEET[:2]})  # a voltage reading too
    assert everything["readings_today"] in (sum(today.values()), 0)  # 0 only if the test straddles midnight

    scoped = fleet.store.stats(scope=["plant-a-*", "solo"])
    assert scoped["devices"] == 4 and scoped["rejected_messages"] is None
    expected = sum(today[d] for d in ("plant-a-1", "plant-a-2", "plant-a-10", "solo"))
    assert scoped["readings_today"] in (expected, 0)
    assert fleet.store.stats(scope=["nothing-*"]) == {
        "devices": 0,
        "readings_today": 0,
        "rejected_messages": None,
    }
    assert fleet.store.stats(scope=[]) == {"devices": 0, "readings_today": 0, "rejected_messages": None}
    assert fleet.store.stats(scope=["deploy-*"])["devices"] == 0  # never the smoke device
    assert fleet.store.stats(scope=["*"]) == everything


def test_readings_of_another_day_are_not_counted_today(runtime: Runtime):
    runtime.store.store([Reading("old-1", "power", 1.0, utc_now() - timedelta(days=2))])
    assert runtime.store.stats(scope=["old-*"]) == {
        "devices": 1,
        "readings_today": 0,
        "rejected_messages": None,
    }


def plan(settings: Settings, statement: str, params: dict) -> str:
    with connect(settings, READER) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny tables: the planner would scan them whole
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, params))


def test_scoped_reads_walk_keys_not_the_fleet(fleet: Runtime, settings: Settings):
    """Whatever the size of the fleet: a page reads the device list's key from each glob's literal
    prefix (exact ids as probes), and the scoped day count probes each device's rollup rows."""
    from common.store import _SCOPED_DEVICES_JSON, _SCOPED_STATS, DeviceScope

    scope = DeviceScope.of(["plant-a-*", "solo", "plant-b-1"])
    params = {"after": "", "prefix": "", "smoke": SMOKE_DEVICE_ID, "limit": 10}
    page = scope.select(params, after=True, limit=True)
    listed = plan(
        settings, f"WITH page AS ({page} ORDER BY device_id LIMIT %(limit)s)" + _SCOPED_DEVICES_JSON, params
    )
    assert "Seq Scan on device" not in listed
    assert "Index Cond: ((device_id >= " in listed and "device_id = ANY" in listed

    params = {"smoke": SMOKE_DEVICE_ID, "metrics": MetricType.names()}
    statement = f"WITH scoped AS MATERIALIZED ({scope.select(params)})" + _SCOPED_STATS.format(
        table="rollup_15m"
    )
    counted = plan(settings, statement, params)
    probes = [line for line in counted.splitlines() if "device_id = (scoped" in line]
    # an index probe per device (a bitmap scan repeats the condition as its Recheck Cond), never a scan
    scans = [
        line
        for line in counted.splitlines()
        if ("Seq Scan on rollup_" in line and "rollup_horizon" not in line) or "Seq Scan on device" in line
    ]
    assert any("Index Cond" in line for line in probes) and not scans, counted


def test_migrating_again_rewrites_no_grant(runtime: Runtime):
    """Every migration run re-checks the roles' rights; when nothing is missing it changes no table's
    catalog row (a GRANT would rewrite it, and make every session plan its statements again)."""
    rows = (
        "SELECT relname, xmin::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relkind IN ('r', 'p') ORDER BY relname"
    )
    before = runtime.store.run(lambda conn: conn.execute(rows).fetchall())
    runtime.store.migrate()
    assert runtime.store.run(lambda conn: conn.execute(rows).fetchall()) == before
