"""Growth figures: how long one command stalls the single writer when the stock table grows,
and what a retained (finished) reservation costs in memory."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc

from atpd.core.commands import (
    Line,
    NodeKind,
    Release,
    ReservationKind,
    Reserve,
    SetStock,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND
from bench.registry import Context, Figure, Target, benchmark


def upsert_ms(state: AtpState, index: int) -> float:
    """Time one UpsertNode of a new node (the writer is blocked for all of it)."""
    command = UpsertNode(f"node-{index:05d}", NodeKind.STORE, ("EU", f"city-{index % 50}"))
    start = time.perf_counter()
    state.apply(command, state.now_ms + 1)
    return (time.perf_counter() - start) * 1000


def fill_to(state: AtpState, node_count: int, sku_count: int) -> None:
    """Add nodes up to node_count (each stocked for every SKU, written straight into the
    arrays as a bulk load would)."""
    first = len(state.nodes)
    for index in range(first, node_count):
        upsert_ms(state, index)
    stock = state.stock
    stock.cells[:sku_count, FIELD_ON_HAND, first:node_count] = 5
    stock.source_seq[:sku_count, first:node_count] = 1
    stock.present[:sku_count, first:node_count] = 1


def crossing_stalls(limits: Limits, sku_count: int, rounds: int) -> dict[str, list[float]]:
    """UpsertNode times crossing 1,024 -> 1,025 and 2,048 -> 2,049 nodes (median of rounds)."""
    stalls: dict[str, list[float]] = {"1025": [], "2049": []}
    for _ in range(rounds):
        state = AtpState(limits)
        state.apply(UpsertNode("node-00000", NodeKind.WAREHOUSE, ("EU", "hub")), 1)
        for k in range(sku_count):
            state.apply(SetStock(f"SKU-{k:06d}", "node-00000", 10, 1), 1)
        for crossing in (1024, 2048):
            fill_to(state, crossing, sku_count)
            stalls[str(crossing + 1)].append(upsert_ms(state, crossing))
        del state
        gc.collect()
    return stalls


def summarize(stalls: dict[str, list[float]]) -> dict[str, float]:
    return {f"stall_ms_at_{key}_nodes": round(statistics.median(v), 2) for key, v in stalls.items()}


@benchmark("upsert_node_stall_ms", "ms", Target("<=", 50.0))
def upsert_node_stall_ms(ctx: Context) -> Figure:
    """The longest single UpsertNode with 20,000 SKUs when the node count crosses 1,024 -> 1,025
    and 2,048 -> 2,049, with the default initial_node_capacity (64: the table doubles, copying
    every used position) and pre-sized (initial_node_capacity = 4,096: no copy)."""
    sku_count = ctx.size(20_000, 5_000)
    rounds = ctx.size(3, 1)
    ctx.log(f"growth: default capacity, {sku_count} SKUs, {rounds} rounds")
    default = summarize(crossing_stalls(Limits(), sku_count, rounds))
    ctx.log("growth: initial_node_capacity = 4096")
    presized = summarize(crossing_stalls(Limits(initial_node_capacity=4096), sku_count, rounds))
    details: dict[str, object] = {
        "default_capacity": default,
        "presized_4096": presized,
        "skus": sku_count,
        "rounds": rounds,
        "summary_keys": ["default_capacity", "presized_4096"],
    }
    return Figure(
        max(default.values()),
        details,
        f"median of {rounds} over fresh states: the time of apply(UpsertNode) of the new node, "
        "headline with the default config (value) and pre-sized in details",
    )


@benchmark("sku_growth_stall_ms", "ms")
def sku_growth_stall_ms(ctx: Context) -> Figure:
    """The longest single SetStock registering a new SKU while 20,000 SKUs are registered at
    1,025 nodes (the SKU axis doubles 1,024 -> ... -> 32,768 rows on the way)."""
    sku_count = ctx.size(20_000, 5_000)
    state = AtpState()
    for index in range(1025):
        upsert_ms(state, index)
    times: list[tuple[float, int]] = []
    for k in range(sku_count):
        command = SetStock(f"SKU-{k:06d}", "node-00000", 10, 1)
        start = time.perf_counter()
        state.apply(command, state.now_ms + 1)
        times.append(((time.perf_counter() - start) * 1000, k + 1))
    worst = sorted(times, reverse=True)[:5]
    return Figure(
        round(worst[0][0], 2),
        {
            "worst_ms_at_sku_count": [[round(ms, 2), count] for ms, count in worst],
            "median_ms": round(statistics.median(ms for ms, _ in times), 4),
            "summary_keys": ["worst_ms_at_sku_count", "median_ms"],
        },
        f"{sku_count} new SKUs at 1,025 nodes, one apply(SetStock) each",
    )


@benchmark("retained_reservation_bytes", "bytes")
def retained_reservation_bytes(ctx: Context) -> Figure:
    """Traced memory (tracemalloc) per finished reservation kept for retries: reserve and
    release N one-line and N three-line reservations, divided by N."""
    count = ctx.size(50_000, 10_000)
    details: dict[str, object] = {}
    for line_count in (1, 3):
        state = AtpState()
        for node in ("n1", "n2", "n3"):
            state.apply(UpsertNode(node, NodeKind.STORE, ("EU",)), 0)
        for k in range(100):
            for node in ("n1", "n2", "n3"):
                state.apply(SetStock(f"SKU-{k:05d}", node, 10**6, 1), 0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            reservation_id = f"order-{i:012d}"
            lines = tuple(
                Line(f"SKU-{(i + j) % 100:05d}", f"n{j + 1}", 1) for j in range(line_count)
            )
            now_ms = i + 1
            command = Reserve(reservation_id, lines, 900_000, ReservationKind.CART)
            state.apply(command, now_ms)
            state.apply(Release(reservation_id), now_ms)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        details[f"bytes_per_{line_count}_line"] = round((after - before) / count, 1)
        del state
    details["summary_keys"] = ["bytes_per_1_line", "bytes_per_3_line"]
    return Figure(
        float(details["bytes_per_1_line"]),  # type: ignore[arg-type]
        details,
        f"{count:,} reserve+release pairs; includes ids, lines, the retention index entry",
    )
