"""Stock positions: dense numpy arrays indexed by (SKU index, node index).

`cells[sku, field, node]` (int32) holds on_hand, reserved and safety stock; one SKU's fields
over all nodes are one contiguous block, which is what a per-SKU roll-up reads. Both dimensions
grow by doubling. Memory per position is 21 bytes: 3 x int32 quantities, an int64 source
sequence and a presence flag.

Growing re-lays out every used SKU row (a copy of the whole used table: hundreds of
milliseconds at 20,000 SKUs x 1,024 nodes), so it happens off the writer, ahead of need
(`Resize`): the service starts one when an axis reaches RESIZE_HIGH_WATER_PERCENT of its
capacity; the bigger arrays are allocated (np.zeros: pages appear on first write) and a worker
thread copies the used rows into them while the writer goes on mutating the current arrays.
Every write to a row marks it in `dirty_rows` (one `is not None` check per mutated position),
and finishing the resize on the writer copies only those rows (and rows registered meanwhile)
before swapping the arrays in. `ensure` stays the synchronous path (replay at recovery, a
command needing room before a resize finished): correct, just slow. Only rows and columns in
use are copied, so unused capacity stays untouched (zero pages cost no memory). Capacity is
not state: two tables with the same positions have the same digest whatever their capacity.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FIELD_ON_HAND = 0
FIELD_RESERVED = 1
FIELD_SAFETY = 2
FIELD_COUNT = 3
# Bytes per position over all per-position arrays (cells, source_seq, present).
POSITION_BYTES = FIELD_COUNT * 4 + 8 + 1
# When the used count of an axis reaches this share of its capacity, the service grows that
# axis in the background (doubling it), so the capacity is there before a command needs it.
RESIZE_HIGH_WATER_PERCENT = 75


def grown_capacity(capacity: int, needed: int) -> int:
    """`capacity` doubled until `needed` fits."""
    assert capacity > 0
    while capacity < needed:
        capacity *= 2
    return capacity


class Resize:
    """One background resize: the bigger arrays and the rows left to copy into them.

    `copy(start, stop)` may run on any thread: it only reads the current arrays (the writer
    may be changing a row meanwhile: that row is dirty and copied again at the finish) and
    writes rows of the new arrays that nothing else reads or writes until the finish. It
    takes no lock, so a fork (snapshot child) during a copy finds nothing held."""

    __slots__ = (
        "cancelled",
        "cells",
        "columns",
        "copied",
        "old_cells",
        "old_present",
        "old_source_seq",
        "present",
        "rounds",
        "rows",
        "rows_registered",
        "source_seq",
    )

    def __init__(
        self, table: StockTable, sku_capacity: int, node_capacity: int, sku_count: int, columns: int
    ) -> None:
        self.cells: npt.NDArray[np.int32] = np.zeros(
            (sku_capacity, FIELD_COUNT, node_capacity), np.int32
        )
        self.source_seq: npt.NDArray[np.int64] = np.zeros((sku_capacity, node_capacity), np.int64)
        self.present: npt.NDArray[np.uint8] = np.zeros((sku_capacity, node_capacity), np.uint8)
        self.old_cells = table.cells
        self.old_source_seq = table.source_seq
        self.old_present = table.present
        # This round's work: `rows` (ascending) over the first `columns` columns; copied[i]
        # once rows[i] is copied. Rows registered past `rows_registered` are copied at the end.
        self.rows: npt.NDArray[np.int64] = np.arange(sku_count, dtype=np.int64)
        self.columns = columns
        self.copied: npt.NDArray[np.bool_] = np.zeros(sku_count, np.bool_)
        self.rows_registered = sku_count
        self.rounds = 1
        # Set on the writer when the resize is abandoned: a copy still running stops early.
        self.cancelled = False

    @property
    def sku_capacity(self) -> int:
        return int(self.cells.shape[0])

    @property
    def node_capacity(self) -> int:
        return int(self.cells.shape[2])

    def slices(self, max_bytes: int) -> list[tuple[int, int]]:
        """This round's work as (start, stop) ranges of `rows`, each about `max_bytes`."""
        assert max_bytes > 0
        step = max(1, max_bytes // max(1, POSITION_BYTES * self.columns))
        count = len(self.rows)
        return [(start, min(start + step, count)) for start in range(0, count, step)]

    def copy(self, start: int, stop: int) -> None:
        """Copy rows[start:stop] of this round from the current arrays into the new ones."""
        if self.cancelled or start >= stop:
            return
        assert 0 <= start < stop <= len(self.rows)
        rows = self.rows
        columns = self.columns
        first, last = int(rows[start]), int(rows[stop - 1])
        if last - first == stop - start - 1:  # a contiguous block: plain slices, no gather
            block = slice(first, last + 1)
            self.cells[block, :, :columns] = self.old_cells[block, :, :columns]
            self.source_seq[block, :columns] = self.old_source_seq[block, :columns]
            self.present[block, :columns] = self.old_present[block, :columns]
        else:
            picked = rows[start:stop]
            self.cells[picked, :, :columns] = self.old_cells[picked, :, :columns]
            self.source_seq[picked, :columns] = self.old_source_seq[picked, :columns]
            self.present[picked, :columns] = self.old_present[picked, :columns]
        self.copied[start:stop] = True

    def copy_all(self, max_bytes: int) -> None:
        """The worker thread's job: this round, slice by slice (stops early once cancelled)."""
        for start, stop in self.slices(max_bytes):
            if self.cancelled:
                return
            self.copy(start, stop)


class StockTable:
    __slots__ = (
        "cells",
        "dirty_rows",
        "node_capacity",
        "position_count",
        "present",
        "resize",
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
        # While a background resize runs: the rows written since it began (every write path
        # adds its row before writing; None otherwise, so the check is one comparison).
        self.dirty_rows: set[int] | None = None
        self.resize: Resize | None = None

    def adopt(
        self,
        cells: npt.NDArray[np.int32],
        source_seq: npt.NDArray[np.int64],
        present: npt.NDArray[np.uint8],
    ) -> bool:
        """Take loaded arrays of exactly the positions in use (a snapshot's) as the table
        itself, when they are at least as big as the table on both axes (so no configured
        presizing is lost): a restart then copies none of them (at 10M positions that copy
        was a third of the snapshot load). Returns False, changing nothing, otherwise. The
        table is then full: the service's high-water check grows it in the background, and
        a replayed command needing room grows it as `ensure` does."""
        sku_count, _, node_count = cells.shape
        if (
            self.position_count
            or self.resize is not None
            or sku_count < self.sku_capacity
            or node_count < self.node_capacity
            or cells.dtype != np.int32
            or source_seq.dtype != np.int64
            or present.dtype != np.uint8
            or source_seq.shape != (sku_count, node_count)
            or present.shape != (sku_count, node_count)
            or not all(
                a.flags.c_contiguous and a.flags.writeable for a in (cells, source_seq, present)
            )
        ):
            return False
        self.cells, self.source_seq, self.present = cells, source_seq, present
        self.sku_capacity, self.node_capacity = sku_count, node_count
        return True

    def ensure(self, sku_count: int, node_count: int) -> None:
        """Grow (by doubling) so that sku_count rows and node_count columns fit, now, on the
        calling thread. A background resize in progress is abandoned (its copy may still be
        writing its arrays), growing at least to its target instead."""
        sku_capacity = grown_capacity(self.sku_capacity, sku_count)
        node_capacity = grown_capacity(self.node_capacity, node_count)
        if sku_capacity == self.sku_capacity and node_capacity == self.node_capacity:
            return
        if self.resize is not None:
            sku_capacity = max(sku_capacity, self.resize.sku_capacity)
            node_capacity = max(node_capacity, self.resize.node_capacity)
            self.cancel_resize()
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

    # ------------------------------------------------------------------ background resize

    def begin_resize(
        self, sku_capacity: int, node_capacity: int, sku_count: int, node_count: int
    ) -> Resize:
        """Allocate the bigger arrays and start tracking dirty rows; the caller then runs
        `resize.copy_all` (any thread) and `finish_resize` (the writer)."""
        assert self.resize is None, "one resize at a time"
        assert sku_capacity >= self.sku_capacity and node_capacity >= self.node_capacity
        assert (sku_capacity, node_capacity) != (self.sku_capacity, self.node_capacity)
        assert sku_count <= self.sku_capacity and node_count <= self.node_capacity
        self.resize = Resize(self, sku_capacity, node_capacity, sku_count, node_count)
        self.dirty_rows = set()
        return self.resize

    def rows_to_copy(self, sku_count: int) -> npt.NDArray[np.int64]:
        """Rows the current arrays hold that the new ones may not (yet) match: this round's
        rows not copied, rows written since the round began, rows registered since begin."""
        resize, dirty = self.resize, self.dirty_rows
        assert resize is not None and dirty is not None
        left = resize.rows[~resize.copied]
        extra = np.fromiter(dirty, np.int64, len(dirty))
        registered = np.arange(resize.rows_registered, sku_count, dtype=np.int64)
        return np.union1d(np.union1d(left, extra), registered)

    def finish_resize(self, sku_count: int, node_count: int, max_rows: int) -> bool:
        """On the writer, once the copy of this round is done (or given up). With at most
        `max_rows` rows left to copy, copy them and swap the arrays in: True. Otherwise start
        another round with those rows (for the worker thread again): False."""
        resize, dirty = self.resize, self.dirty_rows
        assert resize is not None and dirty is not None and not resize.cancelled
        assert sku_count <= self.sku_capacity and node_count <= self.node_capacity
        assert resize.old_cells is self.cells, "the arrays were replaced under the resize"
        rows = self.rows_to_copy(sku_count)
        resize.rows, resize.columns = rows, node_count
        resize.copied = np.zeros(len(rows), np.bool_)
        resize.rows_registered = sku_count
        self.dirty_rows = set()
        if len(rows) > max_rows:
            resize.rounds += 1
            return False
        resize.copy(0, len(rows))
        self.cells, self.source_seq, self.present = resize.cells, resize.source_seq, resize.present
        self.sku_capacity, self.node_capacity = resize.sku_capacity, resize.node_capacity
        self.resize = None
        self.dirty_rows = None
        return True

    def cancel_resize(self) -> None:
        """Abandon a background resize (its copy, if still running, stops and is dropped)."""
        if self.resize is not None:
            self.resize.cancelled = True
        self.resize = None
        self.dirty_rows = None

    # ------------------------------------------------------------------ positions

    def mark_dirty_rows(self, rows: npt.NDArray[np.int64]) -> None:
        """Bulk writers: these rows are about to change (no-op without a resize)."""
        if self.dirty_rows is not None:
            self.dirty_rows.update(rows.tolist())

    def mark_present(self, sku: int, node: int) -> None:
        if not self.present[sku, node]:
            self.present[sku, node] = 1
            self.position_count += 1

    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.source_seq.nbytes + self.present.nbytes)
