"""SetNetwork and SetCarrierCapacity in the core: atomic replacement, slots per service,
origin and date with their checks and limits, the purge of past dates, and both commands
through the journal codec and a snapshot with an equal digest."""

from __future__ import annotations

import datetime

import pytest

from atpd.core.commands import NodeKind, SetCarrierCapacity, SetNetwork, Tick, UpsertNode
from atpd.core.handlers_network import capacity_calendar, compiled_network, slots_left
from atpd.core.limits import Limits
from atpd.core.network import UNLIMITED_SLOTS
from atpd.core.network_compile import epoch_day
from atpd.core.results import InvalidCommand, LimitExceeded, NotFound
from atpd.core.state import AtpState
from atpd.persistence.codec import UndecodableRecord, decode_command, encode_command
from atpd.persistence.state_snapshot import export_state, import_state
from atpd.v1 import journal_pb2

from .support import DAY_MS, NETWORK, NODES, NOW_MS, SOURCE, networked_world

TODAY = "2026-11-30"
TOMORROW = "2026-12-01"


def day(text: str) -> int:
    return epoch_day(datetime.date.fromisoformat(text))


def test_set_network_replaces_whole() -> None:
    """A new network replaces the old one whole and reports both versions."""
    state = networked_world()
    result = state.apply(SetNetwork(NETWORK.replace('"n1"', '"n2"', 1), SOURCE), NOW_MS)
    assert (result.version, result.previous_version) == ("n2", "n1")
    assert state.network.version == "n2" and state.network.source == SOURCE


def test_capacity_set_and_left() -> None:
    """Slots are absolute per (service, node, date); a date without slots has the default."""
    state = networked_world()
    assert slots_left(state, "express", "WH-1", day(TOMORROW)) == 10  # default_daily_slots
    assert slots_left(state, "courier", "ST-PAR", day(TOMORROW)) == UNLIMITED_SLOTS
    result = state.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 3), NOW_MS)
    assert (result.slots, result.held, result.previous_slots, result.changed) == (3, 0, None, True)
    assert slots_left(state, "express", "WH-1", day(TOMORROW)) == 3
    again = state.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 3), NOW_MS)
    assert not again.changed and again.previous_slots == 3
    zero = state.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 0), NOW_MS)
    assert zero.previous_slots == 3 and slots_left(state, "express", "WH-1", day(TOMORROW)) == 0
    rows = capacity_calendar(state, "express", "WH-1", TODAY, "2026-12-02")
    assert [(r.date, r.slots, r.left, r.explicit) for r in rows] == [
        (TODAY, 10, 10, False),
        (TOMORROW, 0, 0, True),
        ("2026-12-02", 10, 10, False),
    ]
    state.check_invariants()


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        (SetCarrierCapacity("nope", "WH-1", TOMORROW, 1), NotFound, "service: unknown carrier"),
        (SetCarrierCapacity("express", "WH-9", TOMORROW, 1), NotFound, "node_id: unknown node"),
        (
            SetCarrierCapacity("express", "ST-PAR", TOMORROW, 1),
            InvalidCommand,
            "node_id: node 'ST-PAR' is not an origin of service 'express'",
        ),
        (SetCarrierCapacity("express", "WH-1", "2026-11-20", 1), InvalidCommand, "in the past"),
        (
            SetCarrierCapacity("express", "WH-1", "2028-11-20", 1),
            InvalidCommand,
            "max_capacity_days_ahead",
        ),
        (SetCarrierCapacity("express", "WH-1", "2026-13-01", 1), InvalidCommand, "date: "),
        (SetCarrierCapacity("express", "WH-1", TOMORROW, -1), InvalidCommand, "slots: -1"),
    ],
)
def test_capacity_refused(command: SetCarrierCapacity, error: type, message: str) -> None:
    """Unknown service or node: NOT_FOUND; not an origin, bad or out-of-range date: invalid;
    nothing changes."""
    state = networked_world()
    before = state.digest()
    with pytest.raises(error, match=message):
        state.apply(command, NOW_MS)
    assert state.digest() == before


