"""What the local tools (runner, shim, trigger loop, token command, bench) read besides the service's
settings: their whole-number variables, where the local stack keeps its data, and the settings file a
running stack leaves for the other tools.

The service's own settings live in ``common.settings``; these only shape how the local stack runs.
This module imports nothing heavy, so every tool can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where `make run` keeps the embedded servers' data, its settings file and its lock.
DATA_DIR = ROOT / ".local"
# Written into the data folder while a stack runs: the settings the stack's processes got, so local
# tools (``python -m local.tokens``) can reach the same servers.
STACK_ENV = "stack.env"


def env_int(name: str, default: int) -> int:
    """``name`` when set and not empty, else ``default``: compose and ``.env.example`` leave some of
    these empty to mean the default, as the service's settings do. Anything but a whole number stops
    the tool with a message that names the variable, not a traceback."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"Error: {name} must be a whole number, not {raw!r}") from None


def write_stack_env(data_dir: Path, values: dict[str, str]) -> Path:
    """Write a running stack's settings, readable by its owner only (it holds the database password)."""
    path = data_dir / STACK_ENV
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def read_stack_env(data_dir: Path = DATA_DIR) -> dict[str, str] | None:
    """The settings a running stack wrote into ``data_dir``, or None when no stack runs there."""
    path = data_dir / STACK_ENV
    if not path.exists():
        return None
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
