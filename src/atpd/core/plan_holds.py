"""Reserving a promised plan: the carrier slots and pick capacity it holds besides the stock.

A reservation of a plan (core/plan.py) holds, all or nothing, the stock of its lines (as any
reservation), one carrier slot per shipment with a service (service, origin node, ship day) in
`state.carrier_capacity`, and one pick per shipment (node, ship day) in `state.pick_capacity`.
The writer re-checks all of it when the plan is reserved (`plan_changes`); anything that moved
makes the answer PROMISE_CHANGED and nothing is held. Release and expiry give the slots and
picks back; fulfilment spends them (the carrier collected, the order was picked): they move
from `held` to `used` and are not offered again. Invariant (core/checks.py): per entry, `held`
is the number of open reservations' shipments on it.
"""

from __future__ import annotations

from atpd.core.calendar import CarrierSchedule, NoDateWithinHorizon, NodeCalendar, ship_epoch_day
from atpd.core.commands import Line, ReservationKind, Reserve
from atpd.core.handlers_network import DAY_MS, PAST_DAYS_KEPT, slots_left
from atpd.core.network import UNLIMITED_PICKS, UNLIMITED_SLOTS, CarrierService, NodeLogistics
from atpd.core.plan import Plan
from atpd.core.reservations import ReservationStatus
from atpd.core.results import (
    ChangedResource,
    InvalidCommand,
    PlanChange,
    Shortage,
)
from atpd.core.state_fields import StateFields

MINUTE_MS = 60_000


def plan_lines(plan: Plan) -> tuple[Line, ...]:
    """The reservation lines of a plan, shipment by shipment."""
    return tuple(
        Line(line.sku, shipment.node_id, line.quantity)
        for shipment in plan.shipments
        for line in shipment.lines
    )


def check_plan_command(command: Reserve, plan: Plan) -> None:
    """Caller mistakes in a Reserve of a plan (nothing changed yet)."""
    if command.kind is ReservationKind.POS_SALE:
        raise InvalidCommand("kind: a POS sale cannot reserve a promised option")
    if command.lines != plan_lines(plan):
        raise InvalidCommand("lines: must be empty or the option's lines when reserving an option")
    seen: set[tuple[str, str]] = set()
    for index, shipment in enumerate(plan.shipments):
        for line in shipment.lines:
            if line.quantity <= 0:
                raise InvalidCommand(f"plan: shipment {index} has a quantity <= 0")
            position = (line.sku, shipment.node_id)
            if position in seen:
                raise InvalidCommand(
                    f"plan: SKU {line.sku!r} at node {shipment.node_id!r} is planned twice"
                )
            seen.add(position)


def earliest_ship_day(logistics: NodeLogistics, service: CarrierService, now_ms: int) -> int | None:
    """The first epoch day a parcel ordered at `now_ms` can leave `logistics`' node with
    `service` (its processing time, cut-off, calendar and the carrier's pickup days), as the
    promise computed it; None when none is within the calendar's horizon. A plan whose ship
    day is earlier can no longer be met."""
    node = NodeCalendar(
        logistics.time_zone,
        logistics.cutoff_minutes,
        logistics.processing_minutes,
        frozenset(logistics.open_weekdays),
        frozenset(logistics.closed_dates),
        logistics.open_minutes,
        logistics.close_minutes,
    )
    carrier = CarrierSchedule(frozenset(service.pickup_weekdays), service.pickup_cutoff_minutes, 0)
    try:
        return ship_epoch_day(node, carrier, now_ms)
    except NoDateWithinHorizon:
        return None


# (network object id, node id, service id, minute) -> earliest ship day. Exact per minute:
# cut-offs, processing times and zone offsets are whole minutes, so the answer cannot change
# within one. Pure (a function of its key), so replay is unaffected; cleared when full.
EARLIEST_CACHE_SIZE = 4096
earliest_cache: dict[tuple[int, str, str, int], int | None] = {}
earliest_cache_network: list[object] = [None]


