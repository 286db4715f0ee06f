"""checkov on infra/terraform with our own huaweicloud checks: no parse errors, every check passes.

A second, deliberately insecure configuration is scanned in the same run, to show each of our checks
really fails on what it is meant to catch. checkov runs from its own virtualenv (scripts/checkov.py
explains why), created under build/ on first use.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from functions import function_names

ROOT = Path(__file__).resolve().parent.parent
CHECKS_FILE = ROOT / "infra" / "terraform" / "checkov" / "huaweicloud_iot.py"

BAD = """
resource "huaweicloud_rds_instance" "open" {
  name       = "open"
  flavor     = "rds.pg.n1.large.2"
  public_ips = ["1.2.3.4"]
}

resource "huaweicloud_dcs_instance" "open" {
  name             = "open"
  engine           = "Redis"
  whitelist_enable = true
  whitelists {
    group_name = "everyone"
    ip_address = ["0.0.0.0/0"]
  }
}

resource "huaweicloud_dms_kafka_instance" "open" {
  name              = "open"
  security_group_id = "sg"
  public_ip_ids     = ["eip-1", "eip-2", "eip-3"]
}

resource "huaweicloud_networking_secgroup_rule" "postgres_to_the_world" {
  security_group_id = "sg"
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 5432
  port_range_max    = 5432
  remote_ip_prefix  = "0.0.0.0/0"
}

resource "huaweicloud_obs_bucket" "writable" {
  bucket = "writable"
  acl    = "public-read-write"
}

resource "huaweicloud_fgs_function" "outside" {
  name        = "outside"
  app         = "default"
  runtime     = "Python3.10"
  handler     = "index.handler"
  memory_size = 128
  timeout     = 3
  code_type   = "inline"
  func_code   = "x"
}

resource "huaweicloud_fgs_function_trigger" "sleeping" {
  function_urn = "urn"
  type         = "KAFKA"
  event_data   = "{}"
}

resource "huaweicloud_fgs_function_trigger_status_action" "sleeping" {
  function_urn      = "urn"
  trigger_type_code = "KAFKA"
  trigger_id        = huaweicloud_fgs_function_trigger.sleeping.id
  trigger_status    = "DISABLED"
  event_data        = "{}"
}

resource "huaweicloud_apig_api" "plain_http" {
  instance_id      = "i"
  group_id         = "g"
  type             = "Public"
  name             = "plain"
  request_protocol = "HTTP"
  request_method   = "GET"
  request_path     = "/"
}
"""


def our_check_ids() -> list[str]:
    return sorted(set(re.findall(r'ID = "(CKV_HWC_IOT_\d+)"', CHECKS_FILE.read_text())))


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("checkov_runner", ROOT / "scripts" / "checkov.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(runner) -> dict:
    return runner.run(runner.TERRAFORM)


@pytest.fixture(scope="module")
def insecure(runner, tmp_path_factory) -> dict:
    bad = tmp_path_factory.mktemp("insecure")
    (bad / "main.tf").write_text(BAD)
    return runner.run(bad)


def ours(checks: list[dict]) -> list[dict]:
    ids = set(our_check_ids())
    return [c for c in checks if c["check_id"] in ids]


def test_checkov_parses_everything(stack, insecure):
    for report in (stack, insecure):
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert stack["summary"]["resource_count"] > 30


def test_our_checks_all_pass_on_the_stack(stack):
    failed = ours(stack["results"].get("failed_checks", []))
    assert not failed, [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed]
    ran = Counter(c["check_id"] for c in ours(stack["results"].get("passed_checks", [])))
    assert set(ran) == set(our_check_ids()), (
        f"checks that found nothing to check: {set(our_check_ids()) - set(ran)}"
    )
    assert ran["CKV_HWC_IOT_6"] == len(function_names()), "every function is checked for VPC access"


def test_builtin_checks_find_nothing_on_the_stack(stack):
    failed = stack["results"].get("failed_checks", [])
    assert not failed, [f"{c['check_id']} {c['resource']}" for c in failed]


def test_each_of_our_checks_fails_on_the_insecure_configuration(insecure):
    caught = {c["check_id"] for c in ours(insecure["results"].get("failed_checks", []))}
    missed = set(our_check_ids()) - caught
    assert not missed, f"checks that let the insecure configuration through: {missed}"
