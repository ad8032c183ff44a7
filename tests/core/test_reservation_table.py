"""The columnar reservation table (core/reservation_table.py) against a plain dict-of-objects
model: rows, line blocks and ids reused, time heaps, eviction order, snapshot round trips."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atpd.core import id_index
from atpd.core.commands import Confirm, Fulfil, Line, Release, ReservationKind, Reserve, Tick
from atpd.core.id_index import IdIndex
from atpd.core.ids import IdMap
from atpd.core.reservation_columns import line_columns, line_indexes, load_columns, row_columns
from atpd.core.reservation_table import ReservationTable
from atpd.core.reservations import ReservationStatus
from atpd.core.state import AtpState
from atpd.persistence.snapshot_upgrade import FORMAT_1_LINE_COLUMNS, FORMAT_1_ROW_COLUMNS
from atpd.persistence.state_snapshot import (
    Arrays,
    Blobs,
    SnapshotContentError,
    export_state,
    import_state,
)

from .support import make_state, put_stock

HELD, CONFIRMED = ReservationStatus.HELD, ReservationStatus.CONFIRMED
RELEASED, EXPIRED = ReservationStatus.RELEASED, ReservationStatus.EXPIRED
IDS = [f"r-{i}" for i in range(8)] + ["a-much-longer-reservation-id:0001", "x"]
RETAINED_CAP = 3
RETENTION_MS = 50


@dataclass
class Model:
    """One reservation as a plain object."""

    status: ReservationStatus
    lines: list[tuple[int, int, int]]  # (sku, node, quantity)
    held: list[int]
    fulfilled: list[int]
    ttl_ms: int
    created_ms: int
    updated_ms: int
    expires_ms: int
    purge_at_ms: int = 0
    channel: tuple[str, str] = field(default=("web", ""))


def new_table() -> ReservationTable:
    skus, nodes = IdMap(), IdMap()
    for i in range(4):
        skus.intern(f"SKU-{i}")
        nodes.intern(f"N-{i}")
    return ReservationTable(skus, nodes)


def reloaded(table: ReservationTable) -> ReservationTable:
    """The table as a snapshot carries it: live rows renumbered, lines contiguous, in bulk."""
    rows = table.live_rows()
    columns = row_columns(table, rows)
    lines = line_columns(table, line_indexes(table, rows))
    counts = columns["line_count"].astype(np.int64)
    columns["first_line"] = np.cumsum(counts) - counts
    keys, retained = table.retention.entries()
    renumbered = np.full(max(table.high, 1), -1, np.int64)
    renumbered[rows] = np.arange(len(rows))
    purge_at = np.zeros(len(rows), np.int64)
    purge_at[renumbered[retained]] = keys
    ids = [table.id_of(row) for row in rows.tolist()]
    fresh = ReservationTable(table.skus, table.node_ids)
    blob = table.ids.joined(rows)
    load_columns(fresh, blob, ids, columns, lines, table.callers, table.makers, purge_at)
    return fresh


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = new_table()
        self.model: dict[str, Model] = {}
        self.now_ms = 1_000

    # ------------------------------------------------------------------ helpers

    def row(self, reservation_id: str) -> int:
        row = self.table.find(reservation_id)
        assert row >= 0, reservation_id
        return row

    def close(self, reservation_id: str, status: ReservationStatus, at_ms: int) -> None:
        """Finish a reservation in both: retention with eviction of the oldest over the cap."""
        table, model = self.table, self.model[reservation_id]
        row = self.row(reservation_id)
        if model.status is HELD:
            assert table.expiry.discard(row)
        first = table.first_line[row]
        for at in range(first, first + table.line_count[row]):
            table.line_held[at] = 0
        table.status[row] = status
        model.status, model.held = status, [0] * len(model.lines)
        overflow = len(table.retention) + 1 - RETAINED_CAP
        if overflow > 0:
            oldest = sorted(
                (m.purge_at_ms, rid)
                for rid, m in self.model.items()
                if not m.status.is_open and rid != reservation_id
            )[:overflow]
            evicted = table.pop_oldest_retained(overflow)
            assert [table.id_of(r) for r in evicted] == [rid for _, rid in oldest]
            for evicted_row in evicted:
                table.delete(evicted_row)
            for _, rid in oldest:
                del self.model[rid]
        model.purge_at_ms = at_ms + RETENTION_MS
        table.retention.push(model.purge_at_ms, row)

    # ------------------------------------------------------------------ rules

    @rule(
        reservation_id=st.sampled_from(IDS),
        lines=st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 9)),
            min_size=1,
            max_size=3,
            unique_by=lambda line: (line[0], line[1]),
        ),
        ttl_ms=st.integers(1, 40),
        channel=st.sampled_from([("web", ""), ("app", "vip")]),
    )
    def reserve(
        self,
        reservation_id: str,
        lines: list[tuple[int, int, int]],
        ttl_ms: int,
        channel: tuple[str, str],
    ) -> None:
        if reservation_id in self.model:
            assert reservation_id in self.table
            return
        table = self.table
        row = table.insert(
            reservation_id,
            ReservationKind.CART,
            table.intern_caller(*channel),
            -1,
            ttl_ms,
            self.now_ms,
            [x[0] for x in lines],
            [x[1] for x in lines],
            [x[2] for x in lines],
        )
        table.expiry.push(self.now_ms + ttl_ms, row)
        quantities = [x[2] for x in lines]
        self.model[reservation_id] = Model(
            HELD,
            lines,
            quantities[:],
            [0] * len(lines),
            ttl_ms,
            self.now_ms,
            self.now_ms,
            self.now_ms + ttl_ms,
            channel=channel,
        )

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        held = sorted(rid for rid, m in self.model.items() if m.status is HELD)
        if not held:
            return
        reservation_id = data.draw(st.sampled_from(held))
        row = self.row(reservation_id)
        assert self.table.expiry.discard(row)
        self.table.status[row] = CONFIRMED
        self.table.expires_ms[row] = 0
        self.table.updated_ms[row] = self.now_ms
        model = self.model[reservation_id]
        model.status, model.expires_ms, model.updated_ms = CONFIRMED, 0, self.now_ms

    @rule(data=st.data())
    def fulfil_part(self, data: st.DataObject) -> None:
        candidates = sorted(rid for rid, m in self.model.items() if any(m.held))
        if not candidates:
            return
        reservation_id = data.draw(st.sampled_from(candidates))
        model = self.model[reservation_id]
        line = data.draw(st.sampled_from([i for i, h in enumerate(model.held) if h]))
        quantity = data.draw(st.integers(1, model.held[line]))
        at = self.table.first_line[self.row(reservation_id)] + line
        self.table.line_held[at] -= quantity
        self.table.line_fulfilled[at] += quantity
        model.held[line] -= quantity
        model.fulfilled[line] += quantity

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        candidates = sorted(rid for rid, m in self.model.items() if m.status.is_open)
        if not candidates:
            return
        reservation_id = data.draw(st.sampled_from(candidates))
        self.table.updated_ms[self.row(reservation_id)] = self.now_ms
        self.model[reservation_id].updated_ms = self.now_ms
        self.close(reservation_id, RELEASED, self.now_ms)

    @rule(data=st.data())
    def replace_lines(self, data: st.DataObject) -> None:
        candidates = sorted(
            rid for rid, m in self.model.items() if m.status is HELD and not any(m.fulfilled)
        )
        if not candidates:
            return
        reservation_id = data.draw(st.sampled_from(candidates))
        count = data.draw(st.integers(1, 3))
        lines = [(i, 3 - i, data.draw(st.integers(1, 5))) for i in range(count)]
        self.table.replace_lines(
            self.row(reservation_id),
            [x[0] for x in lines],
            [x[1] for x in lines],
            [x[2] for x in lines],
        )
        model = self.model[reservation_id]
        model.lines, model.held, model.fulfilled = lines, [x[2] for x in lines], [0] * count

    @rule(step_ms=st.integers(0, 30))
    def advance(self, step_ms: int) -> None:
        """Time passes: due holds expire in (expiry, id) order, then old finished ones go."""
        self.now_ms += step_ms
        table = self.table
        due = table.pop_expired(self.now_ms)
        expected = sorted(
            (m.expires_ms, rid)
            for rid, m in self.model.items()
            if m.status is HELD and m.expires_ms <= self.now_ms
        )
        assert [table.id_of(row) for row in due] == [rid for _, rid in expected]
        for row, (expires_ms, reservation_id) in zip(due, expected, strict=True):
            table.expiry.push(expires_ms, row)  # close() takes it out again, as a release
            table.updated_ms[row] = expires_ms
            self.model[reservation_id].updated_ms = expires_ms
            self.close(reservation_id, EXPIRED, expires_ms)
        rows = table.pop_purged(self.now_ms)
        purged = {table.id_of(row) for row in rows}
        gone = {
            rid
            for rid, m in self.model.items()
            if not m.status.is_open and m.purge_at_ms <= self.now_ms
        }
        assert purged == gone
        for row in rows:
            table.delete(row)
        for reservation_id in gone:
            del self.model[reservation_id]

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def snapshot_round_trip(self) -> None:
        self.table = reloaded(self.table)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def same_reservations(self) -> None:
        table = self.table
        assert len(table) == len(self.model) == len(table.ids)
        assert sorted(table) == sorted(self.model)
        for reservation_id, model in self.model.items():
            view = table[reservation_id]
            assert view.reservation_id == reservation_id
            assert view.status is model.status
            assert list(zip(view.skus, view.nodes, view.quantities, strict=True)) == model.lines
            assert (view.held, view.fulfilled) == (model.held, model.fulfilled)
            assert (view.channel, view.segment) == model.channel
            assert (view.ttl_ms, view.created_at_ms, view.updated_at_ms) == (
                model.ttl_ms,
                model.created_ms,
                model.updated_ms,
            )
            assert view.expires_at_ms == model.expires_ms
        for unknown in set(IDS) - set(self.model):
            assert table.find(unknown) == -1 and table.get(unknown) is None

    @invariant()
    def heaps_match(self) -> None:
        held = [m.expires_ms for m in self.model.values() if m.status is HELD]
        assert self.table.next_expiry_ms() == (min(held) if held else None)
        assert len(self.table.expiry) == len(held)
        retained = sorted(
            (m.purge_at_ms, rid) for rid, m in self.model.items() if not m.status.is_open
        )
        assert self.table.retention_order() == retained


TableMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_table_against_a_dict_of_objects = TableMachine.TestCase


@settings(max_examples=60, deadline=None)
@given(
    operations=st.lists(
        st.tuples(st.booleans(), st.text("ab:/", min_size=1, max_size=5)), max_size=120
    )
)
def test_id_index_against_a_dict(operations: list[tuple[bool, str]]) -> None:
    """Adds and removes (backward-shift deletion, wrap-around, growth) find what a dict does."""
    index = IdIndex()
    index.grow_rows(200)
    expected: dict[str, int] = {}
    free = list(range(200))
    for add, reservation_id in operations:
        if add and reservation_id not in expected:
            row = free.pop()
            index.add(reservation_id, row)
            expected[reservation_id] = row
        elif not add and reservation_id in expected:
            row = expected.pop(reservation_id)
            index.remove(row)
            free.append(row)
        for known, row in expected.items():
            assert index.find(known) == row and index.id_of(row) == known
        assert len(index) == len(expected)
    assert index.find("never") == -1


def big_state(count: int) -> AtpState:
    """A state with `count` open reservations of 1 to 3 lines, made through apply."""
    state = make_state()
    for node in ("paris", "berlin"):
        for sku in range(20):
            put_stock(state, f"sku-{sku}", node, 10**6, now_ms=1)
    now_ms = 10
    for i in range(count):
        now_ms += 1
        lines = tuple(
            Line(f"sku-{(i + j) % 20}", ("paris", "berlin")[j % 2], 1 + j) for j in range(1 + i % 3)
        )
        state.apply(Reserve(f"order-{i:06d}", lines, 60_000, channel="web"), now_ms)
    return state


def test_a_large_table_round_trips_through_a_snapshot() -> None:
    """20,000 reservations (open, confirmed, released, fulfilled, expired) come back from a
    snapshot with the same digest, and the two states go on identically."""
    state = big_state(20_000)
    now_ms = state.now_ms
    for i in range(0, 20_000, 5):
        now_ms += 1
        state.apply(Confirm(f"order-{i:06d}"), now_ms)
        state.apply(Release(f"order-{i + 1:06d}"), now_ms)
        state.apply(Fulfil(f"order-{i + 2:06d}", ()), now_ms)
    state.apply(Tick(), 10 + 20_000 // 2 + 60_000)  # the first half of the holds expire
    state.check_invariants()
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs)
    loaded.check_invariants()
    assert loaded.digest() == state.digest()
    for target in (state, loaded):
        target.apply(Release("order-019999"), target.now_ms + 1)
        target.apply(Tick(), target.now_ms + 10**9)
    assert loaded.digest() == state.digest()


def test_a_snapshot_of_an_unknown_format_is_refused_naming_it() -> None:
    """A snapshot whose state format this build does not know (a newer build's) is refused
    with the format named, not loaded wrong."""
    state = big_state(10)
    arrays, blobs = export_state(state)
    meta = json.loads(blobs["meta"])
    meta["format"] = 3
    with pytest.raises(SnapshotContentError, match="state format 3 is not supported"):
        import_state(arrays, {**blobs, "meta": json.dumps(meta).encode()})


def as_format_1(arrays: Arrays, blobs: Blobs) -> tuple[Arrays, Blobs]:
    """The same snapshot in state format 1's layout (before reservations were columnar): one
    int64 row of 9 per reservation, one of 5 per line, channels and segments as names."""
    old_arrays = {k: v for k, v in arrays.items() if not k.startswith(("reservation_", "line_"))}
    old_arrays["reservation_principal"] = arrays["reservation_principal"]
    old_arrays["reservations"] = np.stack(
        [arrays[name].astype(np.int64) for name in FORMAT_1_ROW_COLUMNS], axis=1
    )
    old_arrays["reservation_lines"] = np.stack(
        [arrays[name].astype(np.int64) for name in FORMAT_1_LINE_COLUMNS], axis=1
    )
    callers = json.loads(blobs["reservation_callers"])
    pairs = [callers[i] for i in arrays["reservation_caller"].tolist()]
    old_blobs = {k: v for k, v in blobs.items() if k != "reservation_callers"}
    old_blobs["reservation_channels"] = "\n".join(p[0] for p in pairs).encode()
    old_blobs["reservation_segments"] = "\n".join(p[1] for p in pairs).encode()
    meta = json.loads(blobs["meta"])
    meta["format"] = 1
    old_blobs["meta"] = json.dumps(meta).encode()
    return old_arrays, old_blobs


def test_a_format_1_snapshot_loads_to_the_same_state() -> None:
    """A snapshot written before reservations were columnar (state format 1) loads, converted,
    to the same digest: an upgraded server starts from its old data directory."""
    state = big_state(300)
    state.apply(Confirm("order-000001"), state.now_ms + 1)
    state.apply(Release("order-000002"), state.now_ms + 1)
    arrays, blobs = export_state(state)
    old_arrays, old_blobs = as_format_1(arrays, blobs)
    loaded = import_state(old_arrays, old_blobs)
    loaded.check_invariants()
    assert loaded.digest() == state.digest()


def test_a_snapshot_with_a_repeated_id_is_refused() -> None:
    """Two rows with one id: the snapshot is refused naming the ids entry."""
    state = big_state(4)
    arrays, blobs = export_state(state)
    blobs["reservation_ids"] = blobs["reservation_ids"].replace(b"order-000001", b"order-000000")
    with pytest.raises(SnapshotContentError, match=r"reservation_ids.*listed twice"):
        import_state(arrays, blobs)


def test_the_id_arena_is_compacted_and_ids_still_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows reused with longer ids abandon arena space; compaction reclaims it, and every id
    is still found at its row."""
    monkeypatch.setattr(id_index, "COMPACT_MIN_BYTES", 10)
    index = IdIndex()
    index.grow_rows(50)
    live: dict[str, int] = {}
    free = list(range(50))
    for step in range(3_000):
        if live and (step % 2 or not free):
            reservation_id = sorted(live)[step % len(live)]
            row = live.pop(reservation_id)
            index.remove(row)
            free.append(row)
        else:
            reservation_id = "id-" + "x" * (step * 7 % 60) + str(step)
            row = free.pop()
            index.add(reservation_id, row)
            live[reservation_id] = row
    assert len(index.arena) < 60 * 80  # compacted: without it, every longer id appended
    for reservation_id, row in live.items():
        assert index.find(reservation_id) == row and index.id_of(row) == reservation_id
