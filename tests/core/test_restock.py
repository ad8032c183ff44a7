"""Restocking in the core: demand velocity, [restock] rules, plans and their application."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.commands import Fulfil, Line, NodeKind, Reserve, SetRules, SetStock, UpsertNode
from atpd.core.demand import DEMAND_HALF_LIFE_DAYS
from atpd.core.restock import plan_restock, plan_transfers, restock_inputs
from atpd.core.results import FailedPrecondition, InvalidCommand
from atpd.core.rules import RulesError, parse_rules
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED
from atpd.core.transfer_commands import ApplyRestock
from atpd.core.transfers import DAY_MS

NOW_MS = 20_000 * DAY_MS
TODAY = "2024-10-04"
NODES = (
    ("WH", NodeKind.WAREHOUSE, ("EU", "IT")),
    ("S1", NodeKind.STORE, ("EU", "FR")),
    ("S2", NodeKind.STORE, ("EU", "FR")),
    ("S3", NodeKind.STORE, ("EU", "DE")),
)


def rules(min_days: float = 7, max_days: float = 14, keep: int = 1, shipment: int = 1) -> str:
    return f"""
version = "r"
[defaults]
channel = "web"
segment = "standard"
[restock]
min_shipment_units = {shipment}
default_shipment_cost = 10.0
unit_cost = 0.5
[[restock.targets]]
kinds = ["STORE"]
min_days = {min_days}
max_days = {max_days}
keep_units = {keep}
[[restock.targets]]
kinds = ["WAREHOUSE"]
min_days = 0
max_days = 0
"""


def world(text: str) -> AtpState:
    state = AtpState()
    for node_id, kind, geo in NODES:
        state.apply(UpsertNode(node_id, kind, geo), NOW_MS)
    state.apply(SetRules(text), NOW_MS)
    return state


def sell(state: AtpState, sku: str, node_id: str, units: int, at_ms: int, tag: str) -> None:
    """Sell units (reserve then fulfil, restoring the count so stock stays as set)."""
    state.apply(Reserve(f"sale-{tag}", (Line(sku, node_id, units),), 60_000), at_ms)
    state.apply(Fulfil(f"sale-{tag}"), at_ms)


def test_velocity_halves_after_the_half_life() -> None:
    """A sale adds units / tau; the rate decays by half over DEMAND_HALF_LIFE_DAYS."""
    state = world(rules())
    state.apply(SetStock("bag", "S1", 100, 1), NOW_MS)
    sell(state, "bag", "S1", 10, NOW_MS, "a")
    node = state.node_ids.get("S1")
    first = state.demand.velocity(state.skus.get("bag"), 4, NOW_MS)[node]
    later = state.demand.velocity(
        state.skus.get("bag"), 4, NOW_MS + int(DEMAND_HALF_LIFE_DAYS * DAY_MS)
    )[node]
    assert first > 0 and math.isclose(later, first / 2)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[restock]\nbogus = 1", "restock.bogus"),
        ("[restock]\nmin_shipment_units = 0", "restock.min_shipment_units"),
        ("[restock]\nunit_cost = -1.0", "restock.unit_cost"),
        ("[restock]\ndefault_lead_days = 400", "restock.default_lead_days"),
        ('[[restock.targets]]\nkinds = ["SHOP"]\nmin_days = 1\nmax_days = 2', "kinds[0]"),
        ("[[restock.targets]]\nmin_days = 5\nmax_days = 2", "restock.targets[0].max_days"),
        ("[[restock.targets]]\nmin_days = 5", "restock.targets[0]"),
        ("[[restock.targets]]\nmin_days = 1\nmax_days = 2\nkeep_units = -1", "keep_units"),
        ("[restock]\ntargets = 3", "restock.targets"),
    ],
)
def test_bad_restock_rules_are_refused_naming_the_key(text: str, key: str) -> None:
    """Each bad [restock] rule is refused with its key path; the rules in force stay."""
    document = f'version = "x"\n[defaults]\nchannel = "web"\nsegment = "s"\n{text}\n'
    with pytest.raises(RulesError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(document)
    state = world(rules())
    before = state.digest()
    with pytest.raises(InvalidCommand, match="restock"):
        state.apply(SetRules(document), NOW_MS)
    assert state.digest() == before


def cover_now(state: AtpState, sku: str, node_id: str, horizon_days: int) -> float:
    """Days of cover at the horizon's end, recomputed from the state (-1: no demand)."""
    row, node = state.skus.get(sku), state.node_ids.get(node_id)
    cells = state.stock.cells
    free = int(cells[row, FIELD_ON_HAND, node]) - int(cells[row, FIELD_RESERVED, node])
    inbound = sum(
        x.quantity
        for x in state.supply.by_sku.get(row, ())
        if x.node_index == node and x.eta_ms >= state.now_ms
    )
    velocity = state.demand.velocity(row, len(state.nodes), state.now_ms)[node]
    if velocity <= 0:
        return -1.0
    return float((max(free, 0) + inbound - velocity * horizon_days) / velocity)


