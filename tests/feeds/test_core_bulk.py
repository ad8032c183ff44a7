"""The core of bulk loads without gRPC: AtpState.apply(BulkLoad), duplicate detection, the
journal record and the load file, replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core import bulk
from atpd.core.bulk import BulkLoad, LoadColumns, LoadMode, find_duplicate
from atpd.core.commands import NodeKind, SetStock, UpsertNode
from atpd.core.limits import Limits
from atpd.core.results import AlreadyExists, InvalidCommand, LimitExceeded, NotFound
from atpd.core.state import AtpState
from atpd.persistence.codec import decode_command, encode_command
from atpd.persistence.load_file import (
    collect_unreferenced,
    new_file_name,
    read_load_file,
    write_load_file,
)
from atpd.persistence.snapshot_file import SnapshotCorrupt
from atpd.persistence.state_snapshot import export_state, import_state

NODES = ("paris", "lyon", "soho")


def columns(rows: list[tuple[str, str, int, int]]) -> LoadColumns:
    """Canonical columns (ids in order of first use) from (sku, node, on_hand, safety) rows."""
    skus: dict[str, int] = {}
    nodes: dict[str, int] = {}
    sku = [skus.setdefault(r[0], len(skus)) for r in rows]
    node = [nodes.setdefault(r[1], len(nodes)) for r in rows]
    return LoadColumns(
        list(skus),
        np.array(sku, np.int32),
        list(nodes),
        np.array(node, np.int32),
        np.array([r[2] for r in rows], np.int32),
        np.array([r[3] for r in rows], np.int32),
    )


def state_with_nodes(limits: Limits | None = None) -> AtpState:
    state = AtpState(limits)
    for node_id in NODES:
        state.apply(UpsertNode(node_id, NodeKind.STORE, ("EU", "FR")), 1)
    return state


def test_a_refused_load_leaves_no_trace_at_all() -> None:
    """Every refusal (unknown node, node outside FULL, duplicate, max_skus) happens before the
    first write: the digest is unchanged and the load id stays free."""
    state = state_with_nodes(Limits(max_skus=3))
    state.apply(SetStock("A", "paris", 5, 1), 2)
    digest = state.digest()
    refused = [
        (BulkLoad.create("x", LoadMode.DELTA, 0, (), columns([("B", "oslo", 1, -1)])), NotFound),
        (
            BulkLoad.create("x", LoadMode.FULL, 0, ("paris",), columns([("B", "lyon", 1, -1)])),
            InvalidCommand,
        ),
        (
            BulkLoad.create(
                "x", LoadMode.DELTA, 0, (), columns([("B", "lyon", 1, -1), ("B", "lyon", 2, -1)])
            ),
            InvalidCommand,
        ),
        (
            BulkLoad.create(
                "x",
                LoadMode.DELTA,
                0,
                (),
                columns([("B", "lyon", 1, -1), ("C", "lyon", 1, -1), ("D", "lyon", 1, -1)]),
            ),
            LimitExceeded,
        ),
    ]
    for command, error in refused:
        with pytest.raises(error):
            state.apply(command, 3)
        assert state.digest() == digest
    ok = BulkLoad.create("x", LoadMode.DELTA, 0, (), columns([("B", "lyon", 1, -1)]))
    assert state.apply(ok, 3).summary.positions_written == 1


def test_same_id_other_content_is_already_exists_and_same_content_replays() -> None:
    """The fingerprint decides: equal columns replay, anything else is AlreadyExists."""
    state = state_with_nodes()
    rows = [("A", "paris", 5, -1), ("B", "lyon", 6, 2)]
    first = state.apply(BulkLoad.create("l", LoadMode.DELTA, 3, (), columns(rows)), 2)
    again = state.apply(BulkLoad.create("l", LoadMode.DELTA, 3, (), columns(rows)), 3)
    assert again.replayed and not again.changed and again.summary == first.summary
    with pytest.raises(AlreadyExists):
        state.apply(BulkLoad.create("l", LoadMode.DELTA, 4, (), columns(rows)), 4)


def test_remembered_load_ids_are_bounded() -> None:
    """Only the last max_remembered_loads ids are kept (oldest forgotten first)."""
    state = state_with_nodes(Limits(max_remembered_loads=2))
    for i in range(3):
        state.apply(
            BulkLoad.create(f"l{i}", LoadMode.DELTA, 0, (), columns([("A", "paris", i, -1)])), 2
        )
    assert [state.loads.get(f"l{i}") is not None for i in range(3)] == [False, True, True]


def _reference_duplicate(rows: list[tuple[int, int]]) -> tuple[int, int] | None:
    seen: dict[tuple[int, int], int] = {}
    for i, key in enumerate(rows):
        if key in seen:
            return seen[key], i
        seen[key] = i
    return None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=40), st.booleans())
def test_find_duplicate_matches_a_reference_on_both_paths(
    rows: list[tuple[int, int]], sparse: bool
) -> None:
    """Dense-table and sort-based duplicate detection both find the earliest repeat and its
    first occurrence."""
    data = columns([(f"S{s}", f"N{n}", 1, -1) for s, n in rows])
    if sparse:  # force the sort path
        original = bulk.DENSE_DUPLICATE_SLOTS_MIN, bulk.DENSE_DUPLICATE_SLOTS_PER_ROW
        bulk.DENSE_DUPLICATE_SLOTS_MIN, bulk.DENSE_DUPLICATE_SLOTS_PER_ROW = 0, 0
        try:
            found = find_duplicate(data)
        finally:
            bulk.DENSE_DUPLICATE_SLOTS_MIN, bulk.DENSE_DUPLICATE_SLOTS_PER_ROW = original
    else:
        found = find_duplicate(data)
    assert found == _reference_duplicate(rows)


def test_journal_record_plus_load_file_replays_to_the_same_state(tmp_path: Path) -> None:
    """encode -> decode gives a small record; reading its file back and applying it to the
    same starting state gives the same digest, counts and fingerprint."""
    live, replica = state_with_nodes(), state_with_nodes()
    for state in (live, replica):
        state.apply(SetStock("A", "paris", 5, 9), 2)
    rows = [("A", "paris", 7, 1), ("B", "lyon", 3, -1), ("C", "soho", 0, 4)]
    command = BulkLoad.create("n-1", LoadMode.FULL, 6, ("paris", "lyon"), columns(rows[:2]))
    stored = write_load_file(tmp_path, command, new_file_name("n-1"))
    payload = encode_command(stored)
    assert len(payload) < 120
    decoded = decode_command(payload)
    assert isinstance(decoded, BulkLoad) and decoded.columns is None
    resolved = read_load_file(tmp_path, decoded)
    assert resolved.fingerprint == command.fingerprint
    assert live.apply(stored, 3).summary == replica.apply(resolved, 3).summary
    assert live.digest() == replica.digest()
    assert live.position("A", "paris").last_source_sequence == 9  # newer: kept


def test_a_load_file_with_another_checksum_than_its_record_is_refused(tmp_path: Path) -> None:
    """A record only accepts the very file it was written with."""
    command = BulkLoad.create("n-1", LoadMode.DELTA, 0, (), columns([("A", "paris", 1, -1)]))
    stored = write_load_file(tmp_path, command, new_file_name("n-1"))
    other = BulkLoad(
        stored.load_id, stored.mode, 0, (), None, "", stored.stored_file, stored.stored_checksum ^ 1
    )
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        read_load_file(tmp_path, other)


def test_unreferenced_load_files_and_staging_leftovers_are_collected(tmp_path: Path) -> None:
    """Without any journal record naming them, load files are deleted unless kept."""
    command = BulkLoad.create("n-1", LoadMode.DELTA, 0, (), columns([("A", "paris", 1, -1)]))
    names = [new_file_name("n-1"), new_file_name("n-2")]
    for name in names:
        write_load_file(tmp_path, command, name)
    (tmp_path / "loads" / ".staging-crashed.0123456789ab.load").mkdir()
    removed = collect_unreferenced(tmp_path, keep={names[1]})
    assert removed == [names[0]]
    assert sorted(p.name for p in (tmp_path / "loads").iterdir()) == [names[1].split("/")[1]]


def test_applied_loads_survive_a_state_snapshot() -> None:
    """The registry of applied loads is part of the snapshot (idempotency after restart)."""
    state = state_with_nodes()
    state.apply(BulkLoad.create("l", LoadMode.DELTA, 2, (), columns([("A", "paris", 1, -1)])), 2)
    arrays, blobs = export_state(state)
    restored = import_state(arrays, blobs)
    assert restored.loads.get("l") == state.loads.get("l")
    assert restored.digest() == state.digest()
