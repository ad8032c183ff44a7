"""Bulk work on the reservation table (core/reservation_table.py) as numpy arrays: the columns
of chosen rows and of their lines (snapshots, invariants, the digest), and filling an empty
table from such columns in one pass (a snapshot load: no per-reservation Python work but
hashing the ids).

Views of the table's arrays (`np.frombuffer`) are taken and dropped inside each function: an
`array.array` cannot grow while a view of it exists.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core.commands import Maker
from atpd.core.reservation_table import (
    CONFIRMED,
    HELD,
    LINE_COLUMNS,
    ROW_COLUMNS,
    ReservationTable,
)

Columns = dict[str, npt.NDArray[Any]]

DTYPES = {"b": np.int8, "H": np.uint16, "i": np.int32, "q": np.int64}


def column(table: ReservationTable, name: str) -> npt.NDArray[Any]:
    """A copy of a whole column (row or line), as numpy."""
    code = ROW_COLUMNS.get(name) or LINE_COLUMNS[name]
    return np.frombuffer(getattr(table, name), DTYPES[code]).copy()


def row_columns(table: ReservationTable, rows: npt.NDArray[np.int64]) -> Columns:
    """Every row column at `rows`, in that order (copies)."""
    out: Columns = {}
    for name, code in ROW_COLUMNS.items():
        out[name] = np.frombuffer(getattr(table, name), DTYPES[code])[rows]
    return out


def line_indexes(table: ReservationTable, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The arena index of every line of `rows`, row after row."""
    if not len(rows):
        return np.zeros(0, np.int64)
    first = np.frombuffer(table.first_line, np.int64)[rows]
    counts = np.frombuffer(table.line_count, np.int32)[rows].astype(np.int64)
    ends = np.cumsum(counts)
    return np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - counts - first, counts)


def line_columns(table: ReservationTable, indexes: npt.NDArray[np.int64]) -> Columns:
    return {
        name: np.frombuffer(getattr(table, name), DTYPES[code])[indexes]
        for name, code in LINE_COLUMNS.items()
    }


def held_rows(table: ReservationTable) -> npt.NDArray[np.int64]:
    status = np.frombuffer(table.status, np.int8)[: table.high]
    return np.flatnonzero(status == HELD)


def open_count(table: ReservationTable) -> int:
    status = np.frombuffer(table.status, np.int8)[: table.high]
    return int(np.count_nonzero((status == HELD) | (status == CONFIRMED)))


def load_columns(
    table: ReservationTable,
    ids_blob: bytes,
    ids: list[str],
    rows: Columns,
    lines: Columns,
    callers: list[tuple[str, str]],
    makers: list[Maker],
    purge_at_ms: npt.NDArray[np.int64],
) -> None:
    """Fill an empty table: rows 0..n-1 from `rows` (every ROW_COLUMNS entry; first_line
    indexes `lines`), the ids, and the expiry and retention heaps (checked by the caller:
    shapes, ranges, distinct callers and makers; raises DuplicateId for a repeated id)."""
    assert table.count == 0 and table.high == 0
    count = len(ids)
    line_count = len(lines["line_sku"])
    table.ids.build(ids_blob, ids)
    table.grow_rows(count)
    table.grow_lines(line_count)
    for name, code in ROW_COLUMNS.items():
        _fill(getattr(table, name), DTYPES[code], rows[name])
    for name, code in LINE_COLUMNS.items():
        _fill(getattr(table, name), DTYPES[code], lines[name])
    table.high = table.count = count
    table.line_high = line_count
    table.callers = list(callers)
    table.caller_index = {caller: i for i, caller in enumerate(table.callers)}
    table.makers = list(makers)
    table.maker_index = {maker: i for i, maker in enumerate(table.makers)}
    status = rows["status"]
    held = np.flatnonzero(status == HELD)
    table.expiry.build(rows["expires_ms"][held].astype(np.int64), held.astype(np.int32))
    finished = np.flatnonzero((status != HELD) & (status != CONFIRMED))
    table.retention.build(purge_at_ms[finished].astype(np.int64), finished.astype(np.int32))


def _fill(column: array[int], dtype: npt.DTypeLike, values: npt.NDArray[Any]) -> None:
    """Write `values` (cast to `dtype`) at the start of `column`, in place: one copy, where
    astype, tobytes, a new array and a slice assignment made four (a restart loads 100 MB
    of these). The view is dropped at once, so the column can grow again."""
    view = np.frombuffer(column, dtype)
    view[: len(values)] = values
    del view


def memory_bytes(table: ReservationTable) -> dict[str, int]:
    """Bytes allocated by each part of the table (capacity, not use: the growth slack counts)."""
    row_bytes = sum(
        getattr(table, name).buffer_info()[1] * array(code).itemsize
        for name, code in ROW_COLUMNS.items()
    )
    line_bytes = sum(
        getattr(table, name).buffer_info()[1] * array(code).itemsize
        for name, code in LINE_COLUMNS.items()
    )
    ids = table.ids
    id_bytes = len(ids.arena) + sum(
        column.buffer_info()[1] * column.itemsize
        for column in (ids.offset, ids.length, ids.room, ids.hashes, ids.slots, ids.tags)
    )
    heaps = 0
    for heap in (table.expiry, table.retention):
        heaps += heap.keys.buffer_info()[1] * 8 + heap.rows.buffer_info()[1] * 4
        if heap.position is not None:
            heaps += heap.position.buffer_info()[1] * 4
    return {"rows": row_bytes, "lines": line_bytes, "ids": id_bytes, "heaps": heaps}
