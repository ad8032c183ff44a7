"""A binary min-heap of (key, row) pairs held in two typed arrays: no Python object per entry.

The reservation table (core/reservation_table.py) orders its rows by time twice: open holds by
expiry time (`state.expiry`) and finished reservations kept for retries by purge time
(`state.retention`). A SortedList of (time, id) tuples cost about 150 bytes per entry; here an
entry is 12 bytes (an int64 key and an int32 row).

Removal of an arbitrary row (a hold confirmed or released before it expires) is lazy: with
`track_rows`, `position[row]` is the index of the row's live entry (-1: none), kept up to date
as entries move; an entry whose row points elsewhere is stale. Stale entries are dropped when
they are popped with the due ones, when the minimum is asked for (`min_key`, `pop_first`: so
it is exact), or all at once by `compact` when they outnumber the live ones. So removal is
O(1), even of the top (holds are mostly released in the order they were made: popping the
top on every release was a sift through the whole depth each time), and stale entries cost
12 bytes each until then. `keys[0]` may be stale: a lower bound of the live minimum.

Ties: the heap orders by key only. Whoever pops several entries of one key orders them itself
(the state sorts by reservation id), so the order is a function of the entries, not of the
heap's history, and replay after a restart (a heap rebuilt in another shape) pops the same
sequence.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

# Stale entries are dropped in one pass once there are more of them than this and than live
# (a pass costs about as much as a few hundred sifts at the top).
COMPACT_MIN_STALE = 1024
# Past this many entries popped at once, the rest are popped by rebuilding (one sort).
BULK_POP_AFTER = 4096


class RowHeap:
    __slots__ = ("keys", "live", "position", "rows")

    def __init__(self, track_rows: bool) -> None:
        self.keys = array("q")
        self.rows = array("i")
        # position[row]: the index of row's live entry, -1 when it has none (track_rows only).
        self.position: array[int] | None = array("i") if track_rows else None
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def grow_rows(self, row_capacity: int) -> None:
        """Make room for rows 0..row_capacity-1 in `position`."""
        position = self.position
        if position is not None and len(position) < row_capacity:
            position.frombytes(b"\xff" * (4 * (row_capacity - len(position))))

    def min_key(self) -> int | None:
        """The smallest live key (stale entries above it are dropped first)."""
        self._drop_stale_top()
        return self.keys[0] if self.keys else None

    def contains(self, row: int) -> bool:
        assert self.position is not None
        return row < len(self.position) and self.position[row] >= 0

    def push(self, key: int, row: int) -> None:
        keys, rows, position = self.keys, self.rows, self.position
        index = len(keys)
        keys.append(key)
        rows.append(row)
        # A new hold usually expires after all others (and a finished row is purged after
        # all others): its parent's key is not above it, and it stays where appended.
        if index and keys[(index - 1) >> 1] > key:
            index = self._sift_up(index, key)
            keys[index] = key
            rows[index] = row
        if position is not None:
            assert position[row] < 0, row
            position[row] = index
        self.live += 1

    def discard(self, row: int) -> bool:
        """Forget row's entry (lazily); False when it had none."""
        position = self.position
        assert position is not None
        index = position[row]
        if index < 0:
            return False
        position[row] = -1
        self.live -= 1
        if len(self.keys) - self.live > max(self.live, COMPACT_MIN_STALE):
            self.compact()
        return True

    def pop_until(self, last_key: int) -> list[int]:
        """Remove and return the rows of every live entry with key <= last_key (any order)."""
        keys = self.keys
        if not keys or keys[0] > last_key:
            return []
        due: list[int] = []
        position = self.position
        popped = 0
        while keys and keys[0] <= last_key:
            if popped == BULK_POP_AFTER:
                # A long pause (or a replay) made many due at once, or many stale entries
                # (released holds) reached their time together: one sort, not n sifts.
                due.extend(self._bulk_pop(last_key))
                return due
            popped += 1
            row = self.rows[0]
            live = position is None or position[row] == 0
            self._pop_top()
            if live:
                if position is not None:
                    position[row] = -1
                due.append(row)
                self.live -= 1
        return due

    def pop_first(self) -> tuple[int, int]:
        """Remove the live entry with the smallest key: (key, row)."""
        assert self.live > 0
        self._drop_stale_top()
        key, row = self.keys[0], self.rows[0]
        self._pop_top()
        if self.position is not None:
            self.position[row] = -1
        self.live -= 1
        return key, row

    def pop_first_by(self, order: Callable[[int], str]) -> tuple[int, int]:
        """Remove the live entry with the smallest key, of several the one whose row is first
        by `order`: (key, row). The entries tied at the minimum are a subtree at the top (a
        parent's key is never above its children's): found there, not popped and pushed
        back (many holds can finish in one millisecond)."""
        assert self.live > 0
        self._drop_stale_top()
        keys, rows, position = self.keys, self.rows, self.position
        key = keys[0]
        size = len(keys)
        best = 0
        if (size > 1 and keys[1] == key) or (size > 2 and keys[2] == key):
            best_order = order(rows[0])
            stack = [1, 2]
            while stack:
                index = stack.pop()
                if index >= size or keys[index] != key:
                    continue
                stack.append(2 * index + 1)
                stack.append(2 * index + 2)
                row = rows[index]
                if position is not None and position[row] != index:
                    continue  # stale
                candidate = order(row)
                if candidate < best_order:
                    best, best_order = index, candidate
        row = rows[best]
        self._pop_top(best)
        if position is not None:
            position[row] = -1
        self.live -= 1
        return key, row

    def entries(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Copies of the live (keys, rows), in no particular order."""
        keys = np.frombuffer(self.keys, np.int64).copy()
        rows = np.frombuffer(self.rows, np.int32).copy()
        if self.position is None or self.live == len(rows):
            return keys, rows
        position = np.frombuffer(self.position, np.int32)
        live = position[rows] == np.arange(len(rows), dtype=np.int32)
        return keys[live], rows[live]

    def build(self, keys: npt.NDArray[np.int64], rows: npt.NDArray[np.int32]) -> None:
        """Replace the content with these entries (distinct rows): one sort, no sifting (a
        sorted array is a heap)."""
        order = np.argsort(keys, kind="stable")
        self.keys = array("q", np.ascontiguousarray(keys[order], np.int64).tobytes())
        self.rows = array("i", np.ascontiguousarray(rows[order], np.int32).tobytes())
        self.live = len(order)
        if self.position is not None:
            position = np.frombuffer(self.position, np.int32).copy()
            position[:] = -1
            position[rows[order]] = np.arange(len(order), dtype=np.int32)
            self.position = array("i", position.tobytes())

    def compact(self) -> None:
        """Drop every stale entry (one sort of the live ones)."""
        keys, rows = self.entries()
        self._rebuild(keys, rows)

    def _bulk_pop(self, last_key: int) -> list[int]:
        keys, rows = self.entries()
        due = keys <= last_key
        popped = rows[due]
        self._rebuild(keys[~due], rows[~due], popped)
        return popped.tolist()  # type: ignore[no-any-return]

    def _rebuild(
        self,
        keys: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int32],
        removed: npt.NDArray[np.int32] | None = None,
    ) -> None:
        """`build` from the live entries, updating `position` in place (the rows of these
        entries and the `removed` ones only): O(entries), where `build` rewrites the whole
        position array (O(rows): a million retained rows made every compaction a 4 MB copy)."""
        order = np.argsort(keys, kind="stable")
        self.keys = array("q", np.ascontiguousarray(keys[order], np.int64).tobytes())
        self.rows = array("i", np.ascontiguousarray(rows[order], np.int32).tobytes())
        self.live = len(order)
        if self.position is not None:
            position = np.frombuffer(self.position, np.int32)
            if removed is not None:
                position[removed] = -1
            position[rows[order]] = np.arange(len(order), dtype=np.int32)
            del position  # the array may grow again

    def _drop_stale_top(self) -> None:
        position = self.position
        if position is None:
            return
        keys, rows = self.keys, self.rows
        while keys and position[rows[0]] != 0:
            self._pop_top()

    def _sift_up(self, index: int, key: int) -> int:
        """Move the parents of a hole at `index` down while their key is above `key`; return
        where the hole ended (the caller writes its entry there)."""
        keys, rows, position = self.keys, self.rows, self.position
        while index:
            parent = (index - 1) >> 1
            parent_key = keys[parent]
            if parent_key <= key:
                break
            parent_row = rows[parent]
            keys[index] = parent_key
            rows[index] = parent_row
            if position is not None and position[parent_row] == parent:
                position[parent_row] = index
            index = parent
        return index

    def _pop_top(self, index: int = 0) -> None:
        """Remove the entry at `index`, the top by default (live or stale; the caller fixes
        `live` and the removed row's position). Bottom-up, as heapq: the smaller child moves
        up all the way to a leaf (one comparison a level), then the last entry, which belongs
        near the bottom, sifts up from there (above `index` if it must)."""
        keys, rows, position = self.keys, self.rows, self.position
        last_key = keys.pop()
        last_row = rows.pop()
        size = len(keys)
        if index == size:
            return  # the last entry was the one removed
        last_live = position is not None and position[last_row] == size
        child = 2 * index + 1
        # Each key is read once a level (the loop runs log2(size) times on every pop).
        while child < size:
            child_key = keys[child]
            right = child + 1
            if right < size:
                right_key = keys[right]
                if right_key < child_key:
                    child, child_key = right, right_key
            child_row = rows[child]
            keys[index] = child_key
            rows[index] = child_row
            if position is not None and position[child_row] == child:
                position[child_row] = index
            index = child
            child = 2 * index + 1
        index = self._sift_up(index, last_key)
        keys[index] = last_key
        rows[index] = last_row
        if last_live:
            assert position is not None
            position[last_row] = index
