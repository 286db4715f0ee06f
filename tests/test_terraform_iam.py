"""The FunctionGraph agency (infra/terraform/iam.tf) and the OBS remote-state example, offline.

The agency must hold what FunctionGraph does for these functions and nothing more. What it needs is
derived from the stack itself (functions in a VPC, a Kafka trigger, an OBS failure destination) and
from Huawei's documented minimum actions for each, so a new feature that needs a permission, or a
permission no feature needs, makes these tests fail. backend.tf.example is parsed as HCL and read for
what an operator relies on: an s3 backend that talks to OBS, and plain warnings about locking and
secrets.
"""

from __future__ import annotations

import fnmatch
import re
import textwrap
from pathlib import Path

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from .terraform_config import TERRAFORM_DIR, expression, first, hcl_unescape, load

ROOT = TERRAFORM_DIR.parent.parent
BACKEND_EXAMPLE = TERRAFORM_DIR / "backend.tf.example"

# System roles that grant a whole service (or every service) rather than what a feature needs.
BROAD_ROLE = re.compile(r"Administrator|FullAccess|OperateAccess|Tenant Guest", re.IGNORECASE)
# An IAM action, service:resource:operation, spelled out (no wildcard anywhere).
EXPLICIT_ACTION = re.compile(r"^[a-z][a-z0-9]*:[A-Za-z][A-Za-z0-9]*:[A-Za-z][A-Za-z0-9]*$")
# Services IAM grants in the global project (custom policy type AX); the rest are regional (XA).
GLOBAL_SERVICES = {"obs"}

# Huawei's documented fine-grained minimum per feature (FunctionGraph "Configuring Agency
# Permissions", functiongraph_01_0920; VPC access: EventGrid's FunctionGraph agency, eg-ug-035).
VPC_ACCESS = {"vpc:ports:create", "vpc:ports:delete", "vpc:ports:get", "vpc:subnets:get", "vpc:vpcs:get"}
DMS_TRIGGER = {"dms:instance:get"}
OBS_DESTINATION_BUCKET = {"obs:bucket:HeadBucket", "obs:bucket:CreateBucket"}
OBS_DESTINATION_OBJECT = {"obs:object:PutObject"}
SMN_PUBLISH = {"smn:topic:publish"}
SMN_DESTINATION = {"smn:topic:publish", "smn:topic:list"}

ROLE_ARGUMENTS = ("domain_roles", "all_resources_roles")
ROLE_BLOCKS = ("project_role", "enterprise_project_roles")
S3_SKIPS = (
    "skip_region_validation",
    "skip_credentials_validation",
    "skip_requesting_account_id",
    "skip_metadata_api_check",
    "skip_s3_checksum",
)


@pytest.fixture(scope="module")
def tf():
    return load(TERRAFORM_DIR)


def text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def role_refs(value: object) -> list[str]:
    """The huaweicloud_identity_role resources an expression names."""
    return re.findall(r"\bhuaweicloud_identity_role\.(\w+)\b", text(value))


def role_entries(agency: dict) -> list[tuple[str, str]]:
    """Every (scope, role value) the agency grants: literals, references, or whole expressions."""
    entries = []
    for name in ROLE_ARGUMENTS:
        for value in _as_list(agency.get(name)):
            entries.append((name, value))
    for name in ROLE_BLOCKS:
        for block in _as_list(agency.get(name)):
            for value in _as_list(block.get("roles")):
                entries.append((name, value))
    return entries


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def literal_role_names(tf, value: object) -> list[str]:
    """The role names spelled out in a value: itself when a literal, else the string literals of the
    expression and of the locals it uses (resolved one level deep, as iam.tf writes them)."""
    expr = expression(value)
    if expr is None:
        return [value] if isinstance(value, str) else []
    names = [hcl_unescape(m) for m in re.findall(r'"((?:[^"\\]|\\.)*)"', expr)]
    for local in re.findall(r"\blocal\.(\w+)\b", expr):
        resolved = tf.locals.get(local)
        names += [v for v in _as_list(resolved) if isinstance(v, str) and expression(v) is None]
    return names


