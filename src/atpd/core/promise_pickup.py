"""Pickup options of a promise and the associate view: stock seen from one store.

A pickup at a store is ready (calendar.pickup_ready_ms) either from the store's own stock
(processing after the order, the store's cut-off and opening days) or, when the caller's
sourcing rules allow transfers, after a transfer lane's lead time from a node that has every
line. An option is one source for the whole cart (a cart split over sources for one pickup is
not offered in v1). Its plan is one shipment with no carrier service (`service == ""`) at the
source node: reserving it holds the stock where it is and the source's pick capacity; the
plan's destination names the store ("pickup:<store id>").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.calendar import local_day, pickup_ready_ms, ready_at_ms
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.core.promise_context import (
    NOT_AVAILABLE,
    PromiseContext,
    atp_matrix,
    available_ms,
    promise_context,
)
from atpd.core.results import InvalidCommand
from atpd.core.state_fields import StateFields, node_index

# Pickup options listed at most (the soonest ready first).
MAX_PICKUP_OPTIONS = 5


@dataclass(frozen=True, slots=True)
class PickupOption:
    plan: Plan
    store_id: str
    source_node_id: str  # the store itself, or where a transfer lane brings the goods from
    transfer_lead_days: int  # 0: from the store's own stock
    ready_by_ms: int


def pickup_store(context: PromiseContext, store_id: str, field: str) -> int:
    """The store's node index; refused unless it is a pickup point in the network."""
    store = node_index(context.state, store_id, field)
    if not context.network.pickup[store]:
        raise InvalidCommand(f"{field}: node {store_id!r} does not offer pickup")
    if store not in context.calendars.nodes:
        raise InvalidCommand(f"{field}: node {store_id!r} is not in the fulfilment network")
    return store


def lanes_to(context: PromiseContext, store: int) -> list[tuple[int, int]]:
    """(source node, lead days) of the transfer lanes into `store`, shortest lead first."""
    network = context.network
    found = [
        (int(source), int(lead))
        for source, to, lead in zip(
            network.lane_from.tolist(),
            network.lane_to.tolist(),
            network.lane_lead_days.tolist(),
            strict=True,
        )
        if to == store
    ]
    return sorted(found, key=lambda pair: (pair[1], pair[0]))


def pickup_ready(context: PromiseContext, store: int, when_ms: int, lead_days: int) -> int | None:
    try:
        return pickup_ready_ms(
            context.calendars.nodes[store], max(when_ms, context.now_ms), lead_days
        )
    except ValueError:
        return None  # no date within the calendar horizon


def pickup_options(
    context: PromiseContext,
    lines: Sequence[tuple[str, int]],
    rows: list[int],
    atp: npt.NDArray[np.int64],
    store_id: str,
) -> tuple[tuple[PickupOption, ...], str]:
    """The pickup options at `store_id` (soonest first) and, when there is none, why."""
    store = pickup_store(context, store_id, "pickup_node_id")
    available = np.stack(
        [available_ms(context, rows[i], atp[i], lines[i][1]) for i in range(len(lines))]
    )
    has_all = np.all(available != NOT_AVAILABLE, axis=0) & context.visible
    has_all &= context.network.pick_capacity_orders != 0  # a node that picks nothing
    for node_id in context.sourcing.exclude:
        excluded = context.state.node_ids.get(node_id)
        if excluded >= 0 and excluded != store:
            has_all[excluded] = False  # excluded nodes send no transfer either
    sources = [(store, 0)] if has_all[store] else []
    if context.sourcing.pickup_transfers:
        sources += [
            (source, lead)
            for source, lead in lanes_to(context, store)
            if has_all[source] and source in context.calendars.nodes
        ]
    planned = tuple(PlannedLine(sku, quantity) for sku, quantity in lines)
    found: list[PickupOption] = []
    seen: set[int] = set()
    for source, lead in sources:
        if source in seen:
            continue
        seen.add(source)
        when = int(available[:, source].max())
        ready = pickup_ready(context, store, when, lead)
        if ready is None:
            continue
        source_calendar = context.calendars.nodes[source]
        # The day the source picks the order: that day's pick capacity is what it uses.
        pick_day = local_day(
            source_calendar.tz, ready_at_ms(source_calendar, max(when, context.now_ms))
        )
        plan = Plan(
            (Shipment(context.node_id(source), "", pick_day, planned),),
            f"pickup:{store_id}",
            context.channel,
            context.segment,
        )
        found.append(PickupOption(plan, store_id, context.node_id(source), lead, ready))
    found.sort(key=lambda option: (option.ready_by_ms, option.transfer_lead_days))
    if found:
        return tuple(found[:MAX_PICKUP_OPTIONS]), ""
    if context.sourcing.pickup_transfers:
        return (), f"neither {store_id} nor a node with a transfer lane to it has the whole cart"
    return (
        (),
        f"{store_id} does not have the whole cart (transfers are not allowed for this caller)",
    )


