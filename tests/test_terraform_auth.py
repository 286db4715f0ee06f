"""Credentials at the gateway, and least-privilege database accounts, in infra/terraform, offline.

What a user relies on: every route but the public ones (the dashboard's files, /health, /openapi.json)
and the CORS preflights asks APIG's custom authorizer (the authorizer function) for a credential before
its function runs; the function then gets the authorizer's answer, the credential id and its signature,
as the two headers common/auth.py reads; a refused credential is a 401 and a failed check a 503; a
revoked credential stops working within a minute; the authorizer function holds exactly the settings
it reads; reads and writes connect as their own RDS accounts.

The decisions (which API uses which authorizer, the backend parameters, the gateway responses, the
variables' validations) are evaluated as Terraform would evaluate them by tests/hcl_eval.py, and the
validations also by the terraform binary where it is installed (without a provider: offline). What APIG
does with them is docs/functiongraph.md, section 8.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest

from common.auth import CONTEXT_PARAMETERS
from common.settings import FUNCTION_SETTINGS, SECRET_SETTINGS, Settings
from deploy.routes import app_routes
from functions import load_function

from .hcl_eval import Hcl
from .terraform_config import TERRAFORM_DIR, Terraform, first, load
from .test_terraform_gateway import AUTHORIZER_IDS, DASHBOARD_BUCKET, RESPONSE_ID, SL_DOMAIN, stack

# The routes the contract keeps open: liveness, the API's description and the dashboard's files.
OPEN_ROUTES = {("query", "GET", "/health"), ("query", "GET", "/openapi.json")}
# A frontend authorizer's context key: a letter, then letters, digits, "_" or "-", 32 at most; and
# APIG's rules for a backend parameter's name (docs/functiongraph.md, section 8).
CONTEXT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
BACKEND_PARAMETER = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,31}")
# The error types of APIG's gateway responses, as provider v1.97.1 documents them (apig_response.md).
GATEWAY_ERROR_TYPES = {
    "ACCESS_DENIED",
    "AUTH_FAILURE",
    "AUTH_HEADER_MISSING",
    "AUTHORIZER_CONF_FAILURE",
    "AUTHORIZER_FAILURE",
    "AUTHORIZER_IDENTITIES_FAILURE",
    "BACKEND_TIMEOUT",
    "BACKEND_UNAVAILABLE",
    "NOT_FOUND",
    "REQUEST_PARAMETERS_FAILURE",
    "THROTTLED",
    "UNAUTHORIZED",
    "DEFAULT_4XX",
    "DEFAULT_5XX",
}


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


class Api:
    """One API of huaweicloud_apig_api.route, its arguments evaluated for one stack."""

    def __init__(self, tf, hcl: Hcl, key: str):
        self.key, self.route = key, hcl.local("apis")[key]
        resource = tf.resource("huaweicloud_apig_api", "route")
        each = {"key": key, "value": self.route}
        self.security = hcl.eval(resource["security_authentication"], each=each)
        self.authorizer_id = hcl.eval(resource["authorizer_id"], each=each)
        self.response_id = hcl.eval(resource["response_id"], each=each)
        (dynamic,) = [d["backend_params"] for d in resource["dynamic"] if "backend_params" in d]
        content = first(dynamic["content"])
        self.backend_params = [
            hcl.eval(content, each=each, backend_params={"key": k, "value": v})
            for k, v in hcl.eval(dynamic["for_each"], each=each).items()
        ]


def apis_of(tf, hcl: Hcl) -> dict[tuple[str, str, str], Api]:
    return {
        (r["function"], r["method"], r["path"]): Api(tf, hcl, key) for key, r in hcl.local("apis").items()
    }


def provider_value(param: dict) -> str:
    """The value the provider sends APIG for a backend parameter (resource_huaweicloud_apig_api.go,
    buildBackendParameterValue): a SYSTEM parameter of type frontend is $context.authorizer.frontend.<value>."""
    if param["type"] == "SYSTEM" and param["system_param_type"] in ("frontend", "backend"):
        return f"$context.authorizer.{param['system_param_type']}.{param['value']}"
    return param["value"]


# ---------------------------------------------------------------- which APIs ask for a credential


def test_every_api_that_needs_a_credential_asks_the_authorizer_and_hands_its_answer_to_the_function(tf):
    apis = apis_of(tf, stack(tf))
    expected_params = {
        (header, f"$context.authorizer.frontend.{key}") for key, header in CONTEXT_PARAMETERS.items()
    }
    needing = [r for r in app_routes() if not r.public]
    assert needing, "no route needs a credential?"
    for route in needing:
        api = apis[(route.function, route.method, route.path)]
        assert api.security == "AUTHORIZER", route
        # Devices may send X-Device-Token alone: ingest's authorizer names no identity source.
        assert api.authorizer_id == AUTHORIZER_IDS["ingest" if route.function == "ingest" else "credential"]
        assert api.response_id == RESPONSE_ID
        sent = {(p["name"].lower(), provider_value(p)) for p in api.backend_params}
        assert sent == expected_params, f"{route.method} {route.path}: {sent}"
        for param in api.backend_params:
            assert (param["type"], param["location"]) == ("SYSTEM", "HEADER")
            assert CONTEXT_KEY.fullmatch(param["value"]) and BACKEND_PARAMETER.fullmatch(param["name"])
            assert not param["name"].lower().startswith(("x-apig-", "x-sdk-")), "APIG refuses those names"


def test_the_contracts_open_routes_and_every_preflight_ask_for_no_credential(tf):
    routes = app_routes()
    public = {(r.function, r.method, r.path) for r in routes if r.public}
    dashboard = {(r.function, r.method, r.path) for r in routes if r.function == "dashboard"}
    assert public == OPEN_ROUTES | dashboard, "the routers' public routes are not the contract's open ones"
    apis = apis_of(tf, stack(tf))
    preflights = {key for key in apis if key[1] == "OPTIONS"}
    assert {path for _, _, path in preflights} == {r.path for r in routes if not r.public}
    for key in public | preflights:
        api = apis[key]
        assert (api.security, api.authorizer_id, api.response_id, api.backend_params) == (
            "NONE",
            None,
            None,
            [],
        )


def test_with_auth_off_no_api_uses_an_authorizer(tf):
    """APIG refuses authorizer parameters on an API without custom authentication (APIG.2036)."""
    for key, api in apis_of(tf, stack(tf, auth_enabled=False)).items():
        assert (api.security, api.authorizer_id, api.response_id, api.backend_params) == (
            "NONE",
            None,
            None,
            [],
        ), key


def test_the_function_reads_the_headers_the_gateway_writes(tf):
    """common/auth.py's names and apig.tf's, compared case-insensitively as HTTP does."""
    written = {key: header.lower() for key, header in tf.locals["authorizer_context_headers"].items()}
    assert written == {key: header.lower() for key, header in CONTEXT_PARAMETERS.items()}


# ---------------------------------------------------------------- the two authorizers


def test_two_frontend_authorizers_call_the_authorizer_functions_live_alias(tf):
    resource = tf.resource("huaweicloud_apig_custom_authorizer", "api")
    assert resource["for_each"] == "${local.authorizers}"
    assert resource["type"] == "FRONTEND"
    assert resource["function_urn"] == '${local.function_base_urns["authorizer"]}'
    assert resource["function_alias_uri"] == '${local.live_urns["authorizer"]}'
    assert resource["network_type"] == "${var.apig_function_network_type}"
    # The alias decides the version; "relaxed mode" and sending the body stay off.
    assert not {"function_version", "is_body_send", "user_data"} & set(resource)
    hcl = stack(tf, apig_authorizer_cache_seconds=20)
    authorizers = hcl.local("authorizers")
    assert set(authorizers) == set(AUTHORIZER_IDS)
    (identity,) = [d["identity"] for d in resource["dynamic"]]
    content = first(identity["content"])
    identities = {
        name: [
            hcl.eval(content, identity={"value": v})
            for v in hcl.eval(identity["for_each"], each={"value": a})
        ]
        for name, a in authorizers.items()
    }
    assert identities["credential"] == [{"name": "Authorization", "location": "HEADER"}]
    assert identities["ingest"] == [], "a device sending only X-Device-Token would get APIG's 401"
    # APIG caches an answer by its identity sources only: without one there is nothing to key it by.
    cache = {name: hcl.eval(resource["cache_age"], each={"value": a}) for name, a in authorizers.items()}
    assert cache == {"credential": 20, "ingest": 0}
    for name in authorizers:
        authorizer_name = hcl.eval(resource["name"], each={"key": name})
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{2,63}", authorizer_name), authorizer_name


def test_a_refused_credential_is_a_401_and_a_failed_check_a_503(tf):
    """APIG's defaults would be 500 for both; the group response the authorized APIs use says what the
    contract says, in the service's error shape, readable by the dashboard on OBS."""
    resource = tf.resource("huaweicloud_apig_response", "authorizer")
    assert resource["group_id"] == "${huaweicloud_apig_group.api.id}"
    hcl = stack(tf)
    (rule,) = [d["rule"] for d in resource["dynamic"]]
    content = first(rule["content"])
    (headers,) = [d["headers"] for d in content["dynamic"]]
    answers = {}
    for error_type, value in hcl.eval(rule["for_each"]).items():
        binding = {"rule": {"key": error_type, "value": value}}
        evaluated = hcl.eval({k: v for k, v in content.items() if k != "dynamic"}, **binding)
        sent_headers = {
            k: hcl.eval(first(headers["content"])["value"], headers={"key": k, "value": v}, **binding)
            for k, v in hcl.eval(headers["for_each"], **binding).items()
        }
        assert evaluated["error_type"] == error_type in GATEWAY_ERROR_TYPES
        body = json.loads(evaluated["body"])
        assert set(body) == {"error", "request_id"} and body["request_id"] == "$context.requestId"
        assert 0 < len(body["error"]) < 200 and body["error"][0].isupper()
        origin = f"https://{DASHBOARD_BUCKET}.obs-website.ap-southeast-1.myhuaweicloud.com"
        assert sent_headers["Access-Control-Allow-Origin"] == origin and sent_headers["Vary"] == "Origin"
        assert ("WWW-Authenticate" in sent_headers) == (evaluated["status_code"] == 401)
        answers[error_type] = evaluated["status_code"]
    assert answers == {
        "AUTHORIZER_FAILURE": 401,
        "AUTHORIZER_IDENTITIES_FAILURE": 401,
        "AUTHORIZER_CONF_FAILURE": 503,
    }


