"""Reserving a promised option in the core (issue 12 section 3): a 3-line, 2-shipment plan
(stock, one carrier slot and one pick of node capacity per shipment, re-checked by the writer)
on the demo data set with the demo network.
"""

from __future__ import annotations

import datetime as dt
import gc
import statistics
from time import perf_counter_ns

from atpd.core.commands import Release, Reserve, SetCarrierCapacity, SetNetwork, SetStock
from atpd.core.network_compile import EPOCH
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.core.plan_holds import plan_lines
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from atpd.service.network_start import DEMO_NETWORK
from bench import fixtures
from bench.registry import Context, Figure, Target, benchmark
from bench.timing import timer_overhead_ns

DAY_MS = 86_400_000
DEMO_NOW_MS = 1_000_000  # as bench/suites/core.py
WAREHOUSE, STORE = "WH-EU-01", "ST-PAR-01"
BATCH = 50  # released (untimed) after each batch: the store picks 80 orders a day


def _stock(state: AtpState, sku: str, node_id: str, now_ms: int) -> None:
    """Plenty of stock for the plan's line (demo stores hold a few units per SKU)."""
    sequence = state.position(sku, node_id).last_source_sequence + 1
    state.apply(SetStock(sku, node_id, 100_000, sequence), now_ms)


def _world(now_ms: int) -> tuple[AtpState, Plan]:
    state = fixtures.demo_state(now_ms)
    state.apply(SetNetwork(DEMO_NETWORK.read_text(), DEMO_NETWORK.name), now_ms)
    ship_day = now_ms // DAY_MS + 1
    ship_date = EPOCH + dt.timedelta(days=ship_day)
    for service, node_id in (("express-air", WAREHOUSE), ("same-day-courier", STORE)):
        state.apply(SetCarrierCapacity(service, node_id, ship_date.isoformat(), 10_000), now_ms)
    first = state.skus.names[:2]
    second = state.skus.names[2:3]
    for sku in first:
        _stock(state, sku, WAREHOUSE, now_ms)
    _stock(state, second[0], STORE, now_ms)
    plan = Plan(
        (
            Shipment(
                WAREHOUSE,
                "express-air",
                ship_day,
                (PlannedLine(first[0], 1), PlannedLine(first[1], 1)),
            ),
            Shipment(STORE, "same-day-courier", ship_day, (PlannedLine(second[0], 1),)),
        ),
        "fr-paris",
        "",
        "",
    )
    return state, plan


@benchmark(
    "promise_reserve_us_p50",
    "us",
    Target("<=", 30.0),
)
def promise_reserve(ctx: Context) -> Figure:
    """In-process `state.apply(Reserve(plan=...))` of a 3-line, 2-shipment option that
    succeeds (stock, 2 carrier slots, 2 picks): p50 of single-call timings; each batch of 50
    is released (untimed) afterwards."""
    now_ms = DEMO_NOW_MS
    state, plan = _world(now_ms)
    lines = plan_lines(plan)
    count = ctx.size(20_000, 2_000)
    overhead_ns = timer_overhead_ns()
    apply = state.apply
    singles: list[float] = []
    gc.collect()
    for number in range(count // BATCH + 2):
        commands = [Reserve(f"opt-{number}-{i}", lines, 600_000, plan=plan) for i in range(BATCH)]
        for command in commands:
            now_ms += 1
            t0 = perf_counter_ns()
            result = apply(command, now_ms)
            t1 = perf_counter_ns()
            assert result.outcome is Outcome.OK, result
            if number >= 2:  # warm-up batches
                singles.append((t1 - t0 - overhead_ns) / 1000)
        for command in commands:
            apply(Release(command.reservation_id), now_ms)
    state.check_invariants()
    value = round(statistics.median(singles), 2)
    return Figure(
        value,
        {"calls": len(singles), "p90_us": round(statistics.quantiles(singles, n=10)[-1], 2)},
        f"p50 of {len(singles)} single timed reserves of a 3-line, 2-shipment option",
    )
