"""The BulkLoad command, its columns and its result (commands.py imports it).

See core/bulk.py for the semantics and the handler, core/load_registry.py for the applied
loads the state remembers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import crc32c
import numpy as np
import numpy.typing as npt

from atpd.core.command_base import CommandOf
from atpd.core.results import Outcome


class LoadMode(enum.IntEnum):
    # Numbers match atpd.v1.LoadMode.
    FULL = 1
    DELTA = 2


@dataclass(frozen=True, slots=True)
class LoadSummary:
    load_id: str
    mode: LoadMode
    source_sequence: int
    node_ids: tuple[str, ...]
    rows: int
    positions_written: int
    positions_changed: int
    positions_zeroed: int
    positions_stale: int
    skus_created: int
    fingerprint: str
    applied_at_ms: int

    def same_header(self, mode: LoadMode, source_sequence: int, node_ids: tuple[str, ...]) -> bool:
        return (self.mode, self.source_sequence, sorted(self.node_ids)) == (
            mode,
            source_sequence,
            sorted(node_ids),
        )


@dataclass(frozen=True, slots=True)
class BulkLoadResult:
    outcome: Outcome
    summary: LoadSummary
    replayed: bool = False
    changed: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class LoadColumns:
    """The rows of a load. `sku_names` / `node_names` are distinct, in order of first use by
    the rows (so equal loads have equal columns however they were chunked)."""

    sku_names: list[str]
    sku: npt.NDArray[np.int32]
    node_names: list[str]
    node: npt.NDArray[np.int32]
    on_hand: npt.NDArray[np.int32]
    safety: npt.NDArray[np.int32]

    @property
    def rows(self) -> int:
        return int(self.on_hand.shape[0])

    def checksum(self) -> int:
        """CRC32C of the whole content (names and every column)."""
        value = crc32c.crc32c("\n".join(self.sku_names).encode())
        value = crc32c.crc32c(b"\x00" + "\n".join(self.node_names).encode(), value)
        for column in (self.sku, self.node, self.on_hand, self.safety):
            value = crc32c.crc32c(np.ascontiguousarray(column).data.cast("B"), value)
        return int(value)


def load_fingerprint(
    mode: LoadMode, source_sequence: int, node_ids: tuple[str, ...], columns: LoadColumns
) -> str:
    """What makes two loads with one id "the same load" (the scope as a set)."""
    scope = crc32c.crc32c("\n".join(sorted(node_ids)).encode())
    return (
        f"{int(mode)}:{source_sequence}:{len(node_ids)}:{scope:08x}:{columns.rows}:"
        f"{columns.checksum():08x}"
    )


@dataclass(frozen=True, slots=True, eq=False)
class BulkLoad(CommandOf[BulkLoadResult]):
    """Apply a load. `columns` is None only for a load decoded from the journal whose file was
    not read yet (recovery reads it before applying); `stored_file` / `stored_checksum` name
    that checksummed file (relative to the data directory) when the server is durable."""

    load_id: str
    mode: LoadMode
    source_sequence: int
    # FULL: the nodes whose positions the load replaces. DELTA: empty.
    node_ids: tuple[str, ...]
    columns: LoadColumns | None
    fingerprint: str
    stored_file: str = ""
    stored_checksum: int = 0

    @classmethod
    def create(
        cls,
        load_id: str,
        mode: LoadMode,
        source_sequence: int,
        node_ids: tuple[str, ...],
        columns: LoadColumns,
    ) -> BulkLoad:
        fingerprint = load_fingerprint(mode, source_sequence, node_ids, columns)
        return cls(load_id, mode, source_sequence, node_ids, columns, fingerprint)
