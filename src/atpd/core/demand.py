"""Demand velocity per (SKU, node): units sold per day, exponentially decayed.

Derived only from journaled commands (fulfilments and POS sales call `record_units_sold` with
the command's time), so replaying the journal reproduces it bit for bit. Each SKU row that
ever sold has two arrays over the nodes: the decayed rate as of the position's last sale and
that sale's time. The rate at any later time t is `rate * exp(-(t - last) / tau)`; a sale of
u units at t first decays the rate to t, then adds u / tau (tau in days, so the rate is in
units per day and a steady flow of d units a day converges to d).

The half-life is a constant, not a setting: a journal replayed under another half-life would
give another state.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

DEMAND_HALF_LIFE_DAYS = 14.0
DAY_MS = 86_400_000
TAU_DAYS = DEMAND_HALF_LIFE_DAYS / math.log(2.0)
TAU_MS = TAU_DAYS * DAY_MS


class DemandBook:
    """Per SKU row: (rate per node at its last sale, last sale time per node in ms)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[int, tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def row(
        self, sku_index: int, node_count: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """The arrays of one SKU row, created or grown (doubling) to cover `node_count` nodes."""
        entry = self.rows.get(sku_index)
        if entry is None or len(entry[0]) < node_count:
            width = max(node_count, 2 * len(entry[0]) if entry is not None else 8)
            rate = np.zeros(width, np.float64)
            last = np.zeros(width, np.int64)
            if entry is not None:
                rate[: len(entry[0])] = entry[0]
                last[: len(entry[1])] = entry[1]
            entry = self.rows[sku_index] = (rate, last)
        return entry

    def velocity(self, sku_index: int, node_count: int, now_ms: int) -> npt.NDArray[np.float64]:
        """Units per day at `now_ms` over the first `node_count` nodes (zeros: never sold)."""
        entry = self.rows.get(sku_index)
        result = np.zeros(node_count, np.float64)
        if entry is None:
            return result
        rate, last = entry
        width = min(node_count, len(rate))
        elapsed = np.maximum(now_ms - last[:width], 0).astype(np.float64)
        result[:width] = rate[:width] * np.exp(-elapsed / TAU_MS)
        return result

    def entries(self) -> list[tuple[int, int, float, int]]:
        """(sku row, node, rate, last sale ms) of every position that sold, sorted: the
        digest and snapshots (independent of how wide the arrays grew)."""
        found = []
        for sku_index in sorted(self.rows):
            rate, last = self.rows[sku_index]
            for node in np.flatnonzero(rate).tolist():
                found.append((sku_index, node, float(rate[node]), int(last[node])))
        return found


def record_units_sold(
    book: DemandBook, sku_index: int, node_index: int, units: int, at_ms: int
) -> None:
    """The one entry point: `units` of a SKU left a node to customers at `at_ms` (a
    fulfilment, a POS sale). Scalar arithmetic in one fixed order, so replay is exact."""
    assert units > 0 and sku_index >= 0 and node_index >= 0, (units, sku_index, node_index)
    rate, last = book.row(sku_index, node_index + 1)
    previous = float(rate[node_index])
    elapsed = at_ms - int(last[node_index])
    if previous and elapsed > 0:
        previous *= math.exp(-elapsed / TAU_MS)
    rate[node_index] = previous + units / TAU_DAYS
    last[node_index] = at_ms