def policy(tf, role_name: str) -> dict:
    role = tf.resource("huaweicloud_identity_role", role_name)
    match = re.fullmatch(r"jsonencode\(local\.(\w+)\)", expression(role["policy"]) or "")
    assert match, f"huaweicloud_identity_role.{role_name}.policy should be jsonencode(local.<policy>)"
    return tf.locals[match.group(1)]


def actions(document: dict) -> set[str]:
    return {action for statement in document["Statement"] for action in statement["Action"]}


def service(action: str) -> str:
    return action.split(":", 1)[0]


@pytest.fixture(scope="module")
def agency(tf):
    return tf.resource("huaweicloud_identity_agency", "functions")


# ---------------------------------------------------------------- the agency


def test_the_functions_run_as_the_created_agency_unless_an_existing_one_is_named(tf):
    assert tf.where["resource huaweicloud_identity_agency.functions"] == "iam.tf"
    assert tf.variables["fgs_agency_name"]["default"] == ""
    assert expression(tf.locals["create_agency"]) == 'var.fgs_agency_name == ""'
    chosen = expression(tf.locals["agency"])
    assert "huaweicloud_identity_agency.functions[0].name" in chosen and "var.fgs_agency_name" in chosen
    # the agency and its custom policies exist together, or not at all
    for kind, name in [("huaweicloud_identity_agency", "functions")] + [
        ("huaweicloud_identity_role", role) for role in tf.of_type("huaweicloud_identity_role")
    ]:
        assert tf.resource(kind, name)["count"] == "${local.create_agency ? 1 : 0}", f"{kind}.{name}"
    for name, fn in tf.of_type("huaweicloud_fgs_function").items():
        assert fn["agency"] == "${local.agency}", name


def test_the_agency_holds_no_broad_system_role(tf, agency):
    entries = role_entries(agency)
    assert entries, "the agency grants nothing"
    for scope, value in entries:
        for name in literal_role_names(tf, value):
            assert not BROAD_ROLE.search(name), f"{scope} grants the broad system role {name!r}"
        for ref in role_refs(value):
            assert ("huaweicloud_identity_role", ref) in tf.resources, f"{scope} names an unknown role {ref}"
    # every region, every enterprise project: wider than one region's functions need
    assert not agency.get("all_resources_roles") and not agency.get("enterprise_project_roles")


def test_a_fallback_role_is_off_by_default_and_read_only(tf, agency):
    fallback = tf.variables["fgs_agency_dms_readonly_fallback"]
    assert fallback["type"] == "bool" and fallback["default"] is False
    roles = first(agency["project_role"])["roles"]
    assert "var.fgs_agency_dms_readonly_fallback" in text(roles)
    added = [n for n in literal_role_names(tf, roles) if n]
    assert added and all(name.endswith("ReadOnlyAccess") for name in added), added


def test_every_custom_policy_spells_out_its_actions_and_keeps_to_one_scope(tf):
    roles = tf.of_type("huaweicloud_identity_role")
    assert roles, "iam.tf defines no custom policy"
    for name, role in roles.items():
        assert role["type"] in {"AX", "XA"}, name
        document = policy(tf, name)
        assert document["Version"] == "1.1" and document["Statement"], name
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow", name
            assert isinstance(statement["Action"], list) and statement["Action"], name
            for action in statement["Action"]:
                assert "*" not in action and EXPLICIT_ACTION.match(action), f"{name}: {action!r}"
            for resource in statement.get("Resource", []):
                assert not re.search(r":\*$", resource), f"{name}: {resource!r} is every resource"
        # IAM refuses a custom policy that mixes global and regional services
        is_global = {service(a) in GLOBAL_SERVICES for a in actions(document)}
        assert is_global == {role["type"] == "AX"}, (
            f"{name}: type {role['type']} with {sorted(actions(document))}"
        )


