"""The maintenance function in infra/terraform: its TIMER trigger, its schedule, the retention settings,
its alarm and the PostgreSQL version the time-series storage needs.

What python-hcl2 parses is checked as text; what only Terraform can compute (the variables'
validations, the schedule type, the trigger's event data) is computed by the terraform binary on a
throwaway configuration made of variables.tf and the expressions under test. It needs no provider,
so it runs offline; without a terraform binary those checks are reported as warnings, as in
tests/test_terraform.py.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from common.settings import FUNCTION_SETTINGS
from deploy.fgclient import READ_TIMEOUT_SECONDS
from functions import load_function

from .terraform_config import TERRAFORM_DIR, Terraform, expression, load


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


def _bare(text: str) -> str:
    """A parsed expression ("${...}") as HCL source."""
    inner = expression(text)
    assert inner is not None, f"not an expression: {text!r}"
    return inner


def terraform(tf, tmp_path: Path) -> Terraform | None:
    binary = shutil.which("terraform")
    if binary is None:
        warnings.warn(
            "terraform is not installed: the maintenance schedule and version validations were not run",
            stacklevel=2,
        )
        return None
    trigger = tf.resource("huaweicloud_fgs_function_trigger", "maintenance")
    return Terraform(
        binary,
        tmp_path / "terraform",
        {"maintenance_schedule_type": _bare(tf.locals["maintenance_schedule_type"])},
        {
            "event_data": _bare(trigger["event_data"]),
            "schedule_type": "local.maintenance_schedule_type",
        },
    )


# ---------------------------------------------------------------- the function and its timer


def test_the_maintenance_function_is_deployed_like_the_others_with_its_own_settings(tf):
    assert "maintenance" in tf.variables["functions"]["default"]
    module = load_function("maintenance")
    assert callable(module.handler) and callable(module.initializer)
    assert not hasattr(module, "app"), "a timer calls it: it has no HTTP routes and no API"
    assert FUNCTION_SETTINGS["maintenance"] >= {"RAW_RETENTION_DAYS", "ROLLUP_RETENTION_DAYS", "DB_PASSWORD"}
    assert not {name for name in FUNCTION_SETTINGS["maintenance"] if name.startswith(("KAFKA_", "REDIS_"))}
    assert tf.locals["function_settings"]["maintenance"] == (
        '${concat(local.db_owner_settings, local.retention_settings, local.alert_settings, ["LOG_LEVEL"])}'
    )


def test_every_function_finishes_before_the_deploy_tool_stops_waiting(tf):
    """The deploy tool smoke-tests each new version with a synchronous call that waits at most
    READ_TIMEOUT_SECONDS; a function allowed to run longer would make a slow run look like a hang."""
    sizes = tf.variables["functions"]["default"]
    for name, size in sizes.items():
        assert size["timeout"] < READ_TIMEOUT_SECONDS, name
    # The timer's pass and a deploy's smoke pass may overlap: the second must get an instance.
    assert sizes["maintenance"]["max_instances"] >= 2


def test_the_timer_calls_the_live_alias_and_is_active_without_a_status_action(tf):
    trigger = tf.resource("huaweicloud_fgs_function_trigger", "maintenance")
    assert trigger["type"] == "TIMER"
    assert trigger["function_urn"] == '${local.live_urns["maintenance"]}', "never latest"
    # A TIMER trigger is created ACTIVE; `status` makes a timer disabled by hand show up in a plan.
    assert trigger["status"] == "ACTIVE"
    actions = tf.of_type("huaweicloud_fgs_function_trigger_status_action")
    assert [a["trigger_type_code"] for a in actions.values()] == ["KAFKA"], "only the Kafka trigger needs one"
    event = trigger["event_data"]
    for key in ("name", "schedule_type", "schedule", "sync_execution", "user_event"):
        assert re.search(rf"\b{key}\s*=", event), f"event_data has no {key}"
    assert "var.maintenance_schedule" in event and "local.maintenance_schedule_type" in event
    schedule = tf.variables["maintenance_schedule"]
    assert schedule["type"] == "string" and schedule["default"] == "5m" and schedule["validation"]


def test_the_event_data_is_what_functiongraph_reads_back(tf, tmp_path):
    """The keys and values the provider's acceptance test sends, so the plan after an apply is empty;
    a name FunctionGraph accepts (letters, digits and underscores, starting with a letter)."""
    run = terraform(tf, tmp_path)
    if run is None:
        return
    ok, outputs, problem = run.apply(name_prefix="iot-prod")
    assert ok, problem
    event = json.loads(outputs["event_data"])
    assert event == {
        "name": "iot_prod_maintenance",
        "schedule_type": "Rate",
        "schedule": "5m",
        "sync_execution": False,
        "user_event": "maintenance pass scheduled by Terraform",
    }
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", event["name"])
    assert not re.search(r"[<>&]", event["user_event"]), "the provider's JSON writer would escape it"


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        ("5m", "Rate"),
        ("1m", "Rate"),
        ("60m", "Rate"),
        ("24h", "Rate"),
        ("30d", "Rate"),
        ("0 0/5 * * * *", "Cron"),
        ("0 30 2 * * ?", "Cron"),
        ("CRON_TZ=Europe/Berlin 0 0 3 * * *", "Cron"),
        ("0 0/10 8-18 ? * MON-FRI", "Cron"),
        ("@every 10m", "Cron"),
        ("@every 1h30m", "Cron"),
        ("@every 1.5h", "Cron"),
    ],
)
def test_a_schedule_is_a_rate_or_a_cron_expression_as_functiongraph_reads_them(tf, tmp_path, schedule, kind):
    run = terraform(tf, tmp_path)
    if run is None:
        return
    ok, outputs, problem = run.apply(maintenance_schedule=schedule)
    assert ok, problem
    assert outputs["schedule_type"] == kind
    assert json.loads(outputs["event_data"])["schedule"] == schedule


@pytest.mark.parametrize(
    "schedule",
    [
        "",
        "0m",
        "61m",
        "25h",
        "31d",
        "5 minutes",
        "*/5 * * * *",  # Unix cron: FunctionGraph would read it seconds first, every 5 seconds
        "0 0/5 * * * * 2026",
        "@every 30s",
        "@every ",
        "@hourly",
    ],
)
def test_a_schedule_functiongraph_would_misread_or_refuse_is_refused_before_apply(tf, tmp_path, schedule):
    run = terraform(tf, tmp_path)
    if run is None:
        return
    ok, _, problem = run.apply(maintenance_schedule=schedule)
    assert not ok, f"{schedule!r} was accepted"
    assert "maintenance_schedule must be" in problem


# ---------------------------------------------------------------- retention and the database


@pytest.mark.parametrize(
    ("variables", "accepted"),
    [
        ({"raw_retention_days": 1}, True),
        ({"raw_retention_days": 3650}, True),
        ({"raw_retention_days": 0}, False),
        ({"raw_retention_days": 1.5}, False),
        ({"rollup_retention_days": 0}, True),
        ({"rollup_retention_days": 400}, True),
        ({"rollup_retention_days": -1}, False),
        ({"rollup_retention_days": 2.5}, False),
        ({"rds_postgres_version": "13"}, False),
        ({"rds_postgres_version": "14"}, True),
        ({"rds_postgres_version": "17"}, True),
    ],
)
def test_retention_and_the_postgres_version_are_validated(tf, tmp_path, variables, accepted):
    run = terraform(tf, tmp_path)
    if run is None:
        return
    ok, _, problem = run.apply(**variables)
    assert ok is accepted, problem or f"{variables} was accepted"


def test_the_database_is_postgresql_14_or_later_and_says_why(tf):
    version = tf.variables["rds_postgres_version"]
    assert int(version["default"]) >= 14
    assert "date_bin" in version["description"] and "ON CONFLICT" in version["description"]
    assert "replaces the RDS instance" in version["description"], "a version change is destructive"
    for name in ("raw_retention_days", "rollup_retention_days"):
        body = tf.variables[name]
        assert (
            body["type"] == "number"
            and body["validation"]
            and body["description"].startswith(name.upper() + ":")
        )


def test_maintenance_failures_raise_an_alarm(tf):
    alarm = tf.locals["alarms"]["maintenance_failures"]
    assert alarm["metric"] == "failcount" and alarm["namespace"] == "SYS.FunctionGraph"
    assert alarm["values"] == ['${local.function_metric_ids["maintenance"]}']
    rule = tf.variables["alarm_rules"]["default"]["maintenance_failures"]
    # One failed pass is no emergency (the next one, minutes later, does the same work); a run of them is.
    assert rule["threshold"] > 1 and rule["period"] >= 1200
