"""``python -m deploy package|deploy|routes``: build the zips, push them with the SDK, list routes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .fgdeploy import DeployError, Options, deploy
from .package import DEFAULT_DIST, FUNCTIONGRAPH, PackageError, build, local_target


def _functions(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    package = commands.add_parser(
        "package", help="build dist/<function>.zip, dist/deps.zip and dist/manifest.json"
    )
    package.add_argument("--dist", type=Path, default=DEFAULT_DIST)
    package.add_argument("--functions", help="comma-separated (default: all)")
    package.add_argument(
        "--local",
        action="store_true",
        help="wheels for this machine's interpreter instead of FunctionGraph's (to try the packages here)",
    )

    push = commands.add_parser("deploy", help="update code, publish versions, move an alias, smoke-test")
    push.add_argument("--dist", type=Path, default=DEFAULT_DIST)
    push.add_argument("--functions", help="comma-separated (default: all in dist/manifest.json)")
    push.add_argument(
        "--prefix", default="iot", help="Terraform's name_prefix (functions are <prefix>-<name>)"
    )
    push.add_argument("--app", default="default", help="FunctionGraph application (default: default)")
    push.add_argument(
        "--dependency-name", help="dependency to publish deps.zip to (default: <prefix>-common)"
    )
    push.add_argument(
        "--keep-dependency",
        action="store_true",
        help="do not publish deps.zip; keep each function's dependencies",
    )
    push.add_argument("--version", help="version name to publish (default: v<UTC timestamp>)")
    push.add_argument("--alias", help="alias to point at the new version (created if missing)")
    push.add_argument("--no-smoke", action="store_true", help="do not invoke the new versions")
    push.add_argument("--dry-run", action="store_true", help="print what would be done; call nothing")

    commands.add_parser("routes", help="print the routes table for infra/terraform/apig.tf")

    args = parser.parse_args(argv)
    try:
        if args.command == "package":
            target = local_target() if args.local else FUNCTIONGRAPH
            print(f"packaging for {target.key} into {args.dist}")
            build(args.dist, target, _functions(args.functions))
            return 0
        if args.command == "routes":
            from .routes import app_routes, terraform_block

            print(terraform_block(app_routes()))
            return 0
        options = Options(
            dist=args.dist,
            functions=_functions(args.functions),
            prefix=args.prefix,
            app=args.app,
            dependency_name=args.dependency_name,
            publish_dependency=not args.keep_dependency,
            version=args.version,
            alias=args.alias,
            smoke=not args.no_smoke,
            dry_run=args.dry_run,
        )
        report = deploy(options)
        return 0 if report.ok else 1
    except (DeployError, PackageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