def test_regional_permissions_are_exactly_what_the_stack_uses_in_its_own_region(tf, agency):
    needed = set()
    if any(fn.get("vpc_id") for fn in tf.of_type("huaweicloud_fgs_function").values()):
        needed |= VPC_ACCESS
    if any(t.get("type") == "KAFKA" for t in tf.of_type("huaweicloud_fgs_function_trigger").values()):
        needed |= DMS_TRIGGER
    destinations = [
        first(config.get(outcome)).get("destination")
        for config in tf.of_type("huaweicloud_fgs_async_invoke_configuration").values()
        for outcome in ("on_success", "on_failure")
    ]
    if "SMN" in destinations:
        needed |= SMN_DESTINATION
    if "huaweicloud_smn_topic." in text(tf.locals["settings"]):  # the code publishes with the agency's keys
        needed |= SMN_PUBLISH
    assert needed, "the stack has no function in a VPC and no Kafka trigger any more: revisit iam.tf"

    blocks = _as_list(agency.get("project_role"))
    assert [b["project"] for b in blocks] == ["${var.region}"]
    granted = set()
    for ref in role_refs(blocks[0]["roles"]):
        assert tf.resource("huaweicloud_identity_role", ref)["type"] == "XA", ref
        granted |= actions(policy(tf, ref))
    assert granted == needed, f"missing {sorted(needed - granted)}, not needed {sorted(granted - needed)}"


def obs_destinations(tf) -> list[tuple[str, str]]:
    """(bucket, prefix) expressions of every asynchronous-invocation destination that is OBS."""
    found = []
    for config in tf.of_type("huaweicloud_fgs_async_invoke_configuration").values():
        for outcome in ("on_success", "on_failure"):
            target = first(config.get(outcome))
            if target.get("destination") == "OBS":
                param = expression(target["param"])
                bucket = re.search(r"\bbucket\s*=\s*([\w.\[\]\"]+)", param).group(1)
                prefix = re.search(r"\bprefix\s*=\s*([\w.\[\]\"]+)", param).group(1)
                found.append((bucket, prefix))
    return found


def test_obs_is_granted_globally_and_only_on_the_failure_destination(tf, agency):
    destinations = obs_destinations(tf)
    assert ("huaweicloud_obs_bucket.artifacts.bucket", "local.failure_prefix") in destinations
    bucket_paths = {f"obs:*:*:bucket:${{{bucket}}}" for bucket, _ in destinations}
    object_paths = {
        f"obs:*:*:object:${{{bucket}}}/${{{prefix}}}{tail}"
        for bucket, prefix in destinations
        for tail in ("*", "/*")
    }

    obs_roles = [
        r
        for r in tf.of_type("huaweicloud_identity_role")
        if any(service(a) == "obs" for a in actions(policy(tf, r)))
    ]
    assert obs_roles, "no custom policy lets FunctionGraph write the failure records"
    domain = {ref for value in _as_list(agency.get("domain_roles")) for ref in role_refs(value)}
    project = {ref for b in _as_list(agency.get("project_role")) for ref in role_refs(b["roles"])}
    writable = set()
    for name in obs_roles:
        assert tf.resource("huaweicloud_identity_role", name)["type"] == "AX", name
        assert name in domain and name not in project, f"{name} must be granted for global services"
        for statement in policy(tf, name)["Statement"]:
            kinds = {a.split(":")[1] for a in statement["Action"]}
            assert kinds in ({"bucket"}, {"object"}), f"{name}: mixes bucket and object actions"
            resources = statement.get("Resource")
            assert resources, f"{name}: an OBS statement without Resource covers every bucket"
            allowed = bucket_paths if kinds == {"bucket"} else object_paths
            assert set(resources) <= allowed, f"{name}: {resources} reaches beyond the failure records"
            assert set(statement["Action"]) <= OBS_DESTINATION_BUCKET | OBS_DESTINATION_OBJECT, name
            if OBS_DESTINATION_OBJECT <= set(statement["Action"]):
                writable |= set(resources)
    for bucket, prefix in destinations:
        wanted = {f"obs:*:*:object:${{{bucket}}}/${{{prefix}}}{tail}" for tail in ("*", "/*")}
        assert writable & wanted, f"FunctionGraph cannot write to {bucket} under {prefix}"


