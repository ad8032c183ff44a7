"""The demo data set plans restocking: real till history, a [restock] section, donor floors kept."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from atpd.core.commands import NodeKind, SetRules
from atpd.core.restock import RestockPlan, plan_restock, restock_inputs
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from atpd.core.transfers import DAY_MS
from atpd.demo import demo_nodes, demo_positions, demo_skus, load_demo
from atpd.demo.dataset import demo_history

NOW_MS = 20_422 * DAY_MS + 9 * 3_600_000  # 2025-11-30 09:00 UTC
DEMO_RULES = Path(__file__).parents[2] / "src" / "atpd" / "demo" / "rules.toml"


@pytest.fixture(scope="module")
def demo() -> tuple[AtpState, RestockPlan]:
    state = AtpState()
    load_demo(state, NOW_MS)
    state.apply(SetRules(DEMO_RULES.read_text(encoding="utf-8"), "demo"), NOW_MS)
    plan = plan_restock(restock_inputs(state, "EU", "", 7, NOW_MS // DAY_MS, NOW_MS))
    return state, plan


def test_history_leaves_exactly_the_demo_stock_picture(demo: tuple[AtpState, RestockPlan]) -> None:
    """After the sales history every demo position holds its demo count, and no sale was short."""
    state, _ = demo
    positions = demo_positions()
    skus, node_ids = demo_skus(), [node.node_id for node in demo_nodes()]
    rows = np.array([state.skus.get(skus[i]) for i in positions.sku.tolist()])
    columns = np.array([state.node_ids.get(node_ids[i]) for i in positions.node.tolist()])
    assert (state.stock.cells[rows, FIELD_ON_HAND, columns] == positions.on_hand).all()
    assert not state.store.discrepancies
    assert len(demo_history()) > 10_000


def test_eu_plan_ships_to_stores_below_min_cover(demo: tuple[AtpState, RestockPlan]) -> None:
    """The EU plan is non-empty: warehouse-to-store lanes of at least 10 units, receivers met."""
    _, plan = demo
    assert plan.total_units > 0 and len(plan.lane_from) >= 5
    assert plan.receivers > plan.receivers_unmet
    assert (plan.lane_units >= 10).all()
    kinds = {node.node_id: node.kind for node in demo_nodes()}
    senders = Counter(kinds[plan.node_ids[int(k)]] for k in plan.lane_from)
    assert senders[NodeKind.WAREHOUSE] >= 5
    assert all(kinds[plan.node_ids[int(k)]] is NodeKind.STORE for k in plan.lane_to)


def test_eu_plan_never_takes_a_donor_below_its_floors(demo: tuple[AtpState, RestockPlan]) -> None:
    """Per donor position: what the plan takes leaves its safety stock, keep_units (store 1,
    warehouse 2) and the demo protections (20 % of warehouse watches, a flagship's last bag)."""
    state, plan = demo
    taken: Counter[tuple[str, str]] = Counter()
    for k in range(len(plan.lane_from)):
        donor = plan.node_ids[int(plan.lane_from[k])]
        for m in range(int(plan.lane_starts[k]), int(plan.lane_starts[k + 1])):
            taken[plan.sku_names[int(plan.move_sku[m])], donor] += int(plan.move_units[m])
    tags = {node.node_id: node.tags for node in demo_nodes()}
    cells = state.stock.cells
    for (sku, donor), units in taken.items():
        row, column = state.skus.get(sku), state.node_ids.get(donor)
        on_hand = int(cells[row, FIELD_ON_HAND, column])
        free = on_hand - int(cells[row, FIELD_RESERVED, column])
        warehouse = donor.startswith("WH-")
        floor = max(int(cells[row, FIELD_SAFETY, column]), 2 if warehouse else 1)
        if warehouse and sku.startswith("WCH-"):
            floor = max(floor, on_hand * 20 // 100)
        if "flagship" in tags[donor] and sku.startswith("BAG-"):
            floor = max(floor, 1)
        assert free - units >= floor, (sku, donor, free, units, floor)
