#!/usr/bin/env python3
"""Trim the huaweicloud provider's schema facts to the types this project's Terraform uses.

    python scripts/provider_schema.py FACTS.json --provider-repo GIT_DIR    # the types the .tf files use
    python scripts/provider_schema.py FACTS.json --provider-repo GIT_DIR --also huaweicloud_smn_topic \
        --also data.huaweicloud_vpc                                        # ... and these too
    python scripts/provider_schema.py FACTS.json --provider-repo GIT_DIR --prune  # forget unused extras

FACTS.json holds, for every resource and data source of the provider, the arguments and nested
blocks of its documentation page and the flags and rules of its Go schema, flattened (see
infra/terraform/provider-schema/README.md for how it is made). GIT_DIR is a clone (bare is enough)
of the provider's repository holding the commit the facts were extracted at: from it the script
reads each type's Go schema as a tree, each key with its own flags (the flattened facts cannot tell
a top-level key from a nested one), and compares the type's files at that commit with the release tag.
The trimmed copy, infra/terraform/provider-schema/huaweicloud-<version>.json, is what
tests/test_terraform_schema.py checks every root module under infra/terraform against, offline.

The trimmed file keeps the types the .tf files use, plus "extra types": the ones named with --also
now or in an earlier run (kept from the previous file, so a type someone added stays until --prune).
`--also huaweicloud_x` names a resource, `--also data.huaweicloud_x` a data source.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM_DIR = ROOT / "infra" / "terraform"
SCHEMA_DIR = TERRAFORM_DIR / "provider-schema"
PROVIDER = "huaweicloud"
PROVIDER_SOURCE = "huaweicloud/huaweicloud"
COMMAND = (
    "python scripts/provider_schema.py <path to huaweicloud-provider-args.json> "
    "--provider-repo <clone of terraform-provider-huaweicloud>"
)

# Terraform block kind -> the facts' section of that kind.
SECTIONS = {"resource": "resources", "data": "data_sources"}
# What the check needs of each type; the rest of the full facts (attribute lists) is left out.
KEPT_FIELDS = (
    "args",
    "blocks",
    "blocks_by_name",
    "schema",
    "schema_constraints",
    "schema_deprecated",
    "timeouts",
    "deprecated",
    "alias_of",
    "registered",
    "schema_file",
    "doc",
)
TRIMMED_FORMAT = {
    "provider": "where the facts come from: repository, the commit they were extracted at, its release tag",
    "extra_types": "types kept although no .tf file uses them yet ('data.' marks a data source)",
    "resources / data_sources": "type -> the facts of that type, as in the full facts file:",
    "args": "argument -> its documentation flags ('Required String ForceNew'), then ' -> #block' when "
    "the documentation links it to a nested block",
    "blocks": "block id -> {names: the block's name(s), args: as above}",
    "blocks_by_name": "block name -> block ids",
    "schema": "every key of the Go schema, nested keys included (flattened) -> flags: R(equired) "
    "O(ptional) C(omputed) D(eprecated) F(schema built by a function)",
    "schema_constraints": "top-level key -> required_with / conflicts_with / exactly_one_of / "
    "at_least_one_of (names) and one_of (allowed literal values; one_of_ignore_case)",
    "schema_deprecated": "key -> the Go schema's deprecation message",
    "schema_tree": "the Go schema of the constructor the provider registers the type with, not flattened: "
    "key -> {flags: R, O, C, D as above, or F when the key's schema comes from a function call; "
    "block: the keys of a nested block, the same way, or null when they come from a call or a variable; "
    "attribute_syntax: true when the block may also be written as an argument}",
    "timeouts": "keys of the timeouts block, when the resource has one",
    "schema_file / doc": "the provider source file and documentation page the facts were read from",
}


def root_modules(terraform_dir: Path = TERRAFORM_DIR) -> list[Path]:
    """Every directory under ``terraform_dir`` (itself included) that holds .tf files.

    Hidden directories are left out: ``terraform init`` downloads modules into ``.terraform/``.
    """
    found = {path.parent for path in terraform_dir.rglob("*.tf")}
    return sorted(
        directory
        for directory in found
        if not any(part.startswith(".") for part in directory.relative_to(terraform_dir).parts)
    )


def parse_tf(path: Path) -> dict:
    """One .tf file parsed by python-hcl2: literals as Python values, expressions as ``${...}`` text,
    blocks marked with ``__is_block__`` (so a block and an object-valued argument differ)."""
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=True, with_comments=False)
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=options)


def declared_types(directory: Path) -> set[str]:
    """The ``resource`` and ``data`` types declared in one module; data sources as ``data.<type>``."""
    types: set[str] = set()
    for path in sorted(directory.glob("*.tf")):
        parsed = parse_tf(path)
        for kind in SECTIONS:
            for block in parsed.get(kind, []):
                types.update(type_key(kind, name) for name in block)
    return types


def type_key(kind: str, name: str) -> str:
    return f"data.{name}" if kind == "data" else name


def split_type_key(key: str) -> tuple[str, str]:
    """``data.x`` -> ("data", "x"); ``x`` -> ("resource", "x")."""
    return ("data", key[5:]) if key.startswith("data.") else ("resource", key)


def is_provider_type(key: str) -> bool:
    name = split_type_key(key)[1]
    return name == PROVIDER or name.startswith(f"{PROVIDER}_")


def release_version(facts: dict) -> str:
    """``1.97.1`` from the facts' nearest release tag ``v1.97.1``."""
    return facts["provider"]["nearest_release_tag"].removeprefix("v")


