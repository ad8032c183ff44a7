"""`atpd token create | list | revoke`: the tokens file (service/tokens.py), offline.

`create` prints the new secret alone on stdout (so `TOKEN=$(atpd token create ...)` works) and
what it made on stderr; the file keeps only the secret's SHA-256. A running server picks changes
up within auth_reload_interval_s, or at once on SIGHUP.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atpd.cli.output import table
from atpd.service.tokens import (
    ROLES,
    TokenEntry,
    TokenFileError,
    create_token,
    list_tokens,
    revoke_token,
)

TOKENS_FILE_HELP = "the tokens file the server reads (auth_tokens_file / --tokens-file)"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _listed(values: Sequence[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists: --nodes A,B --nodes C."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return f"{datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC"


def _scope(entry: TokenEntry) -> str:
    return ", ".join([*entry.nodes, *(prefix + "/*" for prefix in entry.geo_prefixes)]) or "all"


def cmd_token(args: argparse.Namespace) -> int:
    try:
        if args.action == "create":
            return _create(args)
        if args.action == "list":
            return _list(args)
        return _revoke(args)
    except TokenFileError as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1


def _create(args: argparse.Namespace) -> int:
    now_ms = _now_ms()
    secret, entry = create_token(
        args.tokens_file,
        args.name,
        args.role,
        now_ms,
        nodes=_listed(args.nodes),
        geo_prefixes=_listed(args.geo),
        channels=_listed(args.channels),
        expires_ms=now_ms + args.expires if args.expires is not None else None,
        default_channel=args.default_channel or "",
    )
    print(
        f"token {entry.name!r} created in {args.tokens_file}: role {entry.role}, scope "
        f"{_scope(entry)}, channels {', '.join(entry.channels) or 'all'}, expires "
        f"{_when(entry.expires_ms)}. The secret below is shown once and stored nowhere:",
        file=sys.stderr,
    )
    print(secret)
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = [
        (
            entry.name,
            entry.role,
            _scope(entry),
            ", ".join(entry.channels) or "all",
            _when(entry.expires_ms),
            _when(entry.created_ms),
            _when(entry.revoked_ms),
        )
        for entry in list_tokens(args.tokens_file)
    ]
    headers = ("name", "role", "scope", "channels", "expires", "created", "revoked")
    print(table(headers, rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    entry = revoke_token(args.tokens_file, args.name, _now_ms())
    print(
        f"token {entry.name!r} revoked at {_when(entry.revoked_ms)}; a running server refuses it "
        "from its next reload of the file (auth_reload_interval_s, or SIGHUP)"
    )
    return 0


def add_token_commands(sub: Any, parse_duration_ms: Callable[[str], int]) -> None:
    """Register `token create | list | revoke` on the top-level subparsers."""
    token = sub.add_parser(
        "token",
        help="create, list or revoke bearer tokens (offline, in the tokens file)",
        description="Manage the tokens file: secrets are shown once at creation and only their "
        "SHA-256 is stored. A running server reloads the file by itself (or on SIGHUP).",
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = actions.add_parser(
        "create",
        help="add a token and print its secret once",
        description="Add a token to the tokens file (created if missing) and print its secret "
        "once on stdout; the file keeps only its SHA-256. A name is never reused, even revoked.",
    )
    p.add_argument("name", help="e.g. st-par-01-till-1 (letters, digits, . _ @ -)")
    p.add_argument("--role", required=True, choices=ROLES, help="what the token may call")
    p.add_argument(
        "--nodes",
        action="append",
        metavar="NODE[,NODE]",
        help="node scope: only these node ids (repeatable; a pos token needs a scope)",
    )
    p.add_argument(
        "--geo",
        action="append",
        metavar="PREFIX",
        help="node scope: nodes under this geo prefix, e.g. EU/FR (repeatable)",
    )
    p.add_argument(
        "--channels",
        action="append",
        metavar="CHANNEL[,CHANNEL]",
        help="the only sales channels it may reserve for (default: any)",
    )
    p.add_argument(
        "--default-channel",
        metavar="CHANNEL",
        help="the channel of its calls that name none (a till's own channel; default: the "
        "rules' default)",
    )
    p.add_argument(
        "--expires",
        type=parse_duration_ms,
        metavar="DURATION",
        help="expires after this long, e.g. 30d, 12h (default: never)",
    )
    p.add_argument("--tokens-file", type=Path, required=True, help=TOKENS_FILE_HELP)
    p.set_defaults(func=cmd_token)

    p = actions.add_parser(
        "list",
        help="list tokens (no secrets): role, scope, expiry, revocation",
        description="List the tokens of the file: name, role, scope, channels, expiry, "
        "creation and revocation times. Secrets are not stored, so never shown.",
    )
    p.add_argument("--tokens-file", type=Path, required=True, help=TOKENS_FILE_HELP)
    p.set_defaults(func=cmd_token)

    p = actions.add_parser(
        "revoke",
        help="revoke a token (kept in the file, marked revoked)",
        description="Mark a token revoked. It stays in the file with its revocation time, so "
        "its name is never reused; a running server refuses it from its next reload.",
    )
    p.add_argument("name")
    p.add_argument("--tokens-file", type=Path, required=True, help=TOKENS_FILE_HELP)
    p.set_defaults(func=cmd_token)