def test_capacity_limit_and_purge() -> None:
    """max_capacity_entries bounds the table; entries of past dates are dropped as time
    passes, which makes room again."""
    state = AtpState(Limits(max_capacity_entries=2))
    for node_id, (kind, geo_path, ships, pickup) in NODES.items():
        state.apply(UpsertNode(node_id, kind, geo_path, ships=ships, pickup=pickup), NOW_MS)
    state.apply(SetNetwork(NETWORK, SOURCE), NOW_MS)
    state.apply(SetCarrierCapacity("express", "WH-1", TODAY, 1), NOW_MS)
    state.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 1), NOW_MS)
    with pytest.raises(LimitExceeded, match="max_capacity_entries: already 2"):
        state.apply(SetCarrierCapacity("express", "ST-NYC", TOMORROW, 1), NOW_MS)
    # Three days on, today's entry is past (more than a day before UTC today): purged.
    later = NOW_MS + 3 * DAY_MS
    result = state.apply(SetCarrierCapacity("express", "ST-NYC", "2026-12-03", 1), later)
    assert result.changed
    assert state.carrier_capacity.get("express", "WH-1", day(TODAY)) is None
    assert state.carrier_capacity.get("express", "WH-1", day(TOMORROW)) is None
    assert len(state.carrier_capacity) == 1
    state.check_invariants()


def test_codec_round_trip() -> None:
    """Both commands survive the journal codec unchanged."""
    for command in (
        SetNetwork(NETWORK, SOURCE),
        SetCarrierCapacity("express", "WH-1", TOMORROW, 7),
    ):
        assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"service": "Bad Name", "node_id": "WH-1", "date": TOMORROW}, "service"),
        ({"service": "express", "node_id": "WH 1", "date": TOMORROW}, "node_id"),
        ({"service": "express", "node_id": "WH-1", "date": "tomorrow"}, "date"),
        (
            {"service": "express", "node_id": "WH-1", "date": TOMORROW, "slots": 2_000_000_000},
            "slots",
        ),
    ],
)
def test_bad_capacity_record(fields: dict[str, object], message: str) -> None:
    """A capacity record with a bad field is undecodable, naming the field."""
    entry = journal_pb2.JournalCommand()
    entry.set_carrier_capacity.SetInParent()
    for key, value in fields.items():
        setattr(entry.set_carrier_capacity, key, value)
    with pytest.raises(UndecodableRecord, match=message):
        decode_command(entry.SerializeToString())


def test_snapshot_round_trip() -> None:
    """Network, source and capacity go through a snapshot; the digest is equal."""
    state = networked_world()
    state.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 4), NOW_MS)
    state.apply(SetCarrierCapacity("courier", "ST-LON", TODAY, 0), NOW_MS)
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs)
    loaded.check_invariants()
    assert loaded.network.text == state.network.text
    assert loaded.network.source == SOURCE
    assert slots_left(loaded, "express", "WH-1", day(TOMORROW)) == 4
    assert loaded.digest() == state.digest()


def test_snapshot_without_network_loads() -> None:
    """A snapshot written before networks existed (no entries for them) still loads."""
    state = AtpState()
    state.apply(Tick(), NOW_MS)
    arrays, blobs = export_state(state)
    assert "network" not in blobs and "carrier_capacity" not in blobs
    loaded = import_state(arrays, blobs)
    assert loaded.network.version == "" and len(loaded.carrier_capacity) == 0
    assert loaded.digest() == state.digest()


def test_network_in_digest() -> None:
    """Two states differing only by their network or capacity have different digests."""
    a, b = networked_world(), networked_world()
    assert a.digest() == b.digest()
    b.apply(SetCarrierCapacity("express", "WH-1", TOMORROW, 4), NOW_MS)
    assert a.digest() != b.digest()


def test_upsert_node_recompiles() -> None:
    """A node change reaches the compiled network (origins follow node kinds)."""
    state = networked_world()
    paris = state.node_ids.get("ST-PAR")
    before = compiled_network(state)
    assert not before.origin[before.service_index("express"), paris]
    state.apply(UpsertNode("ST-PAR", NodeKind.WAREHOUSE, ("EU", "FR", "Paris")), NOW_MS)
    compiled = compiled_network(state)
    assert compiled.origin[compiled.service_index("express"), paris]
