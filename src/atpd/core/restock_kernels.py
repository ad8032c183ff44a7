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
def assign_moves(
    rows: Int64Array,
    need: Int64Array,
    give: Int64Array,
    urgency: FloatArray,
    lane_ok: BoolArray,
    lane_cost: FloatArray,
    unit_cost: float,
    opened: BoolArray,
) -> Int64Array:
    """Moves (sku row, donor node, receiver node, units), as an [m, 4] array.

    For each SKU row in `rows`, receivers (need > 0) in order of urgency (lowest cover first)
    take from the donor (give > 0) with a lane to them whose cost per unit moved now is least:
    the lane's shipment cost (nothing once `opened`, i.e. already shipping in this plan: that
    is what bulks SKUs onto the same lanes) plus unit_cost x units, over the units. A receiver
    takes from further donors until its need is met or no donor with a lane is left. No donor
    gives more than its `give`, no receiver gets more than its `need`. `opened` is updated."""
    capacity = 1024
    moves = np.empty((capacity, 4), np.int64)
    count = 0
    for k in range(rows.shape[0]):
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
    """Compile (or load from the cache) the kernel on tiny inputs before serving."""
    need = np.array([[0, 2]], np.int64)
    give = np.array([[3, 0]], np.int64)
    lanes = np.array([[False, True], [True, False]])
    moves = assign_moves(
        np.array([0], np.int64),
        need,
        give,
        np.zeros((1, 2), np.float64),
        lanes,
        np.ones((2, 2), np.float64),
        0.0,
        np.zeros((2, 2), np.bool_),
    )
    assert moves.tolist() == [[0, 0, 1, 2]], moves
