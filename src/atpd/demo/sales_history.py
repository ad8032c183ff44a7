"""Four weeks of till sales for the demo boutiques, so restocking has demand to plan from.

Demand velocity (core/demand.py) is derived only from journaled fulfilments and till sales, so
a demo with stock and no history would plan nothing. `load_demo` therefore records these sales
as ordinary RecordOfflineSales commands carrying their original till times (the past
`HISTORY_DAYS` days, shop hours), after counting each position up by what it then sells: the
stock left once the history is applied is exactly the demo stock picture (`demo_positions`).

The draw is deterministic: the units and which SKU sold where come from a fixed seed; only the
absolute times follow the load's `now_ms` (each sale is an offset before it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HISTORY_SEED = 20_261_130
HISTORY_DAYS = 28
DAY_MS = 86_400_000
# Tills ring between 10:00 and 19:00 (UTC: the demo does not model each store's time zone).
OPEN_MS = 10 * 3_600_000
CLOSE_MS = 19 * 3_600_000
# Receipts per RecordOfflineSales command (under the service's max_offline_sales_per_call).
SALES_PER_COMMAND = 500

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class DemoSales:
    """One receipt of one line per sale, oldest first: `position[i]` indexes the demo
    positions, `before_now_ms[i]` is how long before the load the till rang it."""

    position: IntArray
    quantity: IntArray
    before_now_ms: IntArray

    def __len__(self) -> int:
        return int(self.position.shape[0])

    def units_per_position(self, position_count: int) -> IntArray:
        """Units each demo position sells over the history (its count is raised by that)."""
        return np.bincount(self.position, weights=self.quantity, minlength=position_count).astype(
            np.int64
        )


@functools.lru_cache(maxsize=4)
def _cached(
    position_node: bytes, position_weight: bytes, daily_units: bytes, seed: int
) -> DemoSales:
    nodes = np.frombuffer(position_node, np.int64)
    weights = np.frombuffer(position_weight, np.float64)
    per_day = np.frombuffer(daily_units, np.float64)
    rng = np.random.default_rng(seed)
    positions: list[IntArray] = []
    offsets: list[IntArray] = []
    order = np.argsort(nodes, kind="stable")
    starts = np.searchsorted(nodes[order], np.arange(per_day.shape[0] + 1))
    for node in range(per_day.shape[0]):
        rows = order[starts[node] : starts[node + 1]]
        if per_day[node] <= 0 or rows.shape[0] == 0:
            continue
        count = int(rng.poisson(per_day[node] * HISTORY_DAYS))
        weight = weights[rows]
        positions.append(rows[rng.choice(rows.shape[0], size=count, p=weight / weight.sum())])
        day = rng.integers(0, HISTORY_DAYS, size=count)
        time_of_day = rng.integers(OPEN_MS, CLOSE_MS, size=count)
        offsets.append((HISTORY_DAYS - day) * DAY_MS - time_of_day)
    position = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    before_now = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
    # A second unit now and then (a gift and one for oneself).
    quantity = np.where(rng.random(position.shape[0]) < 0.08, 2, 1).astype(np.int64)
    # Oldest first (the largest offset), ties by position: one fixed order of commands.
    chronological = np.lexsort((position, -before_now))
    result = DemoSales(
        position[chronological].astype(np.int64),
        quantity[chronological],
        before_now[chronological].astype(np.int64),
    )
    for array in (result.position, result.quantity, result.before_now_ms):
        array.setflags(write=False)
    return result


def demo_sales(
    position_node: IntArray,
    position_weight: FloatArray,
    daily_units: FloatArray,
    seed: int = HISTORY_SEED,
) -> DemoSales:
    """Draw the history: per node, Poisson(`daily_units[node]` x HISTORY_DAYS) sales over the
    positions it stocks, each picked with probability proportional to `position_weight` (the
    SKU's popularity); a node with no daily units sells nothing (the warehouses)."""
    assert position_node.shape == position_weight.shape, "one weight per position"
    assert (position_weight > 0).all(), "weights must be positive"
    return _cached(
        np.ascontiguousarray(position_node, np.int64).tobytes(),
        np.ascontiguousarray(position_weight, np.float64).tobytes(),
        np.ascontiguousarray(daily_units, np.float64).tobytes(),
        seed,
    )
