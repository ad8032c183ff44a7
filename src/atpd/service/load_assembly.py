"""Bulk-load assembly: a BulkLoad stream's header and chunks, validated and turned into the
canonical columns of one `BulkLoad` command.

Each chunk is validated as it arrives (errors name the chunk and the row) and kept as int32
columns; nothing reaches the core until the servicer (feeds.py) has the commit message and
calls `LoadAssembler.finish`, which puts the columns in canonical form (ids in order of first
use) and refuses a position listed twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core import bulk_kernels
from atpd.core.bulk import find_duplicate
from atpd.core.ids import ADD_NODE_HINT, ID_PATTERN, LOAD_ID_PATTERN
from atpd.core.limits import MAX_QUANTITY, Limits
from atpd.core.load_command import LoadColumns, LoadMode
from atpd.core.results import NotFound
from atpd.core.state import AtpState
from atpd.core.text import shown
from atpd.service import validation
from atpd.service.validation import InvalidArgument
from atpd.v1 import feeds_pb2

__all__ = ["LoadAssembler", "LoadHeader", "load_header"]

# New SKU ids of a chunk are checked with one regex over them all (the id alphabet has no
# newline); only when that fails is the first bad one looked for.
_SKU_LINES = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\n)*[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}"
)


@dataclass(frozen=True, slots=True)
class LoadHeader:
    load_id: str
    mode: LoadMode
    source_sequence: int
    node_ids: tuple[str, ...]


def load_header(header: feeds_pb2.BulkLoadHeader, state: AtpState, limits: Limits) -> LoadHeader:
    load_id = header.load_id
    if not load_id:
        raise InvalidArgument("header.load_id", "is empty")
    if not LOAD_ID_PATTERN.fullmatch(load_id):
        raise InvalidArgument(
            "header.load_id", f"{shown(load_id)} is not 1-128 characters of letters, digits, . _ -"
        )
    try:
        mode = LoadMode(header.mode)
    except ValueError:
        raise InvalidArgument("header.mode", "must be LOAD_MODE_FULL or LOAD_MODE_DELTA") from None
    if header.source_sequence < 0:
        raise InvalidArgument(
            "header.source_sequence", f"must be >= 0, got {header.source_sequence}"
        )
    node_ids = tuple(header.node_ids)
    if mode is LoadMode.DELTA and node_ids:
        raise InvalidArgument("header.node_ids", "only a FULL load names the nodes it replaces")
    if mode is LoadMode.FULL and not node_ids:
        raise InvalidArgument("header.node_ids", "a FULL load must name the nodes it replaces")
    seen: set[str] = set()
    for i, node_id in enumerate(node_ids):
        field = f"header.node_ids[{i}]"
        validation.node_id(node_id, field)
        if state.node_ids.get(node_id) < 0:
            raise NotFound(f"{field}: unknown node {node_id!r}: {ADD_NODE_HINT}")
        if node_id in seen:
            raise InvalidArgument(field, f"{node_id!r} is named twice")
        seen.add(node_id)
    return LoadHeader(load_id, mode, header.source_sequence, node_ids)


def _check_range(values: npt.NDArray[np.int64], low: int, high: int, field: str) -> None:
    if values.size and low <= int(values.min()) and int(values.max()) <= high:
        return
    bad = (values < low) | (values > high)
    row = int(np.argmax(bad))
    raise InvalidArgument(field.format(row=row), f"must be {low}..{high}, got {int(values[row])}")


class LoadAssembler:
    """One load's rows, validated chunk by chunk. SKUs are coded as their state row when the
    state knows them and as -(k + 1) for the k-th SKU new to the state; nodes as their state
    column. Codes are only used to build the canonical columns: the command carries ids."""

    def __init__(self, state: AtpState, limits: Limits, header: LoadHeader) -> None:
        self.state = state
        self.limits = limits
        self.header = header
        self.rows = 0
        self.chunks = 0
        self._starts: list[int] = []
        self._sku: list[npt.NDArray[np.int64]] = []
        self._node: list[npt.NDArray[np.int64]] = []
        self._on_hand: list[npt.NDArray[np.int32]] = []
        self._safety: list[npt.NDArray[np.int32]] = []
        self._new_skus: dict[str, int] = {}
        self._scope: set[int] | None = (
            {state.node_ids.get(node_id) for node_id in header.node_ids}
            if header.mode is LoadMode.FULL
            else None
        )

    def add(self, chunk: feeds_pb2.PositionChunk) -> None:
        where = f"chunks[{self.chunks}]"
        rows = len(chunk.on_hand)
        if rows == 0:
            raise InvalidArgument(where, "has no rows (on_hand is empty)")
        if rows > self.limits.max_load_chunk_rows:
            raise InvalidArgument(
                where, f"has {rows} rows, max_load_chunk_rows is {self.limits.max_load_chunk_rows}"
            )
        if self.rows + rows > self.limits.max_load_rows:
            raise InvalidArgument(
                where, f"takes the load past max_load_rows ({self.limits.max_load_rows} rows)"
            )
        on_hand = np.array(chunk.on_hand, np.int64)
        _check_range(on_hand, 0, MAX_QUANTITY, where + ".rows[{row}].on_hand")
        if not chunk.safety_stock:
            safety = np.full(rows, -1, np.int32)
        elif len(chunk.safety_stock) == rows:
            values = np.array(chunk.safety_stock, np.int64)
            _check_range(values, -1, MAX_QUANTITY, where + ".rows[{row}].safety_stock")
            safety = values.astype(np.int32)
        else:
            raise InvalidArgument(
                f"{where}.safety_stock", f"has {len(chunk.safety_stock)} values for {rows} rows"
            )
        sku = self._skus(chunk, rows, where)
        node = self._nodes(chunk, rows, where)
        self._starts.append(self.rows)
        self._sku.append(sku)
        self._node.append(node)
        self._on_hand.append(on_hand.astype(np.int32))
        self._safety.append(safety)
        self.rows += rows
        self.chunks += 1

    @staticmethod
    def _dictionary(
        values: Any, index: Any, rows: int, where: str, column: str, index_column: str
    ) -> tuple[list[str], npt.NDArray[np.int64] | None]:
        names = list(values)
        if not index:
            if len(names) != rows:
                raise InvalidArgument(
                    f"{where}.{column}",
                    f"has {len(names)} values for {rows} rows (or give {index_column}, one "
                    "index per row)",
                )
            return names, None
        if len(index) != rows:
            raise InvalidArgument(f"{where}.{index_column}", f"has {len(index)} values for {rows}")
        codes = np.array(index, np.int64)
        if not names or int(codes.max()) >= len(names):
            row = int(np.argmax(codes >= len(names)))
            raise InvalidArgument(
                f"{where}.rows[{row}].{index_column}",
                f"{int(codes[row])} is out of range: {column} has {len(names)} entries",
            )
        return names, codes

    @staticmethod
    def _field(where: str, index: npt.NDArray[np.int64] | None, entry: int, column: str) -> str:
        """Where a dictionary entry is used first (or the entry itself when no row uses it)."""
        if index is None:
            return f"{where}.rows[{entry}].{column}"
        used = np.flatnonzero(index == entry)
        if used.size:
            return f"{where}.rows[{int(used[0])}].{column.rstrip('s')}"
        return f"{where}.{column}[{entry}]"

    def _skus(self, chunk: feeds_pb2.PositionChunk, rows: int, where: str) -> Any:
        names, index = self._dictionary(
            chunk.skus, chunk.sku_index, rows, where, "skus", "sku_index"
        )
        codes = self.state.skus.lookup_many(names)
        if -1 in codes:
            new_entries = [entry for entry, code in enumerate(codes) if code < 0]
            new_names = [names[entry] for entry in new_entries]
            joined = "\n".join(new_names)
            # The count matters: "A\nB" as one name would pass the joined pattern as two.
            if joined.count("\n") != len(new_names) - 1 or not _SKU_LINES.fullmatch(joined):
                for entry, name in zip(new_entries, new_names, strict=True):
                    if not ID_PATTERN.fullmatch(name):
                        column = "sku" if index is None else "skus"
                        validation.sku_id(name, self._field(where, index, entry, column))
                raise AssertionError("a new SKU failed the joined check but none alone")
            new_skus = self._new_skus
            for name in new_names:
                if name not in new_skus:
                    new_skus[name] = -(len(new_skus) + 1)
            for entry, name in zip(new_entries, new_names, strict=True):
                codes[entry] = new_skus[name]
        array = np.array(codes, np.int64)
        return array if index is None else array[index]

    def _nodes(self, chunk: feeds_pb2.PositionChunk, rows: int, where: str) -> Any:
        names, index = self._dictionary(
            chunk.node_ids, chunk.node_index, rows, where, "node_ids", "node_index"
        )
        codes = self.state.node_ids.lookup_many(names)
        scope = self._scope
        if -1 in codes or scope is not None:
            column = "node_id" if index is None else "node_ids"
            for entry, code in enumerate(codes):
                if code >= 0 and (scope is None or code in scope):
                    continue
                field = self._field(where, index, entry, column)
                if code < 0:
                    validation.node_id(names[entry], field)
                    raise NotFound(f"{field}: unknown node {shown(names[entry])}: {ADD_NODE_HINT}")
                raise InvalidArgument(
                    field,
                    f"{shown(names[entry])} is not one of the header's node_ids (a FULL load "
                    "replaces exactly the nodes it names)",
                )
        array = np.array(codes, np.int64)
        return array if index is None else array[index]

    def locate(self, row: int) -> str:
        chunk = int(np.searchsorted(np.array(self._starts), row, side="right")) - 1
        return f"chunks[{chunk}].rows[{row - self._starts[chunk]}]"

    def finish(self) -> LoadColumns:
        """The canonical columns: SKU and node ids in order of first use, one code per row."""
        empty = np.zeros(0, np.int64)
        sku = np.concatenate(self._sku) if self._sku else empty
        node = np.concatenate(self._node) if self._node else empty
        new_names = list(self._new_skus)
        offset = len(new_names)
        sku_code = np.empty(self.rows, np.int32)
        order = bulk_kernels.renumber_by_first_use(
            sku, offset, offset + len(self.state.skus), sku_code
        )
        known = self.state.skus.names
        sku_names = [known[c] if c >= 0 else new_names[-c - 1] for c in order.tolist()]
        node_code = np.empty(self.rows, np.int32)
        node_order = bulk_kernels.renumber_by_first_use(node, 0, len(self.state.nodes), node_code)
        node_names = [self.state.nodes[c].node_id for c in node_order.tolist()]
        self._sku.clear()
        self._node.clear()
        columns = LoadColumns(
            sku_names,
            sku_code,
            node_names,
            node_code,
            np.concatenate(self._on_hand) if self._on_hand else np.zeros(0, np.int32),
            np.concatenate(self._safety) if self._safety else np.zeros(0, np.int32),
        )
        duplicate = find_duplicate(columns)
        if duplicate is not None:
            first, repeat = duplicate
            sku_id = sku_names[sku_code[repeat]]
            node_id = node_names[node_code[repeat]]
            raise InvalidArgument(
                self.locate(repeat),
                f"position ({sku_id!r}, {node_id!r}) is listed twice (first at "
                f"{self.locate(first)})",
            )
        return columns
