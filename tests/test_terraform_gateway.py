"""infra/terraform's API gateway and alarms, checked offline (python-hcl2, no provider download).

What a user relies on: the API and the dashboard's config.js use the API's own domain when one is
given (the debugging domain, capped at 1,000 calls a day, only when none is); the domain and its
certificate are bound only then; every API calls its function's `live` alias and is bound to a
throttling policy, delete-all to the tightest; the Cloud Eye alarms exist and notify one SMN topic.

The expressions that decide these (the API URL, the domain resources' counts, which policy each API
is bound to, the alarms' monitored objects) are evaluated here as Terraform would evaluate them, for
a stack without and with its own domain, by the small HCL evaluator of tests/hcl_eval.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.readings import MetricType
from deploy.routes import app_routes
from functions import function_names, load_function

from .hcl_eval import Hcl
from .terraform_config import TERRAFORM_DIR, first, load

SL_DOMAIN = "0123456789abcdef.apic.ap-southeast-1.huaweicloudapis.com"
DASHBOARD_BUCKET = "acme-iot-dashboard"
AUTHORIZER_IDS = {"credential": "authorizer-credential", "ingest": "authorizer-ingest"}
RESPONSE_ID = "response-authorizer"
INGRESS_ADDRESS = "203.0.113.10"
OWN_DOMAIN = "api.example.com"
CERTIFICATE_ID = "5f2a9c0d1e2b4c7a9d8e6f1a2b3c4d5e"

# Cloud Eye: namespace and metric -> the dimension it is reported under (alarms.tf cites the pages).
DOCUMENTED_METRICS = {
    ("SYS.FunctionGraph", "failcount"): "package-functionname",
    ("SYS.FunctionGraph", "rejectcount"): "package-functionname",
    ("SYS.DMS", "group_msgs"): "kafka_instance_id",
    ("SYS.RDS", "rds001_cpu_util"): "postgresql_cluster_id",
    ("SYS.RDS", "rds039_disk_util"): "postgresql_cluster_id",
    ("SYS.APIC", "error_5xx"): "instance_id",
    ("SYS.APIC", "throttled_calls"): "instance_id",
}
CES_PERIODS = {1, 300, 1200, 3600, 14400, 86400}
CES_FILTERS = {"average", "max", "min", "sum", "variance"}

GATEWAY_HEADING = "# ---------------------------------------------------------------- gateway: domain, certificate, throttling"
ALARMS_HEADING = "# ---------------------------------------------------------------- alarms"


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


def stack(tf, api_domain: str = "", api_certificate_id: str = "", **variables) -> Hcl:
    """An evaluator for the stack with these variable values (the rest: their defaults) and stand-ins
    for what only exists after apply (IDs, the debugging domain, publish IDs)."""
    values = {name: body.get("default") for name, body in tf.variables.items()}
    values.update(region="ap-southeast-1", api_domain=api_domain, api_certificate_id=api_certificate_id)
    values.update(variables)
    functions = {
        name: {
            "app": "default",
            "name": f"{values['name_prefix']}-{name}",
            "urn": f"urn:fss:ap-southeast-1:p1:function:default:{values['name_prefix']}-{name}:latest",
        }
        for name in values["functions"]
    }
    env = {
        "var": values,
        "data": {"huaweicloud_apig_groups": {"api": {"groups": [{"sl_domain": SL_DOMAIN}]}}},
        "huaweicloud_apig_instance": {"gateway": {"id": "apig-1", "ingress_address": INGRESS_ADDRESS}},
        "huaweicloud_fgs_function": {"fn": functions},
        "huaweicloud_dms_kafka_instance": {"kafka": {"id": "kafka-1"}},
        "huaweicloud_rds_instance": {"db": {"id": "rds-1"}},
        "huaweicloud_smn_topic": {"alarms": {"topic_urn": "urn:smn:ap-southeast-1:p1:iot-alarms"}},
        "huaweicloud_obs_bucket": {"dashboard": {"bucket": DASHBOARD_BUCKET}},
        "huaweicloud_apig_custom_authorizer": {"api": {k: {"id": v} for k, v in AUTHORIZER_IDS.items()}},
        "huaweicloud_apig_response": {"authorizer": {"id": RESPONSE_ID}},
    }
    hcl = Hcl(env, tf.locals)
    env["huaweicloud_apig_api_publishment"] = {
        "route": {key: {"publish_id": f"pub-{key}"} for key in hcl.local("apis")}
    }
    return hcl


def config_js() -> str:
    return (Path(load_function("dashboard").__file__).parent / "static" / "config.js").read_text()


# ---------------------------------------------------------------- the API's address


@pytest.mark.parametrize("domain", ["", OWN_DOMAIN])
def test_the_api_url_config_js_and_outputs_use_the_own_domain_when_one_is_given(tf, domain):
    hcl = stack(tf, domain, CERTIFICATE_ID if domain else "")
    expected = f"https://{domain or SL_DOMAIN}"
    assert hcl.local("api_url") == expected
    assert hcl.eval(tf.outputs["api_url"]["value"]) == expected
    assert hcl.eval(tf.outputs["dashboard_function_url"]["value"]) == expected + "/"

    # The dashboard on OBS gets the same address as its apiBase, and nothing else of config.js changes.
    content = tf.resource("huaweicloud_obs_bucket_object", "config")["content"]
    original = config_js()
    hcl.locals_override["config_js"] = original
    uploaded = hcl.eval(content)
    assert re.findall(r'^\s*apiBase:\s*"([^"]*)"', uploaded, re.M) == [expected]
    assert re.sub(r'apiBase:\s*"[^"]*"', "", uploaded) == re.sub(r'apiBase:\s*"[^"]*"', "", original)

    warning = hcl.eval(tf.outputs["api_url_warning"]["value"])
    record = hcl.eval(tf.outputs["api_dns_record"]["value"])
    if domain:
        assert warning is None
        assert record == {"name": domain, "type": "A", "value": INGRESS_ADDRESS}
    else:
        assert "1,000 calls a day" in warning and "smoke test" in warning and "api_domain" in warning
        assert record is None
    assert hcl.eval(tf.outputs["api_gateway_address"]["value"]) == INGRESS_ADDRESS
    # The debugging domain answers only while it is the API's address.
    assert hcl.eval(tf.resource("huaweicloud_apig_group", "api")["domain_access_enabled"]) is (not domain)


@pytest.mark.parametrize("domain", ["", OWN_DOMAIN])
def test_the_domain_and_its_certificate_are_bound_only_when_a_domain_is_given(tf, domain):
    hcl = stack(tf, domain, CERTIFICATE_ID if domain else "")
    bind = tf.resource("huaweicloud_apig_group_domain_associate", "api")
    certificate = tf.resource("huaweicloud_apig_domain_certificate_associate", "api")
    for resource in (bind, certificate):
        assert hcl.eval(resource["count"]) == (1 if domain else 0)
        assert resource["instance_id"] == "${huaweicloud_apig_instance.gateway.id}"
        assert resource["group_id"] == "${huaweicloud_apig_group.api.id}"
    assert hcl.eval(bind["url_domain"]) == domain
    assert hcl.eval(bind["min_ssl_version"]) in {"TLSv1.1", "TLSv1.2"}
    assert certificate["domain_id"] == "${huaweicloud_apig_group_domain_associate.api[0].domain_id}"
    assert hcl.eval(certificate["certificate_id"]) == (CERTIFICATE_ID if domain else "")


def test_a_domain_without_a_certificate_is_refused_before_anything_is_created(tf):
    (precondition,) = first(tf.resource("huaweicloud_apig_group_domain_associate", "api")["lifecycle"])[
        "precondition"
    ]
    assert stack(tf, OWN_DOMAIN, "").eval(precondition["condition"]) is False
    assert stack(tf, OWN_DOMAIN, CERTIFICATE_ID).eval(precondition["condition"]) is True


def test_the_gateway_has_public_ingress_with_size_and_charging_mode_together(tf):
    gateway = tf.resource("huaweicloud_apig_instance", "gateway")
    assert gateway["ingress_bandwidth_size"] == "${var.apig_ingress_bandwidth_mbit}"
    assert gateway["ingress_bandwidth_charging_mode"] == "${var.apig_ingress_bandwidth_charging_mode}"
    assert "eip_id" not in gateway  # conflicts with both
    mode = tf.variables["apig_ingress_bandwidth_charging_mode"]
    assert mode["default"] == "bandwidth" and "bandwidth" in first(mode["validation"])["condition"]
    (validation,) = tf.variables["apig_ingress_bandwidth_mbit"]["validation"]
    assert stack(tf, apig_ingress_bandwidth_mbit=4).eval(validation["condition"]) is False
    assert stack(tf, apig_ingress_bandwidth_mbit=5).eval(validation["condition"]) is True


# ---------------------------------------------------------------- each API: the `live` alias and a throttling policy


def test_every_api_calls_its_functions_live_alias_never_latest(tf):
    api = tf.resource("huaweicloud_apig_api", "route")
    backend = first(api["func_graph"])
    assert backend["function_urn"] == "${local.function_base_urns[each.value.function]}"
    assert backend["function_alias_urn"] == "${local.live_urns[each.value.function]}"
    assert "version" not in backend
    hcl = stack(tf)
    for name, urn in hcl.local("live_urns").items():
        assert urn == f"urn:fss:ap-southeast-1:p1:function:default:iot-{name}:!live"
    assert set(hcl.local("function_base_urns")) == set(function_names()) >= {r.function for r in app_routes()}
    for path in sorted(TERRAFORM_DIR.glob("*.tf")):
        code = re.sub(r"#.*", "", path.read_text())
        assert not re.search(r'version\s*=\s*"latest"', code), f"{path.name} calls `latest`"


def test_every_api_is_bound_to_exactly_one_throttling_policy(tf):
    hcl = stack(tf)
    published = hcl.env["huaweicloud_apig_api_publishment"]["route"]
    preflights = {r.path for r in app_routes() if not r.public}  # an OPTIONS API each
    assert len(published) == len(app_routes()) + len(preflights)
    policy = tf.resource("huaweicloud_apig_throttling_policy", "api")
    assert policy["for_each"] == "${var.api_throttling}"
    assert policy["type"] == "API-based" and policy["period"] == 1 and policy["period_unit"] == "MINUTE"
    assert policy["max_api_requests"] == "${each.value.api_requests_per_minute}"
    assert policy["max_ip_requests"] == "${each.value.ip_requests_per_minute}"
    associate = tf.resource("huaweicloud_apig_throttling_policy_associate", "api")
    assert associate["for_each"] == "${huaweicloud_apig_throttling_policy.api}"
    assert associate["policy_id"] == "${each.value.id}"

    bound = {}
    for name, limits in hcl.var("api_throttling").items():
        ids = hcl.eval(associate["publish_ids"], each={"key": name, "value": limits})
        assert ids, f"policy {name} binds no API (the provider requires publish_ids)"
        for publish_id in ids:
            assert publish_id not in bound, f"{publish_id} is bound to {bound[publish_id]} and {name}"
            bound[publish_id] = name
    assert set(bound) == {p["publish_id"] for p in published.values()}, "an API without a throttling policy"


ADMIN_ROUTES = {
    ("POST", "/api/delete-all"),
    ("POST", "/api/alert-rules"),
    ("DELETE", "/api/alert-rules/{rule_id}"),
    ("POST", "/api/alerts/{alert_id}/ack"),
}


def test_admin_routes_have_the_tightest_policy_and_ingest_the_most_generous(tf):
    hcl = stack(tf)
    policy_of = hcl.local("api_throttling_policy")
    apis = hcl.local("apis")
    by_route = {(r["method"], r["path"]): policy_of[key] for key, r in apis.items()}
    assert {route for route, name in by_route.items() if name == "admin"} == ADMIN_ROUTES
    for route in app_routes():
        if route.function == "ingest":
            assert by_route[(route.method, route.path)] == "ingest"
    limits = tf.variables["api_throttling"]["default"]
    for name in ("ingest", "read"):
        for limit in ("api_requests_per_minute", "ip_requests_per_minute"):
            assert limits["admin"][limit] < limits[name][limit], f"admin's {limit} is not the tightest"
    assert limits["ingest"]["api_requests_per_minute"] >= limits["read"]["api_requests_per_minute"]


def test_the_read_limits_leave_room_for_the_dashboards_polling(tf):
    """The dashboard polls every refreshSeconds: the overview GETs /api/devices and /api/stats, a
    device page GETs /latest and, per metric with a new reading, /history. The per-IP read limit must
    let one office (one address) keep several device pages open, and the per-API limit many offices."""
    refresh = float(re.search(r"refreshSeconds:\s*([\d.]+)", config_js()).group(1))
    polls_per_minute = 60 / refresh
    overview_tab = polls_per_minute  # on each of /api/devices and /api/stats
    device_tab_history = polls_per_minute * len(MetricType.names())  # on /history, every metric changing
    read = tf.variables["api_throttling"]["default"]["read"]
    assert read["ip_requests_per_minute"] >= 5 * device_tab_history >= 5 * overview_tab
    assert read["api_requests_per_minute"] >= 10 * read["ip_requests_per_minute"]  # ten such offices


# ---------------------------------------------------------------- alarms


def test_every_alarm_watches_a_documented_metric_of_this_stack_and_notifies_the_topic(tf):
    hcl = stack(tf)
    alarms = tf.locals["alarms"]
    assert set(alarms) == set(tf.variables["alarm_rules"]["default"]), (
        "an alarm without its rule (or vice versa)"
    )
    monitored = {}
    for key, alarm in alarms.items():
        dimension = DOCUMENTED_METRICS.get((alarm["namespace"], alarm["metric"]))
        assert dimension, f"{key}: {alarm['namespace']} {alarm['metric']} is not a documented metric"
        assert alarm["dimension"] == dimension, f"{key}: {alarm['metric']} is reported under {dimension}"
        assert alarm["filter"] in CES_FILTERS and alarm["level"] in {1, 2, 3, 4}
        assert 0 < len(alarm["description"]) <= 256
        monitored[key] = hcl.eval(alarm["values"])
    functions = {name: f"default-iot-{name}" for name in function_names()}
    assert monitored["consumer_failures"] == [functions["consumer"]]
    assert monitored["maintenance_failures"] == [functions["maintenance"]]
    # Every function a request waits for: the authorizer runs before each one that needs a credential.
    assert sorted(monitored["http_function_errors"]) == sorted(
        functions[n] for n in ("ingest", "query", "dashboard", "authorizer")
    )
    assert sorted(monitored["function_throttles"]) == sorted(functions.values())
    assert monitored["kafka_backlog"] == ["kafka-1"]
    assert monitored["rds_cpu_percent"] == monitored["rds_disk_percent"] == ["rds-1"]
    assert monitored["apig_5xx"] == monitored["apig_throttled"] == ["apig-1"]

    rule = tf.resource("huaweicloud_ces_alarmrule", "service")
    assert rule["for_each"] == "${local.alarms}"
    assert rule["alarm_enabled"] is True and rule["alarm_action_enabled"] is True
    assert first(rule["metric"])["namespace"] == "${each.value.namespace}"
    resources = first(rule["dynamic"])["resources"]
    assert resources["for_each"] == "${each.value.values}"
    dimensions = first(first(resources["content"])["dimensions"])
    assert dimensions == {"name": "${each.value.dimension}", "value": "${resources.value}"}
    condition = first(rule["condition"])
    assert condition["metric_name"] == "${each.value.metric}" and condition["comparison_operator"] == ">="
    for field, source in (("value", "threshold"), ("period", "period"), ("count", "count")):
        assert condition[field] == f"${{var.alarm_rules[each.key].{source}}}"
    topic = ["${huaweicloud_smn_topic.alarms.topic_urn}"]
    for actions in ("alarm_actions", "ok_actions"):
        assert first(rule[actions]) == {"type": "notification", "notification_list": topic}


def test_the_alarm_defaults_fire_on_the_first_failed_batch_and_are_valid_for_cloud_eye(tf):
    rules = tf.variables["alarm_rules"]["default"]
    assert rules["consumer_failures"]["threshold"] <= 1 and rules["consumer_failures"]["count"] == 1
    for key, rule in rules.items():
        assert rule["period"] in CES_PERIODS and 1 <= rule["count"] <= 5 and rule["threshold"] >= 0, key
    assert rules["rds_cpu_percent"]["threshold"] <= 100 and rules["rds_disk_percent"]["threshold"] <= 100


def test_the_alarm_topic_mails_every_address_given_and_is_an_output(tf):
    topic = tf.resource("huaweicloud_smn_topic", "alarms")
    assert topic["name"] == "${var.name_prefix}-alarms"
    subscription = tf.resource("huaweicloud_smn_subscription", "alarm_email")
    assert subscription["for_each"] == "${toset(var.alarm_emails)}"
    assert subscription["protocol"] == "email" and subscription["endpoint"] == "${each.value}"
    assert subscription["topic_urn"] == "${huaweicloud_smn_topic.alarms.topic_urn}"
    assert tf.variables["alarm_emails"]["default"] == []
    assert stack(tf).eval(subscription["for_each"]) == []
    emails = ["ops@example.com", "oncall@example.org"]
    assert stack(tf, alarm_emails=emails).eval(subscription["for_each"]) == sorted(emails)
    assert tf.outputs["alarm_topic_urn"]["value"] == "${huaweicloud_smn_topic.alarms.topic_urn}"
    for label in ("resource huaweicloud_smn_topic.alarms", "resource huaweicloud_ces_alarmrule.service"):
        assert tf.where[label] == "alarms.tf"


# ---------------------------------------------------------------- the variables of this part


def test_every_gateway_and_alarm_variable_is_typed_described_and_validated(tf):
    sections = re.split(r"^(# -{10,} .*)$", (TERRAFORM_DIR / "variables.tf").read_text(), flags=re.M)
    by_heading = dict(zip(sections[1::2], sections[2::2], strict=True))
    names = re.findall(r'^variable "(\w+)"', by_heading[GATEWAY_HEADING] + by_heading[ALARMS_HEADING], re.M)
    assert {"api_domain", "api_certificate_id", "api_throttling", "alarm_emails", "alarm_rules"} <= set(names)
    for name in names:
        body = tf.variables[name]
        assert body.get("type") and body.get("description"), name
        assert body.get("validation"), f"variable {name} is not validated"
        assert tf.where[f"variable {name}"] == "variables.tf"


# ---------------------------------------------------------------- the evaluator itself (tests/hcl_eval.py)


def test_the_evaluator_derives_the_same_api_keys_as_the_route_table_rule(tf):
    """apig.tf keys each API by function, method and path; the evaluator's keys must be those."""
    keys = set(stack(tf).local("apis"))
    routes = [(r.function, r.method, r.path) for r in app_routes()]
    routes += [(r.function, "OPTIONS", r.path) for r in app_routes() if not r.public]
    expected = {
        f"{function}_{method.lower()}_"
        + ("root" if path == "/" else re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_"))
        for function, method, path in routes
    }
    assert keys == expected


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('${"" != "" ? 1 : 0}', 0),
        ('${!(1 == 1) || "a" == "a" && false}', False),
        ('${[for k, v in {b = 2, a = 1} : "${k}${v}" if v > 0]}', ["a1", "b2"]),
        ('${{for x in ["a", "b"] : upper(x) => length(x)}}', {"A": 1, "B": 1}),
        ('${trim(replace("/x/{id}/y", "/[^a-z]+/", "_"), "_")}', "x_id_y"),
        ("${min(7 * 1000, 60000)}", 7000),
        ('${contains(["a"], "b") ? "yes" : "no"}', "no"),
        ('pre-${lower("X")}-post', "pre-x-post"),
        # the condition decides first: a value for an item it leaves out is never looked up
        ('${{for k in ["a", "b"] : k => {a = 1}[k] if k == "a"}}', {"a": 1}),
        ('${concat(["a"], [], ["b", "c"])}', ["a", "b", "c"]),
        ('${distinct(["b", "a", "b"])}', ["b", "a"]),
        ('${join(",", ["a", "b"])}', "a,b"),
        ('${jsonencode({b = "<$x>", a = 1})}', '{"a":1,"b":"\\u003c$x\\u003e"}'),
        ("${[for x in [1, 2] : x][1]}", 2),
    ],
)
def test_the_evaluator_computes_what_terraform_computes(expression, value):
    assert Hcl({}, {}).eval(expression) == value


def test_a_symbolic_evaluation_names_what_it_cannot_compute():
    hcl = Hcl({"var": {"on": True}}, {"cidr": "${cidrsubnet(var.vpc_cidr, 8, 1)}"}, symbolic=True)
    assert hcl.eval("${var.on ? var.user : null}") == "var.user"
    assert hcl.eval("${huaweicloud_vpc.main.id}") == "huaweicloud_vpc.main.id"
    assert hcl.eval("${local.cidr}") == "local.cidr"  # a local it cannot compute keeps its name
    assert hcl.eval("${merge({a = 1}, {b = var.b})}") == {"a": 1, "b": "var.b"}
    with pytest.raises(KeyError):
        Hcl({"var": {}}, {}).eval("${var.missing}")  # without symbolic, every name must be known
