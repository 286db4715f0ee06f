"""The cloud functions: ``functions/<name>/index.py``, each with ``handler`` and ``initializer``.

In FunctionGraph every function is its own package with ``index.py`` at its root. Here they import
as ``functions.<name>.index``, so the local shim, the trigger loop, the deploy tools and the tests
all load the very files that are deployed, and nothing here pulls in a web server.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

FUNCTIONS_DIR = Path(__file__).resolve().parent
# The functions APIG routes HTTP requests to (the consumer is driven by the Kafka trigger).
HTTP_FUNCTIONS = ("ingest", "query", "dashboard")


def function_names() -> list[str]:
    """Every function, by folder name."""
    return sorted(path.parent.name for path in FUNCTIONS_DIR.glob("*/index.py"))


def load_function(name: str) -> ModuleType:
    """The ``index`` module of function ``name``, imported once."""
    if not (FUNCTIONS_DIR / name / "index.py").is_file():
        raise ImportError(f"no function named {name!r} under {FUNCTIONS_DIR}")
    return importlib.import_module(f"{__name__}.{name}.index")
