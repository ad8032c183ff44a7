"""The `[restock]` table of the rules: cover targets per node kind and SKU prefix, and the
transport defaults for node pairs the fulfilment network has no lane for.

```toml
[restock]
default_lead_days = 2          # a transfer between nodes with no network lane
default_shipment_cost = 25.0   # per shipment on such a pair
unit_cost = 0.1                # per unit moved, on every lane
min_shipment_units = 6         # a lane and day moving fewer units is not shipped

[[restock.targets]]            # the most specific target applies (longest SKU prefix)
kinds = ["STORE"]              # node kinds (none: every kind)
sku_prefixes = ["BAG-"]        # none: every SKU
min_days = 7                   # below this many days of cover: a receiver
max_days = 21                  # above it: a donor of what exceeds it
keep_units = 1                 # never take a donor below this many units
```

A position no target applies to takes no part in restocking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from atpd.core.commands import NodeKind

MAX_RESTOCK_TARGETS = 256
MAX_PREFIXES_PER_TARGET = 64
MAX_LEAD_DAYS = 365
MAX_COVER_DAYS = 3650.0
MAX_COST = 1e9
RESTOCK_KEYS = (
    "default_lead_days",
    "default_shipment_cost",
    "unit_cost",
    "min_shipment_units",
    "targets",
)
TARGET_KEYS = ("kinds", "sku_prefixes", "min_days", "max_days", "keep_units")


class RestockRulesError(ValueError):
    """A `[restock]` table that was refused; the message names the key."""


@dataclass(frozen=True, slots=True)
class RestockTarget:
    kinds: tuple[NodeKind, ...]  # empty: every kind
    sku_prefixes: tuple[str, ...]  # empty: every SKU
    min_days: float
    max_days: float
    keep_units: int

    def covers_kind(self, kind: NodeKind) -> bool:
        return not self.kinds or kind in self.kinds


@dataclass(frozen=True, slots=True)
class RestockRules:
    default_lead_days: int = 2
    default_shipment_cost: float = 25.0
    unit_cost: float = 0.0
    min_shipment_units: int = 1
    targets: tuple[RestockTarget, ...] = ()


DEFAULT_RESTOCK = RestockRules()


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RestockRulesError(f"{where}: expected a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise RestockRulesError(f"{where}: {value} is not in {low:g}..{high:g}")
    return float(value)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RestockRulesError(f"{where}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise RestockRulesError(f"{where}: {value} is not in {low}..{high}")
    return value


def _keys(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise RestockRulesError(f"{where}: expected a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            raise RestockRulesError(f"{where}.{key}: unknown key (known: {', '.join(allowed)})")
    return table


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise RestockRulesError(f"{where}: expected a list of strings")
    return value


def _target(table: Any, where: str) -> RestockTarget:
    table = _keys(table, TARGET_KEYS, where)
    kinds = []
    for i, name in enumerate(_strings(table.get("kinds", []), f"{where}.kinds")):
        try:
            kinds.append(NodeKind[name.upper()])
        except KeyError:
            known = ", ".join(k.name for k in NodeKind)
            raise RestockRulesError(
                f"{where}.kinds[{i}]: unknown node kind {name!r} (known: {known})"
            ) from None
    prefixes = _strings(table.get("sku_prefixes", []), f"{where}.sku_prefixes")
    if len(prefixes) > MAX_PREFIXES_PER_TARGET:
        raise RestockRulesError(
            f"{where}.sku_prefixes: {len(prefixes)}, more than {MAX_PREFIXES_PER_TARGET}"
        )
    for i, prefix in enumerate(prefixes):
        if not prefix or not prefix.isprintable() or len(prefix) > 64:
            raise RestockRulesError(f"{where}.sku_prefixes[{i}]: {prefix!r} is not a SKU prefix")
    if "min_days" not in table or "max_days" not in table:
        raise RestockRulesError(f"{where}: min_days and max_days are required")
    min_days = _number(table["min_days"], f"{where}.min_days", 0.0, MAX_COVER_DAYS)
    max_days = _number(table["max_days"], f"{where}.max_days", 0.0, MAX_COVER_DAYS)
    if max_days < min_days:
        raise RestockRulesError(f"{where}.max_days: {max_days:g} is below min_days {min_days:g}")
    keep = _integer(table.get("keep_units", 0), f"{where}.keep_units", 0, 1_000_000_000)
    return RestockTarget(tuple(kinds), tuple(prefixes), min_days, max_days, keep)


def parse_restock(table: Any) -> RestockRules:
    """The `[restock]` table (absent: the defaults, no targets)."""
    table = _keys(table, RESTOCK_KEYS, "restock")
    raw_targets = table.get("targets", [])
    if not isinstance(raw_targets, list):
        raise RestockRulesError(
            "restock.targets: expected an array of tables ([[restock.targets]])"
        )
    if len(raw_targets) > MAX_RESTOCK_TARGETS:
        raise RestockRulesError(
            f"restock.targets: {len(raw_targets)}, more than the {MAX_RESTOCK_TARGETS} allowed"
        )
    defaults = DEFAULT_RESTOCK
    return RestockRules(
        default_lead_days=_integer(
            table.get("default_lead_days", defaults.default_lead_days),
            "restock.default_lead_days",
            0,
            MAX_LEAD_DAYS,
        ),
        default_shipment_cost=_number(
            table.get("default_shipment_cost", defaults.default_shipment_cost),
            "restock.default_shipment_cost",
            0.0,
            MAX_COST,
        ),
        unit_cost=_number(
            table.get("unit_cost", defaults.unit_cost), "restock.unit_cost", 0.0, MAX_COST
        ),
        min_shipment_units=_integer(
            table.get("min_shipment_units", defaults.min_shipment_units),
            "restock.min_shipment_units",
            1,
            1_000_000_000,
        ),
        targets=tuple(_target(t, f"restock.targets[{i}]") for i, t in enumerate(raw_targets)),
    )


def target_for(
    targets: tuple[RestockTarget, ...], kind: NodeKind, sku: str
) -> RestockTarget | None:
    """The most specific target for a node kind and SKU: the longest matching SKU prefix
    (a target without prefixes counts as length 0); a tie goes to the later target."""
    best: RestockTarget | None = None
    best_length = -1
    for target in targets:
        if not target.covers_kind(kind):
            continue
        if target.sku_prefixes:
            matched = [len(p) for p in target.sku_prefixes if sku.startswith(p)]
            if not matched:
                continue
            length = max(matched)
        else:
            length = 0
        if length >= best_length:
            best, best_length = target, length
    return best
