"""Helpers that build requests for AsyncClient: lines, enum values by short name, the stubs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from atpd.client.results import Line
from atpd.v1 import (
    admin_pb2_grpc,
    availability_pb2_grpc,
    batch_pb2_grpc,
    inventory_pb2_grpc,
    promise_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
    rules_pb2_grpc,
    supply_pb2_grpc,
    watch_pb2_grpc,
)

LineLike = Line | tuple[str, str, int]


def request_lines(lines: Sequence[LineLike]) -> list[reservations_pb2.ReservationLine]:
    out = []
    for line in lines:
        sku, node_id, quantity = (
            (line.sku, line.node_id, line.quantity) if isinstance(line, Line) else line
        )
        out.append(reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity))
    return out


def enum_value(enum: Any, prefix: str, name: str, what: str) -> int:
    try:
        value: int = enum.Value(prefix + name.upper())
    except ValueError:
        known = ", ".join(
            n.removeprefix(prefix) for n in list(enum.keys()) if not n.endswith("_UNSPECIFIED")
        )
        raise ValueError(f"{what}: {name!r} is not one of {known}") from None
    return value


class Stubs:
    """The generated stubs over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.availability = availability_pb2_grpc.AvailabilityServiceStub(channel)
        self.reservations = reservations_pb2_grpc.ReservationServiceStub(channel)
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        self.supply = supply_pb2_grpc.SupplyServiceStub(channel)
        self.rules = rules_pb2_grpc.RulesServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.watch = watch_pb2_grpc.WatchServiceStub(channel)
        self.promise = promise_pb2_grpc.PromiseServiceStub(channel)
        self.commands = batch_pb2_grpc.CommandServiceStub(channel)
