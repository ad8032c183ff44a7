"""The principal a reservation records survives a restart: journal replay and snapshots give it
back with an equal digest; journals and snapshots written before it existed still load, with
no principal; a record or snapshot with a bad principal is refused naming it."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from persistence.server_support import DurableEngine, FakeClock, recovered_state

from atpd.config import Config
from atpd.core.commands import (
    Command,
    Confirm,
    Line,
    Maker,
    NodeKind,
    Release,
    Reserve,
    SetStock,
    UpsertNode,
)
from atpd.core.state import AtpState
from atpd.persistence.codec import UndecodableRecord, decode_command, encode_command
from atpd.persistence.state_snapshot import SnapshotContentError, export_state, import_state
from atpd.v1 import journal_pb2, reservations_pb2

MAKERS: tuple[Maker | None, ...] = (
    Maker("till-paris", "pos", node_ids=("ST-PAR-01",)),
    Maker("web-checkout", "checkout", channels=("web",)),
    Maker("region-fr", "pos", geo_prefixes=("EU/FR",)),
    None,  # made with authentication off
)


def world() -> list[tuple[int, Command]]:
    return [
        (0, UpsertNode("ST-PAR-01", NodeKind.STORE, ("EU", "FR", "Paris"))),
        (1, SetStock("SKU-1", "ST-PAR-01", 10_000, 1)),
    ]


def traffic(prefix: str, count: int) -> list[tuple[int, Command]]:
    """Reservations by every maker, some confirmed and some released."""
    commands: list[tuple[int, Command]] = []
    for i in range(count):
        maker = MAKERS[i % len(MAKERS)]
        reservation_id = f"{prefix}-{i}"
        line = (Line("SKU-1", "ST-PAR-01", 1 + i % 3),)
        commands.append((5, Reserve(reservation_id, line, 600_000, maker=maker)))
        if i % 3 == 1:
            commands.append((1, Confirm(reservation_id)))
        if i % 5 == 2:
            commands.append((1, Release(reservation_id)))
    return commands


def makers_of(state: AtpState) -> dict[str, Maker | None]:
    return {rid: r.maker for rid, r in state.reservations.items()}


def config_for(data_dir: Path) -> Config:
    return Config(data_dir=data_dir, fsync="always")


async def snapshot(durable: DurableEngine) -> None:
    with warnings.catch_warnings():
        # The snapshot child is forked while the loop's helper threads exist.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        await durable.durability.snapshot()


def test_journal_replay_gives_back_every_principal(tmp_path: Path) -> None:
    """With no snapshot, replaying the journal reproduces each reservation's principal and the
    exact digest."""
    config = config_for(tmp_path)

    async def run() -> tuple[str, dict[str, Maker | None]]:
        durable = DurableEngine(config, FakeClock())
        await durable.run([*world(), *traffic("j", 40)])
        result = durable.state.digest(), makers_of(durable.state)
        await durable.close(final_snapshot=False)
        return result

    digest, makers = asyncio.run(run())
    assert not list(tmp_path.glob("snapshot-*.snap"))
    state = recovered_state(config)
    assert makers_of(state) == makers and set(makers.values()) == set(MAKERS)
    assert state.digest() == digest


@pytest.mark.parametrize("final_snapshot", [False, True], ids=["snapshot+tail", "final"])
def test_snapshot_gives_back_every_principal(tmp_path: Path, final_snapshot: bool) -> None:
    """A snapshot (with a journal tail after it, or taken at close) reproduces each
    reservation's principal and the exact digest."""
    config = config_for(tmp_path)

    async def run() -> tuple[str, dict[str, Maker | None]]:
        durable = DurableEngine(config, FakeClock())
        await durable.run([*world(), *traffic("a", 30)])
        await snapshot(durable)
        await durable.run(traffic("b", 30))
        result = durable.state.digest(), makers_of(durable.state)
        await durable.close(final_snapshot=final_snapshot)
        return result

    digest, makers = asyncio.run(run())
    assert list(tmp_path.glob("snapshot-*.snap"))
    state = recovered_state(config)
    assert makers_of(state) == makers
    assert state.digest() == digest


def test_the_digest_includes_the_principal() -> None:
    """Two states that differ only in who made a reservation have different digests."""
    digests = set()
    for maker in MAKERS:
        state = AtpState()
        for now_ms, (_, command) in enumerate(
            [*world(), (0, Reserve("r", (Line("SKU-1", "ST-PAR-01", 1),), 60_000, maker=maker))]
        ):
            state.apply(command, 1_000 + now_ms)
        digests.add(state.digest())
    assert len(digests) == len(MAKERS)


