"""Read ``infra/terraform/*.tf`` with python-hcl2, without Terraform or a provider download.

Only parsing: expressions stay as text (``"${var.x}"``), literals become Python values, for the
tests that cross-check the Terraform with the code. python-hcl2 is a development dependency.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TERRAFORM_DIR = Path(__file__).resolve().parent.parent / "infra" / "terraform"


@dataclass
class TerraformConfig:
    directory: Path
    files: dict[str, dict] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # "resource.type.name" -> file

    def resource(self, kind: str, name: str) -> dict:
        try:
            return self.resources[(kind, name)]
        except KeyError:
            raise KeyError(f"no resource {kind}.{name} in {self.directory}") from None

    def of_type(self, kind: str) -> dict[str, dict]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}


def load(directory: Path = TERRAFORM_DIR) -> TerraformConfig:
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    config = TerraformConfig(directory)
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle, serialization_options=options)
        config.files[path.name] = parsed
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    _add(config.resources, (kind, name), body, f"resource {kind}.{name}", path.name, config)
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    _add(config.data, (kind, name), body, f"data {kind}.{name}", path.name, config)
        for block in parsed.get("variable", []):
            for name, body in block.items():
                _add(config.variables, name, body, f"variable {name}", path.name, config)
        for block in parsed.get("output", []):
            for name, body in block.items():
                _add(config.outputs, name, body, f"output {name}", path.name, config)
        for block in parsed.get("locals", []):
            for name, value in block.items():
                _add(config.locals, name, value, f"local {name}", path.name, config)
    return config


def _add(into: dict, key, value, label: str, filename: str, config: TerraformConfig) -> None:
    if key in into:
        raise ValueError(f"{label} is defined twice ({config.where[label]} and {filename})")
    into[key] = value
    config.where[label] = filename


def first(block: object) -> dict:
    """A nested block as python-hcl2 returns it (a list of one dict), or {}."""
    if isinstance(block, list):
        return block[0] if block else {}
    return block if isinstance(block, dict) else {}


def expression(value: object) -> str | None:
    """The text of a ``${...}`` expression, or None for a literal."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1].strip()
    return None


def hcl_unescape(text: str) -> str:
    """Undo HCL string escapes (``\\\\`` -> ``\\``, ``\\"`` -> ``"``)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), text)


def string_arguments(expr: str, function: str) -> list[str]:
    """The string literals passed as first argument to ``function(...)`` in an expression."""
    return [hcl_unescape(m) for m in re.findall(rf'\b{function}\(\s*"((?:[^"\\]|\\.)*)"', expr)]


# Values for the variables without a default, valid for their validations.
REQUIRED = {
    "region": "ap-southeast-1",
    "obs_bucket_prefix": "acme-iot-test",
    "db_root_password": "Root-pass-1",
    "db_password": "Service-pass-1",
    "redis_password": "Redis-pass-1",
    "kafka_sasl_password": "",
}


class Terraform:
    """variables.tf plus chosen locals and outputs, applied by the terraform binary (no provider)."""

    def __init__(self, binary: str, workdir: Path, locals_: dict[str, str], outputs: dict[str, str]):
        self.binary, self.workdir = binary, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(TERRAFORM_DIR / "variables.tf", workdir / "variables.tf")
        lines = ["locals {", *(f"  {name} = {text}" for name, text in locals_.items()), "}"]
        lines += [f'output "{name}" {{\n  value = {text}\n}}' for name, text in outputs.items()]
        (workdir / "check.tf").write_text("\n".join(lines) + "\n")

    def apply(self, **variables) -> tuple[bool, dict, str]:
        """(whether every validation passed, the outputs, Terraform's complaint)."""
        values = {**REQUIRED, **variables}
        args = [arg for name, value in values.items() for arg in ("-var", f"{name}={_hcl_value(value)}")]
        applied = self._run("apply", "-auto-approve", "-input=false", "-no-color", *args)
        if applied.returncode != 0:
            return False, {}, " ".join((applied.stderr or applied.stdout).split())
        shown = self._run("output", "-json", "-no-color")
        assert shown.returncode == 0, shown.stderr
        return True, {name: item["value"] for name, item in json.loads(shown.stdout).items()}, ""

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.binary, *args], cwd=self.workdir, capture_output=True, text=True, timeout=60
        )


def _hcl_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
