"""Stock positions: dense numpy arrays indexed by (SKU index, node index).

`cells[sku, field, node]` (int32) holds on_hand, reserved and safety stock; one SKU's fields
over all nodes are one contiguous block, which is what a per-SKU roll-up reads. Both dimensions
grow by doubling. Memory per position is 21 bytes: 3 x int32 quantities, an int64 source
sequence and a presence flag.

Growing the node axis re-lays out every SKU row (a copy of the whole used table: about 2 s at
20,000 SKUs x 1,024 nodes on the 2-core development machine, during which the single writer
waits), so the capacities start from config (`initial_node_capacity`, `initial_sku_capacity`):
sized above the node count a deployment will reach, adding a node never copies. Only rows and
columns in use are copied, so unused capacity stays untouched (zero pages cost no memory).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FIELD_ON_HAND = 0
FIELD_RESERVED = 1
FIELD_SAFETY = 2
FIELD_COUNT = 3


class StockTable:
    __slots__ = (
        "cells",
        "node_capacity",
        "position_count",
        "present",
        "sku_capacity",
        "source_seq",
    )

    def __init__(self, sku_capacity: int = 1024, node_capacity: int = 64) -> None:
        assert sku_capacity > 0 and node_capacity > 0
        self.sku_capacity = sku_capacity
        self.node_capacity = node_capacity
        self.cells: npt.NDArray[np.int32] = np.zeros(
            (sku_capacity, FIELD_COUNT, node_capacity), np.int32
        )
        # Last applied absolute count per position from the source system (0: none yet).
        self.source_seq: npt.NDArray[np.int64] = np.zeros((sku_capacity, node_capacity), np.int64)
        # 1 once a position was written: distinguishes "stocked at 0" from "never stocked here".
        self.present: npt.NDArray[np.uint8] = np.zeros((sku_capacity, node_capacity), np.uint8)
        self.position_count = 0

    def ensure(self, sku_count: int, node_count: int) -> None:
        """Grow (by doubling) so that sku_count rows and node_count columns fit."""
        sku_capacity = self.sku_capacity
        while sku_capacity < sku_count:
            sku_capacity *= 2
        node_capacity = self.node_capacity
        while node_capacity < node_count:
            node_capacity *= 2
        if sku_capacity == self.sku_capacity and node_capacity == self.node_capacity:
            return
        # Rows past sku_count and columns past node_count were never written (callers ask for
        # at least what is in use): copying only the rest leaves the new arrays' unused pages
        # untouched, which halves the copy and keeps spare capacity out of the resident set.
        rows = min(sku_count, self.sku_capacity)
        columns = min(node_count, self.node_capacity)
        cells = np.zeros((sku_capacity, FIELD_COUNT, node_capacity), np.int32)
        cells[:rows, :, :columns] = self.cells[:rows, :, :columns]
        source_seq = np.zeros((sku_capacity, node_capacity), np.int64)
        source_seq[:rows, :columns] = self.source_seq[:rows, :columns]
        present = np.zeros((sku_capacity, node_capacity), np.uint8)
        present[:rows, :columns] = self.present[:rows, :columns]
        self.cells, self.source_seq, self.present = cells, source_seq, present
        self.sku_capacity, self.node_capacity = sku_capacity, node_capacity

    def mark_present(self, sku: int, node: int) -> None:
        if not self.present[sku, node]:
            self.present[sku, node] = 1
            self.position_count += 1

    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.source_seq.nbytes + self.present.nbytes)
