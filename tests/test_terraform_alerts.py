"""infra/terraform's alert notifications: the SMN topic and its subscriptions, the topic's URN in the
maintenance function's settings, the execution agency that may publish, and the optional NAT gateway
for webhooks on the internet. Checked offline: python-hcl2 for the structure, the stack's locals
evaluated for chosen variables, and the variables' validations by the terraform binary where it is
installed (no provider needed; without it, a warning as in tests/test_terraform.py).
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from common.settings import FUNCTION_SETTINGS, Settings, SettingsError

from .hcl_eval import Hcl
from .terraform_config import TERRAFORM_DIR, Terraform, expression, first, load

TOPIC = "urn:smn:ap-southeast-1:0123456789abcdef0123456789abcdef:iot-alerts"


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


def evaluated(tf, **variables) -> Hcl:
    return Hcl({"var": variables}, tf.locals, symbolic=True)


# ---------------------------------------------------------------- the topic and its subscriptions


def test_the_alert_topic_is_created_by_default_or_an_existing_one_is_used_or_none(tf):
    assert tf.variables["alert_smn_topic"]["default"] == "create"
    assert tf.where["resource huaweicloud_smn_topic.alerts"] == "alerts.tf"
    topic = tf.resource("huaweicloud_smn_topic", "alerts")
    assert topic["count"] == "${local.create_alert_topic ? 1 : 0}"
    assert topic["name"] != tf.resource("huaweicloud_smn_topic", "alarms")["name"], "not the alarm topic"
    assert "huaweicloud_smn_topic.alerts[0].topic_urn" in expression(tf.locals["alert_topic_urn"])

    created = evaluated(tf, alert_smn_topic="create")
    assert created.local("create_alert_topic") is True and created.local("alerts_to_smn") is True
    existing = evaluated(tf, alert_smn_topic=TOPIC)
    assert existing.local("create_alert_topic") is False and existing.local("alert_topic_urn") == TOPIC
    off = evaluated(tf, alert_smn_topic="none")
    assert (off.local("create_alert_topic"), off.local("alerts_to_smn"), off.local("alert_topic_urn")) == (
        False,
        False,
        "",
    )


def test_subscriptions_come_from_the_variable_and_go_to_the_alert_topic(tf):
    assert tf.variables["alert_subscriptions"]["default"] == []
    subscription = tf.resource("huaweicloud_smn_subscription", "alerts")
    for_each = expression(subscription["for_each"])
    assert "var.alert_subscriptions" in for_each and "local.alerts_to_smn" in for_each
    assert subscription["topic_urn"] == "${local.alert_topic_urn}"
    assert (subscription["protocol"], subscription["endpoint"]) == (
        "${each.value.protocol}",
        "${each.value.endpoint}",
    )


def test_the_topic_urn_reaches_the_maintenance_function_and_no_other(tf):
    endpoint = "https://smn.example.com"
    settings = evaluated(tf, alert_smn_topic=TOPIC, alert_smn_endpoint=endpoint).local("settings")
    assert (settings["ALERT_SMN_TOPIC_URN"], settings["ALERT_SMN_ENDPOINT"]) == (TOPIC, endpoint)
    user_data = evaluated(tf, alert_smn_topic=TOPIC, alert_smn_endpoint="", encrypt_secrets=True).local(
        "function_user_data"
    )
    assert user_data["maintenance"]["ALERT_SMN_TOPIC_URN"] == TOPIC
    assert [name for name, data in user_data.items() if "ALERT_SMN_TOPIC_URN" in data] == ["maintenance"]
    assert {"ALERT_SMN_TOPIC_URN", "ALERT_SMN_ENDPOINT"} <= FUNCTION_SETTINGS["maintenance"]
    # "none" gives the function an empty URN: the code publishes nothing.
    off = evaluated(tf, alert_smn_topic="none", alert_smn_endpoint="", encrypt_secrets=True)
    assert off.local("function_user_data")["maintenance"]["ALERT_SMN_TOPIC_URN"] == ""
    assert Settings(alert_smn_topic_urn="").alert_smn_topic_urn == ""


# ---------------------------------------------------------------- who may publish


def test_only_the_maintenance_function_runs_with_an_execution_agency_that_may_only_publish(tf):
    fn = tf.resource("huaweicloud_fgs_function", "fn")
    assert (
        expression(fn["app_agency"])
        == 'each.key == "maintenance" ? local.maintenance_execution_agency : null'
    )
    assert evaluated(tf, fgs_agency_name="").local("maintenance_execution_agency") is not None
    assert evaluated(tf, fgs_agency_name="ops-agency").local("maintenance_execution_agency") is None

    agency = tf.resource("huaweicloud_identity_agency", "maintenance_execution")
    role = tf.resource("huaweicloud_identity_role", "alerts_publish")
    assert agency["count"] == role["count"] == "${local.create_agency ? 1 : 0}"
    assert agency["delegated_service_name"] == "op_svc_cff"
    assert "domain_roles" not in agency, "SMN is regional: nothing in the global scope"
    grant = first(agency["project_role"])
    assert grant["project"] == "${var.region}"
    assert grant["roles"] == ["${huaweicloud_identity_role.alerts_publish[0].name}"]
    assert role["type"] == "XA"
    assert tf.locals["alerts_publish_policy"]["Statement"] == [
        {"Effect": "Allow", "Action": ["smn:topic:publish"]}
    ]
    # The configuration agency, which the other functions' code gets, cannot publish.
    for name in ("functions_regional_policy", "functions_obs_policy"):
        actions = json.dumps(tf.locals[name])
        assert "smn:" not in actions, name


# ---------------------------------------------------------------- the NAT gateway


def test_the_nat_gateway_is_off_by_default_and_translates_only_the_functions_subnet(tf):
    assert tf.variables["enable_nat_gateway"]["default"] is False
    for kind, name in [
        ("huaweicloud_vpc_eip", "nat"),
        ("huaweicloud_nat_gateway", "functions"),
        ("huaweicloud_nat_snat_rule", "functions"),
    ]:
        assert tf.resource(kind, name)["count"] == "${var.enable_nat_gateway ? 1 : 0}", f"{kind}.{name}"
        assert tf.where[f"resource {kind}.{name}"] == "nat.tf"
    gateway = tf.resource("huaweicloud_nat_gateway", "functions")
    assert gateway["vpc_id"] == "${huaweicloud_vpc.main.id}"
    assert gateway["subnet_id"] == "${huaweicloud_vpc_subnet.app.id}"
    snat = tf.resource("huaweicloud_nat_snat_rule", "functions")
    assert snat["nat_gateway_id"] == "${huaweicloud_nat_gateway.functions[0].id}"
    assert snat["floating_ip_id"] == "${huaweicloud_vpc_eip.nat[0].id}"
    # The functions' subnet, the one they are attached to, and no other: the data subnet gets no way out.
    functions = tf.resource("huaweicloud_fgs_function", "fn")
    assert snat["subnet_id"] == functions["network_id"] == "${huaweicloud_vpc_subnet.app.id}"
    assert "cidr" not in snat and len(tf.of_type("huaweicloud_nat_snat_rule")) == 1
    assert not tf.of_type("huaweicloud_nat_dnat_rule"), "nothing on the internet may connect in"
    eip = tf.resource("huaweicloud_vpc_eip", "nat")
    bandwidth = first(eip["bandwidth"])
    assert bandwidth["share_type"] == "PER" and bandwidth["size"] == "${var.nat_bandwidth_mbit}"
    assert first(eip["publicip"])["type"] == "${var.nat_eip_type}"


def test_the_outputs_name_the_topic_and_the_functions_public_address(tf):
    assert (
        expression(tf.outputs["alert_topic_urn"]["value"])
        == "local.alerts_to_smn ? local.alert_topic_urn : null"
    )
    assert (
        expression(tf.outputs["nat_public_ip"]["value"])
        == "var.enable_nat_gateway ? huaweicloud_vpc_eip.nat[0].address : null"
    )


# ---------------------------------------------------------------- the variables' validations


@pytest.fixture(scope="module")
def terraform(tmp_path_factory):
    binary = shutil.which("terraform")
    if binary is None:
        warnings.warn("terraform is not installed: the alert and NAT validations were not run", stacklevel=2)
        return None
    return Terraform(binary, tmp_path_factory.mktemp("alerts") / "terraform", {}, {})


@pytest.mark.parametrize(
    ("variables", "ok"),
    [
        ({"alert_smn_topic": "create"}, True),
        ({"alert_smn_topic": "none"}, True),
        ({"alert_smn_topic": TOPIC}, True),
        ({"alert_smn_topic": "iot-alerts"}, False),
        ({"alert_smn_topic": "arn:aws:sns:us-east-1:1:x"}, False),
        ({"alert_subscriptions": '[{protocol="email",endpoint="oncall@example.com"}]'}, True),
        ({"alert_subscriptions": '[{protocol="https",endpoint="https://hooks.example.com/smn"}]'}, True),
        ({"alert_subscriptions": '[{protocol="http",endpoint="http://hooks.example.com/smn"}]'}, False),
        ({"alert_subscriptions": '[{protocol="email",endpoint="not-an-address"}]'}, False),
        ({"alert_subscriptions": '[{protocol="sms",endpoint="+8613800000000"}]'}, False),
        (
            {
                "alert_subscriptions": '[{protocol="email",endpoint="a@example.com"},{protocol="email",endpoint="a@example.com"}]'
            },
            False,
        ),
        ({"alert_smn_endpoint": "https://smn.ap-southeast-1.myhuaweicloud.com"}, True),
        ({"alert_smn_endpoint": "http://smn.example.com"}, False),
        ({"enable_nat_gateway": True, "nat_gateway_spec": "1"}, True),
        ({"nat_gateway_spec": "5"}, False),
        ({"nat_bandwidth_mbit": 0}, False),
        ({"nat_eip_type": "bgp"}, False),
    ],
)
def test_the_variables_refuse_what_the_cloud_or_the_code_would(terraform, variables, ok):
    if terraform is None:
        return
    passed, _, problem = terraform.apply(**variables)
    assert passed == ok, problem or f"{variables} was accepted"


@pytest.mark.parametrize(
    "urn", [TOPIC, "urn:smn:eu-west-101:abc123:alerts_1", "urn:smn:ap-southeast-1:p1", "iot-alerts"]
)
def test_terraform_and_the_code_agree_on_what_a_topic_urn_is(terraform, urn):
    if terraform is None:
        return
    try:
        Settings(alert_smn_topic_urn=urn)
        code_accepts = True
    except SettingsError:
        code_accepts = False
    passed, _, problem = terraform.apply(alert_smn_topic=urn)
    assert passed == code_accepts, problem or urn
