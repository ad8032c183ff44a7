"""Numba kernels of bulk loads: plain arrays in and out, one pass over the rows each.

A 10M-row load is a few hundred milliseconds of numpy fancy indexing per column touched; one
compiled pass per job does every column of a row at once while it is in cache.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from atpd.core.stock import FIELD_ON_HAND, FIELD_SAFETY

# counts[] slots written by apply_rows / zero_absent.
COUNT_WRITTEN = 0
COUNT_CHANGED = 1
COUNT_STALE = 2
COUNT_CREATED = 3
COUNT_ZEROED = 4
COUNT_SLOTS = 5


@numba.njit(nogil=True, cache=True)
def apply_rows(
    cells: npt.NDArray[np.int32],
    source_seq: npt.NDArray[np.int64],
    present: npt.NDArray[np.uint8],
    sku_code: npt.NDArray[np.int32],
    node_code: npt.NDArray[np.int32],
    sku_map: npt.NDArray[np.int64],
    node_map: npt.NDArray[np.int64],
    on_hand: npt.NDArray[np.int32],
    safety: npt.NDArray[np.int32],
    sequence: int,
    scope_column: npt.NDArray[np.int64],
    loaded: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int64],
) -> None:
    """Write each row's on_hand (and safety stock unless -1) at (sku_map[sku_code],
    node_map[node_code]) (load dictionary codes to state rows and columns), unless the
    position's last sequence is >= `sequence` (> 0). Rows are distinct positions. With a
    non-empty `loaded` (FULL loads), mark loaded[sku, scope_column[node]] for every row, stale
    or not, so that zero_absent knows what the load listed."""
    mark = loaded.shape[1] > 0
    written = 0
    changed = 0
    stale = 0
    created = 0
    for i in range(sku_code.shape[0]):
        s = sku_map[sku_code[i]]
        d = node_map[node_code[i]]
        if mark:
            loaded[s, scope_column[d]] = 1
        if sequence > 0 and source_seq[s, d] >= sequence:
            stale += 1
            continue
        differs = False
        value = on_hand[i]
        if cells[s, FIELD_ON_HAND, d] != value:
            cells[s, FIELD_ON_HAND, d] = value
            differs = True
        value = safety[i]
        if value >= 0 and cells[s, FIELD_SAFETY, d] != value:
            cells[s, FIELD_SAFETY, d] = value
            differs = True
        if sequence > 0:
            source_seq[s, d] = sequence
        if present[s, d] == 0:
            present[s, d] = 1
            created += 1
            differs = True
        written += 1
        if differs:
            changed += 1
    counts[COUNT_WRITTEN] += written
    counts[COUNT_CHANGED] += changed
    counts[COUNT_STALE] += stale
    counts[COUNT_CREATED] += created


@numba.njit(nogil=True, cache=True)
def zero_absent(
    cells: npt.NDArray[np.int32],
    source_seq: npt.NDArray[np.int64],
    present: npt.NDArray[np.uint8],
    sku_count: int,
    scope_nodes: npt.NDArray[np.int64],
    loaded: npt.NDArray[np.uint8],
    sequence: int,
    counts: npt.NDArray[np.int64],
) -> None:
    """FULL loads: every existing position of the scope nodes that the load did not list gets
    on_hand 0 (reserved and safety stock kept), unless its last sequence is >= `sequence`."""
    changed = 0
    stale = 0
    zeroed = 0
    for s in range(sku_count):
        for j in range(scope_nodes.shape[0]):
            d = scope_nodes[j]
            if present[s, d] == 0 or loaded[s, j] != 0:
                continue
            if sequence > 0:
                if source_seq[s, d] >= sequence:
                    stale += 1
                    continue
                source_seq[s, d] = sequence
            if cells[s, FIELD_ON_HAND, d] != 0:
                cells[s, FIELD_ON_HAND, d] = 0
                changed += 1
                zeroed += 1
    counts[COUNT_CHANGED] += changed
    counts[COUNT_STALE] += stale
    counts[COUNT_ZEROED] += zeroed


@numba.njit(nogil=True, cache=True)
def first_duplicate_dense(
    sku: npt.NDArray[np.int32],
    node: npt.NDArray[np.int32],
    node_count: int,
    first_row: npt.NDArray[np.int32],
) -> tuple[int, int]:
    """(first row, repeating row) of the first position listed twice, or (-1, -1).
    `first_row` has sku_count * node_count slots, all -1."""
    for i in range(sku.shape[0]):
        key = sku[i] * node_count + node[i]
        seen = first_row[key]
        if seen >= 0:
            return seen, i
        first_row[key] = i
    return -1, -1


@numba.njit(nogil=True, cache=True)
def renumber_by_first_use(
    codes: npt.NDArray[np.int64], offset: int, size: int, out: npt.NDArray[np.int32]
) -> npt.NDArray[np.int64]:
    """Dictionary codes (any ints in [-offset, size - offset)) renumbered 0, 1, 2... in order
    of first use, written to `out`; returns the original code of each new number. Values that
    no row uses get no number."""
    mapping = np.full(size, -1, np.int32)
    order = np.empty(min(size, codes.shape[0]), np.int64)
    count = 0
    for i in range(codes.shape[0]):
        slot = codes[i] + offset
        number = mapping[slot]
        if number < 0:
            number = count
            mapping[slot] = number
            order[count] = codes[i]
            count += 1
        out[i] = number
    return order[:count]


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel with the types production uses."""
    cells = np.zeros((2, 3, 2), np.int32)
    source_seq = np.zeros((2, 2), np.int64)
    present = np.zeros((2, 2), np.uint8)
    rows = np.array([0, 1], np.int64)
    codes = np.array([0, 1], np.int32)
    values = np.array([1, -1], np.int32)
    counts = np.zeros(COUNT_SLOTS, np.int64)
    loaded = np.zeros((2, 2), np.uint8)
    scope = np.array([0, 1], np.int64)
    apply_rows(
        cells,
        source_seq,
        present,
        codes,
        codes,
        rows,
        rows,
        values,
        values,
        1,
        scope,
        loaded,
        counts,
    )
    zero_absent(cells, source_seq, present, 2, scope, loaded, 2, counts)
    small = np.array([0, 1], np.int32)
    first_duplicate_dense(small, small, 2, np.full(4, -1, np.int32))
    renumber_by_first_use(rows, 0, 2, np.empty(2, np.int32))
