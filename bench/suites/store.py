"""In-process figures of store operations (no gRPC, no journal): a forced till sale and a cart
amendment, on the demo data set (62 nodes, 20,000 SKUs)."""

from __future__ import annotations

import gc
import statistics
from typing import Any

import numpy as np

from atpd.core.commands import Line, NodeKind, Reserve
from atpd.core.commands_amend import AmendReservation
from atpd.core.commands_store import RecordSale, SaleLine
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from bench import fixtures
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.core import BATCH, DEMO_NOW_MS
from bench.timing import (
    perf_counter_ns,
    summary_us,
    thread_time_ns,
    timer_overhead_ns,
    trial_p50s_us,
)


def _positions(state: AtpState, minimum_atp: int, stores_only: bool) -> list[tuple[str, str]]:
    """(sku, node_id) positions with at least `minimum_atp` units, in a fixed random order."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    cells = state.stock.cells[:sku_count, :, :node_count]
    atp = cells[:, FIELD_ON_HAND, :] - cells[:, FIELD_RESERVED, :] - cells[:, FIELD_SAFETY, :]
    usable = atp >= minimum_atp
    if stores_only:
        usable &= np.array([n.kind is NodeKind.STORE for n in state.nodes])[None, :]
    rows, columns = np.nonzero(usable)
    order = np.random.default_rng(11).permutation(len(rows))
    names, nodes = state.skus.names, state.node_ids.names
    return [(names[rows[i]], nodes[columns[i]]) for i in order.tolist()]


def _timed(ctx: Context, state: AtpState, commands: list[Any], rounds: int) -> dict[str, Any]:
    """Every command applied once (a fresh id each: never the replay path): the first tenth
    warms up, then per round BATCH commands timed as one interval and BATCH timed one by one.
    Then a sample applied again: the cost of an idempotent retry."""
    now = [state.now_ms]

    def apply(command: Any) -> object:
        now[0] += 1
        return state.apply(command, now[0])

    overhead_ns = timer_overhead_ns()
    warm = (rounds // 10) * BATCH * 2
    for command in commands[:warm]:
        apply(command)
    gc.collect()
    batch_means: list[float] = []
    cpu_means: list[float] = []
    singles: list[float] = []
    position = warm
    for _ in range(rounds):
        chunk = commands[position : position + BATCH]
        c0, t0 = thread_time_ns(), perf_counter_ns()
        for command in chunk:
            apply(command)
        t1, c1 = perf_counter_ns(), thread_time_ns()
        batch_means.append((t1 - t0) / BATCH)
        cpu_means.append((c1 - c0) / BATCH)
        for command in commands[position + BATCH : position + 2 * BATCH]:
            t0 = perf_counter_ns()
            apply(command)
            singles.append(perf_counter_ns() - t0 - overhead_ns)
        position += 2 * BATCH
    retries = []
    for command in commands[warm : warm + 2_000]:
        t0 = perf_counter_ns()
        result = apply(command)
        retries.append(perf_counter_ns() - t0 - overhead_ns)
        assert result.replayed  # type: ignore[attr-defined]
    details: dict[str, Any] = summary_us(batch_means, singles, cpu_means)
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["retry_single_us_p50"] = round(statistics.median(retries) / 1000, 3)
    details["summary_keys"] = [
        "single_us_p99",
        "trial_single_us_p50",
        "batch_mean_us_p50",
        "retry_single_us_p50",
    ]
    return details


@benchmark(
    "store_forced_sale_us_p50",
    "us",
    Target("<=", 25.0),
)
def store_forced_sale(ctx: Context) -> Figure:
    """In-process forced RecordSale of 2 lines at a store (each a fresh receipt id): p50."""
    state = fixtures.demo_state(DEMO_NOW_MS)
    rounds = ctx.size(500, 100)
    count = (rounds + rounds // 10 + 1) * BATCH * 2
    positions = [p for p in _positions(state, 1, stores_only=True)]
    by_node: dict[str, list[str]] = {}
    for sku, node_id in positions:
        by_node.setdefault(node_id, []).append(sku)
    pairs = [(n, s) for n, skus in by_node.items() if len(skus) >= 2 for s in [skus[:2]]]
    ctx.log(f"forced sale: {count} sales over {len(pairs)} stores")
    commands = [
        RecordSale(
            f"receipt-{i:08d}",
            pairs[i % len(pairs)][0],
            tuple(SaleLine(sku, 1) for sku in pairs[i % len(pairs)][1]),
            force=True,
            terminal_id="till-1",
        )
        for i in range(count)
    ]
    details = _timed(ctx, state, commands, rounds)
    details["discrepancies"] = len(state.store.discrepancies)
    return Figure(
        details["single_us_p50"],
        details,
        "p50 of single state.apply(RecordSale(force)) calls, each a new receipt (2 lines, demo "
        "data set), timer cost subtracted; retry_* re-applies a sample (replayed); shared "
        "2-core machine",
    )


@benchmark(
    "core_amend_us_p50",
    "us",
    Target("<=", 30.0),
)
def core_amend(ctx: Context) -> Figure:
    """In-process AmendReservation of a held 2-line cart (one line 1 -> 2 units, one line
    swapped for another position): p50."""
    state = fixtures.demo_state(DEMO_NOW_MS)
    rounds = ctx.size(250, 60)
    count = (rounds + rounds // 10 + 1) * BATCH * 2
    positions = _positions(state, 2, stores_only=False)
    assert len(positions) >= 3 * count, (len(positions), count)
    ctx.log(f"amend: {count} carts on {3 * count} positions")
    commands = []
    for i in range(count):
        (a_sku, a_node), (b_sku, b_node), (c_sku, c_node) = positions[3 * i : 3 * i + 3]
        cart = f"cart-{i:08d}"
        held = (Line(a_sku, a_node, 1), Line(b_sku, b_node, 1))
        state.apply(Reserve(cart, held, ttl_ms=15 * 60_000), DEMO_NOW_MS)
        commands.append(
            AmendReservation(cart, (Line(a_sku, a_node, 2), Line(c_sku, c_node, 1)), 30 * 60_000)
        )
    details = _timed(ctx, state, commands, rounds)
    return Figure(
        details["single_us_p50"],
        details,
        "p50 of single state.apply(AmendReservation) calls, each on its own held 2-line cart "
        "(demo data set), timer cost subtracted; retry_* re-applies a sample (replayed); "
        "shared 2-core machine",
    )
