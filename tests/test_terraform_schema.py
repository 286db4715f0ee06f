"""Every root module under infra/terraform checked against the huaweicloud provider's schema, offline.

`terraform validate` needs the provider download; this check needs only the trimmed schema facts
committed in infra/terraform/provider-schema/ (its README says where they come from and how to
regenerate them). For every ``resource`` and ``data`` block of every directory holding .tf files:

- the type exists in the facts; types of other providers are skipped only when their provider is in
  NOT_COVERED_PROVIDERS, and each skipped block is reported as a warning, never silently;
- every argument is known and settable, and every nested block (static, or the ``content`` of a
  ``dynamic`` block) is a block of that resource or of its parent block, with known arguments;
- every Required argument is set, at the top and inside each nested block;
- the Go schema's rules hold: RequiredWith, ConflictsWith, ExactlyOneOf, AtLeastOneOf, and the
  allowed values of a StringInSlice (``one_of``).

The facts have three sources that can disagree. "args" and "blocks" come from the documentation
page; "schema" is the Go schema flattened (nested keys beside top-level ones, the flags of a name used
at several levels merged); "schema_tree" is the Go schema as a tree, each key with its own flags, read
from the provider's source by scripts/provider_schema.py. The tree is the truth wherever it could be
read; the page fills in where it could not (a block whose keys a function elsewhere builds). Hence:

- **known** where the tree has the level's keys = a key flagged R, O or F (F: its schema comes from
  a function, as ``tags`` does): internal keys such as ``enable_force_new`` and deprecated names such
  as ``available_zones`` count, and a documented argument the Go schema lacks does not (Terraform
  would refuse it). Elsewhere = the documented block's arguments, plus keys of the flattened schema
  that no page documents and that are not top-level keys (deprecated or internal nested keys).
- **Required** where the tree has the keys = flagged R there (the page can be wrong both ways:
  ``availability_zones`` of huaweicloud_apig_instance is documented Required and is Optional in Go).
  Elsewhere = Required on the page AND (absent from the flattened schema, or flagged R there),
  because the page alone is sometimes wrong and a flattened R may belong to another key of that name.
- **computed only** (flags without R, O or F) is reported when set: Terraform refuses a value.
- a **block** is a tree key with a block schema; written ``x = ...`` it is reported (unless its
  schema allows that syntax), and so is a plain argument written ``x { ... }``. Where the tree cannot
  say, the page's block of that name describes the contents, wherever the page placed it; a block
  neither describes is noted as a warning, its contents unchecked.
- **set** = present and not the literal ``null``; a block, static or dynamic, is present.
  Presence is "maybe" for what may evaluate to null or to no block: an expression containing
  ``null``, a reference to a variable whose default is null, a dynamic block. A maybe counts as set
  for Required, RequiredWith, AtLeastOneOf and "none of ExactlyOneOf", and as absent for
  ConflictsWith and "several of ExactlyOneOf" (the provider's examples pick one of two arguments
  with ``cond ? x : null``). This mirrors the SDK (terraform-plugin-sdk v2, helper/schema/schema.go),
  which counts unknown values as set and defers conflicts on them.
- **rules** apply to the top-level keys the facts record them for: RequiredWith and ConflictsWith
  only when the key itself is set; ExactlyOneOf and AtLeastOneOf over the key and its list.
  ``one_of`` is checked on literal values only: an expression's value is unknown until Terraform
  evaluates it, so it is skipped, as the SDK skips unknown values.

Each violation reads ``file:type.name: message`` (``data.type.name`` for a data source), and the
check collects all of them before failing, so one run lists everything.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_script(name: str):
    """A module of scripts/, loaded by its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


provider_schema = _load_script("provider_schema")
TERRAFORM_DIR = provider_schema.TERRAFORM_DIR
SCHEMA_DIR = provider_schema.SCHEMA_DIR