def trim(facts: dict, keys: set[str], extra: set[str], trees: dict, compared: dict) -> dict:
    """The trimmed facts: provider metadata and the facts of ``keys`` (which must all exist), each
    with its Go schema tree from ``trees`` (type key -> tree)."""
    meta = facts["provider"]
    trimmed: dict = {
        "format": TRIMMED_FORMAT,
        "provider": {
            "source": PROVIDER_SOURCE,
            "version": release_version(facts),
            "release_tag": meta["nearest_release_tag"],
            "commit": meta["commit"],
            "commit_date": meta["commit_date"],
            "describe": meta["describe"],
            "repository": meta["repository"],
            "compared_with_release_tag": compared,
        },
        "regenerate": f"{COMMAND} [--also TYPE]... [--prune]",
        "extra_types": sorted(extra),
        "resources": {},
        "data_sources": {},
    }
    for key in sorted(keys):
        kind, name = split_type_key(key)
        entry = facts[SECTIONS[kind]][name]
        kept = {field: entry[field] for field in KEPT_FIELDS if field in entry}
        kept["schema_tree"] = trees[key]
        trimmed[SECTIONS[kind]][name] = kept
    return trimmed


def unknown_keys(facts: dict, keys: set[str]) -> dict[str, str]:
    """The keys the facts have no type for -> a line naming the closest types they do have."""
    unknown = {}
    for key in sorted(keys):
        kind, name = split_type_key(key)
        section = facts[SECTIONS[kind]]
        if name not in section:
            close = difflib.get_close_matches(name, section, n=3)
            hint = f" (closest: {', '.join(close)})" if close else ""
            unknown[key] = f"the provider has no {kind} {name}{hint}"
    return unknown


def compare_with_release_tag(facts: dict, keys: set[str], repo: Path) -> dict:
    """Which kept types' source files or documentation pages differ between the release tag and the
    commit the facts were extracted at (the facts describe the commit; the pin names the release)."""
    tag, commit = facts["provider"]["nearest_release_tag"], facts["provider"]["commit"]
    changed: dict[str, list[str]] = {}
    for key in sorted(keys):
        kind, name = split_type_key(key)
        entry = facts[SECTIONS[kind]][name]
        for path in filter(None, (entry.get("schema_file"), entry.get("doc"))):
            if _blob(repo, tag, path) != _blob(repo, commit, path):
                changed.setdefault(path, []).append(key)
    return {"tag": tag, "changed_files": changed}


