"""Reservations of promised plans survive a restart: the slot and pick holds (and slots spent
by fulfilment) recover by journal replay alone and from a snapshot with an equal digest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from network.support import NETWORK, NODES, NOW_MS, SOURCE
from persistence.server_support import DurableEngine, FakeClock, recovered_state

from atpd.config import Config
from atpd.core.commands import (
    Command,
    Fulfil,
    Release,
    SetCarrierCapacity,
    SetNetwork,
    SetStock,
    UpsertNode,
)
from atpd.core.handlers_network import slots_left

from .reserve_plan_support import (
    SHIP_DATE,
    SHIP_DAY,
    pickup_plan,
    reserve_plan_command,
    two_shipment_plan,
)


def history() -> list[tuple[int, Command]]:
    commands: list[tuple[int, Command]] = [
        (0, UpsertNode(node_id, kind, geo, ships=ships, pickup=pickup))
        for node_id, (kind, geo, ships, pickup) in NODES.items()
    ]
    commands += [(0, SetNetwork(NETWORK, SOURCE))]
    commands += [
        (0, SetStock(sku, node_id, 50, 1)) for sku in "ABC" for node_id in ("WH-1", "ST-PAR")
    ]
    commands += [
        (0, SetCarrierCapacity("express", "WH-1", SHIP_DATE, 3)),
        (1, reserve_plan_command("r1", two_shipment_plan())),
        (1, reserve_plan_command("r2", two_shipment_plan(2))),
        (1, reserve_plan_command("r3", pickup_plan())),
        (1, reserve_plan_command("r4", two_shipment_plan())),
        (1, reserve_plan_command("r5", two_shipment_plan())),  # PROMISE_CHANGED: no slot left
        (2, Release("r1")),
        (2, Fulfil("r2")),
    ]
    return commands


@pytest.mark.parametrize("final_snapshot", [False, True], ids=["journal", "snapshot"])
def test_plan_holds_survive_restart(tmp_path: Path, final_snapshot: bool) -> None:
    """Recovery by journal replay, or from the final snapshot, gives an equal digest and the
    same slots left."""
    config = Config(data_dir=tmp_path, fsync="always")

    async def run() -> str:
        durable = DurableEngine(config, FakeClock(NOW_MS))
        applied, rejected = await durable.run(history())
        assert rejected == 0, applied
        durable.state.check_invariants()
        assert "r5" not in durable.state.reservations
        digest = durable.state.digest()
        await durable.close(final_snapshot=final_snapshot)
        return digest

    live = asyncio.run(run())
    recovered = recovered_state(config)
    recovered.check_invariants()
    assert recovered.digest() == live
    entry = recovered.carrier_capacity.get("express", "WH-1", SHIP_DAY)
    assert entry is not None and (entry.held, entry.used) == (1, 1)
    assert slots_left(recovered, "express", "WH-1", SHIP_DAY) == 1
    assert recovered.reservations["r4"].plan == two_shipment_plan()
