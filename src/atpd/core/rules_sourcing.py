"""The `sourcing` rule kind: how a promise may source an order for one caller.

A policy's `sourcing` table (README "Promises"), merged key by key like the other policy keys:

    sourcing = { max_shipments = 3, ship_from_kinds = ["WAREHOUSE", "STORE"],
                 weights = { speed_per_day = 500, cost = 1, co2_per_gram = 0.1,
                             per_shipment = 300 },
                 exclude = ["ST-LON-01"], penalties = { "ST-PAR-01" = 200 },
                 cost_ceiling = 5000, pickup_transfers = true }

Weights and penalties are in minor currency units per metric unit (a day, a minor unit of
cost, a gram of CO2, a shipment); the cost ceiling is in minor currency units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atpd.core.commands import NodeKind

SOURCING_KEYS = (
    "max_shipments",
    "weights",
    "ship_from_kinds",
    "exclude",
    "penalties",
    "cost_ceiling",
    "pickup_transfers",
)
WEIGHT_KEYS = ("speed_per_day", "cost", "co2_per_gram", "per_shipment")
# Bounds of the rule kind (core/sourcing.py bounds the search the same way).
MAX_SOURCING_SHIPMENTS = 16
MAX_SOURCING_WEIGHT = 1e9
MAX_SOURCING_COST_CEILING = 10**12  # minor currency units
MAX_SOURCING_COST_PERCENT = 1000  # percent of the order value
MAX_SOURCING_NODES = 10_000  # excluded or penalised node ids per policy


class SourcingRulesError(ValueError):
    """A sourcing table was refused; the message names the key path and the problem."""


@dataclass(frozen=True, slots=True)
class Sourcing:
    """How a promise may source an order: at most `max_shipments` parcels, from nodes of
    `ship_from_kinds` (empty: every kind) the caller sees and that are not `exclude`d;
    `weights` of the `best` objective (speed per day, cost, CO2 per gram, per shipment);
    `penalties` per node id (added to the weighted objective per shipment: node priorities);
    `cost_ceiling` (None: none); `pickup_transfers`: whether a pickup at a store may wait for
    stock moved there by a transfer lane."""

    max_shipments: int = 1
    weights: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)
    ship_from_kinds: tuple[NodeKind, ...] = ()
    exclude: tuple[str, ...] = ()
    penalties: tuple[tuple[str, float], ...] = ()
    cost_ceiling: int | None = None
    pickup_transfers: bool = True
    # cost_ceiling = "15%": at most this percent of the order value (the rule file's
    # catalogue values the SKUs); exclusive with an absolute cost_ceiling.
    cost_ceiling_percent: float | None = None


def number(value: Any, where: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourcingRulesError(f"{where}: expected a number, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= high):
        raise SourcingRulesError(f"{where}: {value} is not a number in 0..{high:g}")
    return float(value)


def whole(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SourcingRulesError(f"{where}: expected an integer in {low}..{high}, got {value!r}")
    return value


def percent(text: str, where: str) -> float:
    """ "15%" -> 15.0: a percentage of the order value in 0..MAX_SOURCING_COST_PERCENT."""
    number_text = text.strip().removesuffix("%")
    try:
        value = float(number_text) if text.strip().endswith("%") else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_SOURCING_COST_PERCENT):
        raise SourcingRulesError(
            f"{where}: {text!r} is neither minor units (an integer) nor a percentage of the "
            f'order value in 0..{MAX_SOURCING_COST_PERCENT}% (e.g. "15%")'
        )
    return value


def table_of(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourcingRulesError(f"{where}: expected a table, got {value!r}")
    return value


def node_ids(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SourcingRulesError(f"{where}: expected a list of node ids, got {value!r}")
    if len(value) > MAX_SOURCING_NODES:
        raise SourcingRulesError(f"{where}: {len(value)} nodes, at most {MAX_SOURCING_NODES}")
    return tuple(value)


def kind_of(name: Any, where: str) -> NodeKind:
    try:
        return NodeKind[str(name).upper()]
    except KeyError:
        known = ", ".join(k.name for k in NodeKind)
        raise SourcingRulesError(f"{where}: unknown node kind {name!r} (known: {known})") from None


def merge_sourcing(
    base: Sourcing, value: Any, where: str, check_node: Callable[[str, str], None]
) -> Sourcing:
    """`base` overridden by the keys of one policy's `sourcing` table at `where`."""
    table = table_of(value, where)
    for key in table:
        if key not in SOURCING_KEYS:
            raise SourcingRulesError(
                f"{where}.{key}: unknown key (known: {', '.join(SOURCING_KEYS)})"
            )
    values: dict[str, Any] = {}
    if "max_shipments" in table:
        values["max_shipments"] = whole(
            table["max_shipments"], f"{where}.max_shipments", 1, MAX_SOURCING_SHIPMENTS
        )
    if "weights" in table:
        weights = table_of(table["weights"], f"{where}.weights")
        merged = list(base.weights)
        for key in weights:
            if key not in WEIGHT_KEYS:
                raise SourcingRulesError(
                    f"{where}.weights.{key}: unknown weight (known: {', '.join(WEIGHT_KEYS)})"
                )
            merged[WEIGHT_KEYS.index(key)] = number(
                weights[key], f"{where}.weights.{key}", MAX_SOURCING_WEIGHT
            )
        values["weights"] = (merged[0], merged[1], merged[2], merged[3])
    if "ship_from_kinds" in table:
        kinds = table["ship_from_kinds"]
        if not isinstance(kinds, list):
            raise SourcingRulesError(f"{where}.ship_from_kinds: expected a list, got {kinds!r}")
        values["ship_from_kinds"] = tuple(
            kind_of(kind, f"{where}.ship_from_kinds[{i}]") for i, kind in enumerate(kinds)
        )
    if "exclude" in table:
        excluded = node_ids(table["exclude"], f"{where}.exclude")
        for i, node_id in enumerate(excluded):
            check_node(node_id, f"{where}.exclude[{i}]")
        values["exclude"] = excluded
    if "penalties" in table:
        penalties = table_of(table["penalties"], f"{where}.penalties")
        if len(penalties) > MAX_SOURCING_NODES:
            raise SourcingRulesError(
                f"{where}.penalties: {len(penalties)} nodes, at most {MAX_SOURCING_NODES}"
            )
        for node_id in penalties:
            check_node(node_id, f"{where}.penalties")
        values["penalties"] = tuple(
            (node_id, number(penalty, f"{where}.penalties.{node_id}", MAX_SOURCING_WEIGHT))
            for node_id, penalty in penalties.items()
        )
    if "cost_ceiling" in table:
        # An override replaces the inherited ceiling, whichever form either has.
        ceiling = table["cost_ceiling"]
        if isinstance(ceiling, str):
            values["cost_ceiling"] = None
            values["cost_ceiling_percent"] = percent(ceiling, f"{where}.cost_ceiling")
        else:
            values["cost_ceiling_percent"] = None
            values["cost_ceiling"] = whole(
                ceiling, f"{where}.cost_ceiling", 0, MAX_SOURCING_COST_CEILING
            )
    if "pickup_transfers" in table:
        transfers = table["pickup_transfers"]
        if not isinstance(transfers, bool):
            raise SourcingRulesError(
                f"{where}.pickup_transfers: expected true or false, got {transfers!r}"
            )
        values["pickup_transfers"] = transfers
    return Sourcing(**{**{name: getattr(base, name) for name in Sourcing.__slots__}, **values})


# A policy without a `sourcing` table: one parcel, cheapest first, from any node it sees.
DEFAULT_SOURCING = Sourcing()
