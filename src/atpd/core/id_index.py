"""Reservation ids by row, and rows by id, without a Python object per id.

A dict from id to row costs about 150 bytes per reservation (the str, the int, the dict slot).
Here the ids are bytes in one arena (`offset`, `length` per row), and the index is an
open-addressing table of int32 rows (linear probing, at most 2/3 full, deletion by backward
shift, so never a tombstone) keyed by the id's Python hash, whose low 32 bits are kept per
row so that growing the table and rebuilding it after a restore are array operations. About
13 bytes per id of 13 characters, plus 4 of hash and 6 to 12 of table.

A freed row keeps its arena space (`room`) for the next id of that row: rows are reused, and
ids of one system have similar lengths. An id longer than its row's room is appended and the
old space abandoned; the arena is compacted once more than half of it is abandoned.
"""

from __future__ import annotations

from array import array

import numpy as np
import numpy.typing as npt

EMPTY = -1
LOW_32_BITS = 0xFFFFFFFF
MIN_SLOTS = 8
TAG_SHIFT = 24  # a slot's tag: the top 8 of the 32 hash bits kept (the index uses the low)
# The arena is compacted when abandoned bytes are more than half of it and at least this many.
COMPACT_MIN_BYTES = 1 << 20


class DuplicateId(ValueError):
    """A bulk build found one id on two rows."""


class IdIndex:
    __slots__ = (
        "abandoned",
        "arena",
        "count",
        "hashes",
        "length",
        "mask",
        "offset",
        "room",
        "slots",
        "tags",
    )

    def __init__(self) -> None:
        self.arena = bytearray()
        self.abandoned = 0
        # Per row: where its id is in the arena, its length, the space reserved for the row.
        self.offset = array("q")
        self.length = array("B")
        self.room = array("B")
        self.hashes = array("I")
        self.slots = array("i", [EMPTY] * MIN_SLOTS)
        # Per slot, 8 more bits of its id's hash: a probe compares them before reading the
        # row's hash (a random access: a cache miss on a big table), so a miss rarely does.
        self.tags = array("B", bytes(MIN_SLOTS))
        self.mask = MIN_SLOTS - 1
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def grow_rows(self, row_capacity: int) -> None:
        grow = row_capacity - len(self.offset)
        if grow > 0:
            self.offset.frombytes(bytes(8 * grow))
            self.length.frombytes(bytes(grow))
            self.room.frombytes(bytes(grow))
            self.hashes.frombytes(bytes(4 * grow))

    def find(self, reservation_id: str) -> int:
        """The row of `reservation_id`, -1 when none (the hot path of every Reserve)."""
        h = hash(reservation_id)
        slots, mask = self.slots, self.mask
        i = h & mask
        row = slots[i]
        if row < 0:
            return EMPTY  # a new id, most often: its home slot is empty
        h32 = h & LOW_32_BITS
        tag = h32 >> TAG_SHIFT
        tags = self.tags
        while row >= 0:
            if tags[i] == tag and self.hashes[row] == h32:
                start = self.offset[row]
                if self.arena[start : start + self.length[row]] == reservation_id.encode():
                    return row
            i = (i + 1) & mask
            row = slots[i]
        return EMPTY

    def id_of(self, row: int) -> str:
        start = self.offset[row]
        return self.arena[start : start + self.length[row]].decode()

    def add(self, reservation_id: str, row: int) -> None:
        """Index `reservation_id` (not indexed yet) at `row` (free)."""
        encoded = reservation_id.encode()
        size = len(encoded)
        assert 0 < size <= 255, reservation_id
        room = self.room[row]
        if size > room:
            self.abandoned += room
            self.offset[row] = len(self.arena)
            self.arena += encoded
            self.room[row] = size
        else:
            start = self.offset[row]
            self.arena[start : start + size] = encoded
        self.length[row] = size
        h = hash(reservation_id)
        h32 = h & LOW_32_BITS
        self.hashes[row] = h32
        count = self.count + 1
        slots = self.slots
        if 3 * count > 2 * len(slots):
            self._resize(2 * len(slots))
            slots = self.slots
        mask = self.mask
        i = h & mask
        while slots[i] >= 0:
            i = (i + 1) & mask
        slots[i] = row
        self.tags[i] = h32 >> TAG_SHIFT
        self.count = count
        if self.abandoned > COMPACT_MIN_BYTES and 2 * self.abandoned > len(self.arena):
            self._compact_arena()

    def remove(self, row: int) -> None:
        """Unindex the id at `row` (its arena space stays the row's)."""
        slots, tags, mask, hashes = self.slots, self.tags, self.mask, self.hashes
        i = hashes[row] & mask
        while slots[i] != row:
            assert slots[i] >= 0, row
            i = (i + 1) & mask
        # Backward-shift deletion: pull later entries of the probe run into the hole.
        j = i
        while True:
            j = (j + 1) & mask
            other = slots[j]
            if other < 0:
                break
            home = hashes[other] & mask
            if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue  # its probe run starts after the hole: it stays
            slots[i] = other
            tags[i] = tags[j]
            i = j
        slots[i] = EMPTY
        self.length[row] = 0
        self.count -= 1

    # ------------------------------------------------------------------ bulk (snapshots)

    def joined(self, rows: npt.NDArray[np.int64]) -> bytes:
        """The ids of `rows`, in that order, joined by newlines (no id contains one)."""
        if not len(rows):
            return b""
        starts = np.frombuffer(self.offset, np.int64)[rows]
        lengths = np.frombuffer(self.length, np.uint8)[rows].astype(np.int64)
        spans = lengths + 1
        ends = np.cumsum(spans)
        total = int(ends[-1])
        source = np.arange(total, dtype=np.int64) - np.repeat(ends - spans - starts, spans)
        source[ends - 1] = 0
        out = np.frombuffer(self.arena, np.uint8)[source]
        out[ends - 1] = ord("\n")
        return out[:-1].tobytes()

    def build(self, blob: bytes, ids: list[str]) -> None:
        """Index rows 0..len(ids)-1 with these ids (`blob` is them joined by newlines), on an
        empty index; raises DuplicateId when an id is listed twice."""
        assert self.count == 0 and not self.arena
        count = len(ids)
        self.grow_rows(count)
        if not count:
            return
        full = np.fromiter(map(hash, ids), np.int64, count)
        ordered = np.sort(full)
        if (ordered[1:] == ordered[:-1]).any():
            _raise_duplicate(ids, full)
        separators = np.flatnonzero(np.frombuffer(blob, np.uint8) == ord("\n"))
        starts = np.concatenate(([0], separators + 1))
        lengths = np.diff(np.concatenate((starts, [len(blob) + 1]))) - 1
        self.arena = bytearray(blob)
        self.offset[:count] = array("q", starts.astype(np.int64).tobytes())
        self.length[:count] = array("B", lengths.astype(np.uint8).tobytes())
        self.room[:count] = self.length[:count]
        self.hashes[:count] = array("I", (full & LOW_32_BITS).astype(np.uint32).tobytes())
        self.slots, self.tags, self.mask = _probe_table(
            _slots_for(count),
            np.arange(count, dtype=np.int32),
            np.frombuffer(self.hashes, np.uint32),
        )
        self.count = count

    def _resize(self, size: int) -> None:
        """Rebuild the table with `size` slots from the rows it holds (vectorised)."""
        current = np.frombuffer(self.slots, np.int32)
        rows = current[current >= 0]
        del current
        self.slots, self.tags, self.mask = _probe_table(
            size, rows, np.frombuffer(self.hashes, np.uint32)
        )

    def _compact_arena(self) -> None:
        rows = np.flatnonzero(np.frombuffer(self.room, np.uint8) > 0)
        starts = np.frombuffer(self.offset, np.int64)[rows]
        rooms = np.frombuffer(self.room, np.uint8)[rows].astype(np.int64)
        ends = np.cumsum(rooms)
        source = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - rooms - starts, rooms)
        arena = np.frombuffer(self.arena, np.uint8)[source].tobytes()
        new_offsets = np.frombuffer(self.offset, np.int64).copy()
        new_offsets[rows] = ends - rooms
        self.arena = bytearray(arena)
        self.offset = array("q", new_offsets.tobytes())
        self.abandoned = 0


