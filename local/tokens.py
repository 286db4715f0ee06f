"""Access tokens from the command line: register devices and gateways, create admin tokens, revoke.

    python -m local.tokens register sensor-001                       # a device token
    python -m local.tokens register gateway-7 --device s1 --device s2  # a gateway token
    python -m local.tokens read ops-team                             # a read key for every device
    python -m local.tokens read site-a --device 'site-a-*'           # a read key for some devices
    python -m local.tokens admin ops                                 # an admin token (delete-all)
    python -m local.tokens list
    python -m local.tokens revoke sensor-001

It talks to the PostgreSQL the settings name (DB_HOST, ...), so it works against RDS from a machine in
the VPC; with no DB_HOST set it uses the running `make run` stack (.local/stack.env). A token is
printed once and stored only as a hash.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from common.auth import TokenRegistry
from common.errors import ApiError
from common.settings import Settings
from common.store import ReadingStore

from .env import DATA_DIR, STACK_ENV, read_stack_env


def _environment() -> dict[str, str]:
    """The environment, or, when it names no database, the running `make run` stack's settings."""
    if os.environ.get("DB_HOST"):
        return dict(os.environ)
    values = read_stack_env()
    if values is None:
        return dict(os.environ)
    print(f"(using the local stack's settings from {DATA_DIR / STACK_ENV})", file=sys.stderr)
    return {**values, **os.environ}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.tokens", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="create a device (or gateway) token and print it")
    register.add_argument("name", help="the device id (or a gateway's name with --device)")
    register.add_argument("--device", action="append", default=[], help="a device the token may send for")
    read = commands.add_parser("read", help="create a read key and print it (reads only, never sends)")
    read.add_argument("name", help="who or what the key is for")
    read.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="GLOB",
        help="devices the key may read: * matches any run of characters, ? one (default: every device)",
    )
    admin = commands.add_parser("admin", help="create an admin token and print it")
    admin.add_argument("name")
    revoke = commands.add_parser("revoke", help="revoke every active token of this name")
    revoke.add_argument("name")
    commands.add_parser("list", help="list tokens (never their values)")
    args = parser.parse_args(argv)
    # One clear line if the database is down, not the pool's retry chatter.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

    store = ReadingStore(Settings.from_env(_environment()))
    registry = TokenRegistry(store)
    try:
        if args.command == "register":
            token = registry.register(args.name, args.device)
            devices = ", ".join(args.device) if args.device else args.name
            print(f"Token for {args.name} (devices: {devices}). Shown once, keep it safe:", file=sys.stderr)
            print(token)
        elif args.command == "read":
            token = registry.register_reader(args.name, args.device)
            devices = ", ".join(args.device) if args.device else "every device"
            print(f"Read key {args.name} (devices: {devices}). Shown once, keep it safe:", file=sys.stderr)
            print(token)
        elif args.command == "admin":
            token = registry.register(args.name, is_admin=True)
            print(f"Admin token {args.name}. Shown once, keep it safe:", file=sys.stderr)
            print(token)
        elif args.command == "revoke":
            count = registry.revoke(args.name)
            print(f"Revoked {count} token(s) named {args.name}")
            return 0 if count else 1
        else:
            for name, kind, devices, created, revoked in store.list_tokens():
                if kind == "admin":
                    role = "admin"
                elif kind == "read":
                    role = "read: " + (",".join(devices) or "every device")
                else:
                    role = "devices: " + ",".join(devices)
                state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
                print(f"{name:<24} {role:<40} created {created:%Y-%m-%d %H:%M}  {state}")
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
