"""Bulk loads: many positions applied in one atomic command, FULL or DELTA, by source sequence.

A load arrives as columns (`LoadColumns`): distinct SKU and node ids in order of first use
plus one int32 code per row, on_hand, and safety stock (-1: keep). The command carries string
ids, never dense indices, so a journaled load replays the same whatever the id assignment.

Rules (also in the README and feeds.proto):
- FULL replaces every position of the nodes it names: existing positions of those nodes that it
  does not list get on_hand 0; reserved and safety stock are kept. DELTA changes only the rows.
- With source_sequence S >= 1, a position is written only if its last applied sequence is < S,
  and then takes S; otherwise it keeps its value (counted stale). S = 0: unsequenced, written
  always, sequences untouched.
- A load id is applied once: the same id with the same content answers the stored summary,
  with different content it is refused (AlreadyExists).

Everything that can refuse the load is checked before the first write, so a refused load
leaves no trace; the writes are then two numba passes (`bulk_kernels`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from atpd.core import bulk_kernels
from atpd.core.limits import MAX_QUANTITY
from atpd.core.load_command import BulkLoad, BulkLoadResult, LoadColumns, LoadMode, LoadSummary
from atpd.core.load_registry import LoadRegistry
from atpd.core.results import AlreadyExists, InvalidCommand, LimitExceeded, NotFound, Outcome
from atpd.core.state_fields import StateFields

__all__ = [
    "BulkLoad",
    "BulkLoadResult",
    "LoadColumns",
    "LoadMode",
    "LoadRegistry",
    "LoadSummary",
    "apply_bulk_load",
    "check_columns",
    "find_duplicate",
]

# Above this many (SKU x node) slots per row, duplicates are found by sorting instead of with
# a dense table (a sparse load over many SKUs and nodes).
DENSE_DUPLICATE_SLOTS_PER_ROW = 8
DENSE_DUPLICATE_SLOTS_MIN = 1 << 20


def check_columns(columns: LoadColumns) -> None:
    """Shapes and ranges (cheap, vectorised); raise InvalidCommand naming the row."""
    rows = columns.rows
    for name in ("sku", "node", "on_hand", "safety"):
        column = getattr(columns, name)
        if column.shape != (rows,) or column.dtype != np.int32:
            raise InvalidCommand(f"{name}: column of {column.shape} {column.dtype}, not {rows}")
    if rows == 0:
        return
    for name, low, high in (
        ("sku", 0, len(columns.sku_names) - 1),
        ("node", 0, len(columns.node_names) - 1),
        ("on_hand", 0, MAX_QUANTITY),
        ("safety", -1, MAX_QUANTITY),
    ):
        column = getattr(columns, name)
        if low <= int(column.min()) and int(column.max()) <= high:
            continue
        bad = (column < low) | (column > high)
        if bad.any():
            row = int(np.argmax(bad))
            raise InvalidCommand(f"rows[{row}].{name}: {int(column[row])} is not in {low}..{high}")


def find_duplicate(columns: LoadColumns) -> tuple[int, int] | None:
    """(first row, repeating row) of the position listed twice whose repeat comes first."""
    rows = columns.rows
    if rows < 2:
        return None
    slots = len(columns.sku_names) * len(columns.node_names)
    if slots <= max(DENSE_DUPLICATE_SLOTS_PER_ROW * rows, DENSE_DUPLICATE_SLOTS_MIN):
        first_row = np.full(slots, -1, np.int32)
        first, repeat = bulk_kernels.first_duplicate_dense(
            columns.sku, columns.node, len(columns.node_names), first_row
        )
        return None if repeat < 0 else (int(first), int(repeat))
    keys = columns.sku.astype(np.int64) * len(columns.node_names) + columns.node
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    equal = np.flatnonzero(ordered[1:] == ordered[:-1])
    if equal.size == 0:
        return None
    # Stable sort: within a run of equal keys rows are ascending, so the earliest repeat is
    # the smallest second-of-a-pair, and the pair it closes starts at the first occurrence.
    repeats = order[equal + 1]
    k = int(np.argmin(repeats))
    key = ordered[equal[k]]
    first = int(order[np.searchsorted(ordered, key)])
    return first, int(repeats[k])


def _first_row_using(codes: npt.NDArray[np.int32], value: int) -> int:
    return int(np.argmax(codes == value))


def apply_bulk_load(state: StateFields, command: BulkLoad, now_ms: int) -> BulkLoadResult:
    """The handler of BulkLoad in AtpState.apply."""
    columns = command.columns
    assert columns is not None, "a journaled load must have its file read before it is applied"
    existing = state.loads.get(command.load_id)
    if existing is not None:
        if existing.fingerprint == command.fingerprint:
            return BulkLoadResult(Outcome.OK, existing, replayed=True, changed=False)
        raise AlreadyExists(f"load_id: {command.load_id!r} was applied with different content")

    # ---- every check before the first write
    check_columns(columns)
    duplicate = find_duplicate(columns)
    if duplicate is not None:
        first, repeat = duplicate
        sku = columns.sku_names[columns.sku[repeat]]
        node = columns.node_names[columns.node[repeat]]
        raise InvalidCommand(
            f"rows[{repeat}]: position ({sku!r}, {node!r}) is listed twice (first at rows[{first}])"
        )
    node_rows = state.node_ids.lookup_many(columns.node_names)
    for code, index in enumerate(node_rows):
        if index < 0:
            row = _first_row_using(columns.node, code)
            raise NotFound(f"rows[{row}].node_id: unknown node {columns.node_names[code]!r}")
    node_map = np.array(node_rows, np.int64)
    node_count = len(state.nodes)
    if command.mode is LoadMode.FULL:
        if not command.node_ids:
            raise InvalidCommand("node_ids: a FULL load names the nodes it replaces")
        scope_rows = state.node_ids.lookup_many(list(command.node_ids))
        for i, index in enumerate(scope_rows):
            if index < 0:
                raise NotFound(f"node_ids[{i}]: unknown node {command.node_ids[i]!r}")
        if len(set(scope_rows)) != len(scope_rows):
            raise InvalidCommand("node_ids: a node is named twice")
        scope_nodes = np.array(scope_rows, np.int64)
        scope_column = np.full(node_count, -1, np.int64)
        scope_column[scope_nodes] = np.arange(len(scope_nodes))
        outside = scope_column[node_map] < 0
        if outside.any():
            code = int(np.argmax(outside))
            row = _first_row_using(columns.node, code)
            raise InvalidCommand(
                f"rows[{row}].node_id: {columns.node_names[code]!r} is not one of the nodes "
                "this FULL load replaces"
            )
    else:
        if command.node_ids:
            raise InvalidCommand("node_ids: only a FULL load names nodes")
        scope_nodes = np.zeros(0, np.int64)
        scope_column = np.zeros(0, np.int64)
    sku_rows = state.skus.lookup_many(columns.sku_names)
    new_names = [name for name, index in zip(columns.sku_names, sku_rows, strict=True) if index < 0]
    if len(state.skus) + len(new_names) > state.limits.max_skus:
        raise LimitExceeded(
            f"max_skus: {len(state.skus)} SKUs plus {len(new_names)} new ones in the load"
        )

    # ---- writes
    if new_names:
        first_new = len(state.skus)
        state.skus.intern_many(new_names)
        state.stock.ensure(len(state.skus), node_count)
        sku_map = np.array(sku_rows, np.int64)
        sku_map[sku_map < 0] = np.arange(first_new, first_new + len(new_names))
    else:
        sku_map = np.array(sku_rows, np.int64)
    stock = state.stock
    sku_count = len(state.skus)
    counts = np.zeros(bulk_kernels.COUNT_SLOTS, np.int64)
    full = command.mode is LoadMode.FULL
    loaded = np.zeros((sku_count, len(scope_nodes)) if full else (0, 0), np.uint8)
    if stock.dirty_rows is not None:
        # A background resize is copying the table: every row the kernels may write is dirty
        # (the listed SKUs; for FULL loads also any SKU stocked at a replaced node).
        stock.mark_dirty_rows(sku_map)
        if full:
            stocked = stock.present[:sku_count][:, scope_nodes].any(axis=1)
            stock.mark_dirty_rows(np.flatnonzero(stocked))
    bulk_kernels.apply_rows(
        stock.cells,
        stock.source_seq,
        stock.present,
        columns.sku,
        columns.node,
        sku_map,
        node_map,
        columns.on_hand,
        columns.safety,
        command.source_sequence,
        scope_column,
        loaded,
        counts,
    )
    if full:
        bulk_kernels.zero_absent(
            stock.cells,
            stock.source_seq,
            stock.present,
            sku_count,
            scope_nodes,
            loaded,
            command.source_sequence,
            counts,
        )
    stock.position_count += int(counts[bulk_kernels.COUNT_CREATED])
    summary = LoadSummary(
        command.load_id,
        command.mode,
        command.source_sequence,
        command.node_ids,
        columns.rows,
        int(counts[bulk_kernels.COUNT_WRITTEN]),
        int(counts[bulk_kernels.COUNT_CHANGED]),
        int(counts[bulk_kernels.COUNT_ZEROED]),
        int(counts[bulk_kernels.COUNT_STALE]),
        len(new_names),
        command.fingerprint,
        now_ms,
    )
    assert summary.positions_written + summary.positions_stale >= summary.rows
    state.loads.add(summary, state.limits.max_remembered_loads)
    return BulkLoadResult(Outcome.OK, summary)
