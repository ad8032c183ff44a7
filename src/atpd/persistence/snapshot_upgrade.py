"""Snapshots of state format 1 (written before reservations were columnar) read as format 2.

Format 1 held reservations as one int64 table (a row of 9 values per reservation: status, kind,
created, expires, updated, ttl, first line, line count, purge time), one int64 table of lines
(SKU, node, quantity, held, fulfilled) and the channel and segment of each reservation as
newline-joined names. Format 2 (persistence/state_snapshot.py) has one array per column and
interned (channel, segment) pairs. The conversion is array slicing plus one pass over the
pairs, so an upgraded server starts from the data directory the previous build left.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

Arrays = dict[str, npt.NDArray[Any]]
Blobs = dict[str, bytes]

# Columns of format 1's per-reservation table, and of its per-line table, in order.
FORMAT_1_ROW_COLUMNS = (
    "reservation_status",
    "reservation_kind",
    "reservation_created_ms",
    "reservation_expires_ms",
    "reservation_updated_ms",
    "reservation_ttl_ms",
    "reservation_first_line",
    "reservation_line_count",
    "reservation_purge_at_ms",
)
FORMAT_1_LINE_COLUMNS = ("line_sku", "line_node", "line_quantity", "line_held", "line_fulfilled")


def _names(blob: bytes, count: int, entry: str) -> list[str]:
    if count == 0:
        return []
    names = blob.decode().split("\n")
    if len(names) != count:
        raise ValueError(f"{entry} holds {len(names)} names, the meta says {count}")
    return names


def upgrade_format_1(arrays: Arrays, blobs: Blobs, count: int) -> tuple[Arrays, Blobs]:
    """The format-2 entries for a format-1 snapshot's reservations (other entries pass as
    they are); raises ValueError naming what does not fit."""
    table, lines = arrays.get("reservations"), arrays.get("reservation_lines")
    if table is None or table.shape != (count, len(FORMAT_1_ROW_COLUMNS)):
        shape = None if table is None else table.shape
        raise ValueError(f"format 1 'reservations' has shape {shape}, expected ({count}, 9)")
    if lines is None or lines.ndim != 2 or lines.shape[1] != len(FORMAT_1_LINE_COLUMNS):
        shape = None if lines is None else lines.shape
        raise ValueError(f"format 1 'reservation_lines' has shape {shape}, expected (n, 5)")
    channels = _names(blobs.get("reservation_channels", b""), count, "reservation_channels")
    segments = _names(blobs.get("reservation_segments", b""), count, "reservation_segments")
    callers: dict[tuple[str, str], int] = {}
    caller_column = np.fromiter(
        (callers.setdefault(pair, len(callers)) for pair in zip(channels, segments, strict=True)),
        np.int32,
        count,
    )
    upgraded = {k: v for k, v in arrays.items() if k not in ("reservations", "reservation_lines")}
    for index, name in enumerate(FORMAT_1_ROW_COLUMNS):
        upgraded[name] = np.ascontiguousarray(table[:, index])
    for index, name in enumerate(FORMAT_1_LINE_COLUMNS):
        upgraded[name] = np.ascontiguousarray(lines[:, index])
    upgraded["reservation_caller"] = caller_column
    upgraded_blobs = {
        k: v for k, v in blobs.items() if k not in ("reservation_channels", "reservation_segments")
    }
    upgraded_blobs["reservation_callers"] = json.dumps(list(callers)).encode()
    return upgraded, upgraded_blobs