def cached_earliest_ship_day(
    network: object, logistics: NodeLogistics, service: CarrierService, now_ms: int
) -> int | None:
    if earliest_cache_network[0] is not network or len(earliest_cache) >= EARLIEST_CACHE_SIZE:
        earliest_cache.clear()
        earliest_cache_network[0] = network
    key = (id(network), logistics.node_id, service.service_id, now_ms // MINUTE_MS)
    if key in earliest_cache:
        return earliest_cache[key]
    found = earliest_cache[key] = earliest_ship_day(logistics, service, now_ms)
    return found


def plan_changes(state: StateFields, plan: Plan, now_ms: int) -> list[PlanChange]:
    """What of the plan's carrier slots and pick capacity is no longer there (empty: all is)."""
    changes: list[PlanChange] = []
    first_day = now_ms // DAY_MS - PAST_DAYS_KEPT
    network = state.network
    slots_needed: dict[tuple[str, str, int], int] = {}
    picks_needed: dict[tuple[str, int], int] = {}
    for index, shipment in enumerate(plan.shipments):
        node_id, day = shipment.node_id, shipment.ship_day
        if day < first_day:
            changes.append(PlanChange(index, ChangedResource.NETWORK, f"ship day {day} is past"))
            continue
        logistics = network.node(node_id)
        if logistics is None:
            changes.append(
                PlanChange(
                    index, ChangedResource.NETWORK, f"node {node_id!r} is not in the network"
                )
            )
            continue
        if shipment.service:
            service = network.service(shipment.service)
            if service is None:
                changes.append(
                    PlanChange(
                        index,
                        ChangedResource.NETWORK,
                        f"carrier service {shipment.service!r} is not in the network",
                    )
                )
                continue
            earliest = cached_earliest_ship_day(network, logistics, service, now_ms)
            if earliest is None or day < earliest:
                when = (
                    "no pickup day is left" if earliest is None else f"the earliest is {earliest}"
                )
                changes.append(
                    PlanChange(
                        index,
                        ChangedResource.NETWORK,
                        f"ship day {day} can no longer be met by {shipment.service!r} at "
                        f"{node_id!r} (cut-off or processing time passed): {when}",
                    )
                )
                continue
            key = (shipment.service, node_id, day)
            needed = slots_needed[key] = slots_needed.get(key, 0) + 1
            left = slots_left(state, shipment.service, node_id, day)
            if left < needed:
                changes.append(
                    PlanChange(
                        index,
                        ChangedResource.CARRIER_SLOT,
                        f"carrier service {shipment.service!r} at {node_id!r} on day {day}: "
                        f"{max(left - needed + 1, 0)} slots left",
                    )
                )
        capacity = logistics.pick_capacity_orders
        if capacity != UNLIMITED_PICKS:
            pick_key = (node_id, day)
            needed = picks_needed[pick_key] = picks_needed.get(pick_key, 0) + 1
            left = capacity - state.pick_capacity.taken(node_id, day)
            if left < needed:
                changes.append(
                    PlanChange(
                        index,
                        ChangedResource.PICK_CAPACITY,
                        f"node {node_id!r} on day {day}: "
                        f"{max(left - needed + 1, 0)} orders of pick capacity left",
                    )
                )
    return changes


def stock_changes(plan: Plan, shortages: tuple[Shortage, ...]) -> tuple[PlanChange, ...]:
    """The shipments whose stock moved, one change per short line."""
    shipment_of = {
        (line.sku, shipment.node_id): index
        for index, shipment in enumerate(plan.shipments)
        for line in shipment.lines
    }
    return tuple(
        PlanChange(
            shipment_of.get((short.sku, short.node_id), 0),
            ChangedResource.STOCK,
            f"{short.sku!r} at {short.node_id!r}: {short.available} available for "
            f"{short.requested} ({short.reason.name.lower()})",
        )
        for short in shortages
    )


def hold_plan(state: StateFields, row: int, plan: Plan, now_ms: int) -> None:
    """Hold the plan's slots and picks (plan_changes found them all there) for the
    reservation at `row`."""
    state.reservations.plans[row] = plan
    picks = state.pick_capacity
    picks.purge_before(now_ms // DAY_MS - PAST_DAYS_KEPT)
    network = state.network
    for shipment in plan.shipments:
        if shipment.service:
            service = network.service(shipment.service)
            assert service is not None, shipment
            default = service.default_daily_slots
            state.carrier_capacity.hold(
                shipment.service,
                shipment.node_id,
                shipment.ship_day,
                UNLIMITED_SLOTS if default is None else default,
            )
        picks.hold(shipment.node_id, shipment.ship_day)


def give_back_plan(state: StateFields, row: int) -> None:
    """A reservation of a plan closed: each shipment's slot and pick are spent if any of its
    lines left (the carrier collected that parcel, even when the rest was later released or
    expired), and given back otherwise. The reservation's lines are the plan's, shipment by
    shipment (plan_lines), so shipment i owns a contiguous run of them."""
    table = state.reservations
    plan = table.plans[row]
    assert not ReservationStatus(table.status[row]).is_open
    assert table.line_count[row] == sum(len(s.lines) for s in plan.shipments)
    first = table.first_line[row]
    for shipment in plan.shipments:
        last = first + len(shipment.lines)
        used = any(table.line_fulfilled[first:last])
        first = last
        if shipment.service:
            state.carrier_capacity.give_back(
                shipment.service, shipment.node_id, shipment.ship_day, used
            )
        state.pick_capacity.give_back(shipment.node_id, shipment.ship_day, used)


def plan_hold_problems(state: StateFields) -> list[str]:
    """held == the open reservations' shipments, per carrier entry and per pick entry."""
    slots: dict[tuple[str, str, int], int] = {}
    picks: dict[tuple[str, int], int] = {}
    table = state.reservations
    for row, plan in table.plans.items():
        if not ReservationStatus(table.status[row]).is_open:
            continue
        for s in plan.shipments:
            if s.service:
                key = (s.service, s.node_id, s.ship_day)
                slots[key] = slots.get(key, 0) + 1
            picks[(s.node_id, s.ship_day)] = picks.get((s.node_id, s.ship_day), 0) + 1
    found = []
    for key, entry in state.carrier_capacity.entries.items():
        if entry.held != slots.pop(key, 0):
            found.append(f"carrier slots held at {key}: {entry.held} != open holds")
    for pick_key, pick_entry in state.pick_capacity.entries.items():
        if pick_entry.held != picks.pop(pick_key, 0):
            found.append(f"picks held at {pick_key}: {pick_entry.held} != open holds")
    found.extend(f"open holds on missing carrier entry {key}" for key in slots)
    found.extend(f"open holds on missing pick entry {key}" for key in picks)
    return found
