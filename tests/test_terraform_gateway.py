"""infra/terraform's API gateway and alarms, checked offline (python-hcl2, no provider download).

What a user relies on: the API and the dashboard's config.js use the API's own domain when one is
given (the debugging domain, capped at 1,000 calls a day, only when none is); the domain and its
certificate are bound only then; every API calls its function's `live` alias and is bound to a
throttling policy, delete-all to the tightest; the Cloud Eye alarms exist and notify one SMN topic.

The expressions that decide these (the API URL, the domain resources' counts, which policy each API
is bound to, the alarms' monitored objects) are evaluated here as Terraform would evaluate them, for
a stack without and with its own domain, by a small evaluator of the HCL expression subset these
files use (``Hcl`` below).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.readings import MetricType
from deploy.routes import app_routes
from functions import load_function

from .terraform_config import TERRAFORM_DIR, first, load

SL_DOMAIN = "0123456789abcdef.apic.ap-southeast-1.huaweicloudapis.com"
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
    values.update(api_domain=api_domain, api_certificate_id=api_certificate_id, **variables)
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
    assert set(hcl.local("function_base_urns")) == {r.function for r in app_routes()} | {"consumer"}
    for path in sorted(TERRAFORM_DIR.glob("*.tf")):
        code = re.sub(r"#.*", "", path.read_text())
        assert not re.search(r'version\s*=\s*"latest"', code), f"{path.name} calls `latest`"


def test_every_api_is_bound_to_exactly_one_throttling_policy(tf):
    hcl = stack(tf)
    published = hcl.env["huaweicloud_apig_api_publishment"]["route"]
    assert len(published) == len(app_routes())
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


def test_delete_all_has_the_tightest_policy_and_ingest_the_most_generous(tf):
    hcl = stack(tf)
    policy_of = hcl.local("api_throttling_policy")
    apis = hcl.local("apis")
    by_route = {(r["method"], r["path"]): policy_of[key] for key, r in apis.items()}
    assert by_route[("POST", "/api/delete-all")] == "admin"
    assert [route for route, name in by_route.items() if name == "admin"] == [("POST", "/api/delete-all")]
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
    functions = {name: f"default-iot-{name}" for name in ("ingest", "consumer", "query", "dashboard")}
    assert monitored["consumer_failures"] == [functions["consumer"]]
    assert sorted(monitored["http_function_errors"]) == sorted(
        functions[n] for n in ("ingest", "query", "dashboard")
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


# ---------------------------------------------------------------- the evaluator itself


def test_the_evaluator_derives_the_same_api_keys_as_the_route_table_rule(tf):
    """apig.tf keys each API by function, method and path; the evaluator's keys must be those."""
    keys = set(stack(tf).local("apis"))
    expected = {
        f"{r.function}_{r.method.lower()}_"
        + ("root" if r.path == "/" else re.sub(r"[^0-9A-Za-z]+", "_", r.path).strip("_"))
        for r in app_routes()
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
    ],
)
def test_the_evaluator_computes_what_terraform_computes(expression, value):
    assert Hcl({}, {}).eval(expression) == value


# ---------------------------------------------------------------- a small evaluator of HCL expressions


class Hcl:
    """Evaluates the HCL expressions python-hcl2 leaves as text ("${...}"), for the subset these
    files use: literals, templates, references, indexing, for expressions, the conditional and the
    logical, comparison and arithmetic operators, and the functions in FUNCTIONS."""

    FUNCTIONS = {
        "lower": str.lower,
        "upper": str.upper,
        "length": len,
        "min": min,
        "max": max,
        "tostring": str,
        "contains": lambda items, value: value in items,
        "keys": lambda m: sorted(m),
        "values": lambda m: [m[k] for k in sorted(m)],
        "toset": lambda items: sorted(set(items)),
        "trim": lambda s, chars: s.strip(chars),
        "replace": lambda s, old, new: (
            re.sub(old[1:-1], lambda _: new, s)
            if len(old) > 1 and old.startswith("/") and old.endswith("/")
            else s.replace(old, new)
        ),
    }

    def __init__(self, env: dict, locals_: dict):
        self.env = env
        self.locals_text = locals_
        self.locals_override: dict = {}
        self._locals: dict = {}
        env["local"] = _Lazy(self.local)

    def var(self, name: str):
        return self.env["var"][name]

    def local(self, name: str):
        if name in self.locals_override:
            return self.locals_override[name]
        if name not in self._locals:
            self._locals[name] = self.eval(self.locals_text[name])
        return self._locals[name]

    def eval(self, value, **bindings):
        """A value as python-hcl2 returns it (text with ${...}, or lists and maps of such)."""
        env = {**self.env, **bindings}
        if isinstance(value, str):
            return _template(value, env, self)
        if isinstance(value, list):
            return [self.eval(v, **bindings) for v in value]
        if isinstance(value, dict):
            return {k: self.eval(v, **bindings) for k, v in value.items()}
        return value


