"""Transfers, restock applications and demand velocity survive a restart: journal-only
recovery and final-snapshot recovery both give back the live state's digest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from atpd.config import Config
from atpd.core.commands import (
    Command,
    Fulfil,
    Line,
    NodeKind,
    Reserve,
    SetRules,
    SetStock,
    UpsertNode,
)
from atpd.core.restock import plan_restock, plan_transfers, restock_inputs
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
    TransferItem,
)
from atpd.core.transfers import DAY_MS
from atpd.persistence.journal import FsyncPolicy
from atpd.persistence.recovery import recover

from .server_support import DurableEngine, FakeClock, recovered_state

TODAY = "2023-11-14"  # FakeClock's start
RULES = """
version = "d"
[defaults]
channel = "web"
segment = "standard"
[[restock.targets]]
kinds = ["STORE"]
min_days = 7
max_days = 14
[[restock.targets]]
kinds = ["WAREHOUSE"]
min_days = 0
max_days = 0
"""


def history() -> list[tuple[int, Command]]:
    return [
        (0, UpsertNode("WH", NodeKind.WAREHOUSE, ("EU", "IT"))),
        (0, UpsertNode("S1", NodeKind.STORE, ("EU", "FR"))),
        (0, UpsertNode("S2", NodeKind.STORE, ("EU", "FR"))),
        (0, SetRules(RULES)),
        (0, SetStock("bag", "WH", 200, 1)),
        (0, SetStock("bag", "S1", 30, 1)),
        (1, Reserve("sale-1", (Line("bag", "S1", 20),), 60_000)),
        (1, Fulfil("sale-1")),
        (1, CreateTransfer("T-1", "WH", "S2", (TransferItem("bag", 5),), TODAY)),
        (1, CreateTransfer("T-2", "WH", "S2", (TransferItem("bag", 2),), TODAY)),
        (1, CreateTransfer("T-3", "WH", "S1", (TransferItem("bag", 3),), TODAY)),
        (1, ShipTransfer("T-1")),
        (1, ReceiveTransfer("T-1", "R-1", (ReceivedItem("bag", 3, 1),))),
        (1, ShipTransfer("T-2")),
        (1, CancelTransfer("T-3")),
    ]


@pytest.mark.parametrize("final_snapshot", [False, True])
def test_transfer_records_recover_to_the_same_digest(tmp_path: Path, final_snapshot: bool) -> None:
    """Every transfer status, an applied restock plan and demand velocity recover exactly."""
    config = Config(data_dir=tmp_path, fsync="always")

    async def run() -> str:
        durable = DurableEngine(config, FakeClock())
        applied, rejected = await durable.run(history())
        assert rejected == 0, applied
        state = durable.state
        plan = plan_restock(restock_inputs(state, "", "", 7, state.now_ms // DAY_MS, state.now_ms))
        transfers = plan_transfers(plan, "RP-1", TODAY, 100)
        assert transfers, "the plan should restock S1"
        await durable.engine.execute(ApplyRestock("RP-1", transfers, plan.checks))
        state.check_invariants()
        digest = state.digest()
        await durable.close(final_snapshot=final_snapshot)
        return digest

    live_digest = asyncio.run(run())
    if final_snapshot:
        recovered = recover(
            tmp_path,
            limits=config.limits,
            fsync_policy=FsyncPolicy.ALWAYS,
            segment_bytes=config.journal_segment_bytes,
        )
        try:
            assert recovered.replayed == 0
            state = recovered.state
        finally:
            recovered.journal.close()
    else:
        state = recovered_state(config)
    state.check_invariants()
    assert state.digest() == live_digest
    assert len(state.demand) == 1 and len(state.transfers) >= 2