# ---------------------------------------------------------------- revocation within a minute


@pytest.mark.parametrize(
    ("apig", "function", "accepted"),
    [(30, 30, True), (0, 60, True), (60, 0, True), (45, 30, False), (31, 30, False), (61, 0, False)],
)
def test_revocation_takes_effect_within_a_minute(tf, apig, function, accepted):
    """APIG may answer from its cache for apig_authorizer_cache_seconds, then a function instance from
    its own for auth_cache_seconds: together at most 60."""
    hcl = Hcl({"var": {"apig_authorizer_cache_seconds": apig, "auth_cache_seconds": function}}, {})
    conditions = [
        v["condition"]
        for name in ("apig_authorizer_cache_seconds", "auth_cache_seconds")
        for v in tf.variables[name]["validation"]
    ]
    assert all(hcl.eval(c) for c in conditions) is accepted


def test_the_terraform_binary_refuses_caches_that_add_up_to_more_than_a_minute(tmp_path):
    binary = shutil.which("terraform")
    if binary is None:
        warnings.warn("terraform is not installed: the auth cache validation was not run", stacklevel=1)
        return
    terraform = Terraform(binary, tmp_path / "terraform", {}, {})
    ok, _, complaint = terraform.apply(apig_authorizer_cache_seconds=45, auth_cache_seconds=30)
    assert not ok and "at most 60" in complaint, complaint
    ok, _, complaint = terraform.apply(apig_authorizer_cache_seconds=30, auth_cache_seconds=30)
    assert ok, complaint
    ok, _, complaint = terraform.apply()  # the defaults
    assert ok, complaint


