"""Numba kernels for availability roll-ups: plain arrays in, plain arrays out.

Compiled with `cache=True` so a restart loads machine code from __pycache__; `warm_up()` runs
every kernel once on tiny inputs so the first caller never pays for compilation (the server
reports SERVING only after it returns).

The ATP formula itself is written once, in `node_atp`, inlined into every kernel (the scalar
twin is `atp.atp`).

Few arguments and one output array on purpose: numba's dispatcher costs roughly 0.1 us per
array argument and per boxed result, which matters when the whole query budget is 5 us.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
# A quantity inside a kernel: a Python int or a numpy integer (cells are int32).
Quantity = int | np.integer[Any]


@njit(nogil=True, cache=True, inline="always")
def node_atp(
    on_hand: Quantity,
    reserved: Quantity,
    safety: Quantity,
    buffer: Quantity,
    supply: Quantity,
    protected: Quantity,
) -> Quantity:
    """The ATP formula, kernel form (the twin of `atp.atp`, inlined into every kernel here):
    max(0, on_hand - reserved - safety - buffer + counted supply - protected for others)."""
    free = on_hand - reserved - safety - buffer + supply - protected
    return free if free > 0 else 0


@njit(nogil=True, cache=True)
def rollup_atp(
    cells: Int32Array,
    sku_rows: Int64Array,
    node_mask: BoolArray,
    node_geo: Int32Array,
    geo_count: int,
) -> Int64Array:
    """ATP per requested SKU: per node, per geo prefix and in total, in one row each.

    `cells[row, field, node]` holds on_hand, reserved and safety stock. For requested SKU k the
    output row is `[atp at node 0..n-1 | atp at geo 0..g-1 | total]`, where node ATP is
    max(0, on_hand - reserved - safety) for nodes in `node_mask` (0 elsewhere), and each node's
    ATP is added to every prefix of its geo path. A row of -1 (unknown SKU) stays all zeros.
    """
    n_skus = sku_rows.shape[0]
    n_nodes = node_mask.shape[0]
    depth = node_geo.shape[0]
    out = np.zeros((n_skus, n_nodes + geo_count + 1), np.int64)
    for k in range(n_skus):
        row = sku_rows[k]
        if row < 0:
            continue
        total = 0
        for j in range(n_nodes):
            if not node_mask[j]:
                continue
            atp = node_atp(
                np.int64(cells[row, FIELD_ON_HAND, j]),
                cells[row, FIELD_RESERVED, j],
                cells[row, FIELD_SAFETY, j],
                0,
                0,
                0,
            )
            if atp == 0:
                continue
            out[k, j] = atp
            total += atp
            for level in range(depth):
                geo = node_geo[level, j]
                if geo >= 0:
                    out[k, n_nodes + geo] += atp
        out[k, n_nodes + geo_count] = total
    return out


def warm_up() -> None:
    """Compile (or load from cache) every kernel before the server takes traffic."""
    cells = np.ones((2, 3, 4), np.int32)
    node_geo = np.zeros((4, 4), np.int32)
    rollup_atp(cells, np.array([0, -1], np.int64), np.ones(4, np.bool_), node_geo, 1)
    mask = np.ones(4, np.bool_)
    rollup_atp_rules(
        cells,
        0,
        mask,
        node_geo,
        1,
        np.full(4, -1, np.int32),
        -1,
        0,
        np.zeros(4, np.int64),
        np.ones((1, 4), np.bool_),
        np.ones(1, np.int64),
        np.zeros(1, np.int64),
        np.ones(1, np.bool_),
        np.zeros((1, 4), np.int32),
        np.zeros(4 + 1 + 1, np.int64),
    )


@njit(nogil=True, cache=True)
def rollup_atp_rules(
    cells: Int32Array,
    row: int,
    node_mask: BoolArray,
    node_geo: Int32Array,
    geo_count: int,
    safety_node: Int32Array,
    sku_safety: int,
    buffer: int,
    supply: Int64Array,
    protection_mask: BoolArray,
    protection_units: Int64Array,
    protection_percent: Int64Array,
    protection_against: BoolArray,
    consumed: Int32Array,
    out: Int64Array,
) -> None:
    """One SKU's ATP for one caller, written into `out` = [per node | per geo | total].

    Per node: safety is the strictest of the caller's overrides (node/kind, SKU prefix) or
    else the position's own; free = on_hand - reserved - safety - buffer + counted supply;
    then every protection held back from this caller (`protection_against`) at this node
    removes what it still protects (units, or percent of on_hand, minus what its
    beneficiaries already hold). ATP = max(0, free - protected). `out` must be zeroed.
    """
    n_nodes = node_mask.shape[0]
    depth = node_geo.shape[0]
    n_protections = protection_against.shape[0]
    total = 0
    for j in range(n_nodes):
        if not node_mask[j]:
            continue
        on_hand = np.int64(cells[row, FIELD_ON_HAND, j])
        safety = np.int64(safety_node[j])
        if sku_safety > safety:
            safety = np.int64(sku_safety)
        if safety < 0:
            safety = np.int64(cells[row, FIELD_SAFETY, j])
        protected = 0
        for p in range(n_protections):
            if protection_against[p] and protection_mask[p, j]:
                units = protection_units[p]
                if units == 0:
                    units = on_hand * protection_percent[p] // 100
                remaining = units - consumed[p, j]
                if remaining > 0:
                    protected += remaining
        atp = node_atp(on_hand, cells[row, FIELD_RESERVED, j], safety, buffer, supply[j], protected)
        if atp == 0:
            continue
        out[j] = atp
        total += atp
        for level in range(depth):
            geo = node_geo[level, j]
            if geo >= 0:
                out[n_nodes + geo] += atp
    out[n_nodes + geo_count] = total


@njit(nogil=True, cache=True, parallel=True)
def catalogue_atp(
    cells: Int32Array,
    sku_count: int,
    node_mask: BoolArray,
    node_group: Int32Array,
    group_count: int,
    safety_node: Int32Array,
    sku_safety: Int64Array,
    buffer: int,
    protection_mask: BoolArray,
    protection_units: Int64Array,
    protection_percent: Int64Array,
    protection_against: BoolArray,
) -> Int64Array:
    """ATP of every SKU for one caller, summed per node group (e.g. per country).

    The same formula as `rollup_atp_rules` with no supply and no protection consumption:
    the caller patches the few SKUs that have either. `protection_against[sku, p]` says
    whether protection p holds units of that SKU back from the caller; `node_group[node]` is
    the group of each node (-1: none). Rows are independent, so they run in parallel.
    """
    n_nodes = node_mask.shape[0]
    n_protections = protection_against.shape[1]
    out = np.zeros((sku_count, group_count), np.int64)
    for row in prange(sku_count):
        for j in range(n_nodes):
            group = node_group[j]
            if not node_mask[j] or group < 0:
                continue
            on_hand = np.int64(cells[row, FIELD_ON_HAND, j])
            safety = np.int64(safety_node[j])
            if sku_safety[row] > safety:
                safety = sku_safety[row]
            if safety < 0:
                safety = np.int64(cells[row, FIELD_SAFETY, j])
            protected = 0
            for p in range(n_protections):
                if protection_against[row, p] and protection_mask[p, j]:
                    units = protection_units[p]
                    if units == 0:
                        units = on_hand * protection_percent[p] // 100
                    if units > 0:
                        protected += units
            out[row, group] += node_atp(
                on_hand, cells[row, FIELD_RESERVED, j], safety, buffer, 0, protected
            )
    return out
