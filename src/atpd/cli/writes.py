"""Client commands that change state: reserve, the reservation lifecycle, snapshot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from atpd.cli.client import call_or_exit, open_channel, open_client
from atpd.cli.output import outcome_name, shortage_reason_name, table


def print_reservation(reservation: Any) -> None:
    from atpd.v1 import common_pb2

    status = common_pb2.ReservationStatus.Name(reservation.status).removeprefix(
        "RESERVATION_STATUS_"
    )
    print(f"reservation {reservation.reservation_id}: {status}", end="")
    if reservation.status == common_pb2.RESERVATION_STATUS_HELD:
        expires = datetime.fromtimestamp(reservation.expires_at_ms / 1000, UTC)
        print(f" until {expires:%Y-%m-%d %H:%M:%S} UTC", end="")
    print()
    if reservation.HasField("principal"):
        maker = reservation.principal
        scope = ", ".join([*maker.node_ids, *(p + "/*" for p in maker.geo_prefixes)]) or "all"
        print(f"made by {maker.name} (role {maker.role}, scope {scope})")
    fulfilled = {(x.sku, x.node_id): x.quantity for x in reservation.fulfilled}
    rows = [
        (x.sku, x.node_id, x.quantity, fulfilled.get((x.sku, x.node_id), 0))
        for x in reservation.lines
    ]
    print(table(("sku", "node", "qty", "fulfilled"), rows))
    if reservation.shipments:
        print(f"to {reservation.destination}, holding:")
        shipment_rows = [
            (s.node_id, s.service or "(pickup)", s.ship_date, "slot" if s.service else "-")
            for s in reservation.shipments
        ]
        print(table(("node", "service", "ship date", "carrier slot"), shipment_rows))


def cmd_reserve(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, reservations_pb2

    if not args.lines and not args.option:
        print(
            "atpd reserve: give lines (SKU@NODE=QTY ..., or SKU=QTY ... with --to or --pickup) "
            "or --option TOKEN",
            file=sys.stderr,
        )
        return 2
    with open_client(args) as client:
        result = call_or_exit(
            lambda: client.reserve(
                args.reservation_id,
                args.lines,
                ttl_ms=args.ttl,
                kind="POS_SALE" if args.pos else "CART",
                channel=args.channel or "",
                segment=args.segment or "",
                option_token=args.option or "",
                destination=args.to,
                pickup_node_id=args.pickup or "",
            )
        )
    response = result.raw
    print(
        f"outcome: {outcome_name(response.outcome)}" + (" (replayed)" if response.replayed else "")
    )
    if response.shortages:
        rows = [
            (s.sku, s.node_id, s.requested, s.available, shortage_reason_name(s.reason))
            for s in response.shortages
        ]
        print(table(("sku", "node", "requested", "available", "reason"), rows))
    for change in response.changes:
        resource = reservations_pb2.ChangedResource.Name(change.resource)
        print(
            f"changed: shipment {change.shipment} "
            f"{resource.removeprefix('CHANGED_RESOURCE_').lower()}: {change.detail}"
        )
    if response.changes:
        print("the option moved since the promise: ask for a promise again")
    if response.best_option_token:
        print(f"best option now (reserve it with --option): {response.best_option_token}")
    if response.no_option_reason:
        print(f"no option: {response.no_option_reason}")
    if response.HasField("reservation"):
        print_reservation(response.reservation)
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2

    rid = args.reservation_id
    with open_client(args) as client:
        calls: dict[str, Callable[[], Any]] = {
            "confirm": lambda: client.confirm(rid),
            "release": lambda: client.release(rid),
            "get": lambda: client.get_reservation_result(rid),
            "fulfil": lambda: client.fulfil(
                rid,
                getattr(args, "lines", []),
                release_remainder=getattr(args, "release_remainder", False),
            ),
        }
        response = call_or_exit(calls[args.command]).raw
    print(f"outcome: {outcome_name(response.outcome)}")
    print_reservation(response.reservation)
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_snapshot(args: argparse.Namespace) -> int:
    from atpd.v1 import admin_pb2, admin_pb2_grpc

    stub = admin_pb2_grpc.AdminServiceStub(open_channel(args))
    response = call_or_exit(
        lambda: stub.Snapshot(admin_pb2.SnapshotRequest(), timeout=args.timeout)
    )
    print(
        f"snapshot at sequence {response.last_sequence}: {response.path} "
        f"({response.bytes} bytes, {response.seconds:.2f} s, "
        f"{response.segments_removed} journal segments removed)"
    )
    return 0
