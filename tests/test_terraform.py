"""infra/terraform checked against the code, offline: parsed with python-hcl2, no provider download.

What the code declares (the routers' routes, Settings.names(), the readings topic, the handlers) is
read from the code itself; the Terraform must match it. `terraform fmt -check` and `terraform
validate` run where a terraform binary is found; what could not be checked is reported as a
warning in pytest's summary, never skipped silently.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from common.apig import ApigRequest
from common.settings import FUNCTION_SETTINGS, SECRET_SETTINGS, Settings
from deploy import package
from deploy.routes import app_routes, terraform_block
from functions import load_function

from .hcl_eval import Hcl
from .terraform_config import TERRAFORM_DIR, expression, first, load, string_arguments

SECRET_NAME = re.compile(
    r"(^|_)(PASSWORD|PASSPHRASE|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY|SECRET_KEY)(_|$)"
)
EXPECTED_FILES = {"versions.tf", "variables.tf", "outputs.tf", "terraform.tfvars.example", "README.md"}
# Settings only the local runner reads: no cloud function is given them, so Terraform sets none.
LOCAL_ONLY_SETTINGS = {"MAINTENANCE_INTERVAL_SECONDS"}


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


def refs(value: object) -> str:
    """A value as text, for 'does this expression reference X' questions."""
    return value if isinstance(value, str) else repr(value)


# ---------------------------------------------------------------- layout


def test_the_stack_is_in_files_grouped_by_concern(tf):
    present = {p.name for p in TERRAFORM_DIR.iterdir()}
    assert EXPECTED_FILES <= present
    by_file = {
        label.split(" ", 1)[1].split(".")[0]: where
        for label, where in tf.where.items()
        if label.startswith("resource ")
    }
    assert by_file["huaweicloud_vpc"] == by_file["huaweicloud_networking_secgroup_rule"] == "network.tf"
    assert by_file["huaweicloud_rds_instance"] == "database.tf"
    assert by_file["huaweicloud_dcs_instance"] == "cache.tf"
    assert by_file["huaweicloud_dms_kafka_topic"] == "kafka.tf"
    assert (
        by_file["huaweicloud_fgs_function"] == by_file["huaweicloud_fgs_function_trigger"] == "functions.tf"
    )
    assert by_file["huaweicloud_apig_api"] == "apig.tf"
    assert by_file["huaweicloud_obs_bucket"] == "storage.tf"
    assert set(tf.outputs) >= {"api_url", "dashboard_url"}
    assert tf.files["versions.tf"]["terraform"][0]["required_providers"][0]["huaweicloud"]["source"] == (
        "huaweicloud/huaweicloud"
    )


def test_every_variable_is_typed_described_and_numbers_and_secrets_are_validated(tf):
    for name, body in tf.variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert body.get("description"), f"variable {name} has no description"
        if body["type"] == "number" or body.get("sensitive"):
            assert body.get("validation"), f"variable {name} is not validated"


def test_no_secret_has_a_default_and_every_secret_is_sensitive(tf):
    for name, body in tf.variables.items():
        if body.get("sensitive") or SECRET_NAME.search(name.upper()):
            assert body.get("sensitive") is True, f"variable {name} looks secret but is not sensitive"
            assert "default" not in body, f"secret variable {name} has a default"
    # ... and no resource carries a literal password.
    for (kind, name), body in tf.resources.items():
        for key, value in _walk(body):
            if re.search(r"password|secret|token", key) and value not in (None, ""):
                assert expression(value), f"{kind}.{name}.{key} is a literal, not a variable"


def test_the_tfvars_example_declares_only_known_variables_and_no_secret_values(tf):
    text = (TERRAFORM_DIR / "terraform.tfvars.example").read_text()
    assigned = re.findall(r"^(?:# )?([a-z_][a-z0-9_]*)\s*=", text, re.M)  # top-level, set or commented
    assert assigned
    for name in assigned:
        assert name in tf.variables, f"terraform.tfvars.example sets unknown variable {name}"
    for name, body in tf.variables.items():
        if body.get("sensitive"):
            assert not re.search(rf"^\s*{name}\s*=", text, re.M), f"{name} must not be set in the example"


def test_the_readme_documents_every_variable_and_output(tf):
    readme = (TERRAFORM_DIR / "README.md").read_text()
    for name in [*tf.variables, *tf.outputs]:
        assert f"`{name}`" in readme, f"infra/terraform/README.md does not mention `{name}`"


# ---------------------------------------------------------------- APIG: one API per route


def test_every_routed_endpoint_has_an_api_with_the_same_method_path_and_openness(tf):
    """The route table is the routers': the same routes, each public (no credential asked for at the
    gateway) exactly where its router says so."""
    from_code = {(r.function, r.method, r.path, r.public) for r in app_routes()}
    table = tf.locals["routes"]
    from_terraform = {(r["function"], r["method"], r["path"], r["public"]) for r in table}
    assert len(table) == len(from_terraform), "a route is listed twice in apig.tf"
    assert from_terraform == from_code, (
        "apig.tf's local.routes differs from the routers in functions/*/index.py "
        f"(missing: {sorted(from_code - from_terraform)}, extra: {sorted(from_terraform - from_code)}). "
        "Replace it with:\n" + terraform_block(app_routes())
    )
    assert all(isinstance(r["public"], bool) for r in table)


def test_each_api_is_bound_to_the_function_that_owns_its_route(tf):
    api = tf.resource("huaweicloud_apig_api", "route")
    assert api["for_each"] == "${local.apis}"
    assert "for r in concat(local.routes, local.preflight_routes)" in tf.locals["apis"]
    assert "=> r" in tf.locals["apis"]
    assert api["request_method"] == "${each.value.method}"
    assert api["request_path"] == "${each.value.path}"
    assert api["matching"] == "Exact"
    backend = first(api["func_graph"])
    # Each API calls its function's `live` alias; the alias, not a version, decides what runs.
    assert backend["function_urn"] == "${local.function_base_urns[each.value.function]}"
    assert backend["function_alias_urn"] == "${local.live_urns[each.value.function]}"
    assert "version" not in backend and backend["invocation_type"] == "sync"
    functions = set(tf.variables["functions"]["default"])
    for route in app_routes():
        assert route.function in functions, f"{route.function} owns {route.path} but is not deployed"
        module = load_function(route.function)
        assert any(r.method == route.method and r.path == route.path for r in module.app.routes)


def test_api_keys_are_unique_and_names_fit_apig(tf):
    """apig.tf derives each API's key from function, method and path; emulate it to catch clashes
    (the preflight APIs, OPTIONS on each path that needs a credential, included)."""
    assert 'trim(replace(r.path, "/[^0-9A-Za-z]+/", "_"), "_")' in tf.locals["apis"]
    routes = app_routes()
    preflights = {(r.function, "OPTIONS", r.path) for r in routes if not r.public}
    keys = set()
    for function, method, path in [(r.function, r.method, r.path) for r in routes] + sorted(preflights):
        slug = "root" if path == "/" else re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")
        key = f"{function}_{method.lower()}_{slug}"
        assert key not in keys, f"two routes map to the API key {key}"
        keys.add(key)
        assert re.fullmatch(r"[A-Za-z0-9][\w\-./()]{2,200}", f"iot_{key}"), key


def test_path_parameters_are_declared(tf):
    api = tf.resource("huaweicloud_apig_api", "route")
    (dynamic,) = [block["request_params"] for block in api["dynamic"] if "request_params" in block]
    (pattern,) = string_arguments(expression(dynamic["for_each"]), "regexall")
    assert "each.value.path" in dynamic["for_each"]
    content = first(dynamic["content"])
    assert content["name"] == "${request_params.value}"
    assert content["location"] == "PATH" and content["required"] is True
    routes = app_routes()
    assert any(r.params for r in routes)
    for route in routes:
        declared = [m.group(1) for m in re.finditer(pattern, route.path)]
        assert declared == list(route.params), f"{route.path}: APIG would declare {declared}"


def test_every_path_the_dashboard_reads_from_another_origin_answers_its_preflight_without_a_credential(tf):
    """From OBS the dashboard is another origin, and its reads carry Authorization: the browser first
    sends an OPTIONS preflight without it. Every path its scripts fetch that needs a credential has an
    OPTIONS API without authentication, on the function that owns the path, whose router answers it.
    APIG's own CORS switch is off everywhere: the functions' CORS headers (CORS_ORIGINS) decide."""
    api = tf.resource("huaweicloud_apig_api", "route")
    assert api["cors"] is False
    hcl = evaluated(tf, auth_enabled=True)
    apis = hcl.local("apis")
    authorizer = hcl.local("api_authorizer")
    preflights = {r["path"]: (key, r) for key, r in apis.items() if r["method"] == "OPTIONS"}
    static = Path(load_function("dashboard").__file__).parent / "static"
    fetched = set()
    for script in static.glob("*.js"):
        if ".min." in script.name:
            continue
        fetched |= set(re.findall(r"""["'`](/(?:api/[^"'`?$]*|health|ready))""", script.read_text()))
    assert fetched, "the dashboard's scripts name no API path?"
    gets = [r for r in app_routes() if r.method == "GET"]
    read = 0
    for path in sorted(fetched):
        serving = [r for r in gets if _template_prefix(r.path).startswith(path) or _matches(r.path, path)]
        for route in serving:
            read += 1
            if route.public:
                continue
            assert route.path in preflights, f"the dashboard reads {route.path}, which has no preflight API"
            key, preflight = preflights[route.path]
            assert preflight["function"] == route.function and authorizer[key] is None
            concrete = re.sub(r"\{\w+\}", "x", route.path)
            answer = load_function(route.function).app.dispatch(ApigRequest(method="OPTIONS", path=concrete))
            assert answer.status == 204, f"{route.function} does not answer the preflight of {concrete}"
    assert read, "the dashboard reads nothing from the query API?"
    # ... and exactly one preflight per path that needs a credential, none for public ones.
    assert set(preflights) == {r.path for r in app_routes() if not r.public}


def test_every_api_is_published_to_release(tf):
    published = tf.resource("huaweicloud_apig_api_publishment", "route")
    assert published["for_each"] == "${huaweicloud_apig_api.route}"
    assert published["api_id"] == "${each.value.id}"
    assert "data.huaweicloud_apig_environments.release" in published["env_id"]
    assert tf.data[("huaweicloud_apig_environments", "release")]["name"] == "RELEASE"
    assert "sl_domain" in tf.locals["api_url"]
    assert tf.outputs["api_url"]["value"] == "${local.api_url}"


# ---------------------------------------------------------------- functions and their settings


def test_every_function_is_deployed_with_initializers_in_the_vpc(tf):
    fn = tf.resource("huaweicloud_fgs_function", "fn")
    assert fn["for_each"] == "${var.functions}"
    assert sorted(tf.variables["functions"]["default"]) == package.function_names()
    assert tf.locals["runtime"] == package.RUNTIME
    assert fn["runtime"] == "${local.runtime}"
    assert fn["handler"] == "index.handler" and fn["initializer_handler"] == "index.initializer"
    for name in package.function_names():
        module = load_function(name)
        assert callable(module.handler) and callable(module.initializer), name
    assert fn["code_type"] == "zip" and "${local.dist_dir}/${each.key}.zip" in fn["func_code"]
    assert (
        fn["vpc_id"] == "${huaweicloud_vpc.main.id}"
        and fn["network_id"] == "${huaweicloud_vpc_subnet.app.id}"
    )
    assert fn["agency"] == "${local.agency}"
    assert fn["depend_list"] == ["${huaweicloud_fgs_dependency_version.common.version_id}"]
    dependency = tf.resource("huaweicloud_fgs_dependency_version", "common")
    assert (
        dependency["runtime"] == "${local.runtime}"
        and "huaweicloud_obs_bucket_object.deps.key" in dependency["link"]
    )


def evaluated(tf, **variables) -> Hcl:
    """The stack's locals for these variable values; what only exists after apply stays a ``Ref``."""
    return Hcl({"var": variables}, tf.locals, symbolic=True)


def test_every_setting_the_code_reads_has_a_value_and_secrets_come_from_sensitive_variables(tf):
    hcl = evaluated(tf, kafka_sasl_ssl=True)
    plain, secret = hcl.local("settings"), hcl.local("secret_settings")
    read_in_the_cloud = set().union(*FUNCTION_SETTINGS.values())
    assert set(Settings.names()) - read_in_the_cloud == LOCAL_ONLY_SETTINGS, (
        "a setting no function reads: give it to the functions that read it in FUNCTION_SETTINGS, or, if "
        "only the local runner reads it, add it to LOCAL_ONLY_SETTINGS here"
    )
    names = read_in_the_cloud
    missing = names - set(plain) - set(secret)
    assert not missing, f"settings the code reads but Terraform does not set: {sorted(missing)} (main.tf)"
    stale = (set(plain) | set(secret)) - names
    assert not stale, f"Terraform sets settings the code does not read: {sorted(stale)}"
    assert not set(plain) & set(secret), "a setting is both plain and secret"
    for name in names:
        if SECRET_NAME.search(name):
            assert name in SECRET_SETTINGS, f"{name} looks secret: list it in common.settings.SECRET_SETTINGS"
    for name, value in secret.items():
        variable = re.fullmatch(r"var\.(\w+)", str(value))
        generated = re.fullmatch(r"random_password\.(\w+)\.result", str(value))
        assert variable or generated, f"{name} must come straight from a variable or a random_password"
        if variable:
            assert tf.variables[variable.group(1)].get("sensitive") is True, (
                f"var.{variable.group(1)} is not sensitive"
            )
            assert "default" not in tf.variables[variable.group(1)]
        else:  # random_password's result is sensitive by its schema; strong and plain enough for RDS
            password = tf.resource("random_password", generated.group(1))
            assert password["length"] >= 32 and password["special"] is False, name
            assert tf.where[f"resource random_password.{generated.group(1)}"] == "secrets.tf"
    assert set(secret) == set(SECRET_SETTINGS)
    assert tf.variables["encrypt_secrets"]["default"] is True


def test_each_function_is_given_only_the_settings_it_reads(tf):
    """No function holds a secret it does not use: Terraform's map is the code's map, and each function's
    user data is built from its own entry of it."""
    in_terraform = {
        function: set(names) for function, names in evaluated(tf).local("function_settings").items()
    }
    assert in_terraform == {function: set(names) for function, names in FUNCTION_SETTINGS.items()}
    assert FUNCTION_SETTINGS["dashboard"] == frozenset()
    assert not FUNCTION_SETTINGS["consumer"] & {"KAFKA_SASL_PASSWORD"}, "the consumer never talks to Kafka"
    assert "REDIS_PASSWORD" not in FUNCTION_SETTINGS["ingest"], "ingest never talks to Redis"
    fn = tf.resource("huaweicloud_fgs_function", "fn")
    assert "local.function_user_data[each.key]" in fn["user_data"]
    assert "local.function_secrets[each.key]" in fn["encrypted_user_data"]
    # Evaluated: each function's user data holds exactly its own settings; secrets go to encrypted
    # user data unless encrypt_secrets is off, never to both.
    for encrypt in (True, False):
        hcl = evaluated(tf, encrypt_secrets=encrypt)
        plain, secrets = hcl.local("function_user_data"), hcl.local("function_secrets")
        for function, names in FUNCTION_SETTINGS.items():
            given = set(plain[function]) | set(secrets[function])
            assert given == set(names) and not set(plain[function]) & set(secrets[function]), function
            hidden = set(secrets[function])
            assert hidden == (names & SECRET_SETTINGS if encrypt else set()), function


def test_settings_defaults_in_terraform_match_the_code_where_they_should(tf):
    defaults = Settings()
    assert tf.variables["kafka_topic"]["default"] == defaults.kafka_topic
    assert tf.variables["redis_key_prefix"]["default"] == defaults.redis_key_prefix
    assert tf.variables["demo_mode"]["default"] is False, "delete-all stays off in the cloud"
    assert tf.variables["raw_retention_days"]["default"] == defaults.raw_retention_days
    assert tf.variables["rollup_retention_days"]["default"] == defaults.rollup_retention_days
    settings = evaluated(tf, raw_retention_days=30, rollup_retention_days=400).local("settings")
    assert (settings["RAW_RETENTION_DAYS"], settings["ROLLUP_RETENTION_DAYS"]) == ("30", "400")


# ---------------------------------------------------------------- Kafka trigger and consumer


def test_the_kafka_trigger_is_active_after_one_apply_and_reads_the_topic_ingest_writes(tf):
    trigger = tf.resource("huaweicloud_fgs_function_trigger", "readings")
    assert trigger["type"] == "KAFKA"
    # The provider creates a Kafka trigger DISABLED whatever `status` says; the status action enables it
    # in the same apply, and is replaced (so enables again) whenever the trigger is replaced.
    assert "status" not in trigger
    action = tf.resource("huaweicloud_fgs_function_trigger_status_action", "readings")
    assert action["trigger_status"] == "ACTIVE" and action["trigger_type_code"] == "KAFKA"
    assert action["trigger_id"] == "${huaweicloud_fgs_function_trigger.readings.id}"
    assert action["function_urn"] == "${huaweicloud_fgs_function_trigger.readings.function_urn}"
    assert action["event_data"] == trigger["event_data"] == "${jsonencode(local.kafka_trigger_event)}"
    assert action["enable_force_new"] == "true"
    assert first(action["lifecycle"])["replace_triggered_by"] == [
        "${huaweicloud_fgs_function_trigger.readings}"
    ]
    # It calls the consumer's `live` alias, never `latest`.
    assert trigger["function_urn"] == '${local.live_urns["consumer"]}'
    event = tf.locals["kafka_trigger_event"]
    assert "topic_ids   = [huaweicloud_dms_kafka_topic.readings.name]" in event or (
        "topic_ids = [huaweicloud_dms_kafka_topic.readings.name]" in event
    )
    assert "batch_size" in event and "var.kafka_trigger_batch_size" in event
    assert "huaweicloud_dms_kafka_instance.kafka.id" in event and "local.kafka_trigger_auth" in event
    # ingest writes the topic named by KAFKA_TOPIC, which is the same topic resource's name.
    assert evaluated(tf).local("settings")["KAFKA_TOPIC"] == "huaweicloud_dms_kafka_topic.readings.name"
    topic = tf.resource("huaweicloud_dms_kafka_topic", "readings")
    assert topic["name"] == "${var.kafka_topic}" and topic["partitions"] == "${var.kafka_partitions}"
    batch = tf.variables["kafka_trigger_batch_size"]
    assert batch["type"] == "number" and batch["validation"]


def test_the_first_apply_publishes_v1_with_the_live_alias_and_leaves_later_versions_to_deploy(tf):
    fn = tf.resource("huaweicloud_fgs_function", "fn")
    versions = first(fn["versions"])
    assert versions["name"] == "v1" and first(versions["aliases"])["name"] == "${local.live_alias}"
    assert tf.locals["live_alias"] == "live"
    assert set(first(fn["lifecycle"])["ignore_changes"]) >= {"func_code", "depend_list", "versions"}
    assert "local.live_alias" in tf.locals["live_urns"] and ":!" in tf.locals["live_urns"]


def test_the_consumer_has_async_retries_and_a_failure_destination(tf):
    config = tf.resource("huaweicloud_fgs_async_invoke_configuration", "consumer")
    assert config["function_urn"] == '${huaweicloud_fgs_function.fn["consumer"].urn}'
    assert config["max_async_retry_attempts"] == "${var.consumer_async_retries}"
    failure = first(config["on_failure"])
    assert failure["destination"] in {"OBS", "SMN", "DIS", "FunctionGraph"}
    assert "huaweicloud_obs_bucket.artifacts.bucket" in failure["param"]
    assert "local.failure_prefix" in failure["param"]


# ---------------------------------------------------------------- nothing private is reachable from the internet


def test_rds_dcs_and_kafka_are_not_reachable_from_the_internet(tf):
    kinds = {kind for kind, _ in tf.resources}
    public_kinds = {k for k in kinds if "eip" in k or "nat" in k or k.endswith("_public_access")}
    # The one way out: the optional NAT gateway for the functions' subnet (nat.tf, tests/test_terraform_alerts.py).
    outbound = {"huaweicloud_vpc_eip", "huaweicloud_nat_gateway", "huaweicloud_nat_snat_rule"}
    assert public_kinds == outbound, f"public addressing resources in the stack: {public_kinds - outbound}"
    assert all(tf.where[f"resource {k}.{n}"] == "nat.tf" for k, n in tf.resources if k in outbound)
    db = tf.resource("huaweicloud_rds_instance", "db")
    cache = tf.resource("huaweicloud_dcs_instance", "cache")
    kafka = tf.resource("huaweicloud_dms_kafka_instance", "kafka")
    for body in (db, cache, kafka):
        assert not {"public_ips", "public_ip_ids", "publicip_id", "enable_publicip", "eip_id"} & set(body)
        assert "huaweicloud_vpc_subnet.data.id" in refs(body.get("subnet_id") or body.get("network_id"))
    assert kafka["ssl_enable"] == "${var.kafka_sasl_ssl}" and "port_protocol" not in kafka
    assert cache["whitelist_enable"] is True
    assert [first(cache["whitelists"])["ip_address"]] == [["${local.app_cidr}"]]
    # Security groups: only the API gateway admits addresses outside the VPC, and only on 443.
    for name, rule in tf.of_type("huaweicloud_networking_secgroup_rule").items():
        if rule["direction"] != "ingress":
            continue
        remote = rule.get("remote_ip_prefix") or rule.get("remote_group_id")
        if "huaweicloud_networking_secgroup.apig" in rule["security_group_id"]:
            assert rule["port_range_min"] == rule["port_range_max"] == 443, name
            continue
        assert remote in ("${local.app_cidr}", "${huaweicloud_networking_secgroup.kafka.id}"), (
            f"{name} admits {remote}"
        )
    for sg in tf.of_type("huaweicloud_networking_secgroup").values():
        assert sg["delete_default_rules"] is True
    assert tf.resource("huaweicloud_obs_bucket", "artifacts")["acl"] == "private"
    assert tf.resource("huaweicloud_obs_bucket", "dashboard")["acl"] == "private"


# ---------------------------------------------------------------- the dashboard on OBS


def test_the_dashboard_bucket_serves_the_static_files_with_the_api_url(tf):
    site = first(tf.resource("huaweicloud_obs_bucket", "dashboard")["website"])
    assert site["index_document"] == "index.html"
    assert tf.locals["static_dir"].endswith('/../../functions/dashboard/static")}')
    config = tf.resource("huaweicloud_obs_bucket_object", "config")
    assert config["key"] == "static/config.js"
    assert "local.api_url" in config["content"] and "local.api_pattern" in config["content"]
    # The pattern Terraform replaces really is in config.js.
    (pattern,) = re.findall(r"^/(.*)/$", tf.locals["api_pattern"])
    config_js = (Path(load_function("dashboard").__file__).parent / "static" / "config.js").read_text()
    assert re.search(pattern.replace("\\\\", "\\"), config_js), "config.js has no apiBase entry to replace"
    for name in ("static", "pages", "config"):
        assert tf.resource("huaweicloud_obs_bucket_object", name)["acl"] == "public-read"
    assert tf.outputs["dashboard_url"]["value"] == "${local.dashboard_origin}/"
    assert "huaweicloud_obs_bucket.dashboard.bucket" in tf.locals["dashboard_origin"]


# ---------------------------------------------------------------- terraform itself, where it is installed


def test_terraform_fmt_check():
    binary = shutil.which("terraform")
    if binary is None:
        warnings.warn("terraform is not installed: `terraform fmt -check` was not run", stacklevel=1)
        return
    result = subprocess.run(
        [binary, "fmt", "-check", "-diff", "-recursive", "-no-color", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive infra/terraform`:\n{result.stdout}"


def test_terraform_validate(tmp_path):
    """Needs the huaweicloud provider; `terraform init` cannot download it without registry access."""
    binary = shutil.which("terraform")
    if binary is None:
        warnings.warn("terraform is not installed: `terraform validate` was not run", stacklevel=1)
        return
    work = tmp_path / "terraform"
    shutil.copytree(
        TERRAFORM_DIR, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "checkov")
    )
    init = subprocess.run(
        [binary, "init", "-backend=false", "-input=false", "-no-color"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        output = " ".join((init.stderr or init.stdout).split())
        match = re.search(r"could not connect to ([\w.-]+)", output)
        reason = f"no access to {match.group(1)}" if match else output[output.find("Error:") :][:300]
        warnings.warn(
            f"terraform validate was not run: `terraform init` could not install the huaweicloud provider "
            f"({reason}); the python-hcl2 cross-checks and terraform fmt ran",
            stacklevel=1,
        )
        return
    result = subprocess.run(
        [binary, "validate", "-no-color"], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- helpers


def _walk(body: object, key: str = ""):
    if isinstance(body, dict):
        for k, v in body.items():
            yield from _walk(v, k)
    elif isinstance(body, list):
        for item in body:
            yield from _walk(item, key)
    else:
        yield key, body


def _template_prefix(path: str) -> str:
    return path.split("{", 1)[0]


def _matches(template: str, path: str) -> bool:
    pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "/?$"
    return re.match(pattern, path) is not None
