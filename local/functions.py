"""Loading the cloud functions' ``index.py`` files as they are, under distinct module names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
HTTP_FUNCTIONS = ("ingest", "query", "dashboard")


def load_function(name: str) -> ModuleType:
    """Import ``functions/<name>/index.py`` (each function's module is called ``index`` in the cloud)."""
    module_name = f"functions_{name}_index"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS_DIR / name / "index.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no function named {name!r} under {FUNCTIONS_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
