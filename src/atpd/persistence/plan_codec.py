"""A promised plan (core/plan.py) in the journal (JournalPlan) and in snapshots (JSON), with
the checks a decoded one must pass."""

from __future__ import annotations

import json
from typing import Any

from atpd.core.commands import Line
from atpd.core.ids import is_name, is_node_id, is_sku_id
from atpd.core.limits import MAX_QUANTITY
from atpd.core.plan import MAX_PLAN_LINES, MAX_PLAN_SHIPMENTS, Plan, PlannedLine, Shipment
from atpd.core.plan_holds import plan_lines
from atpd.core.state_fields import StateFields
from atpd.core.text import shown
from atpd.v1 import journal_pb2

# Ship days a plan may name: 1970-01-01 .. 9999-12-31.
MAX_SHIP_DAY = 2_932_896


def encode_plan(plan: Plan, message: journal_pb2.JournalPlan) -> None:
    message.destination = plan.destination
    message.channel = plan.channel
    message.segment = plan.segment
    for shipment in plan.shipments:
        added = message.shipments.add(
            node_id=shipment.node_id, service=shipment.service, ship_day=shipment.ship_day
        )
        for line in shipment.lines:
            added.lines.add(sku=line.sku, quantity=line.quantity)


def _checked_plan(shipments: list[Shipment], destination: str, channel: str, segment: str) -> Plan:
    if not 1 <= len(shipments) <= MAX_PLAN_SHIPMENTS:
        raise ValueError(f"plan has {len(shipments)} shipments, not 1..{MAX_PLAN_SHIPMENTS}")
    if sum(len(s.lines) for s in shipments) > MAX_PLAN_LINES:
        raise ValueError(f"plan has more than {MAX_PLAN_LINES} lines")
    return Plan(tuple(shipments), destination, channel, segment)


def decode_plan(message: journal_pb2.JournalPlan) -> Plan:
    """The plan of a journal record; ValueError if its shape is wrong (see plan_problem)."""
    shipments = [
        Shipment(
            s.node_id,
            s.service,
            s.ship_day,
            tuple(PlannedLine(line.sku, line.quantity) for line in s.lines),
        )
        for s in message.shipments
    ]
    return _checked_plan(shipments, message.destination, message.channel, message.segment)


def plan_problem(plan: Plan, lines: tuple[Line, ...], channel: str, segment: str) -> str | None:
    """What is wrong with a decoded plan of a Reserve (None: nothing)."""
    if (plan.channel, plan.segment) != (channel, segment):
        return "plan channel or segment differ from the reservation's"
    if lines != plan_lines(plan):
        return "lines are not the plan's lines"
    if not plan.destination.isprintable() or len(plan.destination) > 200:
        return f"plan destination {shown(plan.destination)} is not printable"
    for i, shipment in enumerate(plan.shipments):
        if not is_node_id(shipment.node_id):
            return f"plan shipments[{i}].node_id {shown(shipment.node_id)} is not a valid id"
        if shipment.service and not is_name(shipment.service):
            return f"plan shipments[{i}].service {shown(shipment.service)} is not a valid name"
        if not 0 <= shipment.ship_day <= MAX_SHIP_DAY:
            return f"plan shipments[{i}].ship_day {shipment.ship_day} is out of range"
        if not shipment.lines:
            return f"plan shipments[{i}] has no lines"
        for line in shipment.lines:
            if not is_sku_id(line.sku) or not 1 <= line.quantity <= MAX_QUANTITY:
                return f"plan shipments[{i}] has a bad line {line}"
    return None


def plan_to_json(plan: Plan) -> list[Any]:
    return [
        plan.destination,
        plan.channel,
        plan.segment,
        [
            [s.node_id, s.service, s.ship_day, [[line.sku, line.quantity] for line in s.lines]]
            for s in plan.shipments
        ],
    ]


def plan_from_json(value: Any) -> Plan:
    """A snapshot's plan; ValueError (or TypeError) if its shape is wrong."""
    destination, channel, segment, shipments = value
    built = [
        Shipment(
            str(node_id),
            str(service),
            int(ship_day),
            tuple(PlannedLine(str(sku), int(quantity)) for sku, quantity in lines),
        )
        for node_id, service, ship_day, lines in shipments
    ]
    return _checked_plan(built, str(destination), str(channel), str(segment))


def plans_blob(state: StateFields) -> bytes:
    """Snapshot entry "reservation_plans": {reservation id: plan} of every reservation of a
    promised option."""
    table = state.reservations
    return json.dumps(
        {table.id_of(row): plan_to_json(plan) for row, plan in table.plans.items()}
    ).encode()


def load_plans(state: StateFields, blob: bytes) -> None:
    for reservation_id, value in json.loads(blob).items():
        table = state.reservations
        row = table.find(reservation_id)
        if row < 0:
            raise ValueError(f"a plan names an unknown reservation {shown(reservation_id)}")
        reservation = table.view(row)
        plan = plan_from_json(value)
        problem = plan_problem(plan, reservation.lines, reservation.channel, reservation.segment)
        if problem is not None:
            raise ValueError(f"reservation {reservation_id}: {problem}")
        table.plans[row] = plan


def load_picks(state: StateFields, blob: bytes) -> None:
    """Snapshot entry "pick_capacity": rows (node, day, held, used)."""
    picks = state.pick_capacity
    for node_id, day, held, used in json.loads(blob):
        if not isinstance(node_id, str) or not is_node_id(node_id):
            raise ValueError(f"pick capacity entry {shown(str(node_id))}: invalid node")
        if not all(isinstance(x, int) and x >= 0 for x in (day, held, used)):
            raise ValueError(f"pick capacity entry {node_id}: bad day, held or used")
        if (node_id, day) in picks.entries:
            raise ValueError(f"pick capacity entry {node_id}/{day} is listed twice")
        picks.set_row(node_id, day, held, used)
