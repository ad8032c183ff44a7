"""The promise (issue 12): for a cart, a destination and a caller, the ranked ways atpd can
fulfil it, each a `core.plan.Plan` the client may reserve.

Pure: reads the state, network and rules, never changes them; `now_ms` is an argument.

Home delivery, step by step (README "Promises"):

1. The caller's ATP per line and node, exactly as GetAvailability computes it, and when each
   line's quantity is there (stock now, else counted supply by ETA: `time_phased`).
2. Origins: every (node, carrier service) where the node is one the caller may be shipped from
   (visible to it, enabled, in the network, ships, of the sourcing rule's `ship_from_kinds`,
   not excluded) and the service collects there and reaches the destination's zone.
3. Per line and origin: ready instant (processing, cut-off, opening days), the first pickup
   after it, the delivery range (carrier business days); the origin is out for the line when
   the node has no carrier slot left on that ship day or no pick capacity at all.
4. Cost (minor units) = base + per km x distance + per item x units; CO2 (grams) = the
   service's factor per km for the order's weight class x distance.
5. `core.sourcing.search` picks the best plans (best weighted, fastest, cheapest, greenest,
   fewest shipments) under the caller's sourcing rules; distinct plans become options.

Pickup at a store (`pickup_node_id`): see core/promise_pickup.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atpd.core import calendar_kernels, sourcing, sourcing_kernels, time_phased
from atpd.core.plan import MAX_PLAN_LINES, Plan, PlannedLine, Shipment
from atpd.core.promise_context import (
    PromiseContext,
    atp_matrix,
    available_ms,
    check_lines,
    promise_context,
)
from atpd.core.promise_origins import Origins, build_origins
from atpd.core.promise_pickup import PickupOption, pickup_options, pickup_store
from atpd.core.results import InvalidCommand
from atpd.core.state_fields import StateFields

# The most units one promise line may ask for.
MAX_PROMISE_QUANTITY = 1_000_000


@dataclass(frozen=True, slots=True)
class PromisedShipment:
    node_id: str
    service_id: str
    ship_day: int  # epoch day, origin's calendar
    delivery_earliest_day: int
    delivery_latest_day: int
    lines: tuple[PlannedLine, ...]
    cost_minor: int
    co2_grams: int


@dataclass(frozen=True, slots=True)
class PromiseOption:
    plan: Plan
    shipments: tuple[PromisedShipment, ...]
    delivery_earliest_day: int
    delivery_latest_day: int
    cost_minor: int
    co2_grams: int
    reasons: tuple[sourcing.Objective, ...]


@dataclass(frozen=True, slots=True)
class PromiseAnswer:
    destination: str  # zone id, or "pickup:<store id>"
    options: tuple[PromiseOption, ...]
    pickup_options: tuple[PickupOption, ...]
    no_option_reason: str  # why there is no option ("" when there are some)
    exhaustive: bool = True


def zone_of(context: PromiseContext, country: str, postal_code: str) -> int:
    if len(country) != 2 or not country.isalpha():
        raise InvalidCommand(f"destination.country: {country!r} is not a 2-letter country code")
    zone = context.network.resolve_destination(country, postal_code)
    if zone < 0:
        raise InvalidCommand(
            f"destination: no zone of the network covers {country.upper()} {postal_code!r}"
        )
    return zone


def refusal(unknown: list[str], over_cap: list[str], cap: int) -> str:
    """Why a cart has no option before any search: unknown SKUs, lines over the caller's
    max_per_line (Reserve would refuse them as LINE_CAP)."""
    if unknown:
        return f"unknown SKU(s): {', '.join(unknown)}"
    return f"over the caller's max_per_line ({cap}): {', '.join(over_cap)}"


def promise(
    state: StateFields,
    lines: Sequence[tuple[str, int]],
    now_ms: int,
    country: str = "",
    postal_code: str = "",
    pickup_node_id: str = "",
    channel: str = "",
    segment: str = "",
    zone_id: str = "",
) -> PromiseAnswer:
    """The options for delivering `lines` to (country, postal code) or to the zone named
    `zone_id` (a plan's destination), or for collecting them at `pickup_node_id`. Raises
    InvalidCommand / NotFound / LimitExceeded naming the field, and promise_context.NoNetwork
    when no network is configured."""
    check_lines(
        lines, min(state.limits.max_lines_per_reservation, MAX_PLAN_LINES), MAX_PROMISE_QUANTITY
    )
    if bool(country) + bool(pickup_node_id) + bool(zone_id) != 1:
        raise InvalidCommand(
            "destination: give either a country (and postal code) or a pickup_node_id"
        )
    context = promise_context(state, channel, segment, now_ms)
    skus = [sku for sku, _ in lines]
    rows, atp = atp_matrix(context, skus)
    unknown = [sku for sku, row in zip(skus, rows, strict=True) if row < 0]
    cap = context.policy.policy.max_per_line if context.policy is not None else 0
    over_cap = [f"{sku} x{quantity}" for sku, quantity in lines if cap and quantity > cap]
    if pickup_node_id:
        destination = f"pickup:{pickup_node_id}"
        pickup_store(context, pickup_node_id, "pickup_node_id")  # bad stores refused first
        if unknown or over_cap:
            return PromiseAnswer(destination, (), (), refusal(unknown, over_cap, cap))
        found, reason = pickup_options(context, lines, rows, atp, pickup_node_id)
        return PromiseAnswer(destination, (), found, reason)
    zone = (
        context.network.zone_index(zone_id) if zone_id else zone_of(context, country, postal_code)
    )
    if zone < 0:
        raise InvalidCommand(f"destination: no zone {zone_id!r} in the network")
    destination = context.network.zone_ids[zone]
    if unknown or over_cap:
        return PromiseAnswer(destination, (), (), refusal(unknown, over_cap, cap))
    available = np.stack(
        [available_ms(context, rows[i], atp[i], lines[i][1]) for i in range(len(lines))]
    )
    origins = build_origins(context, lines, atp, available, zone)
    if origins is None:
        return PromiseAnswer(
            destination, (), (), "no node the caller may be served from can deliver the order"
        )
    result = sourcing.search(origins.problem)
    if result.infeasible is not None:
        return PromiseAnswer(destination, (), (), result.infeasible.message, result.exhaustive)
    options = tuple(
        promise_option(context, lines, origins, destination, option) for option in result.options
    )
    return PromiseAnswer(destination, options, (), "", result.exhaustive)


def promise_option(
    context: PromiseContext,
    lines: Sequence[tuple[str, int]],
    origins: Origins,
    destination: str,
    option: sourcing.Option,
) -> PromiseOption:
    found = option.plan
    shipments: list[PromisedShipment] = []
    for shipment in found.shipments:
        origin = shipment.origin
        node = origins.node[origin]
        per_line = [origins.dates(line, origin) for line in shipment.lines]
        # The parcel leaves when its last line is there; delivery follows that ship day.
        ship_day, earliest, latest = max(per_line)
        shipments.append(
            PromisedShipment(
                node_id=context.node_id(node),
                service_id=context.network.service_ids[origins.service[origin]],
                ship_day=ship_day,
                delivery_earliest_day=earliest,
                delivery_latest_day=latest,
                lines=tuple(PlannedLine(*lines[line]) for line in shipment.lines),
                cost_minor=shipment.cost,
                co2_grams=shipment.co2_grams,
            )
        )
    plan = Plan(
        tuple(Shipment(s.node_id, s.service_id, s.ship_day, s.lines) for s in shipments),
        destination,
        context.channel,
        context.segment,
    )
    return PromiseOption(
        plan=plan,
        shipments=tuple(shipments),
        delivery_earliest_day=max(s.delivery_earliest_day for s in shipments),
        delivery_latest_day=max(s.delivery_latest_day for s in shipments),
        cost_minor=found.cost,
        co2_grams=found.co2_grams,
        reasons=option.reasons,
    )


def warm_up() -> None:
    """Compile (or load from cache) the kernels promises use, before the first request."""
    sourcing_kernels.warm_up()
    time_phased.warm_up()
    calendar_kernels.warm_up()
