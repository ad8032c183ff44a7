"""Client commands for what happens at a store's till (StoreService), for operations staff;
POS terminals call the gRPC API (or atpd.client) directly:

atpd sale RECEIPT NODE SKU=QTY... [--force] [--channel C] [--segment S] [--terminal T]
atpd return RETURN_ID NODE SKU=QTY... [--inspect] [--receipt RECEIPT] [--terminal T]
atpd release-inspection RELEASE_ID NODE SKU=QTY (--restock | --write-off)

Each is idempotent on its id: the same command again answers "replayed" and changes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from atpd.cli.client import call_or_exit, open_channel
from atpd.cli.output import outcome_name, shortage_reason_name, table
from atpd.cli.transfers import parse_item


def cmd_sale(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, store_pb2, store_pb2_grpc

    stub = store_pb2_grpc.StoreServiceStub(open_channel(args))
    request = store_pb2.RecordSaleRequest(
        receipt_id=args.receipt_id,
        node_id=args.node_id,
        lines=[store_pb2.SaleLine(sku=sku, quantity=quantity) for sku, quantity in args.lines],
        force=args.force,
        channel=args.channel or "",
        segment=args.segment or "",
        terminal_id=args.terminal or "",
    )
    response = call_or_exit(lambda: stub.RecordSale(request, timeout=args.timeout))
    print(
        f"sale {args.receipt_id} at {args.node_id}: {outcome_name(response.outcome)}"
        + (" (replayed: recorded before)" if response.replayed else "")
    )
    if response.shortages:
        rows = [
            (s.sku, s.node_id, s.requested, s.available, shortage_reason_name(s.reason))
            for s in response.shortages
        ]
        print(table(("sku", "node", "requested", "available", "reason"), rows))
        print("nothing was recorded: --force records a sale that already happened")
    for d in response.discrepancies:
        print(
            f"discrepancy #{d.sequence}: sold {d.sold} {d.sku} with {d.expected} in the system "
            f"({d.missing} missing): on_hand is now 0 (atpd discrepancies)"
        )
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_return(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, store_pb2, store_pb2_grpc

    stub = store_pb2_grpc.StoreServiceStub(open_channel(args))
    request = store_pb2.RecordReturnRequest(
        return_id=args.return_id,
        node_id=args.node_id,
        lines=[
            store_pb2.ReturnLine(sku=sku, quantity=quantity, inspect=args.inspect)
            for sku, quantity in args.lines
        ],
        receipt_id=args.receipt or "",
        terminal_id=args.terminal or "",
    )
    response = call_or_exit(lambda: stub.RecordReturn(request, timeout=args.timeout))
    where = "set aside to inspect (atpd inspection)" if args.inspect else "back on the shelf"
    print(
        f"return {args.return_id} at {args.node_id}: {outcome_name(response.outcome)}, {where}"
        + (" (replayed: recorded before)" if response.replayed else "")
    )
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_release_inspection(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, store_pb2, store_pb2_grpc

    stub = store_pb2_grpc.StoreServiceStub(open_channel(args))
    sku, quantity = args.line
    outcome: Any = (
        store_pb2.INSPECTION_OUTCOME_RESTOCK
        if args.restock
        else store_pb2.INSPECTION_OUTCOME_WRITE_OFF
    )
    request = store_pb2.ReleaseInspectionRequest(
        release_id=args.release_id,
        sku=sku,
        node_id=args.node_id,
        quantity=quantity,
        outcome=outcome,
    )
    response = call_or_exit(lambda: stub.ReleaseInspection(request, timeout=args.timeout))
    done = "back on the shelf" if args.restock else "written off"
    print(
        f"{quantity} {sku} at {args.node_id}: {outcome_name(response.outcome)}, {done}"
        + (" (replayed: recorded before)" if response.replayed else "")
    )
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def add_till_commands(client: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register `sale`, `return` and `release-inspection` (client parsers from entry.py)."""
    p = client("sale", "record a till sale (--force: one that already happened)")
    p.add_argument("receipt_id", metavar="RECEIPT")
    p.add_argument("node_id", metavar="NODE", help="the store the goods left")
    p.add_argument("lines", nargs="+", type=parse_item, metavar="SKU=QTY")
    p.add_argument(
        "--force",
        action="store_true",
        help="record it even if the system count is short (on_hand floors at 0, a discrepancy "
        "is kept)",
    )
    p.add_argument("--channel", help="check an unforced sale against this channel's ATP")
    p.add_argument("--segment", help="and this segment's")
    p.add_argument("--terminal", help="the till, for the discrepancy records")
    p.set_defaults(func=cmd_sale)

    p = client("return", "record a till return: back on the shelf, or aside to inspect")
    p.add_argument("return_id", metavar="RETURN_ID")
    p.add_argument("node_id", metavar="NODE", help="the store taking the goods back")
    p.add_argument("lines", nargs="+", type=parse_item, metavar="SKU=QTY")
    p.add_argument(
        "--inspect",
        action="store_true",
        help="keep the units aside, not sellable, until `atpd release-inspection`",
    )
    p.add_argument("--receipt", help="the original sale's receipt (for the record)")
    p.add_argument("--terminal", help="the till")
    p.set_defaults(func=cmd_return)

    p = client("release-inspection", "release inspected returned units: restock or write off")
    p.add_argument("release_id", metavar="RELEASE_ID")
    p.add_argument("node_id", metavar="NODE")
    p.add_argument("line", type=parse_item, metavar="SKU=QTY")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--restock", action="store_true", help="sellable: added to on_hand")
    verdict.add_argument("--write-off", action="store_true", help="damaged: dropped")
    p.set_defaults(func=cmd_release_inspection)