def _blob(repo: Path, revision: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", f"--git-dir={repo}", "rev-parse", "--verify", "--quiet", f"{revision}:{path}"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or None


def _show(repo: Path, revision: str, path: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={repo}", "show", f"{revision}:{path}"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot read {path} at {revision} in {repo}: {done.stderr.strip()}")
    return done.stdout


# ---------------------------------------------------------------- the Go schema, not flattened
#
# The full facts flatten the Go schema: a key nested in a block sits beside the top-level ones and
# their flags are merged. The provider's own source tells them apart: the type is registered in
# huaweicloud/provider.go (DataSourcesMap / ResourcesMap) with a constructor, whose
# `Schema: map[string]*schema.Schema{...}` literal lists the top-level keys, and each block's
# `Elem: &schema.Resource{Schema: map[string]*schema.Schema{...}}` its own (or a function of the
# same file returning one). A small scanner of Go composite literals (strings and comments skipped,
# brackets counted) reads those literals; what it cannot read is marked as such, never guessed.

REGISTRY_FILE = "huaweicloud/provider.go"
REGISTRY_MAPS = {"data": "DataSourcesMap", "resource": "ResourcesMap"}
_ENTRY = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\w+)\s*:\s*(.*)\Z', re.DOTALL)
_FLAG_FIELDS = (("R", "Required"), ("O", "Optional"), ("C", "Computed"))
_SCHEMA_MAP = r"map\[string\]\*schema\.Schema\s*\{"


def go_without_comments(source: str) -> str:
    out, i, n = [], 0, len(source)
    while i < n:
        if source[i] in "\"'`":
            end = _string_end(source, i)
            out.append(source[i:end])
            i = end
        elif source.startswith("//", i):
            i = n if (j := source.find("\n", i)) < 0 else j
        elif source.startswith("/*", i):
            i = source.index("*/", i) + 2
            out.append(" ")
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


def _string_end(source: str, start: int) -> int:
    quote = source[start]
    if quote == "`":
        return source.index("`", start + 1) + 1
    i = start + 1
    while source[i] != quote:
        i += 2 if source[i] == "\\" else 1
    return i + 1


def go_literal_entries(source: str, open_brace: int) -> tuple[list[str], int]:
    """The comma-separated entries of the Go literal or body whose ``{`` is at ``open_brace``
    (``source`` without comments), and the index of its closing ``}``."""
    entries, depth, i, start = [], 0, open_brace, open_brace + 1
    while i < len(source):
        char = source[i]
        if char in "\"'`":
            i = _string_end(source, i)
            continue
        if char in "{([":
            depth += 1
        elif char in "})]":
            depth -= 1
            if depth == 0:
                if source[start:i].strip():
                    entries.append(source[start:i])
                return entries, i
        elif char == "," and depth == 1:
            entries.append(source[start:i])
            start = i + 1
        i += 1
    raise ValueError("unbalanced brackets")


def _key_values(source: str, open_brace: int) -> dict[str, str]:
    pairs = {}
    for entry in go_literal_entries(source, open_brace)[0]:
        match = _ENTRY.match(entry)
        if not match:
            raise ValueError(f"not a key: value entry: {entry.strip()[:60]!r}")
        pairs[match.group(1)] = match.group(2).strip()
    return pairs


