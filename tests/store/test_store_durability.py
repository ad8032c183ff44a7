"""Store records and amended carts survive a restart: journal replay alone, and a snapshot,
each recover an equal digest (receipts, discrepancies, units to inspect, loads, stock); a
refused sale leaves nothing in the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from persistence.server_support import DurableEngine, FakeClock, recovered_state

from atpd.config import Config
from atpd.core.commands import AddSupply, Command, Line, NodeKind, Reserve, SetStock, UpsertNode
from atpd.core.commands_amend import AmendReservation
from atpd.core.commands_store import (
    Exchange,
    NodeLoad,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    ReturnLine,
    SaleLine,
    SupplyLoad,
)
from atpd.core.supply import SupplyKind

NOW_MS = 1_700_000_000_000


def history() -> list[tuple[int, Command]]:
    def sale(receipt_id: str, quantity: int, force: bool, at_ms: int = 0) -> RecordSale:
        return RecordSale(receipt_id, "ST-1", (SaleLine("bag", quantity),), force, at_ms)

    return [
        (0, UpsertNode("ST-1", NodeKind.STORE, ("EU", "FR", "Paris"))),
        (0, SetStock("bag", "ST-1", 1, 1)),
        (1_000, sale("r-1", 2, True, NOW_MS + 500)),
        (1_000, sale("r-2", 5, False)),  # refused: INSUFFICIENT_STOCK, nothing journaled
        (
            1_000,
            RecordOfflineSales(
                (sale("q-1", 1, False, NOW_MS - 60_000), sale("r-1", 2, True, NOW_MS + 500))
            ),
        ),
        (
            1_000,
            RecordReturn("ret-1", "ST-1", (ReturnLine("scarf", 3, True), ReturnLine("bag", 1))),
        ),
        (1_000, Exchange("x-1", "ST-1", (ReturnLine("bag", 1),), (SaleLine("belt", 1),), True)),
        (1_000, ReleaseInspection("rel-1", "scarf", "ST-1", 2, True)),
        (1_000, Reserve("cart", (Line("bag", "ST-1", 1),), 60_000)),
        (1_000, AmendReservation("cart", (Line("bag", "ST-1", 2),), 90_000)),
        (1_000, NodeLoad("nodes-1", (UpsertNode("ST-2", NodeKind.OUTLET, ("EU", "IT")),))),
        (
            1_000,
            SupplyLoad(
                "supply-1",
                (AddSupply("PO-1", "bag", "ST-2", 4, NOW_MS + 86_400_000, SupplyKind.TRANSFER),),
            ),
        ),
    ]


@pytest.mark.parametrize("final_snapshot", [False, True], ids=["journal", "snapshot"])
def test_store_records_survive_restart(tmp_path: Path, final_snapshot: bool) -> None:
    """Recovery by journal replay, or from the final snapshot, gives an equal digest."""
    config = Config(data_dir=tmp_path, fsync="always")

    async def run() -> str:
        durable = DurableEngine(config, FakeClock(NOW_MS))
        applied, rejected = await durable.run(history())
        assert (applied, rejected) == (len(history()), 0)
        durable.state.check_invariants()
        assert len(durable.state.store.discrepancies) == 3
        digest = durable.state.digest()
        await durable.close(final_snapshot=final_snapshot)
        return digest

    live = asyncio.run(run())
    recovered = recovered_state(config)
    recovered.check_invariants()
    assert recovered.store.inspection == {("scarf", "ST-1"): 1}
    assert [d.receipt_id for d in recovered.store.discrepancies] == ["r-1", "q-1", "x-1"]
    assert [x.quantity for x in recovered.reservations["cart"].lines] == [2]
    assert len(recovered.store.loads) == 2 and len(recovered.supply.by_id) == 1
    assert recovered.digest() == live
