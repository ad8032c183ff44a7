"""The origins of one order (node x carrier service) and the arrays of its sourcing search,
built service by service with numpy: a VIP order over a 300-node network has hundreds of
origins, so nothing here loops in Python per (line, origin) except for the few lines whose
stock is only there at a supply ETA.

Per service s reaching the zone: the nodes it collects from that the caller may be shipped
from (`context.ship_from`), with pick capacity; the dates of goods on hand now come from one
kernel pass (`PromiseContext.dates_on_hand`); the carrier slots left on each origin's ship day
are looked up once per origin (they depend on the ship day only); cost and CO2 are vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core import sourcing
from atpd.core.handlers_network import slots_left
from atpd.core.network import UNLIMITED_PICKS, UNLIMITED_SLOTS
from atpd.core.promise_context import MINOR_UNITS_PER_UNIT, NOT_AVAILABLE, PromiseContext
from atpd.core.rules_catalogue import percent_ceiling

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Origins:
    """Per origin: node and service index, and the dates of goods on hand now; per (line,
    origin) whose line is only there later, its own dates (`later`)."""

    node: list[int]
    service: list[int]
    ship_now: list[int]
    earliest_now: list[int]
    latest_now: list[int]
    later: dict[tuple[int, int], tuple[int, int, int]]
    problem: sourcing.SourcingProblem

    def dates(self, line: int, origin: int) -> tuple[int, int, int]:
        found = self.later.get((line, origin))
        if found is not None:
            return found
        return self.ship_now[origin], self.earliest_now[origin], self.latest_now[origin]


def slots_left_on(
    context: PromiseContext, service: int, nodes: Ints, ship_days: Ints
) -> npt.NDArray[np.bool_]:
    """[origin]: the service has a carrier slot left at the node on its ship day, and the node
    an order of pick capacity left that day, after what open reservations of plans hold: the
    same counts the writer re-checks when an option is reserved (core/plan_holds.py)."""
    model = context.network.network.services[service]
    state = context.state
    names = state.nodes
    pick_capacity = context.network.pick_capacity_orders
    if not state.carrier_capacity.entries and not state.pick_capacity.entries:
        default = (
            UNLIMITED_SLOTS if model.default_daily_slots is None else model.default_daily_slots
        )
        return np.full(nodes.shape[0], default >= 1, np.bool_)
    left = []
    for node, day in zip(nodes.tolist(), ship_days.tolist(), strict=True):
        node_id = names[node].node_id
        ok = slots_left(state, model.service_id, node_id, day) >= 1
        capacity = int(pick_capacity[node])
        if ok and capacity != UNLIMITED_PICKS:
            ok = capacity - state.pick_capacity.taken(node_id, day) >= 1
        left.append(ok)
    return np.array(left, np.bool_)


def build_origins(
    context: PromiseContext,
    lines: Sequence[tuple[str, int]],
    atp: Ints,
    available: Ints,
    zone: int,
) -> Origins | None:
    """`available` is [line, node]: when each line's quantity is there (NOT_AVAILABLE: not)."""
    network = context.network
    now_ms = context.now_ms
    units = sum(quantity for _, quantity in lines)
    has_any = np.asarray((available != NOT_AVAILABLE).any(axis=0), np.bool_)
    reachable = context.ship_from & has_any & (network.pick_capacity_orders != 0)
    later_cells = np.asarray((available > now_ms).any(axis=0), np.bool_)
    parts: list[tuple[int, Ints, npt.NDArray[np.bool_], npt.NDArray[np.int32]]] = []
    later: dict[tuple[int, int], tuple[int, int, int]] = {}
    origin_count = 0
    for service in np.flatnonzero(network.transit_days[:, zone] >= 0).tolist():
        nodes = np.flatnonzero(reachable & network.origin[service])
        if not nodes.size:
            continue
        dates = context.dates_on_hand(service, zone)[nodes]
        in_table = dates[:, 0] >= 0
        open_slot = slots_left_on(context, service, nodes, dates[:, 0].astype(np.int64))
        keep = (in_table & open_slot) | ~in_table | later_cells[nodes]
        nodes, dates = nodes[keep], dates[keep]
        if nodes.size:
            kept: npt.NDArray[np.bool_] = open_slot[keep]
            parts.append((service, nodes.astype(np.int64), kept, dates))
            origin_count += int(nodes.size)
    if not origin_count:
        return None
    node = np.concatenate([part[1] for part in parts])
    service_of = np.concatenate([np.full(part[1].shape[0], part[0], np.int64) for part in parts])
    dates = np.concatenate([part[3] for part in parts]).astype(np.int64)
    open_slot = np.concatenate([part[2] for part in parts])
    window = available[:, node]  # [line, origin]
    now_cells = (window != NOT_AVAILABLE) & (window <= now_ms)
    delivery_day = np.where(now_cells & open_slot & (dates[:, 0] >= 0), dates[:, 1], -1)
    # The rare cells the day table cannot answer (stock at an ETA, dates past the table).
    odd = (window > now_ms) | (now_cells & (dates[:, 0] < 0))
    for line, origin in zip(*np.nonzero(odd), strict=True):
        origin_node, origin_service = int(node[origin]), int(service_of[origin])
        found = context.dates(origin_node, origin_service, zone, int(window[line, origin]))
        if (
            found is None
            or not slots_left_on(
                context, origin_service, node[origin : origin + 1], np.array([found[0]], np.int64)
            )[0]
        ):
            continue
        later[(int(line), int(origin))] = found
        delivery_day[line, origin] = found[1]
    usable = (delivery_day >= 0).any(axis=0)
    if not usable.any():
        return None
    if not usable.all():
        keep_index = np.flatnonzero(usable)
        renumber = {int(old): new for new, old in enumerate(keep_index.tolist())}
        later = {(line, renumber[origin]): v for (line, origin), v in later.items()}
        node, service_of, dates = node[keep_index], service_of[keep_index], dates[keep_index]
        delivery_day = delivery_day[:, keep_index]
    distance = network.distance_km[node, zone]
    shipment_cost = np.rint(
        (network.cost_base[service_of] + network.cost_per_km[service_of] * distance)
        * MINOR_UNITS_PER_UNIT
    ).astype(np.int64)
    cost_per_item = np.rint(network.cost_per_item[service_of] * MINOR_UNITS_PER_UNIT).astype(
        np.int64
    )
    if network.weight_class_upper_kg.size:
        # One weight class per service: the whole order's (a conservative, linear model).
        weight_class = np.array(
            [
                network.network.co2.weight_class(units * float(network.item_weight_kg[s]))
                for s in range(network.item_weight_kg.shape[0])
            ],
            np.int64,
        )
        factor = network.co2_grams_per_km[service_of, weight_class[service_of]]
    else:
        factor = np.zeros(node.shape[0])
    shipment_co2 = np.rint(factor * distance).astype(np.int64)
    weights = context.sourcing.weights
    ceiling = context.sourcing.cost_ceiling
    percent = context.sourcing.cost_ceiling_percent
    if percent is not None:
        ceiling = percent_ceiling(context.state.rules.catalogue, lines, percent)
    problem = sourcing.SourcingProblem(
        quantity=np.array([quantity for _, quantity in lines], np.int64),
        available=np.where(delivery_day >= 0, np.maximum(atp[:, node], 0), 0),
        delivery_day=delivery_day,
        shipment_cost=shipment_cost,
        cost_per_item=cost_per_item,
        shipment_co2_grams=shipment_co2,
        co2_grams_per_item=np.zeros(node.shape[0], np.int64),
        allowed=np.ones(node.shape[0], np.bool_),
        penalty=context.penalty[node],
        max_shipments=context.sourcing.max_shipments,
        weights=sourcing.Weights(*weights),
        cost_ceiling=ceiling,
    )
    return Origins(
        node.tolist(),
        service_of.tolist(),
        dates[:, 0].tolist(),
        dates[:, 1].tolist(),
        dates[:, 2].tolist(),
        later,
        problem,
    )