# Arguments and blocks Terraform itself handles, in every resource and data block.
META_ARGUMENTS = frozenset(
    {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
)
# Providers whose types these facts do not describe, and so are not checked here. Add a provider
# only once something else vouches for its blocks (its own facts, or a `terraform validate` run).
NOT_COVERED_PROVIDERS = {
    "random": "hashicorp/random",
    "null": "hashicorp/null",
    "time": "hashicorp/time",
    "terraform": "built into Terraform (terraform_data)",
}
SETTABLE_FLAGS = frozenset("ORF")


def facts_path() -> Path:
    found = sorted(SCHEMA_DIR.glob(f"{provider_schema.PROVIDER}-*.json"))
    assert len(found) == 1, (
        f"expected one {provider_schema.PROVIDER}-<version>.json in {SCHEMA_DIR}, found {found}"
    )
    return found[0]


@pytest.fixture(scope="module")
def facts() -> dict:
    return json.loads(facts_path().read_text(encoding="utf-8"))


def regenerate_hint(key: str) -> str:
    return (
        f"{key} is not in {facts_path().relative_to(ROOT)}: regenerate it with "
        f"`{provider_schema.COMMAND} --also {key}` (infra/terraform/provider-schema/README.md)"
    )


# ---------------------------------------------------------------- the facts of one type


@dataclass(frozen=True)
class Level:
    """What may and must be written at one level of a type: the top, or inside one nested block."""

    path: str  # "" at the top, "func_graph", "versions.aliases", ...
    args: dict[str, str]  # documented argument -> its documentation flags ("Required String ...")
    known: frozenset[str]
    required: frozenset[str]
    go: dict | None = None  # the Go schema tree of this level, when it could be read
    checked: bool = True  # False: a block whose contents the facts do not describe

    def label(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def _settable(flags: str) -> bool:
    return bool(set(flags) & SETTABLE_FLAGS)


def _go_level(path: str, args: dict[str, str], tree: dict) -> Level:
    return Level(
        path,
        args,
        frozenset(key for key, node in tree.items() if _settable(node["flags"])),
        frozenset(key for key, node in tree.items() if "R" in node["flags"]),
        go=tree,
    )


class TypeFacts:
    def __init__(self, entry: dict):
        self.entry = entry
        self.tree: dict = entry["schema_tree"]
        self.flattened: dict[str, str] = entry.get("schema", {})
        self.blocks: dict[str, dict] = entry.get("blocks", {})
        self.blocks_by_name: dict[str, list[str]] = entry.get("blocks_by_name", {})
        self.constraints: dict[str, dict] = entry.get("schema_constraints", {})
        documented = set(entry.get("args", {}))
        for block in self.blocks.values():
            documented.update(block["args"])
        # Keys of some nested block that no page documents (deprecated or internal names).
        self.undocumented_nested = frozenset(
            key
            for key, flags in self.flattened.items()
            if _settable(flags) and key not in documented and key not in self.tree
        )
        self.linked = {
            anchor
            for args in [entry.get("args", {}), *(b["args"] for b in self.blocks.values())]
            for spec in args.values()
            if (anchor := _anchor(spec))
        }
        self.top = _go_level("", entry.get("args", {}), self.tree)

    def node(self, level: Level, name: str) -> dict | None:
        return level.go.get(name) if level.go is not None else None

    def computed_only(self, level: Level, name: str) -> bool:
        if level.go is not None:
            flags = level.go[name]["flags"] if name in level.go else None
        else:
            flags = self.flattened.get(name)
        return flags is not None and not _settable(flags)

    def must_be_block(self, level: Level, name: str, value: object) -> bool:
        """Whether ``name = value`` should have been written as a block ``name { ... }``."""
        node = self.node(level, name)
        if node is not None and isinstance(node.get("block"), dict):
            return not node.get("attribute_syntax")
        object_like = isinstance(value, dict) or (
            isinstance(value, list) and value and isinstance(value[0], dict)
        )
        if node is not None and "block" in node:
            return object_like
        # Only the page to go by: a Map argument may link to a section listing its keys.
        kind = level.args.get(name, "").split(" ")[1:2]
        return level.go is None and object_like and bool(self.block_ids(level, name)) and kind != ["Map"]

    def is_argument(self, level: Level, name: str) -> bool:
        """Whether the Go schema says ``name`` is a plain argument here (so ``name { ... }`` is wrong)."""
        node = self.node(level, name)
        return node is not None and "block" not in node and node["flags"] != "F"

    def block_ids(self, parent: Level, name: str) -> list[str]:
        """The documented blocks ``name`` may be inside ``parent``: the one its argument links to, else
        every block of that name when ``parent`` has that argument, else the blocks of that name that
        no argument links to (the page did not say where they go)."""
        anchor = _anchor(parent.args.get(name, ""))
        if anchor in self.blocks:
            return [anchor]
        ids = self.blocks_by_name.get(name, [])
        if name in parent.args or (parent.go is not None and name in parent.go):
            return ids
        return [i for i in ids if i not in self.linked and not self.blocks[i].get("from_attribute_section")]

    def child(self, parent: Level, name: str) -> Level | None:
        """The level inside block ``name`` written in ``parent``, or None if no such block exists."""
        path = parent.label(name)
        if not parent.path and name == "timeouts":
            keys = self.entry.get("timeouts")
            return Level(path, {}, frozenset(keys), frozenset()) if keys else None
        if name not in parent.known:
            return None
        ids = self.block_ids(parent, name)
        args: dict[str, str] = {}
        for block_id in ids:
            args.update(self.blocks[block_id]["args"])
        node = self.node(parent, name)
        if node is not None and isinstance(node.get("block"), dict):
            return _go_level(path, args, node["block"])
        if not ids:  # neither the Go scanner nor the page describe its contents
            return Level(path, {}, frozenset(), frozenset(), checked=False)
        required = set.intersection(
            *(
                {n for n, spec in self.blocks[i]["args"].items() if self._documented_required(n, spec)}
                for i in ids
            )
        )
        return Level(path, args, frozenset(args) | self.undocumented_nested, frozenset(required))

    def _documented_required(self, name: str, spec: str) -> bool:
        return spec.split(" ", 1)[0] == "Required" and (
            name not in self.flattened or "R" in self.flattened[name]
        )


def _anchor(spec: str) -> str | None:
    return spec.split("->", 1)[1].strip().lstrip("#") if "->" in spec else None


# ---------------------------------------------------------------- the check


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # deprecations, skipped types, unchecked blocks


def check_module(directory: Path, facts: dict, relative_to: Path | None = None) -> Report:
    """Every resource and data block of the .tf files in ``directory`` against ``facts``."""
    report = Report()
    parsed = {path: provider_schema.parse_tf(path) for path in sorted(directory.glob("*.tf"))}
    null_variables = {
        name
        for tree in parsed.values()
        for block in tree.get("variable", [])
        for name, body in block.items()
        if isinstance(body, dict) and "default" in body and body["default"] is None
    }
    for path, tree in parsed.items():
        label = str(path.relative_to(relative_to)) if relative_to else path.name
        for kind, section in provider_schema.SECTIONS.items():
            for block in tree.get(kind, []):
                for type_name, named in block.items():
                    for name, body in named.items():
                        if name == "__is_block__":
                            continue
                        key = provider_schema.type_key(kind, type_name)
                        where = f"{label}:{key}.{name}"
                        entry = _facts_of(where, key, section, type_name, facts, report)
                        if entry is not None:
                            _TypeCheck(where, TypeFacts(entry), null_variables, report).run(body)
    return report


def _facts_of(where: str, key: str, section: str, type_name: str, facts: dict, report: Report) -> dict | None:
    """The facts of one block's type, or None (with the reason in ``report``) when it is not checked."""
    provider = type_name.split("_", 1)[0]
    if provider != provider_schema.PROVIDER:
        if provider in NOT_COVERED_PROVIDERS:
            report.notes.append(f"{where}: not checked, provider {NOT_COVERED_PROVIDERS[provider]}")
        else:
            report.violations.append(
                f"{where}: provider `{provider}` is neither in the facts nor in NOT_COVERED_PROVIDERS"
            )
        return None
    entry = facts[section].get(type_name)
    if entry is None:
        report.violations.append(f"{where}: {regenerate_hint(key)}")
        return None
    if not entry.get("registered", True):
        report.violations.append(f"{where}: the provider documents {key} but does not register it")
        return None
    if entry.get("deprecated"):
        report.notes.append(f"{where}: {key} is deprecated ({entry['deprecated']})")
    return entry


SET, MAYBE = "set", "maybe"  # how sure it is that a name is set (absent names are not in the map)


class _TypeCheck:
    def __init__(self, where: str, facts: TypeFacts, null_variables: set[str], report: Report):
        self.where, self.facts, self.null_variables, self.report = where, facts, null_variables, report

    def fail(self, message: str) -> None:
        self.report.violations.append(f"{self.where}: {message}")

    def run(self, body: dict) -> None:
        self.rules(body, self.body(self.facts.top, body))

    def body(self, level: Level, body: dict) -> dict[str, str]:
        """Check one body against ``level``; returns what it sets: name -> SET or MAYBE."""
        present: dict[str, str] = {}
        for name, value in body.items():
            if name == "__is_block__" or (not level.path and name in META_ARGUMENTS):
                continue
            if name == "dynamic":
                for dynamic in value:
                    for block_name, spec in dynamic.items():
                        if block_name != "__is_block__":
                            present.setdefault(block_name, MAYBE)  # its for_each may be empty
                            self.block(level, block_name, spec.get("content", []), "dynamic ")
            elif _is_block(value):
                present[name] = SET
                self.block(level, name, value)
            else:
                if value is not None:
                    present[name] = self.presence(value)
                self.argument(level, name, value)
        for name in sorted(level.required - present.keys()):
            self.fail(f"`{level.label(name)}` is required but not set")
        return present

    def presence(self, value: object) -> str:
        """MAYBE for an expression that may evaluate to null, SET otherwise."""
        text = value if isinstance(value, str) else json.dumps(value)
        if "${" not in text:
            return SET
        if re.search(r"\bnull\b", text) or set(re.findall(r"\bvar\.(\w+)", text)) & self.null_variables:
            return MAYBE
        return SET

    def argument(self, level: Level, name: str, value: object) -> None:
        label = level.label(name)
        if self.facts.computed_only(level, name):
            self.fail(f"`{label}` is computed by the provider and cannot be set")
        elif name not in level.known:
            close = difflib.get_close_matches(name, level.known, n=2)
            self.fail(
                f"`{label}` is not an argument here"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        elif self.facts.must_be_block(level, name, value):
            self.fail(f"`{label}` is a nested block: write `{name} {{ ... }}`, not `{name} = ...`")
        self.deprecation(level, name)

    def deprecation(self, level: Level, name: str) -> None:
        node = self.facts.node(level, name)
        if node is not None and "D" in node["flags"]:
            reason = self.facts.entry.get("schema_deprecated", {}).get(name, "deprecated in the Go schema")
            self.report.notes.append(f"{self.where}: `{level.label(name)}` is deprecated ({reason})")

    def block(self, parent: Level, name: str, bodies: list, how: str = "") -> None:
        label = parent.label(name)
        if self.facts.is_argument(parent, name):
            self.fail(f"`{label}` is an argument, not a block: write `{name} = ...`")
            return
        child = self.facts.child(parent, name)
        if child is None:
            where = f"`{parent.path}`" if parent.path else "the top level"
            self.fail(f"{how}block `{label}` is not a block of {where}")
            return
        self.deprecation(parent, name)
        if not child.checked:
            self.report.notes.append(f"{self.where}: contents of `{child.path}` not described by the facts")
            return
        for body in bodies:
            self.body(child, body)

    def rules(self, body: dict, present: dict[str, str]) -> None:
        certain = {name for name, how in present.items() if how == SET}
        reported: set[frozenset[str]] = set()
        for key, rule in sorted(self.facts.constraints.items()):
            if key in present:
                missing = [other for other in rule.get("required_with", []) if other not in present]
                if missing:
                    self.fail(f"`{key}` is set, so {_names(missing)} must be set too (RequiredWith)")
                self.allowed_value(key, body.get(key), rule)
            if key in certain:
                for other in rule.get("conflicts_with", []):
                    pair = frozenset({key, other})
                    if other in certain and pair not in reported:
                        reported.add(pair)
                        self.fail(f"`{key}` and `{other}` cannot both be set (ConflictsWith)")
            group = sorted({key, *rule.get("exactly_one_of", [])})
            if "exactly_one_of" in rule and frozenset(group) not in reported:
                chosen = [name for name in group if name in certain]
                if len(chosen) > 1 or not present.keys() & set(group):
                    reported.add(frozenset(group))
                    self.fail(f"exactly one of {_names(group)} must be set, not {len(chosen)} (ExactlyOneOf)")
            group = sorted({key, *rule.get("at_least_one_of", [])})
            if (
                "at_least_one_of" in rule
                and not present.keys() & set(group)
                and frozenset(group) not in reported
            ):
                reported.add(frozenset(group))
                self.fail(f"at least one of {_names(group)} must be set (AtLeastOneOf)")

    def allowed_value(self, key: str, value: object, rule: dict) -> None:
        allowed = rule.get("one_of")
        literal = _literal_text(value)
        if not allowed or literal is None:  # an expression: its value is known only to Terraform
            return
        fold = str.lower if rule.get("one_of_ignore_case") else str
        if fold(literal) not in {fold(a) for a in allowed}:
            self.fail(f"`{key}` = {literal!r} is not one of {allowed}")


def _is_block(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def _literal_text(value: object) -> str | None:
    """A literal scalar as Terraform converts it to a string; None for expressions and collections."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and "${" not in value:
        return value
    return None


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


# ---------------------------------------------------------------- the tests


def modules() -> list[Path]:
    return provider_schema.root_modules(TERRAFORM_DIR)


def test_every_module_matches_the_provider_schema(facts):
    found = modules()
    assert TERRAFORM_DIR in found
    violations: list[str] = []
    for module in found:
        report = check_module(module, facts, relative_to=ROOT)
        violations += report.violations
        for note in report.notes:
            warnings.warn(note, stacklevel=1)
    assert not violations, f"{len(violations)} violation(s) of the provider schema:\n" + "\n".join(violations)


def test_the_trimmed_facts_hold_every_type_the_modules_use(facts):
    used = {key for module in modules() for key in provider_schema.declared_types(module)}
    ours = sorted(key for key in used if provider_schema.is_provider_type(key))
    assert ours
    missing = [key for key in ours if key in provider_schema.unknown_keys(facts, {key})]
    assert not missing, "\n".join(regenerate_hint(key) for key in missing)


def test_values_that_may_be_null_count_as_set_but_do_not_conflict(facts, tmp_path):
    (tmp_path / "main.tf").write_text(
        'variable "role" {\n  type    = string\n  default = null\n}\n\n'
        'resource "huaweicloud_fgs_function" "maybe" {\n'
        '  name        = "f"\n  runtime     = "Python3.10"\n  memory_size = 128\n  timeout     = 3\n'
        '  agency      = var.use_agency ? "a" : null\n  xrole       = var.role\n'
        "  network_id  = var.subnet\n}\n\n"
        'resource "huaweicloud_fgs_function" "both" {\n'
        '  name        = "f"\n  runtime     = "Python3.10"\n  memory_size = 128\n  timeout     = 3\n'
        '  agency      = "a"\n  xrole       = "b"\n}\n',
        encoding="utf-8",
    )
    assert check_module(tmp_path, facts).violations == [
        # may be null, so no conflict; set all the same, so vpc_id is still missing
        "main.tf:huaweicloud_fgs_function.maybe: `network_id` is set, so `vpc_id` must be set too (RequiredWith)",
        "main.tf:huaweicloud_fgs_function.both: `agency` and `xrole` cannot both be set (ConflictsWith)",
    ]


def _plant(path: Path, pattern: str, replacement: str) -> None:
    """Edit a copied .tf file; fails loudly if the text to change is no longer there."""
    text = path.read_text(encoding="utf-8")
    changed, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE | re.DOTALL)
    assert count == 1, f"{path.name} no longer matches {pattern!r}: update this test's planted errors"
    path.write_text(changed, encoding="utf-8")


def test_the_check_reports_each_planted_error(facts, tmp_path):
    module = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, module, ignore=shutil.ignore_patterns(".terraform", "provider-schema"))
    before = set(check_module(module, facts).violations)

    # An argument the gateway does not have.
    _plant(
        module / "apig.tf",
        r'(resource "huaweicloud_apig_instance" "gateway" \{\n)',
        r"\1  bogus_argument = 1\n",
    )
    # A Required argument removed: at the top of a resource, and inside a dynamic block's content.
    _plant(
        module / "apig.tf",
        r'(resource "huaweicloud_apig_api" "route" \{.*?)^\s*request_path\s*=[^\n]*\n',
        r"\1",
    )
    _plant(module / "apig.tf", r'(dynamic "request_params" \{.*?content \{.*?)^\s*name\s*=[^\n]*\n', r"\1")
    # RequiredWith broken: the function keeps network_id without vpc_id.
    _plant(
        module / "functions.tf",
        r'(resource "huaweicloud_fgs_function" "fn" \{.*?)^\s*vpc_id\s*=[^\n]*\n',
        r"\1",
    )
    # ConflictsWith and a value outside a StringInSlice.
    _plant(module / "functions.tf", r'(resource "huaweicloud_fgs_function" "fn" \{\n)', r'\1  xrole = "x"\n')
    _plant(module / "functions.tf", r'functiongraph_version\s*=\s*"v2"', 'functiongraph_version = "v3"')
    # A block the resource does not have; a block written as an argument, and the reverse.
    _plant(
        module / "apig.tf",
        r'(resource "huaweicloud_apig_group" "api" \{\n)',
        r"\1  bogus_block {\n    a = 1\n  }\n",
    )
    _plant(
        module / "storage.tf",
        r'(resource "huaweicloud_obs_bucket" "artifacts" \{\n)',
        r'\1  website = { index_document = "index.html" }\n',
    )
    _plant(
        module / "network.tf",
        r'(resource "huaweicloud_vpc" "main" \{\n)',
        r'\1  description {\n    text = "x"\n  }\n',
    )
    # An attribute only the provider sets.
    _plant(module / "network.tf", r'(resource "huaweicloud_vpc" "main" \{\n)', r'\1  status = "OK"\n')

    planted = sorted(set(check_module(module, facts).violations) - before)
    expected = [
        "apig.tf:huaweicloud_apig_api.route: `request_path` is required but not set",
        "apig.tf:huaweicloud_apig_api.route: `request_params.name` is required but not set",
        "apig.tf:huaweicloud_apig_group.api: block `bogus_block` is not a block of the top level",
        "apig.tf:huaweicloud_apig_instance.gateway: `bogus_argument` is not an argument here",
        "functions.tf:huaweicloud_fgs_function.fn: `agency` and `xrole` cannot both be set (ConflictsWith)",
        "functions.tf:huaweicloud_fgs_function.fn: `functiongraph_version` = 'v3' is not one of ['v1', 'v2']",
        "functions.tf:huaweicloud_fgs_function.fn: `network_id` is set, so `vpc_id` must be set too (RequiredWith)",
        "network.tf:huaweicloud_vpc.main: `description` is an argument, not a block: write `description = ...`",
        "network.tf:huaweicloud_vpc.main: `status` is computed by the provider and cannot be set",
        "storage.tf:huaweicloud_obs_bucket.artifacts: `website` is a nested block: write `website { ... }`, "
        "not `website = ...`",
    ]
    assert planted == sorted(expected)


def test_types_of_other_providers_are_skipped_only_when_allow_listed(facts, tmp_path):
    (tmp_path / "main.tf").write_text(
        'resource "random_password" "db" {\n  length = 24\n}\n\n'
        'resource "terraform_data" "marker" {\n  input = 1\n}\n\n'
        'resource "acme_thing" "x" {\n  name = "x"\n}\n\n'
        'data "huaweicloud_no_such_thing" "x" {\n  name = "x"\n}\n',
        encoding="utf-8",
    )
    report = check_module(tmp_path, facts)
    assert report.violations == [
        "main.tf:acme_thing.x: provider `acme` is neither in the facts nor in NOT_COVERED_PROVIDERS",
        f"main.tf:data.huaweicloud_no_such_thing.x: {regenerate_hint('data.huaweicloud_no_such_thing')}",
    ]
    assert report.notes == [
        "main.tf:random_password.db: not checked, provider hashicorp/random",
        "main.tf:terraform_data.marker: not checked, provider built into Terraform (terraform_data)",
    ]
    assert "python scripts/provider_schema.py" in regenerate_hint("x")


def test_every_directory_holding_tf_files_is_checked_except_terraform_s_downloads(tmp_path):
    for directory in ("", "ecs", "ecs/nested", ".terraform/modules/m", "docs"):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    for tf in ("main.tf", "ecs/versions.tf", "ecs/nested/main.tf", ".terraform/modules/m/main.tf"):
        (tmp_path / tf).write_text("", encoding="utf-8")
    found = provider_schema.root_modules(tmp_path)
    assert found == [tmp_path, tmp_path / "ecs", tmp_path / "ecs" / "nested"]


def test_the_provider_is_pinned_to_the_release_the_facts_describe(facts):
    version = facts["provider"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    for module in modules():
        versions = module / "versions.tf"
        where = versions.relative_to(ROOT)
        assert versions.is_file(), f"{module.relative_to(ROOT)} has no versions.tf to pin the provider in"
        required = provider_schema.parse_tf(versions)["terraform"][0]["required_providers"][0]
        pin = required[provider_schema.PROVIDER]
        assert pin["source"] == provider_schema.PROVIDER_SOURCE, where
        assert pin["version"] == f"~> {version}", (
            f"{where} pins {pin['version']!r}; the schema facts describe {version}: pin `~> {version}` "
            "(or regenerate the facts for the version you pin)"
        )


# ---------------------------------------------------------------- the regenerate command

THING_GO = """package svc

// ResourceThing: "a { brace" in a comment is not code.
func ResourceThing() *schema.Resource {
	return &schema.Resource{
		Timeouts: &schema.ResourceTimeout{Create: schema.DefaultTimeout(10 * time.Minute)},
		Schema: map[string]*schema.Schema{
			"name": {
				Type:        schema.TypeString,
				Required:    true,
				Description: `a } brace in a string`,
			},
			"size": {
				Type:         schema.TypeInt,
				Optional:     true,
				Computed:     true,
				ValidateFunc: validation.IntInSlice([]int{1, 2}),
			},
			"rule": {
				Type:     schema.TypeList,
				Optional: true,
				Elem:     thingRuleSchema(),
			},
			"names": {
				Type:     schema.TypeList,
				Optional: true,
				Elem:     &schema.Schema{Type: schema.TypeString},
			},
			"tags":    common.TagsSchema(),
			"created": {Type: schema.TypeString, Computed: true},
			"old":     {Type: schema.TypeString, Optional: true, Deprecated: "use name"},
			"patched": {Type: schema.TypeList, Optional: true, Elem: patchedSchema()},
		},
	}
}

func thingRuleSchema() *schema.Resource {
	sc := schema.Resource{
		Schema: map[string]*schema.Schema{
			"port": {Type: schema.TypeInt, Required: true},
		},
	}
	return &sc
}

func patchedSchema() *schema.Resource {
	sc := &schema.Resource{Schema: map[string]*schema.Schema{"a": {Type: schema.TypeString, Optional: true}}}
	sc.Schema["b"] = &schema.Schema{Type: schema.TypeString, Optional: true}
	return sc
}
"""

PROVIDER_GO = """package huaweicloud

func Provider() *schema.Provider {
	provider := &schema.Provider{
		DataSourcesMap: map[string]*schema.Resource{
			"huaweicloud_things": svc.DataSourceThings(),
		},
		ResourcesMap: map[string]*schema.Resource{
			"huaweicloud_thing": svc.ResourceThing(),
			"huaweicloud_other": svc.ResourceOther(),
		},
	}
	return provider
}
"""


def _git(repo: Path, *args: str) -> None:
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.invalid")
    subprocess.run(["git", "-C", str(repo), *identity, *args], check=True, capture_output=True)


def _fake_provider(tmp_path: Path) -> tuple[Path, str]:
    """A provider repository: the release tag v1.2.3, then one commit changing resource_thing.go."""
    repo = tmp_path / "provider"
    (repo / "huaweicloud" / "services" / "svc").mkdir(parents=True)
    (repo / "huaweicloud" / "provider.go").write_text(PROVIDER_GO)
    go = repo / "huaweicloud" / "services" / "svc"
    go.joinpath("resource_thing.go").write_text(THING_GO.replace("Create: schema", "Delete: schema"))
    go.joinpath("resource_other.go").write_text(
        THING_GO.replace("ResourceThing", "ResourceOther").replace('"size"', '"length"')
    )
    go.joinpath("data_source_things.go").write_text(THING_GO.replace("ResourceThing", "DataSourceThings"))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "release")
    _git(repo, "tag", "v1.2.3")
    go.joinpath("resource_thing.go").write_text(THING_GO)
    _git(repo, "commit", "-q", "-am", "after the release")
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return repo / ".git", commit


def _fake_facts(tmp_path: Path, commit: str) -> Path:
    def entry(name: str, kind: str = "resource") -> dict:
        prefix = "data_source" if kind == "data" else "resource"
        return {
            "args": {"name": "Required String", "size": "Optional Int"},
            "attributes": ["id", "created"],
            "doc": f"docs/{kind}/{name}.md",
            "registered": True,
            "schema": {"name": "R", "size": "CO", "port": "R"},
            "schema_file": f"huaweicloud/services/svc/{prefix}_{name}.go",
        }

    facts = {
        "provider": {
            "commit": commit,
            "commit_date": "2026-01-01T00:00:00Z",
            "describe": "v1.2.3-1-gabc",
            "nearest_release_tag": "v1.2.3",
            "repository": "https://example.invalid/provider",
        },
        "resources": {"huaweicloud_thing": entry("thing"), "huaweicloud_other": entry("other")},
        "data_sources": {"huaweicloud_things": entry("things", "data")},
    }
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    return path


def test_the_regenerate_command_keeps_used_and_extra_types_with_their_go_schema(tmp_path, capsys):
    repo, commit = _fake_provider(tmp_path)
    facts_file = _fake_facts(tmp_path, commit)
    modules = tmp_path / "terraform"
    (modules / "ecs").mkdir(parents=True)
    (modules / "main.tf").write_text(
        'resource "huaweicloud_thing" "a" {\n  name = "a"\n}\n\nresource "random_password" "p" {\n  length = 8\n}\n'
    )
    (modules / "ecs" / "main.tf").write_text('data "huaweicloud_things" "all" {\n  name = "x"\n}\n')
    base = [str(facts_file), "--provider-repo", str(repo), "--terraform-dir", str(modules)]
    written = modules / "provider-schema" / "huaweicloud-1.2.3.json"

    assert provider_schema.main([*base, "--also", "huaweicloud_other"]) == 0
    trimmed = json.loads(written.read_text())
    assert trimmed["provider"]["version"] == "1.2.3"
    assert trimmed["provider"]["commit"] == commit
    assert "--provider-repo" in trimmed["regenerate"]
    assert set(trimmed["resources"]) == {"huaweicloud_thing", "huaweicloud_other"}
    assert set(trimmed["data_sources"]) == {"huaweicloud_things"}
    assert trimmed["extra_types"] == ["huaweicloud_other"]
    assert "attributes" not in trimmed["resources"]["huaweicloud_thing"]
    assert trimmed["provider"]["compared_with_release_tag"]["changed_files"] == {
        "huaweicloud/services/svc/resource_thing.go": ["huaweicloud_thing"]
    }
    assert trimmed["resources"]["huaweicloud_thing"]["schema_tree"] == {
        "name": {"flags": "R"},
        "size": {"flags": "OC"},
        "rule": {"flags": "O", "block": {"port": {"flags": "R"}}},
        "names": {"flags": "O"},
        "tags": {"flags": "F"},
        "created": {"flags": "C"},
        "old": {"flags": "OD"},
        "patched": {"flags": "O", "block": None},  # its function changes the schema after building it
    }

    # The extra type survives a run that does not name it, and goes with --prune.
    assert provider_schema.main(base) == 0
    assert "huaweicloud_other" in json.loads(written.read_text())["resources"]
    assert provider_schema.main([*base, "--prune"]) == 0
    assert set(json.loads(written.read_text())["resources"]) == {"huaweicloud_thing"}

    capsys.readouterr()
    assert provider_schema.main([*base, "--also", "huaweicloud_thingz"]) == 1
    assert (
        "the provider has no resource huaweicloud_thingz (closest: huaweicloud_thing"
        in capsys.readouterr().err
    )
