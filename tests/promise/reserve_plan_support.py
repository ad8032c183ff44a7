"""Builders for reserving promised plans by hand (the promise search is not needed)."""

from __future__ import annotations

import datetime

from network.support import NETWORK, NOW_MS, networked_world

from atpd.core.commands import Line, Reserve, SetCarrierCapacity, SetStock
from atpd.core.network_compile import epoch_day
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.core.plan_holds import plan_lines
from atpd.core.results import ReserveResult
from atpd.core.state import AtpState

SHIP_DATE = "2026-12-01"
SHIP_DAY = epoch_day(datetime.date.fromisoformat(SHIP_DATE))
TTL_MS = 60_000


def plan_world(pick_capacity: int = 40, slots: int | None = None) -> AtpState:
    """The network test world with stock of A and B at WH-1 and ST-PAR; ST-PAR and the other
    stores pick `pick_capacity` orders a day; express at WH-1 has `slots` on SHIP_DATE."""
    text = NETWORK.replace("pick_capacity_orders = 40", f"pick_capacity_orders = {pick_capacity}")
    state = networked_world(text)
    for sku in ("A", "B", "C"):
        for node_id in ("WH-1", "ST-PAR"):
            state.apply(SetStock(sku, node_id, 100, 1), NOW_MS)
    if slots is not None:
        state.apply(SetCarrierCapacity("express", "WH-1", SHIP_DATE, slots), NOW_MS)
    return state


def two_shipment_plan(quantity: int = 1) -> Plan:
    """Three lines in two shipments: A and B by express from WH-1, C by courier from ST-PAR."""
    return Plan(
        (
            Shipment(
                "WH-1",
                "express",
                SHIP_DAY,
                (PlannedLine("A", quantity), PlannedLine("B", quantity)),
            ),
            Shipment("ST-PAR", "courier", SHIP_DAY, (PlannedLine("C", quantity),)),
        ),
        "fr-paris",
        "web",
        "",
    )


def pickup_plan() -> Plan:
    return Plan(
        (Shipment("ST-PAR", "", SHIP_DAY, (PlannedLine("A", 1),)),), "pickup:ST-PAR", "web", ""
    )


def reserve_plan_command(reservation_id: str, plan: Plan, ttl_ms: int = TTL_MS) -> Reserve:
    return Reserve(
        reservation_id,
        plan_lines(plan),
        ttl_ms,
        channel=plan.channel,
        segment=plan.segment,
        plan=plan,
    )


def reserve_plan(
    state: AtpState, reservation_id: str, plan: Plan, now_ms: int = NOW_MS
) -> ReserveResult:
    result: ReserveResult = state.apply(reserve_plan_command(reservation_id, plan), now_ms)
    return result


def lines_of(plan: Plan) -> tuple[Line, ...]:
    return plan_lines(plan)
