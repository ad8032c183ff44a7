"""Demand velocity per (SKU, node): units sold per day, exponentially decayed.

Derived only from journaled commands (fulfilments and POS sales call `record_units_sold` with
the command's time), so replaying the journal reproduces it bit for bit. Each SKU that ever
sold has a slot: one row of two arrays over the nodes, the decayed rate as of the position's
last sale and that sale's time. The rate at any later time t is `rate * exp(-(t - last) / tau)`;
a sale of u units at t first decays the rate to t, then adds u / tau (tau in days, so the rate
is in units per day and a steady flow of d units a day converges to d).

Slots live in two 2-D arrays grown by doubling (a copy on the writer: rows at 32,768 SKUs x 512
nodes take about 270 MB to copy, once), so a restock plan reads them with no per-SKU work.
Only SKUs that sold take a slot, and only touched pages take memory.

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
MIN_SLOTS = 64
MIN_WIDTH = 8


class DemandBook:
    """Per SKU that sold: its slot; per slot and node, the rate and the last sale time."""

    __slots__ = ("last", "rate", "slot_of")

    def __init__(self) -> None:
        self.slot_of: dict[int, int] = {}
        self.rate: npt.NDArray[np.float64] = np.zeros((0, 0), np.float64)
        self.last: npt.NDArray[np.int64] = np.zeros((0, 0), np.int64)  # 0: never sold

    def __len__(self) -> int:
        return len(self.slot_of)

    def slot(self, sku_index: int, node_count: int) -> int:
        """The slot of a SKU, created if new; the arrays grown to hold `node_count` nodes."""
        slot = self.slot_of.get(sku_index)
        if slot is None:
            slot = self.slot_of[sku_index] = len(self.slot_of)
        rows, width = self.rate.shape
        if slot >= rows or node_count > width:
            new_rows = max(rows, MIN_SLOTS)
            while new_rows <= slot:
                new_rows *= 2
            new_width = max(width, MIN_WIDTH)
            while new_width < node_count:
                new_width *= 2
            rate = np.zeros((new_rows, new_width), np.float64)
            last = np.zeros((new_rows, new_width), np.int64)
            rate[:rows, :width] = self.rate
            last[:rows, :width] = self.last
            self.rate, self.last = rate, last
        return slot

    def row(
        self, sku_index: int, node_count: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Views of one SKU's row (valid until the arrays grow again)."""
        slot = self.slot(sku_index, node_count)
        return self.rate[slot], self.last[slot]

    def velocity(self, sku_index: int, node_count: int, now_ms: int) -> npt.NDArray[np.float64]:
        """Units per day at `now_ms` over the first `node_count` nodes (zeros: never sold)."""
        result = np.zeros(node_count, np.float64)
        slot = self.slot_of.get(sku_index)
        if slot is None:
            return result
        width = min(node_count, self.rate.shape[1])
        last = self.last[slot, :width]
        elapsed = np.maximum(now_ms - last, 0).astype(np.float64)
        result[:width] = np.where(last > 0, self.rate[slot, :width] * np.exp(-elapsed / TAU_MS), 0)
        return result

    def entries(self) -> list[tuple[int, int, float, int]]:
        """(sku row, node, rate, last sale ms) of every position that sold, sorted: the
        digest and snapshots (independent of how far the arrays grew)."""
        found = []
        for sku_index in sorted(self.slot_of):
            slot = self.slot_of[sku_index]
            rate, last = self.rate[slot], self.last[slot]
            for node in np.flatnonzero(rate).tolist():
                found.append((sku_index, node, float(rate[node]), int(last[node])))
        return found


def record_units_sold(
    book: DemandBook, sku_index: int, node_index: int, units: int, at_ms: int
) -> None:
    """The one entry point: `units` of a SKU left a node to customers at `at_ms` (a
    fulfilment, a POS sale). Scalar arithmetic in one fixed order, so replay is exact."""
    assert units > 0 and sku_index >= 0 and node_index >= 0, (units, sku_index, node_index)
    slot = book.slot(sku_index, node_index + 1)
    rate, last = book.rate, book.last
    previous = float(rate[slot, node_index])
    elapsed = at_ms - int(last[slot, node_index])
    if elapsed >= 0 or not previous:
        if previous and elapsed > 0:
            previous *= math.exp(-elapsed / TAU_MS)
        rate[slot, node_index] = previous + units / TAU_DAYS
        last[slot, node_index] = at_ms
    else:
        # A sale older than the last one (a till's offline queue): it counts as decayed as it
        # would be now, and the rate keeps its newer time.
        rate[slot, node_index] = previous + units / TAU_DAYS * math.exp(elapsed / TAU_MS)