@dataclass(frozen=True, slots=True)
class AssociateRow:
    """One node that has the SKU for the caller, seen from a store."""

    node_id: str
    atp: int
    available_ms: int  # when one unit is there (now, or a supply ETA)
    transfer_lead_days: int  # 0 at the store itself; -1: no lane to the store
    pickup_ready_ms: int  # when the client could collect it at the store; -1: cannot
    delivery_earliest_day: int  # to the zone asked for (fastest service); -1: none / no zone


def associate_view(
    context: PromiseContext,
    row: int,
    atp_row: npt.NDArray[np.int64],
    store_id: str,
    zone: int,
) -> list[AssociateRow]:
    """Every node with the SKU for the caller, with the lead time to the store and to a zone."""
    store = pickup_store(context, store_id, "store_id")
    available = available_ms(context, row, atp_row, 1)
    lead_of = {source: lead for source, lead in reversed(lanes_to(context, store))}
    lead_of[store] = 0
    network = context.network
    found: list[AssociateRow] = []
    for node in np.flatnonzero((available != NOT_AVAILABLE) & context.visible).tolist():
        when = int(available[node])
        lead = lead_of.get(node, -1)
        ready = -1
        if lead >= 0 and (lead == 0 or context.sourcing.pickup_transfers):
            ready = pickup_ready(context, store, when, lead) or -1
        delivery = -1
        if zone >= 0 and context.ship_from[node]:
            for service in np.flatnonzero(
                network.origin[:, node] & (network.transit_days[:, zone] >= 0)
            ).tolist():
                dates = context.dates(node, service, zone, when)
                if dates is not None and (delivery < 0 or dates[1] < delivery):
                    delivery = dates[1]
        found.append(
            AssociateRow(context.node_id(node), int(atp_row[node]), when, lead, ready, delivery)
        )
    found.sort(key=lambda r: (r.pickup_ready_ms < 0, r.pickup_ready_ms, r.node_id))
    return found


def associate(
    state: StateFields,
    sku: str,
    store_id: str,
    now_ms: int,
    channel: str = "",
    segment: str = "",
    country: str = "",
    postal_code: str = "",
) -> tuple[str, list[AssociateRow]]:
    """The associate view of `sku` from `store_id` for a caller: (zone id or "", rows)."""
    if not sku:
        raise InvalidCommand("sku: empty")
    context = promise_context(state, channel, segment, now_ms)
    zone = -1
    if country:
        if len(country) != 2 or not country.isalpha():
            raise InvalidCommand(f"country: {country!r} is not a 2-letter country code")
        zone = context.network.resolve_destination(country, postal_code)
        if zone < 0:
            raise InvalidCommand(f"destination: no zone covers {country.upper()} {postal_code!r}")
    rows, atp = atp_matrix(context, [sku])
    if rows[0] < 0:
        pickup_store(context, store_id, "store_id")
        return ("" if zone < 0 else context.network.zone_ids[zone]), []
    found = associate_view(context, rows[0], atp[0], store_id, zone)
    return ("" if zone < 0 else context.network.zone_ids[zone]), found
