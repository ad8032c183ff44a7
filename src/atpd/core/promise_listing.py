"""Listing pages (PromiseBatch): the earliest delivery day of one unit of each of many SKUs to
one zone, for one caller. Pure; `now_ms` is an argument.

Per origin node the earliest delivery of goods on hand now (over the services reaching the
zone with a slot left on the ship day) is computed once for the whole batch; per SKU the answer
is then the least of those days over the nodes where the caller's ATP is at least 1 — one
vectorised pass. A SKU with counted incoming supply takes the time-phased path of a promise
(its unit may be there only at an ETA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.handlers_network import slots_left
from atpd.core.promise_context import (
    NOT_AVAILABLE,
    PromiseContext,
    atp_matrix,
    available_ms,
    promise_context,
)
from atpd.core.results import InvalidCommand, LimitExceeded
from atpd.core.state_fields import StateFields

NO_DAY = -1
# Larger than any epoch day: "no origin" in the vectorised minimum.
FAR_DAY = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class ListingAnswer:
    zone_id: str
    earliest_day: npt.NDArray[np.int64]  # per SKU asked: epoch day, NO_DAY when none
    node_index: npt.NDArray[np.int64]  # the node that gives it (-1 when none)


def node_days(
    context: PromiseContext, zone: int, when_ms: int, nodes: Sequence[int]
) -> npt.NDArray[np.int64]:
    """[node]: earliest delivery day to `zone` of goods there at `when_ms` (FAR_DAY: none)."""
    network = context.network
    state = context.state
    services = network.network.services
    days = np.full(len(state.nodes), FAR_DAY, np.int64)
    reaches = network.transit_days[:, zone] >= 0
    for node in nodes:
        node_id = context.node_id(node)
        for service in np.flatnonzero(network.origin[:, node] & reaches).tolist():
            dates = context.dates(node, service, zone, when_ms)
            if dates is None or dates[1] >= days[node]:
                continue
            if slots_left(state, services[service].service_id, node_id, dates[0]) >= 1:
                days[node] = dates[1]
    return days


def earliest_deliveries(
    state: StateFields,
    skus: Sequence[str],
    now_ms: int,
    country: str,
    postal_code: str,
    channel: str = "",
    segment: str = "",
) -> ListingAnswer:
    """The earliest delivery day of one unit of each SKU (NO_DAY: unknown SKU or none)."""
    if not skus:
        raise InvalidCommand("skus: at least one SKU is needed")
    limit = state.limits.max_skus_per_query
    if len(skus) > limit:
        raise LimitExceeded(f"skus: {len(skus)} SKUs, at most {limit} (max_skus_per_query)")
    context = promise_context(state, channel, segment, now_ms)
    if len(country) != 2 or not country.isalpha():
        raise InvalidCommand(f"country: {country!r} is not a 2-letter country code")
    zone = context.network.resolve_destination(country, postal_code)
    if zone < 0:
        raise InvalidCommand(f"destination: no zone covers {country.upper()} {postal_code!r}")
    origins = context.ship_from & (context.network.pick_capacity_orders != 0)
    origin_nodes = np.flatnonzero(origins).tolist()
    now_days = node_days(context, zone, now_ms, origin_nodes)
    rows, atp = atp_matrix(context, skus)
    best = np.where((atp >= 1) & origins, now_days, FAR_DAY)
    node = best.argmin(axis=1)
    earliest = best[np.arange(len(skus)), node]
    supplied = state.supply.by_sku
    if context.policy is not None and supplied:
        for line, row in enumerate(rows):
            if row >= 0 and row in supplied:
                earliest[line], node[line] = phased(context, zone, row, atp[line], origins)
    missing = earliest == FAR_DAY
    earliest[missing] = NO_DAY
    node[missing] = -1
    return ListingAnswer(context.network.zone_ids[zone], earliest, node.astype(np.int64))


def phased(
    context: PromiseContext,
    zone: int,
    row: int,
    atp_row: npt.NDArray[np.int64],
    origins: npt.NDArray[np.bool_],
) -> tuple[int, int]:
    """(earliest day, node) of one unit of a SKU with incoming supply (FAR_DAY, -1: none)."""
    available = available_ms(context, row, atp_row, 1)
    best_day, best_node = int(FAR_DAY), -1
    for node in np.flatnonzero((available != NOT_AVAILABLE) & origins).tolist():
        day = int(node_days(context, zone, int(available[node]), [node])[node])
        if day < best_day:
            best_day, best_node = day, node
    return best_day, best_node