def test_the_defaults_revoke_within_a_minute(tf):
    defaults = {
        name: tf.variables[name]["default"]
        for name in ("apig_authorizer_cache_seconds", "auth_cache_seconds")
    }
    assert 0 < defaults["apig_authorizer_cache_seconds"] and sum(defaults.values()) <= 60
    assert "1.9" in tf.files["versions.tf"]["terraform"][0]["required_version"], (
        "a validation that reads another variable needs Terraform 1.9"
    )


# ---------------------------------------------------------------- the authorizer function and the accounts


def symbolic(tf, **variables) -> Hcl:
    env = {
        "var": variables,
        "huaweicloud_obs_bucket": {"dashboard": {"bucket": DASHBOARD_BUCKET}},
        "data": {"huaweicloud_apig_groups": {"api": {"groups": [{"sl_domain": SL_DOMAIN}]}}},
    }
    return Hcl(env, tf.locals, symbolic=True)


def test_the_authorizer_function_is_deployed_like_the_others_with_exactly_its_settings(tf):
    module = load_function("authorizer")
    assert callable(module.handler) and callable(module.initializer)
    size = tf.variables["functions"]["default"]["authorizer"]
    assert size["max_instances"] >= tf.variables["functions"]["default"]["ingest"]["max_instances"]
    hcl = symbolic(tf, encrypt_secrets=True)
    plain = hcl.local("function_user_data")["authorizer"]
    hidden = hcl.local("function_secrets")["authorizer"]
    assert set(plain) | set(hidden) == FUNCTION_SETTINGS["authorizer"]
    assert set(hidden) == FUNCTION_SETTINGS["authorizer"] & SECRET_SETTINGS
    assert {"AUTH_CONTEXT_SECRET", "DB_READER_PASSWORD"} <= set(hidden)
    assert not {"DB_PASSWORD", "DB_WRITER_PASSWORD", "REDIS_PASSWORD"} & (set(plain) | set(hidden))
    # One key signs and checks: every function that reads it gets the same generated secret.
    secrets = hcl.local("secret_settings")
    assert secrets["AUTH_CONTEXT_SECRET"] == "random_password.auth_context.result"
    assert tf.resource("random_password", "auth_context")["length"] >= 32


