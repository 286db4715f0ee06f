"""Whole-number settings of the local tools (shim, trigger loop, runner, bench) from the environment.

The service's own settings live in ``common.settings``; these only shape how the local stack runs.
"""

from __future__ import annotations

import os


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
