"""The `[catalogue]` of a rule file: unit values of SKUs by prefix, in minor currency units,
which make a cost ceiling given as a percentage of the order value (`cost_ceiling = "15%"` in
a sourcing table) computable:

    [catalogue]
    "SKU-TV-" = 49900     # every SKU starting with SKU-TV- is worth 499.00
    "SKU-" = 1500         # the longest matching prefix wins

The order value is the sum of quantity x unit value over the cart's lines. A cart with a SKU
no prefix matches has no known value: the percentage ceiling does not apply to it (an absolute
ceiling always does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_CATALOGUE_PREFIXES = 10_000
MAX_UNIT_VALUE = 10**10  # minor currency units per unit
MAX_PREFIX_CHARACTERS = 128

Catalogue = tuple[tuple[str, int], ...]  # (SKU prefix, unit value), longest prefix first


class CatalogueError(ValueError):
    """The catalogue was refused; the message names the key and the problem."""


def parse_catalogue(value: Any) -> Catalogue:
    if not isinstance(value, dict):
        raise CatalogueError(
            f"catalogue: expected a table of SKU prefix = unit value, got {value!r}"
        )
    if len(value) > MAX_CATALOGUE_PREFIXES:
        raise CatalogueError(f"catalogue: {len(value)} prefixes, at most {MAX_CATALOGUE_PREFIXES}")
    entries: list[tuple[str, int]] = []
    for prefix, unit_value in value.items():
        if not prefix or len(prefix) > MAX_PREFIX_CHARACTERS or prefix != prefix.strip():
            raise CatalogueError(
                f"catalogue.{prefix!r}: a SKU prefix is 1-{MAX_PREFIX_CHARACTERS} characters "
                "without surrounding spaces"
            )
        if (
            isinstance(unit_value, bool)
            or not isinstance(unit_value, int)
            or not 0 <= unit_value <= MAX_UNIT_VALUE
        ):
            raise CatalogueError(
                f"catalogue.{prefix}: expected a unit value in minor units, an integer in "
                f"0..{MAX_UNIT_VALUE}, got {unit_value!r}"
            )
        entries.append((prefix, unit_value))
    entries.sort(key=lambda entry: (-len(entry[0]), entry[0]))
    return tuple(entries)


def unit_value(catalogue: Catalogue, sku: str) -> int | None:
    """The value of one unit of `sku` by its longest catalogued prefix; None when none."""
    for prefix, value in catalogue:
        if sku.startswith(prefix):
            return value
    return None


def order_value(catalogue: Catalogue, lines: Sequence[tuple[str, int]]) -> int | None:
    """Sum of quantity x unit value; None when a line's SKU has no catalogued value."""
    total = 0
    for sku, quantity in lines:
        value = unit_value(catalogue, sku)
        if value is None:
            return None
        total += value * quantity
    return total


def percent_ceiling(
    catalogue: Catalogue, lines: Sequence[tuple[str, int]], percent: float
) -> int | None:
    """The cost ceiling `percent` of the order value (rounded down), in minor units; None when
    the order value is unknown."""
    value = order_value(catalogue, lines)
    if value is None:
        return None
    return int(value * percent // 100)
