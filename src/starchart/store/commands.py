"""`starchart keys create | list | revoke`: the API keys the server checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starchart.settings import Settings

STORE_SETTINGS = ("home", "database_url")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not at the top: SQLAlchemy (and the engines the store's
    # conversations import) would slow every other command's start.
    from starchart.store import Store

    store = Store.open(settings)
    try:
        if args.keys_command == "create":
            key, secret = store.keys.create(args.name)
            print(f"created API key {key.id}{f' ({key.name})' if key.name else ''}. Copy it"
                  " now: only its hash is stored, it cannot be shown again. Clients send it"
                  " as 'Authorization: Bearer KEY'.", file=sys.stderr)
            print(secret)
        elif args.keys_command == "list":
            keys = store.keys.list()
            if not keys:
                print("no API keys: a server on a loopback address is open to local"
                      " clients; `starchart keys create` to require a key", file=sys.stderr)
            for key in keys:
                status = f"revoked {_when(key.revoked_at)}" if key.revoked else "active"
                print(f"{key.id}\t{key.prefix}…\t{key.name or '-'}\t"
                      f"created {_when(key.created_at)}\t{status}")
        else:
            key = store.keys.revoke(args.id)
            print(f"revoked {key.id}: requests with it now get 401", file=sys.stderr)
    finally:
        store.close()
    return 0


def add_keys_command(sub: Any, add_setting_flags: Callable[..., None]
                     ) -> Callable[[argparse.Namespace, Settings], int]:
    keys = sub.add_parser(
        "keys", help="create, list and revoke API keys",
        description="API keys for the server. Once any key exists every request needs one"
        " ('Authorization: Bearer KEY'), except /health, /ready and the web page.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", help="a label to recognise the key by")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("id", help="the key's id, as `keys list` shows it (key_...)")
    for parser in (create, listing, revoke):
        add_setting_flags(parser, only=STORE_SETTINGS)
    return _keys
