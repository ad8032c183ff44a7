"""Numba kernel of restock planning: the bounded greedy that matches receivers to donors.

Plain arrays in and out (see core/restock.py for what they hold). Compiled with
`nogil=True, cache=True` (njit is nopython): the service runs it in a worker thread, and nogil lets
the event loop go on meanwhile.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@njit(nogil=True, cache=True)
def position_terms(
    positions: npt.NDArray[np.int32],
    demand_slot: Int64Array,
    demand_rate: FloatArray,
    demand_last: Int64Array,
    columns: Int64Array,
    now_ms: int,
    tau_ms: float,
    inbound: npt.NDArray[np.int32],
    protected: npt.NDArray[np.int32],
    target_of: Int64Array,
    kind_slot: Int64Array,
    min_days: FloatArray,
    max_days: FloatArray,
    keep_units: Int64Array,
    horizon_days: float,
    need: npt.NDArray[np.int32],
    give: npt.NDArray[np.int32],
    urgency: npt.NDArray[np.float64],
    row_urgency: FloatArray,
) -> int:
    """Fill need, give and urgency per [SKU, node] in one pass (no temporaries); return the
    count of receivers; `row_urgency[i]` is SKU i's lowest receiver cover when it has both a
    receiver and a donor, +inf otherwise (no match possible). Velocity comes straight from
    the demand book's arrays (slot per SKU, -1: never sold; `columns` the nodes' indexes
    there). `inbound` / `protected` of shape (0, 0): none anywhere. See core/restock.py."""
    sku_count, node_count = need.shape
    width = demand_rate.shape[1]
    has_inbound = inbound.shape[0] > 0
    has_protected = protected.shape[0] > 0
    receivers = 0
    for i in range(sku_count):
        lowest = np.inf
        donor = False
        for j in range(node_count):
            need[i, j] = 0
            give[i, j] = 0
            urgency[i, j] = 0.0
            t = target_of[i, kind_slot[j]]
            if t < 0:
                continue
            on_hand = positions[i, 0, j]
            free = on_hand - positions[i, 1, j]
            stock = float(max(free, 0))
            if has_inbound:
                stock += inbound[i, j]
            v = 0.0
            slot = demand_slot[i]
            column = columns[j]
            if slot >= 0 and column < width and demand_last[slot, column] > 0:
                elapsed = max(now_ms - demand_last[slot, column], 0)
                v = demand_rate[slot, column] * np.exp(-elapsed / tau_ms)
            demand = v * horizon_days
            if v > 0.0 and stock - demand < v * min_days[t]:
                need[i, j] = max(int(np.ceil(v * (horizon_days + max_days[t]) - stock)), 0)
                urgency[i, j] = (stock - demand) / v
                lowest = min(lowest, urgency[i, j])
                receivers += 1
                continue
            floor = max(positions[i, 2, j], keep_units[t])
            if has_protected:
                floor = max(floor, protected[i, j])
            by_cover = np.floor(stock - v * (horizon_days + max_days[t]))
            units = min(float(free - floor), by_cover)
            if units > 0:
                give[i, j] = int(units)
                donor = True
        row_urgency[i] = lowest if donor else np.inf
    return receivers


@njit(nogil=True, cache=True)
def assign_moves(
    rows: Int64Array,
    need: npt.NDArray[np.int32],
    give: npt.NDArray[np.int32],
    urgency: FloatArray,
    lane_ok: BoolArray,
    lane_cost: FloatArray,
    unit_cost: float,
    opened: BoolArray,
    max_moves: int,
) -> Int64Array:
    """Moves (sku row, donor node, receiver node, units), as an [m, 4] array.

    For each SKU row in `rows`, receivers (need > 0) in order of urgency (lowest cover first)
    take from the donor (give > 0) with a lane to them whose cost per unit moved now is least:
    the lane's shipment cost (nothing once `opened`, i.e. already shipping in this plan: that
    is what bulks SKUs onto the same lanes) plus unit_cost x units, over the units. A receiver
    takes from further donors until its need is met or no donor with a lane is left. No donor
    gives more than its `give`, no receiver gets more than its `need`. `opened` is updated.
    Stops after the SKU row during which `max_moves` moves were reached."""
    capacity = 1024
    moves = np.empty((capacity, 4), np.int64)
    count = 0
    for k in range(rows.shape[0]):
        if count >= max_moves:
            break
        s = rows[k]
        receivers = np.nonzero(need[s] > 0)[0]
        donors = np.nonzero(give[s] > 0)[0]
        if receivers.shape[0] == 0 or donors.shape[0] == 0:
            continue
        left_to_give = give[s][donors].copy()
        order = np.argsort(urgency[s][receivers], kind="mergesort")
        for position in range(order.shape[0]):
            r = receivers[order[position]]
            left = need[s, r]
            while left > 0:
                best = -1
                best_per_unit = np.inf
                best_units = 0
                for j in range(donors.shape[0]):
                    available = left_to_give[j]
                    if available <= 0:
                        continue
                    d = donors[j]
                    if not lane_ok[d, r]:
                        continue
                    units = min(left, available)
                    cost = unit_cost * units
                    if not opened[d, r]:
                        cost += lane_cost[d, r]
                    per_unit = cost / units
                    if per_unit < best_per_unit or (
                        per_unit == best_per_unit and units > best_units
                    ):
                        best, best_per_unit, best_units = j, per_unit, units
                if best < 0:
                    break
                d = donors[best]
                if count == capacity:
                    capacity *= 2
                    grown = np.empty((capacity, 4), np.int64)
                    grown[:count] = moves[:count]
                    moves = grown
                moves[count, 0] = s
                moves[count, 1] = d
                moves[count, 2] = r
                moves[count, 3] = best_units
                count += 1
                left_to_give[best] -= best_units
                left -= best_units
                opened[d, r] = True
    return moves[:count].copy()


def warm_up() -> None:
    """Compile (or load from the cache) the kernels on tiny inputs before serving."""
    need = np.zeros((1, 2), np.int32)
    give = np.zeros((1, 2), np.int32)
    urgency = np.zeros((1, 2), np.float64)
    positions = np.array([[[9, 4], [0, 0], [0, 0]]], np.int32)  # [SKU, field, node]
    receivers = position_terms(
        positions,
        np.zeros(1, np.int64),
        np.array([[0.0, 1.0]]),
        np.array([[0, 5]], np.int64),
        np.arange(2, dtype=np.int64),
        5,
        1.0,
        np.zeros((0, 0), np.int32),
        np.zeros((0, 0), np.int32),
        np.zeros((1, 1), np.int64),
        np.zeros(2, np.int64),
        np.array([7.0]),
        np.array([10.0]),
        np.zeros(1, np.int64),
        1.0,
        need,
        give,
        urgency,
        np.zeros(1, np.float64),
    )
    assert receivers == 1 and need.tolist() == [[0, 7]] and give.tolist() == [[9, 0]], need
    lanes = np.array([[False, True], [True, False]])
    moves = assign_moves(
        np.array([0], np.int64),
        need,
        give,
        urgency,
        lanes,
        np.ones((2, 2), np.float64),
        0.0,
        np.zeros((2, 2), np.bool_),
        10,
    )
    assert moves.tolist() == [[0, 0, 1, 7]], moves
