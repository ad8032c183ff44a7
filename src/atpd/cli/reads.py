"""Client commands that only read: availability, nodes, status, watch."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

import grpc

from atpd.cli.client import call_or_exit, open_channel, open_client, print_rpc_error
from atpd.cli.output import table


def cmd_availability(args: argparse.Namespace) -> int:
    from atpd.v1 import availability_pb2, availability_pb2_grpc

    stub = availability_pb2_grpc.AvailabilityServiceStub(open_channel(args))
    request = availability_pb2.GetAvailabilityRequest(
        skus=args.skus,
        geo_prefix=args.geo or "",
        node_ids=args.node or [],
        channel=args.channel or "",
        segment=args.segment or "",
        include_nodes=args.nodes or args.explain,
        explain=args.explain,
    )
    response = call_or_exit(lambda: stub.GetAvailability(request, timeout=args.timeout))
    if response.rules_version:
        cap = f", at most {response.max_per_line} per line" if response.max_per_line else ""
        print(
            f"as {response.channel}/{response.segment} under rules {response.rules_version}{cap}\n"
        )
    for item in response.items:
        known = "" if item.known else " (unknown SKU)"
        print(f"{item.sku}: {item.total_atp} available{known}")
        if item.geo:
            print(table(("geo", "atp"), [("  " * (g.level - 1) + g.geo, g.atp) for g in item.geo]))
        if args.explain and item.nodes:
            rows = [
                (
                    n.node_id,
                    n.on_hand,
                    n.reserved,
                    n.safety_stock,
                    n.buffer,
                    n.supply,
                    n.protected_for_others,
                    n.atp,
                )
                for n in item.nodes
            ]
            headers = (
                "node",
                "on_hand",
                "reserved",
                "safety",
                "buffer",
                "supply",
                "protected",
                "atp",
            )
            print(table(headers, rows))
            for line in transfer_notes(item.nodes):
                print(line)
        elif args.nodes and item.nodes:
            plain = [(n.node_id, n.on_hand, n.reserved, n.safety_stock, n.atp) for n in item.nodes]
            print(table(("node", "on_hand", "reserved", "safety", "atp"), plain))
        print()
    return 0


def transfer_notes(nodes: Any) -> list[str]:
    """Per node, what transfers bring ("2 inbound from WH-EU-01, ETA Dec 3") and hold."""
    notes = []
    for n in nodes:
        for x in n.inbound_transfers:
            eta = datetime.datetime.fromtimestamp(x.eta_ms / 1000, datetime.UTC)
            how = "in transit" if x.shipped else "not shipped yet"
            notes.append(
                f"  {n.node_id}: {x.quantity} inbound from {x.from_node_id}, "
                f"ETA {eta:%b} {eta.day} (transfer {x.transfer_id}, {how})"
            )
        if n.held_for_transfers:
            notes.append(f"  {n.node_id}: {n.held_for_transfers} held for transfers out")
    return notes


def cmd_nodes(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

    stub = inventory_pb2_grpc.InventoryServiceStub(open_channel(args))
    response = call_or_exit(
        lambda: stub.ListNodes(inventory_pb2.ListNodesRequest(geo_prefix=args.geo or ""))
    )
    rows = [
        (
            n.node_id,
            common_pb2.NodeKind.Name(n.kind).removeprefix("NODE_KIND_"),
            n.geo_path,
            "yes" if n.ships else "",
            "yes" if n.pickup else "",
            "" if n.enabled else "DISABLED",
            ",".join(n.tags),
        )
        for n in response.nodes
    ]
    print(table(("node", "kind", "geo", "ships", "pickup", "state", "tags"), rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        response = call_or_exit(client.status).raw
    rows = [
        ("version", response.version),
        ("nodes", response.nodes),
        ("skus", response.skus),
        ("positions", response.positions),
        ("open reservations", response.open_reservations),
        ("fsync policy", response.fsync_policy),
        ("journal sequence", response.journal_sequence),
        ("durable sequence", response.durable_sequence),
        ("last snapshot at", response.last_snapshot_sequence),
        ("journal failure", response.journal_failure or "none"),
    ]
    print(table(("", ""), rows))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from atpd.v1 import watch_pb2, watch_pb2_grpc

    stub = watch_pb2_grpc.WatchServiceStub(open_channel(args))
    request = watch_pb2.WatchRequest(
        skus=args.skus,
        node_ids=args.node or [],
        geo_prefix=args.geo or "",
        channel=args.channel or "",
        segment=args.segment or "",
        from_sequence=args.from_sequence,
        low_stock_threshold=args.low_stock,
    )
    batched = watch_pb2.WatchBatchRequest(watch=request, max_delay_ms=args.max_delay_ms)
    try:
        # Several events per message (fewer writes for the server); printed one per line.
        for message in stub.WatchBatch(batched):
            lines = []
            for event in message.events:
                kind = watch_pb2.WatchEventKind.Name(event.kind).removeprefix("WATCH_EVENT_KIND_")
                if event.kind == watch_pb2.WATCH_EVENT_KIND_SYNC:
                    lines.append(f"watching from sequence {event.sequence} (epoch {event.epoch})")
                elif event.kind == watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED:
                    lines.append(f"{event.sequence:>10}  RESYNC_REQUIRED  {event.reason}")
                else:
                    lines.append(
                        f"{event.sequence:>10}  {kind:<15}  {event.sku}  {event.node_id}  "
                        f"{event.old_atp} -> {event.new_atp}"
                    )
            print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        return 0
    except grpc.RpcError as error:
        print_rpc_error(error)
        return 1
    return 0
