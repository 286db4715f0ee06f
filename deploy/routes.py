"""The HTTP routes of the functions, as APIG needs them (one API per route).

The routers in ``functions/*/index.py`` are the single source; ``infra/terraform/apig.tf`` keeps the
same table in ``local.routes`` and ``tests/test_terraform.py`` fails when they differ, printing the
block below so it can be pasted in. A route's ``public`` flag decides whether its API asks APIG's
custom authorizer for a credential first: every route that is not public does.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions import function_names, load_function


@dataclass(frozen=True, order=True)
class RouteSpec:
    function: str
    method: str
    path: str
    params: tuple[str, ...] = ()
    public: bool = False


def app_routes() -> list[RouteSpec]:
    """Every route of every function that has a router (``app``), in a stable order."""
    routes = []
    for name in function_names():
        app = getattr(load_function(name), "app", None)
        for route in getattr(app, "routes", []):
            routes.append(RouteSpec(name, route.method, route.path, tuple(route.params), route.public))
    return sorted(routes)


def terraform_block(routes: list[RouteSpec]) -> str:
    """The ``routes = [...]`` entry of apig.tf's locals, as ``terraform fmt`` leaves it."""
    lines = ["  routes = ["]
    for r in routes:
        public = "true" if r.public else "false"
        lines.append(
            f'    {{ function = "{r.function}", method = "{r.method}", path = "{r.path}", public = {public} }},'
        )
    lines.append("  ]")
    return "\n".join(lines)