class _Lazy:
    def __init__(self, get):
        self.get = get

    def __getitem__(self, name):
        return self.get(name)


def _template(text: str, env: dict, hcl: Hcl, escaped: bool = False):
    """A template: literal text and ${...} parts; a lone ${...} keeps its value's type."""
    parts, i = [], 0
    while i < len(text):
        start = text.find("${", i)
        if start < 0:
            parts.append(_unescape(text[i:]) if escaped else text[i:])
            break
        if start > i:
            parts.append(_unescape(text[i:start]) if escaped else text[i:start])
        end = _closing(text, start + 2)
        parts.append(_Parser(text[start + 2 : end], env, hcl).parse())
        i = end + 1
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]
    if len(parts) == 1 and text.startswith("${"):
        return parts[0]
    return "".join(_as_text(p) for p in parts)


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def _closing(text: str, i: int) -> int:
    """Index of the } that closes an interpolation whose body starts at i (skipping nested braces and
    strings)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise ValueError(f"unclosed interpolation in {text!r}")


def _string_end(text: str, i: int) -> int:
    """Index of the quote that closes the string opening at text[i]."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith("${", i):
            i = _closing(text, i + 2) + 1
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ValueError(f"unclosed string in {text!r}")


TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][\w-]*)|(=>|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}=]))"
)