class GoFile:
    """One Go source file (without comments), read for schema literals."""

    def __init__(self, source: str):
        self.source = go_without_comments(source)

    def function_body(self, name: str, returns: str) -> str | None:
        match = re.search(rf"^func\s+{name}\s*\(\s*\)\s*{returns}\s*\{{", self.source, re.MULTILINE)
        if not match:
            return None
        close = go_literal_entries(self.source, match.end() - 1)[1]
        return self.source[match.end() : close]

    def variable(self, name: str) -> str | None:
        """The literal of a package-level ``var name = schema.Schema{...}``."""
        match = re.search(rf"^var\s+{name}\s*=\s*&?schema\.Schema\s*\{{", self.source, re.MULTILINE)
        if not match:
            return None
        close = go_literal_entries(self.source, match.end() - 1)[1]
        return self.source[match.end() - 1 : close + 1]

    def constructor_tree(self, constructor: str) -> dict:
        if self.function_body(constructor, r"\*schema\.Resource") is None:
            raise ValueError(f"no func {constructor}() *schema.Resource")
        tree = self._resource_tree(f"{constructor}()")
        if tree is None:
            raise ValueError(f"{constructor} does not return a schema.Resource literal with a Schema map")
        return tree

    def _resource_tree(self, text: str) -> dict | None:
        """The keys of a ``&schema.Resource{...}`` literal (its Schema a map literal or a call of a
        function of this file returning one), or of a call of a function returning such a literal."""
        text = text.strip()
        call = re.fullmatch(r"(\w+)\(\)", text)
        if call:
            text = (
                self._returned_literal(call.group(1), r"\*schema\.Resource", r"&?schema\.Resource\s*\{") or ""
            )
        resource = re.match(r"&?schema\.Resource\s*\{", text)
        if not resource:
            return None
        schema = _key_values(text, resource.end() - 1).get("Schema", "")
        call = re.fullmatch(r"(\w+)\(\)", schema)
        if call:
            schema = (
                self._returned_literal(call.group(1), r"map\[string\]\*schema\.Schema", _SCHEMA_MAP) or ""
            )
        literal = re.match(_SCHEMA_MAP, schema)
        return self._tree(schema, literal.end() - 1) if literal else None

    def _returned_literal(self, function: str, returns: str, literal: str) -> str | None:
        """The literal a function returns when its body is only ``return <literal>`` or
        ``x := <literal>`` then ``return x`` / ``return &x``; None for anything else (a body that
        goes on to change the schema cannot be read this way)."""
        body = self.function_body(function, returns)
        if body is None:
            return None
        match = re.match(rf"\s*(?:return\s+|(\w+)\s*:?=\s*)({literal})", body)
        if not match:
            return None
        close = go_literal_entries(body, match.end() - 1)[1]
        rest = body[close + 1 :].strip()
        if rest and not (match.group(1) and re.fullmatch(rf"return\s+&?{match.group(1)}", rest)):
            return None
        return body[match.start(2) : close + 1]

    def _tree(self, text: str, open_brace: int) -> dict:
        tree = {}
        for key, value in _key_values(text, open_brace).items():
            if not key.startswith('"'):
                raise ValueError(f"schema key {key} is not a string literal")
            tree[key[1:-1]] = self._node(value)
        return tree

    def _node(self, value: str) -> dict:
        """One key's schema: its flags (R, O, C, D; F when the schema comes from a call), and for a
        nested block, "block": its keys, or None when they cannot be read."""
        if re.fullmatch(r"&?\w+", value):  # a package-level variable holding the schema
            value = self.variable(value.lstrip("&")) or value
        value = re.sub(r"^&?schema\.Schema\s*", "", value)
        if not value.startswith("{"):
            return {"flags": "F"}
        fields = _key_values(value, 0)
        node: dict = {"flags": "".join(flag for flag, name in _FLAG_FIELDS if fields.get(name) == "true")}
        if "Deprecated" in fields:
            node["flags"] += "D"
        elem = fields.get("Elem", "")
        is_list = fields.get("Type") in ("schema.TypeList", "schema.TypeSet")
        if is_list and elem and not re.match(r"&?schema\.Schema\b|schema\.Type\w+$", elem):
            node["block"] = self._resource_tree(elem)
            if "SchemaConfigModeAttr" in fields.get("ConfigMode", ""):
                node["attribute_syntax"] = True
        return node