def test_reads_and_writes_connect_as_their_own_rds_accounts(tf):
    for role in ("reader", "writer"):
        account = tf.resource("huaweicloud_rds_pg_account", role)
        assert account["instance_id"] == "${huaweicloud_rds_instance.db.id}"
        assert account["name"] == f"${{var.db_{role}_user}}"
        assert account["password"] == f"${{random_password.db_{role}.result}}"
        assert tf.where[f"resource huaweicloud_rds_pg_account.{role}"] == "database.tf"
    hcl = symbolic(tf)
    settings, secrets = hcl.local("settings"), hcl.local("secret_settings")
    assert settings["DB_READER_USER"] == "huaweicloud_rds_pg_account.reader.name"
    assert settings["DB_WRITER_USER"] == "huaweicloud_rds_pg_account.writer.name"
    assert settings["DB_USER"] == "huaweicloud_rds_pg_account.service.name"
    assert secrets["DB_READER_PASSWORD"] == "random_password.db_reader.result"
    assert secrets["DB_WRITER_PASSWORD"] == "random_password.db_writer.result"
    # Three accounts, three names: the variables refuse one account for two roles.
    defaults = {
        name: tf.variables[name]["default"] for name in ("db_user", "db_reader_user", "db_writer_user")
    }
    assert len(set(defaults.values())) == 3
    distinct = [
        v["condition"] for v in tf.variables["db_writer_user"]["validation"] if "distinct" in v["condition"]
    ]
    assert Hcl({"var": defaults}, {}).eval(distinct[0]) is True
    assert Hcl({"var": {**defaults, "db_reader_user": defaults["db_user"]}}, {}).eval(distinct[0]) is False
    # Only the functions that migrate hold the owner's password.
    owners = {name for name, names in FUNCTION_SETTINGS.items() if "DB_PASSWORD" in names}
    assert owners == {"consumer", "maintenance"}


@pytest.mark.parametrize("domain", ["", "api.example.com"])
def test_cors_origins_are_the_dashboard_site_and_the_apis_own_address(tf, domain):
    origins = symbolic(tf, api_domain=domain, region="ap-southeast-1").local("settings")["CORS_ORIGINS"]
    site = f"https://{DASHBOARD_BUCKET}.obs-website.ap-southeast-1.myhuaweicloud.com"
    api = f"https://{domain or SL_DOMAIN}"
    assert origins == f"{site},{api}"
    assert Settings(auth_enabled=True, cors_origins=origins).origins == (site, api)  # auth on refuses "*"