@settings(max_examples=25, deadline=None)
@given(
    stock=st.lists(st.integers(0, 60), min_size=4, max_size=4),
    safety=st.lists(st.integers(0, 10), min_size=4, max_size=4),
    sales=st.lists(st.integers(0, 12), min_size=3, max_size=3),
    keep=st.integers(0, 5),
    shipment=st.integers(1, 8),
)
def test_plan_respects_floors_and_apply_changes_cover_as_planned(
    stock: list[int], safety: list[int], sales: list[int], keep: int, shipment: int
) -> None:
    """A donor never goes below its safety stock, keep_units or max cover; each lane ships at
    least min_shipment_units; applying the plan changes every cover exactly as it said."""
    state = world(rules(keep=keep, shipment=shipment))
    for i, (node_id, _, _) in enumerate(NODES):
        state.apply(SetStock("bag", node_id, stock[i] + 12 + safety[i], 1, safety[i]), NOW_MS)
    for i, count in enumerate(sales):
        if count:
            sell(state, "bag", NODES[i + 1][0], count, NOW_MS, str(i))
    horizon = 7
    plan = plan_restock(restock_inputs(state, "", "", horizon, NOW_MS // DAY_MS, NOW_MS))
    cells = state.stock.cells
    row = state.skus.get("bag")
    for k in range(len(plan.lane_from)):
        assert int(plan.lane_units[k]) >= shipment
    shipments = plan.shipments(1000)
    for shipment_plan in shipments:
        node = state.node_ids.get(shipment_plan.from_node_id)
        free = int(cells[row, FIELD_ON_HAND, node]) - int(cells[row, FIELD_RESERVED, node])
        given_units = shipment_plan.units  # one SKU: one move per lane
        floor = max(safety[node], keep if node else 0)
        assert (
            free - sum(s.units for s in shipments if s.from_node_id == shipment_plan.from_node_id)
            >= floor
        )
        assert given_units > 0
        for move in shipment_plan.moves:
            if move.from_cover_after_days >= 0:
                assert move.from_cover_after_days >= 14 - 1e-9
    transfers = plan_transfers(plan, "P-1", TODAY, 100)
    if not transfers:
        return
    state.apply(ApplyRestock("P-1", transfers, plan.checks), NOW_MS)
    state.check_invariants()
    for shipment_plan in shipments:
        for move in shipment_plan.moves:
            for node_id, expected in (
                (shipment_plan.from_node_id, move.from_cover_after_days),
                (shipment_plan.to_node_id, move.to_cover_after_days),
            ):
                assert math.isclose(
                    cover_now(state, "bag", node_id, horizon), expected, abs_tol=1e-6
                )


def test_stale_plan_and_passed_ship_date_are_refused() -> None:
    """ApplyRestock after a position moved, or after its ship date, is FAILED_PRECONDITION."""
    state = world(rules())
    state.apply(SetStock("bag", "WH", 100, 1), NOW_MS)
    state.apply(SetStock("bag", "S1", 20, 1), NOW_MS)
    sell(state, "bag", "S1", 16, NOW_MS, "x")
    plan = plan_restock(restock_inputs(state, "", "", 7, NOW_MS // DAY_MS, NOW_MS))
    transfers = plan_transfers(plan, "P-1", TODAY, 100)
    assert transfers
    command = ApplyRestock("P-1", transfers, plan.checks)
    with pytest.raises(FailedPrecondition, match="ship date"):
        state.apply(command, NOW_MS + DAY_MS)
    sell(state, "bag", "S1", 1, NOW_MS + DAY_MS, "y")
    fresh = ApplyRestock("P-1", plan_transfers(plan, "P-1", "2024-10-05", 100), plan.checks)
    with pytest.raises(FailedPrecondition, match="stale"):
        state.apply(fresh, NOW_MS + DAY_MS)