# ---------------------------------------------------------------- remote state


def parse_backend_example(with_comments: bool = False) -> dict:
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=with_comments
    )
    with BACKEND_EXAMPLE.open() as handle:
        return hcl2.load(handle, serialization_options=options)


def s3_backend() -> dict:
    terraform = first(parse_backend_example()["terraform"])
    backends = first(terraform["backend"])
    assert list(backends) == ["s3"], backends
    return backends["s3"]


def comments() -> str:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "__comments__":
                    found.extend(c["value"] for c in value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(parse_backend_example(with_comments=True))
    return " ".join(found)


def test_the_backend_example_is_an_s3_backend_that_talks_to_obs_in_its_region():
    assert not BACKEND_EXAMPLE.name.endswith(".tf"), "the example must not switch the backend by itself"
    backend = s3_backend()
    assert backend["bucket"] and backend["region"]
    key = backend["key"]
    assert key and not key.startswith("/") and not key.endswith("/") and "//" not in key
    endpoint = backend["endpoints"]["s3"]
    match = re.fullmatch(r"https://obs\.([a-z0-9-]+)\.myhuaweicloud\.com", endpoint)
    assert match and match.group(1) == backend["region"], endpoint
    for skip in S3_SKIPS:
        assert backend.get(skip) is True, f"{skip} must be true: OBS has no such AWS service"
    assert isinstance(backend.get("use_path_style"), bool)
    # names Terraform >= 1.6 deprecates, credentials that belong in the environment, and a lock OBS
    # cannot honour
    for name in (
        "endpoint",
        "force_path_style",
        "dynamodb_table",
        "dynamodb_endpoint",
        "iam_endpoint",
        "sts_endpoint",
        "shared_credentials_file",
        "access_key",
        "secret_key",
        "token",
        "sse_customer_key",
    ):
        assert name not in backend, name
    assert backend.get("use_lockfile") is not True


def test_the_backend_example_says_plainly_that_state_is_unlocked_and_holds_secrets():
    said = comments().lower()
    assert "no state locking" in said and "one operator at a time" in said
    assert "secret" in said and "clear text" in said and "password" in said
    assert "versioning" in said and "private" in said
    gitignore = (ROOT / ".gitignore").read_text().split()
    for name in ("terraform.tfstate", "terraform.tfstate.backup", "infra/terraform/terraform.tfstate"):
        assert any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in gitignore), name


def test_the_state_bucket_recipe_is_private_versioned_and_encrypted():
    lines = BACKEND_EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if 'provider "huaweicloud"' in line)
    recipe = []
    for line in lines[start:]:
        if not line.startswith("#") or re.match(r"#\s+\d+\.\s", line):
            break
        recipe.append(line[1:])
    parsed = hcl2.loads(
        textwrap.dedent("\n".join(recipe)),
        serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False),
    )
    bucket = first(parsed["resource"])["huaweicloud_obs_bucket"]
    (state_bucket,) = bucket.values()
    assert state_bucket["acl"] == "private"
    assert state_bucket["versioning"] is True
    assert state_bucket["encryption"] is True
    assert first(parsed["provider"])["huaweicloud"]["region"] == s3_backend()["region"]
    assert state_bucket["bucket"] == s3_backend()["bucket"]
    rule = first(state_bucket["lifecycle_rule"])
    assert first(rule["noncurrent_version_expiration"])["days"] > 0