def _slots_for(count: int) -> int:
    size = MIN_SLOTS
    while 3 * count > 2 * size:
        size *= 2
    return size


def _probe_table(
    size: int, rows: npt.NDArray[np.int32], hashes: npt.NDArray[np.uint32]
) -> tuple[array[int], array[int], int]:
    """A linear-probing table of `size` slots holding `rows`: each round, every row still
    waiting takes its slot if it is free (the first of several claimants wins) or moves one
    slot on; a row only passes occupied slots, as a one-by-one insertion would."""
    mask = size - 1
    slots = np.full(size, EMPTY, np.int32)
    waiting = rows.astype(np.int32)
    at = (hashes[waiting].astype(np.int64)) & mask
    while len(waiting):
        claims = np.flatnonzero(slots[at] == EMPTY)
        # Several claimants of one slot: one of the writes stays, and that row won it.
        slots[at[claims]] = waiting[claims]
        won = np.zeros(len(waiting), np.bool_)
        won[claims] = slots[at[claims]] == waiting[claims]
        waiting = waiting[~won]
        at = (at[~won] + 1) & mask
    tags = np.zeros(size, np.uint8)
    used = slots >= 0
    tags[used] = hashes[slots[used]] >> TAG_SHIFT
    return array("i", slots.tobytes()), array("B", tags.tobytes()), mask


def _raise_duplicate(ids: list[str], full: npt.NDArray[np.int64]) -> None:
    order = np.argsort(full, kind="stable")
    sorted_hashes = full[order]
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    for k in same.tolist():
        group = {ids[int(order[j])] for j in range(k, k + 2)}
        if len(group) == 1:
            raise DuplicateId(f"reservation id {group.pop()!r} is listed twice")
    # Equal hashes of different ids only: no duplicate after all.
