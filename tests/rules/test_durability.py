"""Durability of rules, supply and protected holds: a state recovered through a snapshot
(export_state -> snapshot file -> import_state), through journal replay (codec encode/decode of
every command, replayed by persistence.recovery.replay), or both, equals the original: same
digest, same protection consumption, same answers for every caller, and it goes on the same."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atpd.core.commands import (
    AddSupply,
    CancelSupply,
    Command,
    Confirm,
    Fulfil,
    Line,
    ReceiveSupply,
    Release,
    ReservationKind,
    Reserve,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.results import CommandRejected, InvalidCommand
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind
from atpd.persistence.codec import decode_command, encode_command
from atpd.persistence.framing import Record
from atpd.persistence.recovery import replay
from atpd.persistence.snapshot_file import load_snapshot, write_snapshot
from atpd.persistence.state_snapshot import export_state, import_state

from .support import HOUR_MS, NODES, rules_text

SKUS = ("BAG-1", "WCH-1")
CALLERS = (("web", "standard"), ("web", "vip"), ("store", "standard"), ("store", "vip"))
FLAGSHIP = 'name = "flagship"\nnodes = { tags = ["flagship"] }\nunits = {units}\nfor = ["*/vip"]'
WATCHES = (
    'name = "watches"\nskus = ["WCH-"]\nnodes = { kinds = ["WAREHOUSE"] }\npercent = 50\n'
    'for = ["store/*", "*/vip"]'
)
SUPPLY = {
    "segments.vip": 'supply = { kinds = ["PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT"] }',
    "channels.web": 'supply = { kinds = ["PURCHASE_ORDER"], horizon_hours = 48 }',
}
RULES_A = rules_text(SUPPLY, (FLAGSHIP.replace("{units}", "3"), WATCHES), version="A")
RULES_B = rules_text(SUPPLY, (WATCHES, FLAGSHIP.replace("{units}", "2")), version="B")
RULES_C = rules_text(SUPPLY, (WATCHES,), version="C")


class Recorder:
    """Applies commands as the engine does and keeps the journal it would write: each command
    that changed something, and a Tick for one that changed nothing (or was refused) but
    moved time."""

    def __init__(self, state: AtpState) -> None:
        self.state = state
        self.records: list[Record] = []

    def _journal(self, command: Command, now_ms: int) -> None:
        self.records.append(Record(len(self.records) + 1, now_ms, encode_command(command)))

    def apply(self, command: Command, now_ms: int) -> Any:
        try:
            result = self.state.apply(command, now_ms)
        except CommandRejected:
            if self.state.time_moved:
                self._journal(Tick(), now_ms)
            raise
        if result.changed:
            self._journal(command, now_ms)
        elif self.state.time_moved:
            self._journal(Tick(), now_ms)
        return result


def reserve(
    reservation_id: str, *lines: tuple[str, str, int], caller: tuple[str, str], ttl_ms: int = 60_000
) -> Reserve:
    return Reserve(
        reservation_id,
        tuple(Line(*line) for line in lines),
        ttl_ms,
        ReservationKind.CART,
        *caller,
    )


def history(recorder: Recorder) -> list[int]:
    """A day of the shop: rules, supply, protected holds, receipts, a swap that reorders and
    resizes protections, expiries and a refused rule file. Returns the record count at a few
    points worth snapshotting."""
    cuts = []
    apply = recorder.apply
    for node_id, (kind, geo_path, tags) in NODES.items():
        apply(UpsertNode(node_id, kind, geo_path, tags=tags), 0)
    sequence = 0
    for sku in SKUS:
        for node_id in NODES:
            sequence += 1
            apply(SetStock(sku, node_id, 10, sequence, 1), 1_000)
    apply(SetRules(RULES_A, "a.toml"), 2_000)
    cuts.append(len(recorder.records))
    apply(AddSupply("po", "BAG-1", "st-par", 4, 30 * HOUR_MS, SupplyKind.PURCHASE_ORDER), 3_000)
    apply(AddSupply("tr", "WCH-1", "wh-par", 3, 10 * HOUR_MS, SupplyKind.TRANSFER), 3_000)
    apply(
        AddSupply("ret", "BAG-1", "st-ber", 2, 5 * HOUR_MS, SupplyKind.RETURN_IN_TRANSIT),
        3_000,
    )
    apply(
        reserve("v1", ("BAG-1", "st-par", 5), ("WCH-1", "wh-par", 2), caller=("web", "vip")), 4_000
    )
    apply(reserve("s1", ("WCH-1", "wh-nyc", 6), caller=("store", "standard")), 4_000)
    apply(reserve("w1", ("BAG-1", "wh-par", 2), caller=("web", "standard"), ttl_ms=5_000), 4_500)
    apply(reserve("v2", ("BAG-1", "st-ber", 4), caller=("", "vip"), ttl_ms=20_000), 5_000)
    apply(Confirm("v1"), 5_000)
    apply(ReceiveSupply("tr", 1), 6_000)
    apply(CancelSupply("ret"), 6_500)
    cuts.append(len(recorder.records))
    apply(Fulfil("v1", (Line("BAG-1", "st-par", 1),)), 7_000)
    apply(reserve("v3", ("BAG-1", "st-par", 1), caller=("store", "vip")), 7_500)
    apply(Release("v3"), 7_600)
    apply(SetRules(RULES_B, "b.toml"), 8_000)
    apply(reserve("v4", ("WCH-1", "wh-nyc", 1), caller=("web", "vip")), 9_000)
    apply(SetRules(RULES_C, "c.toml"), 9_500)
    apply(reserve("s2", ("BAG-1", "st-par", 1), caller=("store", "standard")), 9_600)
    apply(SetRules(RULES_B, "b.toml"), 9_700)
    cuts.append(len(recorder.records))
    with pytest.raises(InvalidCommand):  # refused, but w1 expires on the way: a Tick
        apply(SetRules(rules_text({"channels.web": "bufer = 1"}), "bad.toml"), 12_000)
    apply(ReceiveSupply("po"), 13_000)
    apply(Tick(), 30_000)  # v2 expires
    cuts.append(len(recorder.records))
    return cuts


def consumption(state: AtpState) -> dict[tuple[str, str, str], int]:
    """Nonzero protection consumption by (protection name, SKU, node)."""
    names = [p.name for p in state.rules.protections]
    result = {}
    for row, table in state.protection_consumed.items():
        for index, name in enumerate(names):
            for node in state.nodes:
                units = int(table[index, node.index])
                if units:
                    result[(name, state.skus.name(row), node.node_id)] = units
    return result


def answers(state: AtpState) -> dict[tuple[str, str], list[list[int]]]:
    return {
        caller: state.availability(list(SKUS), channel=caller[0], segment=caller[1]).matrix.tolist()
        for caller in CALLERS
    }


def assert_same(recovered: AtpState, original: AtpState) -> tuple[str, str]:
    """Everything but the digest must match here; the digests are returned so that a test
    compares them last (a digest difference would otherwise hide every other check)."""
    recovered.check_invariants()
    assert consumption(recovered) == consumption(original)
    assert recovered.protected_reservations == original.protected_reservations
    assert recovered.rules.text == original.rules.text
    assert recovered.now_ms == original.now_ms
    assert {
        x: (s.quantity, s.received, s.eta_ms, s.kind) for x, s in recovered.supply.by_id.items()
    } == {x: (s.quantity, s.received, s.eta_ms, s.kind) for x, s in original.supply.by_id.items()}
    for reservation_id, reservation in original.reservations.items():
        other = recovered.reservations[reservation_id]
        assert (other.status, other.held, other.channel, other.segment) == (
            reservation.status,
            reservation.held,
            reservation.channel,
            reservation.segment,
        )
        if reservation.status.is_open:
            assert other.protected == reservation.protected
    assert answers(recovered) == answers(original)
    return recovered.digest(), original.digest()


def go_on(state: AtpState) -> None:
    """The same commands after recovery, touching protected holds and supply."""
    for reservation_id in ("v1", "v4", "s1", "s2"):
        if state.reservations[reservation_id].status.is_open:
            state.apply(Release(reservation_id), 40_000)
    state.apply(reserve("v9", ("BAG-1", "st-par", 3), caller=("web", "vip")), 41_000)
    state.apply(SetRules(RULES_A, "a.toml"), 42_000)
    state.apply(ReceiveSupply("tr"), 43_000)


@pytest.fixture
def recorded() -> Recorder:
    recorder = Recorder(AtpState())
    history(recorder)
    assert consumption(recorder.state), "the history must leave protected holds open"
    assert recorder.state.supply.by_id, "and open supply"
    return recorder


def snapshot_round_trip(state: AtpState, directory: Path, sequence: int) -> AtpState:
    arrays, blobs = export_state(state)
    path = write_snapshot(directory, sequence, arrays, blobs)
    loaded = load_snapshot(path)
    return import_state(loaded.arrays, loaded.blobs, state.limits)


def test_snapshot_round_trip_keeps_rules_supply_and_protected_holds(
    recorded: Recorder, tmp_path: Path
) -> None:
    """A snapshot file round trip keeps digest, consumption and answers; both go on alike."""
    original = recorded.state
    recovered = snapshot_round_trip(original, tmp_path, len(recorded.records))
    at_recovery = assert_same(recovered, original)
    go_on(original)
    go_on(recovered)
    after_more = assert_same(recovered, original)
    assert at_recovery[0] == at_recovery[1]
    assert after_more[0] == after_more[1]


def test_journal_replay_rebuilds_rules_supply_and_protected_holds(recorded: Recorder) -> None:
    """Replaying the codec-encoded journal rebuilds digest, consumption and answers."""
    recovered = AtpState()
    assert replay(recovered, iter(recorded.records)) == len(recorded.records)
    at_recovery = assert_same(recovered, recorded.state)
    go_on(recorded.state)
    go_on(recovered)
    after_more = assert_same(recovered, recorded.state)
    assert at_recovery[0] == at_recovery[1]
    assert after_more[0] == after_more[1]


@pytest.mark.parametrize("cut", range(4))
def test_snapshot_plus_journal_tail_equals_the_original(cut: int, tmp_path: Path) -> None:
    """A snapshot at any point plus the journal tail recovers the very same state."""
    recorder = Recorder(AtpState())
    snapshots: dict[int, Path] = {}
    original_apply = recorder.apply
    cuts: list[int] = []

    def apply_and_snapshot(command: Command, now_ms: int) -> Any:
        result = original_apply(command, now_ms)
        count = len(recorder.records)
        if count not in snapshots:
            arrays, blobs = export_state(recorder.state)
            snapshots[count] = write_snapshot(tmp_path / str(count), count, arrays, blobs)
        return result

    recorder.apply = apply_and_snapshot  # type: ignore[method-assign]
    cuts = history(recorder)
    at = cuts[cut]
    loaded = load_snapshot(snapshots[at])
    recovered = import_state(loaded.arrays, loaded.blobs)
    replay(recovered, iter(recorder.records[at:]))
    digests = assert_same(recovered, recorder.state)
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    "command",
    [
        SetRules(RULES_A, "a.toml"),
        SetRules("", ""),
        AddSupply("po-1", "BAG-1", "wh-par", 3, 1_700_000_000_000, SupplyKind.PURCHASE_ORDER),
        AddSupply("tr-1", "BAG-1", "wh-par", 1, 1, SupplyKind.TRANSFER),
        AddSupply("ret-1", "WCH-1", "st-par", 9, 5, SupplyKind.RETURN_IN_TRANSIT),
        ReceiveSupply("po-1"),
        ReceiveSupply("po-1", 2),
        CancelSupply("po-1"),
        reserve("r", ("BAG-1", "wh-par", 1), ("WCH-1", "st-par", 2), caller=("store", "vip")),
        reserve("r", ("BAG-1", "wh-par", 1), caller=("", "")),
    ],
    ids=lambda command: type(command).__name__,
)
def test_codec_round_trips_rules_and_supply_commands(command: Command) -> None:
    """Every rules and supply command (and a Reserve's caller) survives encode/decode exactly."""
    assert decode_command(encode_command(command)) == command


def test_replay_of_a_rule_swap_remaps_consumption_like_the_original() -> None:
    """Replay of a protection-reordering swap keeps consumption per name, not per index."""
    recorder = Recorder(AtpState())
    apply: Callable[[Command, int], Any] = recorder.apply
    for node_id, (kind, geo_path, tags) in NODES.items():
        apply(UpsertNode(node_id, kind, geo_path, tags=tags), 0)
    apply(SetStock("WCH-1", "wh-par", 10, 1), 0)
    apply(SetStock("WCH-1", "st-par", 10, 1), 0)
    apply(SetRules(RULES_A, "a.toml"), 0)
    apply(reserve("v", ("WCH-1", "wh-par", 4), ("WCH-1", "st-par", 3), caller=("web", "vip")), 1)
    apply(SetRules(RULES_B, "b.toml"), 2)
    recovered = AtpState()
    replay(recovered, iter(recorder.records))
    assert (
        consumption(recovered)
        == consumption(recorder.state)
        == {
            ("watches", "WCH-1", "wh-par"): 4,
            ("flagship", "WCH-1", "st-par"): 3,  # B shrank it to 2 units: the holds stay
        }
    )
    digests = assert_same(recovered, recorder.state)
    assert digests[0] == digests[1]


@pytest.mark.parametrize("close", ["release", "expire", "fulfil"])
def test_snapshot_of_a_closed_hold_that_took_protected_units_keeps_the_digest(close: str) -> None:
    """A closed hold that took protected units keeps the digest through a snapshot."""
    state = AtpState()
    for node_id, (kind, geo_path, tags) in NODES.items():
        state.apply(UpsertNode(node_id, kind, geo_path, tags=tags), 0)
    state.apply(SetStock("BAG-1", "st-par", 10, 1), 0)
    state.apply(SetRules(RULES_A, "a.toml"), 0)
    state.apply(reserve("v", ("BAG-1", "st-par", 2), caller=("web", "vip"), ttl_ms=1_000), 0)
    if close == "release":
        state.apply(Release("v"), 10)
    elif close == "fulfil":
        state.apply(Fulfil("v"), 10)
    else:
        state.apply(Tick(), 1_000)
    assert not state.reservations["v"].status.is_open
    arrays, blobs = export_state(state)
    recovered = import_state(arrays, blobs)
    assert recovered.digest() == state.digest()
