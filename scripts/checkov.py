#!/usr/bin/env python3
"""Run checkov on infra/terraform with our Huawei Cloud checks (infra/terraform/checkov/).

    python scripts/checkov.py            # human-readable result; exit 1 on a failed check or parse error
    python scripts/checkov.py --json     # checkov's JSON report on stdout

checkov lives in its own virtual environment (build/checkov-venv, created on first use from PyPI):
it pins packaging<24, which conflicts with pytest 9, and it ships its own fork of python-hcl2 under
the same import name as the python-hcl2 the tests use, so it cannot share .venv.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "infra" / "terraform"
CHECKS = TERRAFORM / "checkov"
CHECKOV_REQUIREMENT = "checkov==3.3.30"
VENV = Path(os.environ.get("CHECKOV_VENV", ROOT / "build" / "checkov-venv"))


def checkov_binary() -> Path:
    """checkov from its own virtual environment, installed there first if needed."""
    binary = VENV / "bin" / "checkov"
    stamp = VENV / "requirement.txt"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f".{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install it once
        if binary.exists() and stamp.is_file() and stamp.read_text().strip() == CHECKOV_REQUIREMENT:
            return binary
        return _install(binary, stamp)


def _install(binary: Path, stamp: Path) -> Path:
    print(f"installing {CHECKOV_REQUIREMENT} into {VENV} (once) ...", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, CHECKOV_REQUIREMENT], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing {CHECKOV_REQUIREMENT} failed:\n{done.stderr[-3000:]}")
    stamp.write_text(CHECKOV_REQUIREMENT + "\n")
    return binary


def run(*directories: Path, checks: Path = CHECKS) -> dict:
    """checkov's JSON report for ``directories`` (default infra/terraform) with our external checks."""
    directories = directories or (TERRAFORM,)
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",  # no download of Bridgecrew's guideline mapping
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",  # no PyPI look-up for a newer checkov
        "LOG_LEVEL": "WARNING",
    }
    command = [
        str(checkov_binary()),
        *[arg for directory in directories for arg in ("--directory", str(directory))],
        "--framework",
        "terraform",
        "--external-checks-dir",
        str(checks),
        "--output",
        "json",
        "--compact",
        "--skip-download",
        "--download-external-modules",
        "false",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if not result.stdout.strip().startswith(("{", "[")):
        raise RuntimeError(f"checkov failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return merge(_documents(result.stdout))


def _documents(text: str) -> list[dict]:
    """checkov prints one JSON report per scanned directory, back to back (or a list of them)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.extend(document if isinstance(document, list) else [document])
    return documents


def merge(reports: list[dict]) -> dict:
    """One report: the results' lists joined, the summary's counts added up."""
    merged: dict = {"check_type": "terraform", "results": {}, "summary": {}}
    for report in reports:
        for key, value in report.get("results", {}).items():
            merged["results"].setdefault(key, []).extend(value or [])
        for key, value in report.get("summary", {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged["summary"][key] = merged["summary"].get(key, 0) + value
            else:
                merged["summary"].setdefault(key, value)
    return merged


def summarize(report: dict) -> tuple[list[str], int]:
    summary = report.get("summary", {})
    results = report.get("results", {})
    lines = [
        f"checkov: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
        f"{summary.get('parsing_errors', 0)} parse errors, {summary.get('resource_count', 0)} resources"
    ]
    for check in results.get("failed_checks", []):
        lines.append(
            f"  FAILED {check['check_id']} {check['resource']}: {check['check_name']} ({check.get('file_path')})"
        )
    for error in results.get("parsing_errors", []) or []:
        lines.append(f"  PARSE ERROR {error}")
    return lines, int(summary.get("failed", 0)) + int(summary.get("parsing_errors", 0))


def main(argv: list[str]) -> int:
    report = run()
    if "--json" in argv:
        print(json.dumps(report, indent=2))
        return 0
    lines, problems = summarize(report)
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
