"""Network and carrier capacity survive a restart: journal replay alone, and a snapshot, each
recover an equal digest; a refused network leaves nothing in the journal. The demo network
applies to the demo nodes, and at a first `--demo` start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from persistence.server_support import DurableEngine, FakeClock, recovered_state

from atpd.config import Config
from atpd.core.commands import Command, SetCarrierCapacity, SetNetwork, UpsertNode
from atpd.core.handlers_network import compiled_network, slots_left
from atpd.core.network import NetworkError
from atpd.core.results import InvalidCommand
from atpd.core.state import AtpState
from atpd.demo.dataset import demo_nodes
from atpd.service.network_start import DEMO_NETWORK, apply_network_at_start
from atpd.service.server import ServeOptions

from .support import DAY_MS, NETWORK, NODES, NOW_MS, SOURCE


def history() -> list[tuple[int, Command]]:
    commands: list[tuple[int, Command]] = [
        (0, UpsertNode(node_id, kind, geo, ships=ships, pickup=pickup))
        for node_id, (kind, geo, ships, pickup) in NODES.items()
    ]
    commands += [
        (1_000, SetNetwork(NETWORK, SOURCE)),
        (1_000, SetCarrierCapacity("express", "WH-1", "2026-12-01", 4)),
        (1_000, SetCarrierCapacity("express", "ST-NYC", "2026-12-02", 0)),
        (1_000, SetCarrierCapacity("courier", "ST-LON", "2026-11-30", 2)),
        (1_000, SetNetwork(NETWORK.replace('"n1"', '"n2"'), "second.toml")),
        (1_000, SetNetwork("version = 3", "bad.toml")),  # refused: nothing journaled
        (DAY_MS, SetCarrierCapacity("express", "WH-1", "2026-12-01", 5)),
    ]
    return commands


def config_for(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, fsync="always")


def run_history(config: Config, *, final_snapshot: bool) -> str:
    async def run() -> str:
        durable = DurableEngine(config, FakeClock(NOW_MS))
        applied, rejected = await durable.run(history())
        assert (applied, rejected) == (len(history()) - 1, 1)
        durable.state.check_invariants()
        digest = durable.state.digest()
        await durable.close(final_snapshot=final_snapshot)
        return digest

    return asyncio.run(run())


def check_recovered(state: AtpState) -> None:
    state.check_invariants()
    assert state.network.version == "n2" and state.network.source == "second.toml"
    assert slots_left(state, "express", "WH-1", (NOW_MS + DAY_MS) // DAY_MS) == 5
    assert len(state.carrier_capacity) == 3


@pytest.mark.parametrize("final_snapshot", [False, True], ids=["journal", "snapshot"])
def test_network_and_capacity_survive_restart(tmp_path: Path, final_snapshot: bool) -> None:
    """Recovery by journal replay, or from the final snapshot, gives an equal digest."""
    config = config_for(tmp_path)
    live = run_history(config, final_snapshot=final_snapshot)
    recovered = recovered_state(config)
    check_recovered(recovered)
    assert recovered.digest() == live


def test_demo_network_applies_to_demo_nodes() -> None:
    """The demo network names every demo node, reaches every zone, and compiles."""
    state = AtpState()
    for command in demo_nodes():
        state.apply(command, NOW_MS)
    state.apply(SetNetwork(DEMO_NETWORK.read_text(), str(DEMO_NETWORK)), NOW_MS)
    network = state.network
    assert {n.node_id for n in network.nodes} == set(state.node_ids.names)
    assert 4 <= len(network.services) <= 6
    compiled = compiled_network(state)
    assert compiled.in_network.all()
    assert (compiled.transit_days.max(axis=0) >= 0).all(), "a zone no service reaches"
    assert compiled.origin.any(axis=1).all(), "a service with no origin"
    assert compiled.zone_ids[compiled.resolve_destination("FR", "75008")] == "fr-paris"
    assert compiled.zone_ids[compiled.resolve_destination("GB", "SW1A 1AA")] == "gb-london"
    assert compiled.zone_ids[compiled.resolve_destination("US", "10001")] == "us-nyc"
    courier = compiled.service_index("same-day-courier")
    assert set(compiled.service_ids) >= {"express-air", "road-standard", "same-day-courier"}
    paris = state.node_ids.get("ST-PAR-01")
    assert compiled.origin[courier, paris]
    assert slots_left(state, "same-day-courier", "ST-PAR-01", NOW_MS // DAY_MS) > 0
    assert compiled.open_weekdays[paris] & (1 << 6) == 0, "stores are closed on Sundays"


def test_demo_network_at_first_demo_start(tmp_path: Path) -> None:
    """A --demo start without a network applies the demo network (journaled); a second start
    with the same text changes nothing; a configured bad file is refused naming the key."""
    config = config_for(tmp_path)

    async def run() -> None:
        durable = DurableEngine(config, FakeClock(NOW_MS))
        await durable.run([(0, command) for command in demo_nodes()])
        await apply_network_at_start(durable.engine, config, ServeOptions(demo=True))
        assert durable.state.network.source == str(DEMO_NETWORK)
        digest = durable.state.digest()
        await apply_network_at_start(durable.engine, config, ServeOptions(demo=True))
        assert durable.state.digest() == digest
        bad = tmp_path / "bad.toml"
        bad.write_text(DEMO_NETWORK.read_text().replace("lead_days = 2", "lead_days = -2"))
        with pytest.raises(NetworkError, match=r"bad\.toml: lanes\[0\]\.lead_days"):
            await apply_network_at_start(
                durable.engine, Config(data_dir=tmp_path, network_file=bad), ServeOptions()
            )
        assert durable.state.network.source == str(DEMO_NETWORK)
        await durable.close(final_snapshot=False)

    asyncio.run(run())
    assert recovered_state(config).network.source == str(DEMO_NETWORK)


def test_refused_network_is_invalid_command() -> None:
    """The core refuses a bad network with InvalidCommand (INVALID_ARGUMENT at the edge)."""
    state = AtpState()
    with pytest.raises(InvalidCommand, match=r"network: x\.toml: version: missing"):
        state.apply(SetNetwork("[co2]", "x.toml"), NOW_MS)
