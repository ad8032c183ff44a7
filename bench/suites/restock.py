"""Restock planning figure (issue 14): a plan for 50,000 SKUs x 300 nodes.

The state is synthetic: 12 warehouses and 288 stores over 4 regions, every SKU stocked
everywhere, demand velocity at every store position (0-3 units a day, written straight into
the demand arrays, which is what `record_units_sold` produces), store stock for 15-28 days
with 5 % of positions running low and 10 % holding excess, warehouses 0-400 units,
min/max cover targets per node kind, and no fulfilment network, so every ordered pair of nodes
is a lane at the rules' default cost (the widest search). The figure is the whole PlanRestock
computation: the writer's part (`restock_inputs`) plus the plan (`plan_restock`), median of
the trials.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from atpd.core.commands import NodeKind, SetRules, UpsertNode
from atpd.core.limits import Limits
from atpd.core.restock import plan_restock, restock_inputs
from atpd.core.restock_kernels import warm_up
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND
from atpd.core.transfers import DAY_MS
from bench.registry import Context, Figure, Target, benchmark

NOW_MS = 20_400 * DAY_MS
REGIONS = ("EU", "AM", "APAC", "MEA")
RULES = """
version = "bench-restock"
[defaults]
channel = "web"
segment = "standard"
[restock]
min_shipment_units = 10
default_shipment_cost = 40.0
unit_cost = 0.5
[[restock.targets]]
kinds = ["STORE"]
min_days = 7
max_days = 21
keep_units = 1
[[restock.targets]]
kinds = ["WAREHOUSE"]
min_days = 0
max_days = 0
"""


def build_state(sku_count: int, node_count: int) -> AtpState:
    state = AtpState(Limits(initial_node_capacity=512, initial_sku_capacity=sku_count))
    warehouses = node_count // 25
    for i in range(node_count):
        region = REGIONS[i % len(REGIONS)]
        kind = NodeKind.WAREHOUSE if i < warehouses else NodeKind.STORE
        state.apply(UpsertNode(f"N{i:04d}", kind, (region, f"C{i % 40}")), NOW_MS)
    state.apply(SetRules(RULES), NOW_MS)
    names = [f"SKU-{i:06d}" for i in range(sku_count)]
    state.skus.intern_many(names)
    state.stock.ensure(sku_count, node_count)
    random = np.random.default_rng(14)
    # Store velocity 0-3 units a day; stock for 15-28 days (within min/max cover at the end of
    # the 7-day horizon), except 5 % of store positions running low (0-6 days) and 10 %
    # holding excess (40-80 days); warehouses hold 0-400 units and sell nothing.
    rates = random.uniform(0.0, 3.0, (sku_count, node_count))
    rates[:, :warehouses] = 0.0
    days = random.uniform(15.0, 28.0, (sku_count, node_count))
    draw = random.random((sku_count, node_count))
    days[draw < 0.05] = random.uniform(0.0, 6.0, int((draw < 0.05).sum()))
    days[draw > 0.9] = random.uniform(40.0, 80.0, int((draw > 0.9).sum()))
    on_hand = np.round(rates * days).astype(np.int32)
    on_hand[:, :warehouses] = random.integers(0, 400, (sku_count, warehouses), dtype=np.int32)
    state.stock.cells[:sku_count, FIELD_ON_HAND, :node_count] = on_hand
    state.stock.present[:sku_count, :node_count] = 1
    state.stock.position_count = sku_count * node_count
    book = state.demand
    for row in range(sku_count):
        book.slot(row, node_count)
    book.rate[:sku_count, :node_count] = rates
    book.last[:sku_count, :node_count] = np.where(rates > 0, NOW_MS - DAY_MS, 0)
    return state


@benchmark(
    "restock_plan_seconds",
    "s",
    Target("<=", 5.0),
    "PlanRestock for 50,000 SKUs x 300 nodes (every node pair a lane): writer copy + plan.",
)
def restock_plan_seconds(context: Context) -> Figure:
    """PlanRestock for 50,000 SKUs x 300 nodes: the writer's copy plus the plan, median."""
    sku_count = context.size(50_000, 2_000)
    node_count = context.size(300, 60)
    context.log(f"restock: building {sku_count} SKUs x {node_count} nodes")
    state = build_state(sku_count, node_count)
    warm_up()
    copies, totals, cpu = [], [], []
    plan = None
    for _ in range(context.size(3, 2)):
        started, started_cpu = time.perf_counter(), time.process_time()
        inputs = restock_inputs(state, "", "", 7, NOW_MS // DAY_MS, NOW_MS)
        copied = time.perf_counter()
        plan = plan_restock(inputs)
        finished = time.perf_counter()
        copies.append(copied - started)
        totals.append(finished - started)
        cpu.append(time.process_time() - started_cpu)
    assert plan is not None
    return Figure(
        statistics.median(totals),
        {
            "skus": sku_count,
            "nodes": node_count,
            "writer_part_s_p50": round(statistics.median(copies), 3),
            "cpu_s_p50": round(statistics.median(cpu), 2),
            "lanes": len(plan.lane_from),
            "moves": plan.move_count,
            "units": plan.total_units,
            "receivers": plan.receivers,
            "receivers_unmet": plan.receivers_unmet,
            "truncated_at_max_restock_moves": plan.truncated,
            "trials": len(totals),
        },
        "in-process, wall clock (cpu_s: this process's CPU time) on a shared 2-core machine "
        "under heavy load from other jobs; median of the trials",
    )
