"""``python -m deploy package|deploy|rollback|replay|routes|migrate``.

Exit status: 0 done; 1 the command ran and something failed (a smoke test, an alias move, a batch
kept); 2 it could not start (missing credentials, a stale dist/, bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import ApiError
from common.schema import RoleError

from .aliases import DEFAULT_ALIAS
from .fgclient import DeployError
from .fgdeploy import DEFAULT_KEEP_VERSIONS, Options, deploy
from .package import DEFAULT_DIST, FUNCTIONGRAPH, PackageError, build, local_target
from .replay import BUCKET_ENV, DEFAULT_KEY_PREFIX, ReplayOptions, replay
from .rollback import RollbackOptions, rollback
from .smoke import SMOKE_TOKEN_ENV


def _functions(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _naming(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefix", default="iot", help="Terraform's name_prefix (functions are <prefix>-<name>)"
    )
    parser.add_argument("--app", default="default", help="FunctionGraph application (default: default)")
    parser.add_argument(
        "--alias",
        default=DEFAULT_ALIAS,
        help=f"the alias APIG and the trigger call (default: {DEFAULT_ALIAS})",
    )


def _parser() -> argparse.ArgumentParser:
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

    push = commands.add_parser(
        "deploy",
        help="upload code, publish versions, smoke-test them, then move the alias of every function",
        description="Each new version gets the async invocation config (retries, max event age, "
        "destinations) of the function's latest, when latest has one; if that fails, no alias moves. "
        f"Smoke tests post a reading of the reserved smoke device and read it back, ask the authorizer "
        f"about a credential nobody has (denied) and the smoke credential (allowed), and run one "
        f"maintenance pass. With auth on, sending, reading and the allowed check need {SMOKE_TOKEN_ENV}: a "
        f"token for that device, or an admin token.",
    )
    push.add_argument("--dist", type=Path, default=DEFAULT_DIST)
    push.add_argument("--functions", help="comma-separated (default: all in dist/manifest.json)")
    _naming(push)
    push.add_argument(
        "--dependency-name", help="dependency to publish deps.zip to (default: <prefix>-common)"
    )
    push.add_argument(
        "--keep-dependency",
        action="store_true",
        help="do not publish deps.zip; keep each function's dependencies",
    )
    push.add_argument("--version", help="version name to publish (default: v<UTC timestamp>)")
    push.add_argument(
        "--keep-versions",
        type=_count,
        default=DEFAULT_KEEP_VERSIONS,
        help="newest versions kept besides what an alias uses or would roll back to "
        f"(default: {DEFAULT_KEEP_VERSIONS})",
    )
    push.add_argument(
        "--no-smoke", action="store_true", help="move the alias without invoking the new versions (unsafe)"
    )
    push.add_argument("--dry-run", action="store_true", help="print what would be done; call nothing")

    back = commands.add_parser(
        "rollback", help="move each alias back to the version it pointed at before the last deploy"
    )
    back.add_argument("--functions", help="comma-separated (default: all)")
    _naming(back)
    back.add_argument("--dry-run", action="store_true", help="read the aliases and say what would move")

    again = commands.add_parser(
        "replay", help="invoke the consumer again with the failed batches kept in OBS, then delete them"
    )
    again.add_argument("--bucket", help=f"the bucket of the failure records (default: ${BUCKET_ENV})")
    again.add_argument(
        "--key-prefix", default=DEFAULT_KEY_PREFIX, help=f"where in it (default: {DEFAULT_KEY_PREFIX})"
    )
    _naming(again)
    again.add_argument("--limit", type=_positive, help="at most this many records, oldest first")
    again.add_argument("--dry-run", action="store_true", help="list the records and invoke nothing")

    commands.add_parser("routes", help="print the routes table for infra/terraform/apig.tf")
    commands.add_parser(
        "migrate",
        help="bring the database named by DB_HOST, DB_NAME, DB_USER, DB_PASSWORD up to date (for a large"
        " table, before deploying: a function's initializer has a time limit)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "package":
            target = local_target() if args.local else FUNCTIONGRAPH
            print(f"packaging for {target.key} into {args.dist}")
            build(args.dist, target, _functions(args.functions))
            return 0
        if args.command == "migrate":
            from common.settings import Settings
            from common.store import ReadingStore

            store = ReadingStore(Settings.from_env())
            try:
                print(f"schema at version {store.migrate()}")
            finally:
                store.close()
            return 0
        if args.command == "routes":
            from .routes import app_routes, terraform_block

            print(terraform_block(app_routes()))
            return 0
        if args.command == "rollback":
            options = RollbackOptions(
                _functions(args.functions), args.prefix, args.app, args.alias, args.dry_run
            )
            return 0 if rollback(options).ok else 1
        if args.command == "replay":
            options = ReplayOptions(
                bucket=args.bucket or "",
                key_prefix=args.key_prefix,
                prefix=args.prefix,
                app=args.app,
                alias=args.alias,
                limit=args.limit,
                dry_run=args.dry_run,
            )
            return 0 if replay(options).ok else 1
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
            keep_versions=args.keep_versions,
            dry_run=args.dry_run,
        )
        return 0 if deploy(options).ok else 1
    except (DeployError, PackageError, RoleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ApiError as error:  # the database is down, or not migrated
        print(f"error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