def registered_constructors(registry_source: str) -> dict[str, str]:
    """type key -> the name of the Go function the provider registers it with."""
    source = go_without_comments(registry_source)
    found = {}
    for kind, map_name in REGISTRY_MAPS.items():
        match = re.search(rf"\b{map_name}:\s*map\[string\]\*schema\.Resource\s*\{{", source)
        for name, value in _key_values(source, match.end() - 1).items():
            call = re.fullmatch(r"(?:\w+\.)?(\w+)\(\)", value)
            if call:
                found[type_key(kind, name.strip('"'))] = call.group(1)
    return found


def schema_trees(facts: dict, keys: set[str], repo: Path) -> tuple[dict, list[str]]:
    """type key -> its Go schema tree, read at the facts' commit; and the documented top-level
    arguments that are not among its keys (to review: the page or the scanner is wrong)."""
    commit = facts["provider"]["commit"]
    constructors = registered_constructors(_show(repo, commit, REGISTRY_FILE))
    trees, doubts = {}, []
    for key in sorted(keys):
        kind, name = split_type_key(key)
        entry = facts[SECTIONS[kind]][name]
        if key not in constructors:
            raise SystemExit(f"{key} is not registered in {REGISTRY_FILE} at {commit}")
        try:
            tree = GoFile(_show(repo, commit, entry["schema_file"])).constructor_tree(constructors[key])
        except ValueError as error:
            raise SystemExit(f"{key}: cannot read its Go schema in {entry['schema_file']}: {error}") from None
        trees[key] = tree
        doubts += [
            f"{key}: documented argument `{arg}` is not a top-level Go key"
            for arg in entry.get("args", {})
            if arg not in tree
        ]
    return trees, doubts


def previous_extra_types(schema_dir: Path) -> set[str]:
    extra: set[str] = set()
    for path in schema_dir.glob(f"{PROVIDER}-*.json"):
        extra.update(json.loads(path.read_text(encoding="utf-8")).get("extra_types", []))
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("facts", type=Path, help="the full facts file (huaweicloud-provider-args.json)")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="TYPE",
        help="keep this type too: huaweicloud_x (a resource) or data.huaweicloud_x (a data source)",
    )
    parser.add_argument("--prune", action="store_true", help="forget the extra types of the previous file")
    parser.add_argument(
        "--provider-repo",
        type=Path,
        required=True,
        help="git directory of a clone of github.com/huaweicloud/terraform-provider-huaweicloud",
    )
    parser.add_argument("--terraform-dir", type=Path, default=TERRAFORM_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    output_dir = args.terraform_dir / "provider-schema"

    facts = json.loads(args.facts.read_text(encoding="utf-8"))
    used = {key for module in root_modules(args.terraform_dir) for key in declared_types(module)}
    used = {key for key in used if is_provider_type(key)}
    extra = set(args.also) | (set() if args.prune else previous_extra_types(output_dir))
    not_ours = sorted(key for key in extra if not is_provider_type(key))
    if not_ours:
        parser.error(f"not a {PROVIDER} type: {', '.join(not_ours)}")
    missing = unknown_keys(facts, used | extra)
    if missing:
        print("\n".join(missing.values()), file=sys.stderr)
        return 1

    keys = used | extra
    trees, doubts = schema_trees(facts, keys, args.provider_repo)
    compared = compare_with_release_tag(facts, keys, args.provider_repo)
    trimmed = trim(facts, keys, extra - used, trees, compared)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{PROVIDER}-{release_version(facts)}.json"
    for stale in output_dir.glob(f"{PROVIDER}-*.json"):
        if stale != target:
            stale.unlink()
            print(f"removed {stale} (another provider version)")
    target.write_text(json.dumps(trimmed, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(
        f"wrote {target}: {len(trimmed['resources'])} resources, {len(trimmed['data_sources'])} data "
        f"sources ({len(used)} used by the .tf files, {len(extra - used)} extra)"
    )
    for doubt in doubts:
        print(f"check: {doubt}")
    if compared["changed_files"]:
        print(f"changed since {compared['tag']} (read their diffs before trusting the facts for the tag):")
        for path, types in compared["changed_files"].items():
            print(f"  {path}: {', '.join(types)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