class _Parser:
    def __init__(self, text: str, env: dict, hcl: Hcl):
        self.text, self.env, self.hcl = text, env, hcl
        self.tokens = self._tokenize(text)
        self.i = 0

    def _tokenize(self, text):
        tokens, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            if text[i] == '"':
                end = _string_end(text, i)
                tokens.append(("str", text[i + 1 : end]))
                i = end + 1
                continue
            m = TOKEN.match(text, i)
            if not m or m.end() == i:
                raise ValueError(f"cannot read {text[i:]!r}")
            number, name, op = m.groups()
            tokens.append(("num", number) if number else ("name", name) if name else ("op", op))
            i = m.end()
        return tokens

    # -- helpers
    def peek(self, value=None):
        if self.i >= len(self.tokens):
            return None
        token = self.tokens[self.i]
        return token if value is None or token[1] == value else None

    def take(self, value=None):
        token = self.peek(value)
        if token is None:
            raise ValueError(f"expected {value!r} at token {self.i} of {self.text!r}")
        self.i += 1
        return token

    def parse(self):
        value = self.expr()
        if self.i != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.i]} in {self.text!r}")
        return value

    # -- grammar, lowest precedence first; a sub-parser re-reads a body for each item of a for
    def expr(self):
        condition = self.binary(0)
        if not self.peek("?"):
            return condition
        self.take("?")
        yes = self.branch(taken=bool(condition))
        self.take(":")
        no = self.branch(taken=not condition)
        return yes if condition else no

    def branch(self, taken: bool):
        """The branch taken is evaluated; the other is only parsed (its references may not exist)."""
        if taken:
            return self.expr()
        saved, self.env = self.env, _Unresolved()
        try:
            self.expr()
        finally:
            self.env = saved
        return None

    LEVELS = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%")]

    def binary(self, level):
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (token := self.peek()) and token[0] == "op" and token[1] in self.LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            if isinstance(self.env, _Unresolved):
                continue
            left = {
                "||": lambda a, b: bool(a or b),
                "&&": lambda a, b: bool(a and b),
                "==": lambda a, b: a == b,
                "!=": lambda a, b: a != b,
                "<": lambda a, b: a < b,
                ">": lambda a, b: a > b,
                "<=": lambda a, b: a <= b,
                ">=": lambda a, b: a >= b,
                "+": lambda a, b: a + b,
                "-": lambda a, b: a - b,
                "*": lambda a, b: a * b,
                "/": lambda a, b: a / b,
                "%": lambda a, b: a % b,
            }[op](left, right)
        return left

    def unary(self):
        if self.peek("!"):
            self.take()
            value = self.unary()
            return None if isinstance(self.env, _Unresolved) else not value
        if self.peek("-"):
            self.take()
            value = self.unary()
            return None if isinstance(self.env, _Unresolved) else -value
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while True:
            if self.peek("."):
                self.take()
                name = self.take()[1]
                value = None if isinstance(self.env, _Unresolved) else _get(value, name)
            elif self.peek("["):
                self.take()
                index = self.expr()
                self.take("]")
                value = None if isinstance(self.env, _Unresolved) else _get(value, index)
            else:
                return value

    def primary(self):
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            if isinstance(self.env, _Unresolved):
                return None
            return _template(text, self.env, self.hcl, escaped=True)
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self.peek("("):
                return self.call(text)
            if isinstance(self.env, _Unresolved):
                return None
            if text not in self.env:
                raise KeyError(f"{text} is not known to the evaluator (in {self.text!r})")
            return self.env[text]
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if text == "[":
            return self.sequence()
        if text == "{":
            return self.mapping()
        raise ValueError(f"unexpected {text!r} in {self.text!r}")

    def call(self, name):
        self.take("(")
        args = []
        while not self.peek(")"):
            args.append(self.expr())
            if self.peek(","):
                self.take()
        self.take(")")
        return None if isinstance(self.env, _Unresolved) else self.hcl.FUNCTIONS[name](*args)

    def sequence(self):
        if self.peek("for"):
            return self.for_expression("]")
        items = []
        while not self.peek("]"):
            items.append(self.expr())
            if self.peek(","):
                self.take()
        self.take("]")
        return items

    def mapping(self):
        if self.peek("for"):
            return self.for_expression("}")
        result = {}
        while not self.peek("}"):
            kind, key = self.take()
            self.take("=") if self.peek("=") else self.take(":")
            result[key] = self.expr()
            if self.peek(","):
                self.take()
        self.take("}")
        return result

    def for_expression(self, close):
        """[for k, v in X : body if cond] or {for k, v in X : key => value if cond}."""
        self.take("for")
        names = [self.take()[1]]
        if self.peek(","):
            self.take()
            names.append(self.take()[1])
        self.take("in")
        collection = self.expr()
        self.take(":")
        body_start = self.i
        self._skip_body(close)  # find the end first, then evaluate the body per item
        body_end = self.i
        self.take(close)
        if isinstance(self.env, _Unresolved):
            return None
        if isinstance(collection, dict):
            items = [(k, collection[k]) for k in sorted(collection)]
        else:
            items = list(enumerate(collection))
        result = [] if close == "]" else {}
        for key, value in items:
            bound = {names[0]: value} if len(names) == 1 else {names[0]: key, names[1]: value}
            sub = _Parser("", {**self.env, **bound}, self.hcl)
            sub.tokens, sub.text = self.tokens[body_start:body_end], self.text
            first_value = sub.expr()
            if close == "}":
                sub.take("=>")
                second = sub.expr()
            keep = True
            if sub.peek("if"):
                sub.take()
                keep = sub.expr()
            if sub.i != len(sub.tokens):
                raise ValueError(f"unexpected {sub.tokens[sub.i]} in for expression of {self.text!r}")
            if keep:
                if close == "]":
                    result.append(first_value)
                else:
                    result[first_value] = second
        return result

    def _skip_body(self, close):
        depth = 0
        while self.i < len(self.tokens):
            token = self.tokens[self.i]
            if token[0] == "op" and token[1] in "([{":
                depth += 1
            elif token[0] == "op" and token[1] in ")]}":
                if depth == 0 and token[1] == close:
                    return
                depth -= 1
            self.i += 1
        raise ValueError(f"unclosed for expression in {self.text!r}")


class _Unresolved(dict):
    """The environment of a branch not taken: parsed, never looked up."""


def _get(value, key):
    if isinstance(value, _Lazy):
        return value[key]
    if isinstance(value, list):
        return value[int(key)]
    if key not in value:
        raise KeyError(f"{key!r} not in {sorted(value)}")
    return value[key]
