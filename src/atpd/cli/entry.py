"""The `atpd` command line: the argument parser and `main`; the commands live beside it.

atpd serve [--config FILE] [--demo] [--port N] ...
atpd availability SKU... [--geo EU/FR] [--nodes]    readable tables
atpd reserve ID SKU@NODE=QTY... [--ttl 15m] ;  atpd reserve ID SKU=QTY... --to FR:75008
atpd confirm | release | get ID ;  atpd fulfil ID [SKU@NODE=QTY...]
atpd nodes [--geo PREFIX] ;  atpd status
atpd token create NAME --role ROLE [--nodes N] --tokens-file FILE ;  token list | revoke NAME
Every client command also takes --target, --timeout, --token (ATPD_TOKEN), --ca, --tls,
--cert and --key (cli/client.py).
atpd network apply FILE | show ;  atpd carrier capacity SERVICE NODE DATE SLOTS | show SERVICE NODE
atpd promise SKU=2,SKU2=1 --to FR:75008 | --pickup STORE | --from-store STORE [--segment vip]
atpd node add|update|disable|enable|list ;  atpd load nodes.csv|supply.csv --kind nodes|supply
atpd discrepancies [--node N] ;  atpd inspection [--node N]   (cli/store.py)
atpd sale RECEIPT NODE SKU=QTY [--force] ;  atpd return ID NODE SKU=QTY [--inspect]  (cli/till.py)
atpd transfer create|ship|receive|cancel|get|list ;  atpd restock plan --geo EU | apply PLAN_ID
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from atpd import __version__
from atpd.cli.client import CLIENT_EXIT_CODES, add_client_options
from atpd.cli.load_export import add_feed_commands
from atpd.cli.network import add_network_commands
from atpd.cli.promise import add_promise_command, destination
from atpd.cli.reads import cmd_availability, cmd_nodes, cmd_status, cmd_watch
from atpd.cli.restock import add_restock_commands
from atpd.cli.rules_supply import cmd_rules, cmd_supply
from atpd.cli.serve import cmd_serve, cmd_verify_journal, cmd_verify_snapshot
from atpd.cli.store import add_store_commands
from atpd.cli.till import add_till_commands
from atpd.cli.tokens import add_token_commands
from atpd.cli.transfers import add_transfer_commands
from atpd.cli.writes import cmd_lifecycle, cmd_reserve, cmd_snapshot

DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
LINE = re.compile(r"^([^@=\s]+)@([^@=\s]+)=(\d+)$")
# A reserve line may leave out @NODE: the server then sources it (--to or --pickup).
RESERVE_LINE = re.compile(r"^([^@=\s]+)(?:@([^@=\s]+))?=(\d+)$")


def parse_duration_ms(text: str) -> int:
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 900ms, 30s, 15m, 2h")
    return int(match.group(1)) * DURATION_MS[match.group(2)]


def parse_line(text: str) -> tuple[str, str, int]:
    match = LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a line like SKU@NODE=QTY")
    return match.group(1), match.group(2), int(match.group(3))


def parse_reserve_line(text: str) -> tuple[str, str, int]:
    match = RESERVE_LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a line like SKU@NODE=QTY or SKU=QTY")
    return match.group(1), match.group(2) or "", int(match.group(3))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atpd",
        description="atpd: in-memory, real-time availability-to-promise server.",
    )
    parser.add_argument("--version", action="version", version=f"atpd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server", description="Run the gRPC server.")
    serve.add_argument("--config", type=Path, help="TOML config file (see README)")
    serve.add_argument("--demo", action="store_true", help="load the embedded demo data set")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks one)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; -1 off)")
    serve.add_argument("--data-dir", type=Path, help="journal and snapshot directory")
    serve.add_argument("--fsync", choices=("always", "everysec", "none"), help="fsync policy")
    serve.add_argument("--rules", type=Path, help="availability rules (TOML) to apply at start")
    serve.add_argument(
        "--repair",
        action="store_true",
        help="if the journal is corrupt mid-way, back it up and truncate at the bad record",
    )
    serve.add_argument(
        "--in-memory", action="store_true", help="no journal, no snapshots (benchmarks, trials)"
    )
    serve.add_argument("--metrics-host", help="metrics address (default 127.0.0.1)")
    serve.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="CA (PEM) for client certificates: mutual TLS"
    )
    serve.add_argument("--tokens-file", type=Path, help="bearer tokens (see `atpd token`)")
    serve.add_argument("--audit-log", type=Path, help="audit log file (JSON lines, rotated)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback bind without TLS and tokens (logged at every start)",
    )
    serve.add_argument(
        "--follow",
        metavar="HOST:PORT",
        help="run as a read-only follower of the primary at HOST:PORT (config `follow`)",
    )
    serve.add_argument(
        "--replication",
        choices=("async", "sync"),
        help="sync: acknowledge writes once a follower has them durable (config `replication`)",
    )
    serve.add_argument(
        "--cluster",
        metavar="NAME",
        help="join the etcd-led cluster NAME: its members elect the leader (config `cluster`)",
    )
    serve.add_argument(
        "--etcd",
        metavar="HOST:PORT",
        action="append",
        help="an etcd endpoint of the cluster; repeat for several (config `etcd`)",
    )
    serve.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="where the other members and clients reach this server (config `advertise`)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)

    verify = sub.add_parser(
        "verify-journal",
        help="check journal segments offline (the server must be stopped)",
        description="Check every journal segment's records and checksums, like redis-check-aof.",
    )
    verify.add_argument("directory", type=Path, help="the data directory (data_dir)")
    verify.add_argument(
        "--repair", action="store_true", help="back up and truncate at the first bad record"
    )
    verify.set_defaults(func=cmd_verify_journal)

    verify_snapshot = sub.add_parser(
        "verify-snapshot",
        help="check snapshot files offline: checksums and content",
        description="Load every snapshot in the data directory as recovery would (checksums, "
        "ids, counts, shapes) and report each one's status.",
    )
    verify_snapshot.add_argument("directory", type=Path, help="the data directory (data_dir)")
    verify_snapshot.set_defaults(func=cmd_verify_snapshot)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=CLIENT_EXIT_CODES)
        add_client_options(p)
        return p

    p = client("availability", "show what can be promised for SKUs, rolled up by geography")
    p.add_argument("skus", nargs="+", metavar="SKU")
    p.add_argument("--geo", help="only nodes under this geo prefix, e.g. EU/FR")
    p.add_argument("--node", action="append", help="only this node (repeatable)")
    p.add_argument("--nodes", action="store_true", help="list every node with stock")
    p.add_argument("--explain", action="store_true", help="per node, every term of the ATP formula")
    p.add_argument("--channel", help="sales channel, e.g. web")
    p.add_argument("--segment", help="customer segment, e.g. vip")
    p.set_defaults(func=cmd_availability)

    p = client(
        "reserve",
        "hold stock for a cart, an order or a POS sale (all or nothing), or a promised option",
    )
    p.add_argument("reservation_id")
    p.add_argument(
        "lines",
        nargs="*",
        type=parse_reserve_line,
        metavar="SKU@NODE=QTY",
        help="a line at a node; SKU=QTY (no node) lets the server source it for --to/--pickup",
    )
    sourced = p.add_mutually_exclusive_group()
    sourced.add_argument(
        "--to",
        type=destination,
        metavar="CC:POSTAL",
        help="deliver node-less lines here (e.g. FR:75008): the server holds its best option",
    )
    sourced.add_argument("--pickup", metavar="STORE", help="collect node-less lines at this store")
    p.add_argument(
        "--option",
        metavar="TOKEN",
        help="reserve a promised option (its token from `atpd promise`): stock, carrier slots "
        "and pick capacity together; no lines needed",
    )
    p.add_argument("--ttl", type=parse_duration_ms, default=15 * 60_000, help="hold time (15m)")
    p.add_argument("--pos", action="store_true", help="a POS sale: reserve and fulfil at once")
    p.add_argument("--channel", help="sales channel")
    p.add_argument("--segment", help="customer segment")
    p.set_defaults(func=cmd_reserve)

    for name, text in (
        ("confirm", "confirm a held reservation (it stops expiring)"),
        ("release", "release a reservation (stock is freed)"),
        ("get", "show a reservation"),
    ):
        p = client(name, text)
        p.add_argument("reservation_id")
        p.set_defaults(func=cmd_lifecycle)
    p = client("fulfil", "record that goods left (all that is held, or the lines given)")
    p.add_argument("reservation_id")
    p.add_argument("lines", nargs="*", type=parse_line, metavar="SKU@NODE=QTY")
    p.add_argument("--release-remainder", action="store_true", help="free what is left")
    p.set_defaults(func=cmd_lifecycle)

    p = client("nodes", "list nodes")
    p.add_argument("--geo", help="only nodes under this geo prefix")
    p.set_defaults(func=cmd_nodes)

    p = client("status", "show server counts and journal state")
    p.set_defaults(func=cmd_status)

    p = client("watch", "print availability changes as they happen (Ctrl-C to stop)")
    p.add_argument("skus", nargs="*", metavar="SKU", help="only these SKUs (default: all)")
    p.add_argument("--geo", help="only nodes under this geo prefix")
    p.add_argument("--node", action="append", help="only this node (repeatable)")
    p.add_argument("--channel", help="sales channel")
    p.add_argument("--segment", help="customer segment")
    p.add_argument("--from-sequence", type=int, default=0, help="replay changes after this")
    p.add_argument("--low-stock", type=int, default=0, help="LOW_STOCK below this ATP")
    p.add_argument(
        "--max-delay-ms",
        type=int,
        default=0,
        help="let the server hold a message up to this long to gather more events (default 0)",
    )
    p.set_defaults(func=cmd_watch)

    p = client("snapshot", "write a snapshot now (journal segments it covers are removed)")
    p.set_defaults(func=cmd_snapshot)

    rules = sub.add_parser("rules", help="show or replace the availability rules")
    rules_sub = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("show", "show the rules in force"), ("apply", "replace the rules")):
        p = rules_sub.add_parser(name, help=text, description=text, epilog=CLIENT_EXIT_CODES)
        add_client_options(p)
        if name == "apply":
            p.add_argument("file", type=Path, help="TOML rule file")
        else:
            p.add_argument("--text", action="store_true", help="print the whole rule file")
        p.set_defaults(func=cmd_rules)

    supply = sub.add_parser("supply", help="incoming supply: add, receive, cancel, list")
    supply_sub = supply.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("add", "announce incoming supply (a PO, a transfer, a return in transit)"),
        ("receive", "the supply arrived: move it into on_hand"),
        ("cancel", "the supply will not come"),
        ("list", "list incoming supply"),
    ):
        p = supply_sub.add_parser(name, help=text, description=text, epilog=CLIENT_EXIT_CODES)
        add_client_options(p)
        if name == "list":
            p.add_argument("--sku", help="only this SKU")
        else:
            p.add_argument("supply_id")
        if name == "add":
            p.add_argument("sku")
            p.add_argument("node")
            p.add_argument("quantity", type=int)
            p.add_argument("--eta-hours", type=float, default=24.0, help="arrives in (24)")
            p.add_argument(
                "--kind",
                choices=("purchase_order", "transfer", "return_in_transit"),
                default="purchase_order",
            )
        if name == "receive":
            p.add_argument("--quantity", type=int, help="only part of it arrived")
        p.set_defaults(func=cmd_supply)

    add_feed_commands(client)
    add_store_commands(sub, client, parse_duration_ms)
    add_till_commands(client)
    add_token_commands(sub, parse_duration_ms)
    add_network_commands(sub)
    add_promise_command(sub)
    add_transfer_commands(sub)
    add_restock_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `atpd availability ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    return result
