"""Client commands for transfer orders: `atpd transfer create|ship|receive|cancel|get|list`.

atpd transfer create T-1 --from WH-EU-01 --to ST-PAR-01 BAG-1=2 HAT-3=1 [--ship-date D]
atpd transfer ship T-1
atpd transfer receive T-1 RECEIPT-1 [BAG-1=2 HAT-3=0+1] [--final]   (good+damaged)
atpd transfer cancel T-1 ;  atpd transfer get T-1 ;  atpd transfer list [--node N]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from atpd.cli.client import CLIENT_EXIT_CODES, add_client_options, call_or_exit, open_channel
from atpd.cli.output import outcome_name, shortage_reason_name, table

ITEM = re.compile(r"^([^=\s]+)=(\d+)$")
RECEIVED = re.compile(r"^([^=\s]+)=(\d+)(?:\+(\d+))?$")
STATUSES = ("created", "shipped", "received", "cancelled")


def parse_item(text: str) -> tuple[str, int]:
    match = ITEM.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a line like SKU=QTY")
    return match.group(1), int(match.group(2))


def parse_received(text: str) -> tuple[str, int, int]:
    match = RECEIVED.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a line like SKU=GOOD or SKU=GOOD+DAMAGED"
        )
    return match.group(1), int(match.group(2)), int(match.group(3) or 0)


def _date(eta_ms: int) -> str:
    return datetime.fromtimestamp(eta_ms / 1000, UTC).strftime("%Y-%m-%d")


def print_transfer(response: Any) -> None:
    from atpd.v1 import transfers_pb2

    if response.shortages:
        print(f"{outcome_name(response.outcome)}: nothing held")
        short = [
            (s.sku, s.node_id, s.requested, s.available, shortage_reason_name(s.reason))
            for s in response.shortages
        ]
        print(table(("sku", "node", "requested", "available", "reason"), short))
        return
    t = response.transfer
    status = transfers_pb2.TransferStatus.Name(t.status).removeprefix("TRANSFER_STATUS_")
    print(
        f"transfer {t.transfer_id}: {t.from_node_id} -> {t.to_node_id}, {status}, ships "
        f"{t.ship_date}, ETA {_date(t.eta_ms)} (lead {t.lead_days} d)"
        + (f", plan {t.plan_id}" if t.plan_id else "")
    )
    rows = [
        (x.sku, x.quantity, x.held, x.shipped, x.received, x.damaged, x.short, x.over)
        for x in t.lines
    ]
    headers = ("sku", "qty", "held", "shipped", "received", "damaged", "short", "over")
    print(table(headers, rows))
    shortfall = [x for x in t.lines if x.source_shortfall]
    for x in shortfall:
        print(f"  {x.sku}: the source counted {x.source_shortfall} fewer than shipped")


def cmd_transfer(args: argparse.Namespace) -> int:
    from atpd.v1 import transfers_pb2, transfers_pb2_grpc

    stub = transfers_pb2_grpc.TransferServiceStub(open_channel(args))
    action = args.action
    if action == "list":
        status = 0
        if args.status:
            status = transfers_pb2.TransferStatus.Value(f"TRANSFER_STATUS_{args.status.upper()}")
        request = transfers_pb2.ListTransfersRequest(
            node_id=args.node or "",
            status=status,  # type: ignore[arg-type]
            limit=args.limit,
        )
        answer = call_or_exit(lambda: stub.ListTransfers(request, timeout=args.timeout))
        rows = [
            (
                t.transfer_id,
                t.from_node_id,
                t.to_node_id,
                transfers_pb2.TransferStatus.Name(t.status).removeprefix("TRANSFER_STATUS_"),
                t.ship_date,
                _date(t.eta_ms),
                sum(x.quantity for x in t.lines),
            )
            for t in answer.transfers
        ]
        print(table(("transfer", "from", "to", "status", "ships", "eta", "units"), rows))
        if answer.truncated:
            print(f"(first {len(rows)} only: raise --limit)")
        return 0
    call: Callable[[], Any]
    if action == "create":
        create = transfers_pb2.CreateTransferRequest(
            transfer_id=args.transfer_id,
            from_node_id=args.source,
            to_node_id=args.destination,
            lines=[transfers_pb2.TransferItem(sku=s, quantity=q) for s, q in args.lines],
            ship_date=args.ship_date or datetime.now(UTC).date().isoformat(),
        )
        call = lambda: stub.CreateTransfer(create, timeout=args.timeout)  # noqa: E731
    elif action == "ship":
        ship = transfers_pb2.ShipTransferRequest(transfer_id=args.transfer_id)
        call = lambda: stub.ShipTransfer(ship, timeout=args.timeout)  # noqa: E731
    elif action == "receive":
        receive = transfers_pb2.ReceiveTransferRequest(
            transfer_id=args.transfer_id,
            receipt_id=args.receipt_id,
            lines=[
                transfers_pb2.ReceivedItem(sku=s, received=g, damaged=d) for s, g, d in args.lines
            ],
            final=args.final,
        )
        call = lambda: stub.ReceiveTransfer(receive, timeout=args.timeout)  # noqa: E731
    elif action == "cancel":
        cancel = transfers_pb2.CancelTransferRequest(transfer_id=args.transfer_id)
        call = lambda: stub.CancelTransfer(cancel, timeout=args.timeout)  # noqa: E731
    else:
        get = transfers_pb2.GetTransferRequest(transfer_id=args.transfer_id)
        call = lambda: stub.GetTransfer(get, timeout=args.timeout)  # noqa: E731
    response = call_or_exit(call)
    print_transfer(response)
    return 0 if not response.shortages else 3


def add_transfer_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`atpd transfer ...` on the top-level parser."""
    transfer = sub.add_parser("transfer", help="transfer orders: stock moved between nodes")
    actions = transfer.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(
            name, help=text, description=text, epilog=CLIENT_EXIT_CODES
        )
        add_client_options(p)
        p.set_defaults(func=cmd_transfer)
        return p

    p = action("create", "hold units at the source and announce them at the destination")
    p.add_argument("transfer_id")
    p.add_argument("--from", dest="source", required=True, help="source node id")
    p.add_argument("--to", dest="destination", required=True, help="destination node id")
    p.add_argument("lines", nargs="+", type=parse_item, metavar="SKU=QTY")
    p.add_argument("--ship-date", help="YYYY-MM-DD (UTC; default today)")
    p = action("ship", "the units left the source (taken off its on_hand)")
    p.add_argument("transfer_id")
    p = action("receive", "record a receipt at the destination (no lines: everything arrived)")
    p.add_argument("transfer_id")
    p.add_argument("receipt_id", help="idempotency key of this receipt")
    p.add_argument("lines", nargs="*", type=parse_received, metavar="SKU=GOOD[+DAMAGED]")
    p.add_argument("--final", action="store_true", help="nothing more comes: the rest is short")
    p = action("cancel", "give the held units back (only before shipping)")
    p.add_argument("transfer_id")
    p = action("get", "show a transfer")
    p.add_argument("transfer_id")
    p = action("list", "list transfers (open ones, then closed ones, oldest first)")
    p.add_argument("--node", help="only transfers from or to this node")
    p.add_argument("--status", choices=STATUSES, help="only transfers in this status")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
