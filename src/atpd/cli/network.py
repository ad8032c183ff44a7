"""Client commands for the fulfilment network and carrier capacity: `atpd network apply FILE`,
`atpd network show`, `atpd carrier capacity SERVICE NODE DATE SLOTS`, `atpd carrier show
SERVICE NODE`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from atpd.cli.client import add_client_options, call_or_exit, open_channel, read_text_or_exit
from atpd.cli.output import table

UNLIMITED_SLOTS = 1_000_000_000  # core.network.UNLIMITED_SLOTS, as the API reports it


def cmd_network(args: argparse.Namespace) -> int:
    from atpd.v1 import network_pb2, network_pb2_grpc

    stub = network_pb2_grpc.NetworkServiceStub(open_channel(args))
    if args.action == "apply":
        text = read_text_or_exit(args.file, "network file")
        request = network_pb2.SetNetworkRequest(text=text, source=str(args.file))
        response = call_or_exit(lambda: stub.SetNetwork(request, timeout=args.timeout))
        print(f"network {response.version} in force (was {response.previous_version or 'none'})")
        return 0
    network = call_or_exit(
        lambda: stub.GetNetwork(network_pb2.GetNetworkRequest(), timeout=args.timeout)
    )
    if not network.version:
        print("no network loaded")
        return 0
    print(f"network {network.version} (from {network.source})")
    print(f"nodes: {network.node_count}, transfer lanes: {network.lane_count}")
    print(f"services: {', '.join(network.services)}")
    print(f"zones: {', '.join(network.zones)}")
    print(f"carrier capacity entries: {network.capacity_entries}")
    if args.text:
        print()
        print(network.text)
    return 0


def _slots(value: int) -> str:
    return "unlimited" if value >= UNLIMITED_SLOTS else str(value)


def cmd_carrier(args: argparse.Namespace) -> int:
    from atpd.v1 import network_pb2, network_pb2_grpc

    stub = network_pb2_grpc.NetworkServiceStub(open_channel(args))
    if args.action == "capacity":
        request = network_pb2.SetCarrierCapacityRequest(
            service=args.service, node_id=args.node, date=args.date, slots=args.slots
        )
        response = call_or_exit(lambda: stub.SetCarrierCapacity(request, timeout=args.timeout))
        was = str(response.previous_slots) if response.had_slots else "the service default"
        print(
            f"{args.service} at {args.node} on {response.day.date}: {response.day.slots} slots "
            f"({response.day.held} held, {response.day.left} left; was {was})"
        )
        return 0
    first = args.start or datetime.now(UTC).date().isoformat()
    last = (date.fromisoformat(first) + timedelta(days=args.days - 1)).isoformat()
    query = network_pb2.GetCarrierCapacityRequest(
        service=args.service, node_id=args.node, from_date=first, to_date=last
    )
    answer = call_or_exit(lambda: stub.GetCarrierCapacity(query, timeout=args.timeout))
    rows = [
        [
            day.date,
            _slots(day.slots),
            str(day.held),
            _slots(day.left),
            "set" if day.explicit else "default",
        ]
        for day in answer.days
    ]
    print(f"{answer.service} at {answer.node_id}")
    print(table(["date", "slots", "held", "left", "from"], rows))
    return 0


def _iso_date(text: str) -> str:
    try:
        date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-24") from None
    return text


def _slot_count(text: str) -> int:
    if not text.isdigit() or int(text) > UNLIMITED_SLOTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a slot count in 0..{UNLIMITED_SLOTS}")
    return int(text)


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 366:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days in 1..366")
    return int(text)


def add_network_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`atpd network ...` and `atpd carrier ...` on the top-level parser."""

    def target(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
        add_client_options(p)
        p.set_defaults(func=func)

    network = sub.add_parser("network", help="show or replace the fulfilment network")
    network_sub = network.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = "replace the whole network (TOML file; refused whole if anything is wrong)"
    p = network_sub.add_parser("apply", help=text, description=text)
    p.add_argument("file", type=Path, help="TOML network file")
    target(p, cmd_network)
    text = "show the network in force (version, services, zones, counts)"
    p = network_sub.add_parser("show", help=text, description=text)
    p.add_argument("--text", action="store_true", help="print the whole network file")
    target(p, cmd_network)

    carrier = sub.add_parser("carrier", help="carrier slot capacity per service, node and date")
    carrier_sub = carrier.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = "set the slots of a carrier service at an origin node on a date (absolute)"
    p = carrier_sub.add_parser("capacity", help=text, description=text)
    p.add_argument("service", help="carrier service, e.g. express-air")
    p.add_argument("node", help="origin node id")
    p.add_argument("date", type=_iso_date, help="pickup date, YYYY-MM-DD")
    p.add_argument("slots", type=_slot_count, help="slots that day (0: none)")
    target(p, cmd_carrier)
    text = "show a carrier service's slots at an origin node, day by day"
    p = carrier_sub.add_parser("show", help=text, description=text)
    p.add_argument("service", help="carrier service")
    p.add_argument("node", help="origin node id")
    p.add_argument("--from", dest="start", type=_iso_date, help="first date (default today)")
    p.add_argument("--days", type=_days, default=7, help="how many days (default 7)")
    target(p, cmd_carrier)
