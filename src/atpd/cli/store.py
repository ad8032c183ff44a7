"""Client commands for nodes and store follow-up:

atpd node add NODE --kind store --geo EU/FR/Paris [--no-ships] [--pickup] [--tag T]...
atpd node update NODE [--kind K] [--geo G] [--ships|--no-ships] [--pickup|--no-pickup] [--tag T]
atpd node disable NODE ;  atpd node enable NODE ;  atpd node list [--geo PREFIX]
atpd amend CART SKU@NODE=QTY... [--ttl 15m]   (the cart's lines after the change, all of them)
atpd discrepancies [--node N] [--sku S] [--after SEQ] [--limit N]
atpd inspection [--node N] [--sku S]

`add` refuses a node that exists and `update`/`disable` one that does not, so a typo never
creates a node; each is one UpsertNode of the whole node (update keeps what is not given).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from atpd.cli.catalogue_files import NODE_KINDS
from atpd.cli.client import call_or_exit, open_channel
from atpd.cli.output import outcome_name, shortage_reason_name, table
from atpd.cli.reads import cmd_nodes


def _find_node(stub: Any, node_id: str, timeout: float) -> Any:
    from atpd.v1 import inventory_pb2

    listed = call_or_exit(lambda: stub.ListNodes(inventory_pb2.ListNodesRequest(), timeout=timeout))
    for node in listed.nodes:
        if node.node_id == node_id:
            return node
    return None


def cmd_node(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

    if args.action == "list":
        return cmd_nodes(args)
    stub = inventory_pb2_grpc.InventoryServiceStub(open_channel(args))
    current = _find_node(stub, args.node_id, args.timeout)
    if args.action == "add":
        if current is not None:
            print(
                f"atpd node add: {args.node_id!r} exists already: change it with `atpd node "
                "update`",
                file=sys.stderr,
            )
            return 2
        node = inventory_pb2.Node(node_id=args.node_id, ships=True, enabled=True)
    elif current is None:
        print(
            f"atpd node {args.action}: unknown node {args.node_id!r}: add it with `atpd node add`",
            file=sys.stderr,
        )
        return 2
    else:
        node = current
    if getattr(args, "kind", None):
        kind_value: Any = common_pb2.NodeKind.Value("NODE_KIND_" + args.kind.upper())
        node.kind = kind_value
    if getattr(args, "geo", None):
        node.geo_path = args.geo
    if getattr(args, "ships", None) is not None:
        node.ships = args.ships
    if getattr(args, "pickup", None) is not None:
        node.pickup = args.pickup
    if getattr(args, "tags", None) is not None:
        del node.tags[:]
        node.tags.extend(args.tags)
    if args.action in ("disable", "enable"):
        node.enabled = args.action == "enable"
    request = inventory_pb2.UpsertNodeRequest(node=node)
    response = call_or_exit(lambda: stub.UpsertNode(request, timeout=args.timeout))
    done = "created" if response.created else "updated"
    state = "enabled" if node.enabled else "DISABLED"
    kind = common_pb2.NodeKind.Name(node.kind).removeprefix("NODE_KIND_").lower()
    print(f"node {node.node_id} {done}: {kind} at {node.geo_path}, {state}")
    return 0


AMEND_LINE = re.compile(r"^([^@=\s]+)@([^@=\s]+)=(\d+)$")


def parse_amend_line(text: str) -> tuple[str, str, int]:
    match = AMEND_LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a line like SKU@NODE=QTY")
    return match.group(1), match.group(2), int(match.group(3))


def cmd_amend(args: argparse.Namespace) -> int:
    from atpd.cli.writes import print_reservation
    from atpd.v1 import common_pb2, reservations_pb2, reservations_pb2_grpc

    stub = reservations_pb2_grpc.ReservationServiceStub(open_channel(args))
    request = reservations_pb2.AmendReservationRequest(
        reservation_id=args.reservation_id,
        lines=[
            reservations_pb2.ReservationLine(sku=s, node_id=n, quantity=q) for s, n, q in args.lines
        ],
        ttl_ms=args.ttl or 0,
    )
    response = call_or_exit(lambda: stub.AmendReservation(request, timeout=args.timeout))
    print(
        f"outcome: {outcome_name(response.outcome)}"
        + (" (lines already so)" if response.replayed else "")
    )
    if response.shortages:
        rows = [
            (s.sku, s.node_id, s.requested, s.available, shortage_reason_name(s.reason))
            for s in response.shortages
        ]
        print(table(("sku", "node", "requested", "available", "reason"), rows))
        print("the cart is unchanged")
    if response.HasField("reservation"):
        print_reservation(response.reservation)
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def _when(epoch_ms: int) -> str:
    return f"{datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d %H:%M:%S}"


def cmd_discrepancies(args: argparse.Namespace) -> int:
    from atpd.v1 import store_pb2, store_pb2_grpc

    stub = store_pb2_grpc.StoreServiceStub(open_channel(args))
    request = store_pb2.ListDiscrepanciesRequest(
        node_id=args.node or "",
        sku=args.sku or "",
        after_sequence=args.after,
        limit=args.limit,
    )
    response = call_or_exit(lambda: stub.ListDiscrepancies(request, timeout=args.timeout))
    rows = [
        (
            d.sequence,
            d.node_id,
            d.sku,
            d.expected,
            d.sold,
            d.missing,
            d.receipt_id,
            d.terminal_id,
            _when(d.sold_at_ms),
            _when(d.recorded_at_ms),
        )
        for d in response.discrepancies
    ]
    headers = (
        "seq",
        "node",
        "sku",
        "expected",
        "sold",
        "missing",
        "receipt",
        "terminal",
        "sold at (UTC)",
        "recorded at (UTC)",
    )
    print(table(headers, rows))
    if response.next_after_sequence:
        print(f"more: --after {response.next_after_sequence}")
    if response.forgotten:
        print(f"{response.forgotten} older discrepancies were dropped (max_retained_discrepancies)")
    return 0


def cmd_inspection(args: argparse.Namespace) -> int:
    from atpd.v1 import store_pb2, store_pb2_grpc

    stub = store_pb2_grpc.StoreServiceStub(open_channel(args))
    request = store_pb2.ListInspectionRequest(node_id=args.node or "", sku=args.sku or "")
    response = call_or_exit(lambda: stub.ListInspection(request, timeout=args.timeout))
    print(
        table(
            ("node", "sku", "to inspect"),
            [(e.node_id, e.sku, e.quantity) for e in response.entries],
        )
    )
    return 0


def add_store_commands(
    sub: Any,
    client: Callable[[str, str], argparse.ArgumentParser],
    parse_ttl_ms: Callable[[str], int],
) -> None:
    """Register `node`, `discrepancies` and `inspection` (client parsers from entry.py)."""
    from atpd.cli.client import CLIENT_EXIT_CODES, add_client_options

    node = sub.add_parser("node", help="add, change, disable or list nodes")
    actions = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("add", "add a node (refused if it exists)"),
        ("update", "change a node's fields (what is not given is kept)"),
        ("disable", "disable a node: left out of availability, refuses new reservations"),
        ("enable", "enable a disabled node"),
        ("list", "list nodes"),
    ):
        p = actions.add_parser(name, help=text, description=text, epilog=CLIENT_EXIT_CODES)
        add_client_options(p)
        if name == "list":
            p.add_argument("--geo", help="only nodes under this geo prefix")
        else:
            p.add_argument("node_id", metavar="NODE")
        if name in ("add", "update"):
            p.add_argument("--kind", choices=NODE_KINDS, required=name == "add")
            p.add_argument("--geo", required=name == "add", help="geo path, e.g. EU/FR/Paris")
            p.add_argument(
                "--ships",
                action=argparse.BooleanOptionalAction,
                help="ships to customers (add: yes)",
            )
            p.add_argument(
                "--pickup",
                action=argparse.BooleanOptionalAction,
                help="customers collect here (add: no)",
            )
            p.add_argument(
                "--tag", dest="tags", action="append", help="a tag (repeatable; replaces them)"
            )
        p.set_defaults(func=cmd_node)

    p = client("amend", "change a held cart's lines and expiry, all or nothing")
    p.add_argument("reservation_id", metavar="CART")
    p.add_argument(
        "lines",
        nargs="+",
        type=parse_amend_line,
        metavar="SKU@NODE=QTY",
        help="every line of the cart after the change",
    )
    p.add_argument("--ttl", type=parse_ttl_ms, help="hold for this long from now (default: keep)")
    p.set_defaults(func=cmd_amend)

    p = client("discrepancies", "list sales recorded with less stock than was sold (forced)")
    p.add_argument("--node", help="only this node")
    p.add_argument("--sku", help="only this SKU")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="page: after this sequence")
    p.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    p.set_defaults(func=cmd_discrepancies)

    p = client("inspection", "list returned units waiting for inspection (not sellable)")
    p.add_argument("--node", help="only this node")
    p.add_argument("--sku", help="only this SKU")
    p.set_defaults(func=cmd_inspection)