def test_a_journal_record_without_a_principal_replays() -> None:
    """A Reserve record as builds before principals wrote it (no reserve_principal) decodes
    to a Reserve with no principal, and encoding one without a principal writes none."""
    old = journal_pb2.JournalCommand(
        reserve=reservations_pb2.ReserveRequest(
            reservation_id="old-1",
            lines=[reservations_pb2.ReservationLine(sku="SKU-1", node_id="ST-PAR-01", quantity=2)],
            ttl_ms=60_000,
            channel="web",
        )
    ).SerializeToString()
    command = decode_command(old)
    assert command == Reserve("old-1", (Line("SKU-1", "ST-PAR-01", 2),), 60_000, channel="web")
    assert isinstance(command, Reserve) and command.maker is None
    written = journal_pb2.JournalCommand.FromString(encode_command(command))
    assert not written.HasField("reserve_principal")
    state = AtpState()
    for now_ms, (_, step) in enumerate([*world(), (0, command)]):
        state.apply(step, 1_000 + now_ms)
    assert state.reservations["old-1"].maker is None


def test_a_snapshot_without_principals_loads() -> None:
    """A snapshot written before principals were recorded (no principal entries) loads, every
    reservation without a principal, to the same digest."""
    state = AtpState()
    for now_ms, (_, command) in enumerate(world()):
        state.apply(command, 1_000 + now_ms)
    for now_ms, (_, command) in enumerate(traffic("s", 12)):
        if isinstance(command, Reserve):
            command = Reserve(command.reservation_id, command.lines, command.ttl_ms)
        state.apply(command, 2_000 + now_ms)
    arrays, blobs = export_state(state)
    del arrays["reservation_principal"], blobs["principals"]
    loaded = import_state(arrays, blobs)
    assert set(makers_of(loaded).values()) == {None}
    assert loaded.digest() == state.digest()


def test_a_bad_principal_is_refused_naming_it() -> None:
    """A journal record whose principal has an invalid node id, and a snapshot whose principal
    index is out of range, are refused with a reason naming the principal."""
    entry = journal_pb2.JournalCommand.FromString(
        encode_command(Reserve("r-1", (Line("SKU-1", "ST-PAR-01", 1),), 60_000, maker=MAKERS[0]))
    )
    entry.reserve_principal.node_ids[0] = "bad node\n"
    with pytest.raises(UndecodableRecord, match="principal node_ids"):
        decode_command(entry.SerializeToString())
    entry.reserve_principal.Clear()
    entry.reserve_principal.role = "pos"
    with pytest.raises(UndecodableRecord, match="principal name"):
        decode_command(entry.SerializeToString())
    state = AtpState()
    for now_ms, (_, command) in enumerate([*world(), *traffic("x", 4)]):
        state.apply(command, 1_000 + now_ms)
    arrays, blobs = export_state(state)
    arrays["reservation_principal"] = arrays["reservation_principal"] + 10
    with pytest.raises(SnapshotContentError, match="reservation_principal"):
        import_state(arrays, blobs)


names = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
makers = st.builds(
    Maker,
    name=names,
    role=st.sampled_from(["reader", "checkout", "pos", "loader", "admin"]),
    node_ids=st.lists(st.from_regex(r"[A-Z]{2}-[A-Z0-9]{1,6}", fullmatch=True), max_size=3).map(
        tuple
    ),
    geo_prefixes=st.lists(st.sampled_from(["EU", "EU/FR", "EU/FR/Paris", "NA/US"]), max_size=2).map(
        tuple
    ),
    channels=st.lists(names, max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(chosen=st.lists(st.none() | makers, min_size=1, max_size=6))
def test_principals_round_trip_through_journal_and_snapshot(chosen: list[Maker | None]) -> None:
    """Any valid principal comes back equal from a journal record and from a snapshot."""
    state = AtpState()
    for now_ms, (_, command) in enumerate(world()):
        state.apply(command, 1_000 + now_ms)
    for i, maker in enumerate(chosen):
        command = Reserve(f"p-{i}", (Line("SKU-1", "ST-PAR-01", 1),), 60_000, maker=maker)
        assert decode_command(encode_command(command)) == command
        state.apply(command, 2_000 + i)
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs)
    assert makers_of(loaded) == makers_of(state)
    assert loaded.digest() == state.digest()
