"""Growth figures: how long other callers are stalled when the stock table grows (in the
background since issue 9 item 12), and what a retained (finished) reservation costs."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from typing import Any

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
from atpd.service.engine import Engine
from atpd.service.gc_pauses import freeze_survivors
from bench.registry import Context, Figure, Target, benchmark


def upsert_ms(state: AtpState, index: int) -> float:
    """Time one UpsertNode of a new node applied straight to the core (setup only)."""
    command = UpsertNode(f"node-{index:05d}", NodeKind.STORE, ("EU", f"city-{index % 50}"))
    start = time.perf_counter()
    state.apply(command, state.now_ms + 1)
    return (time.perf_counter() - start) * 1000


def stocked_state(limits: Limits, sku_count: int, node_count: int) -> AtpState:
    """sku_count SKUs stocked at node_count nodes (written straight into the arrays, as a bulk
    load would; no resize is running during setup)."""
    state = AtpState(limits)
    for index in range(node_count):
        upsert_ms(state, index)
    for k in range(sku_count):
        state.apply(SetStock(f"SKU-{k:06d}", "node-00000", 10, 1), state.now_ms)
    stock = state.stock
    stock.cells[:sku_count, FIELD_ON_HAND, :node_count] = 5
    stock.source_seq[:sku_count, :node_count] = 1
    stock.present[:sku_count, :node_count] = 1
    return state


async def worst_gap_ms(engine: Engine, sku_count: int, work: Any) -> tuple[float, float]:
    """Run `work` (a coroutine) while another caller alternates Reserve / Release and
    availability reads through the engine: (the longest gap between two of that caller's
    answers, the time `work` took), in ms."""
    done = asyncio.Event()
    gaps: list[float] = []

    async def caller() -> None:
        count = 0
        last = time.perf_counter()
        while not done.is_set():
            sku = f"SKU-{count % sku_count:06d}"
            reservation_id = f"cart-{count}"
            await engine.execute(Reserve(reservation_id, (Line(sku, "node-00000", 1),), 60_000))
            engine.state.availability([sku])
            await engine.execute(Release(reservation_id))
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            count += 1
            await asyncio.sleep(0)

    # Warm up first: the first availability call loads the numba kernels (about 100 ms), which
    # is start-up work, not a stall caused by growth.
    engine.state.availability(["SKU-000000"])
    await engine.execute(Reserve("warm-up", (Line("SKU-000000", "node-00000", 1),), 60_000))
    await engine.execute(Release("warm-up"))
    # The caller's own garbage (thousands of finished reservations) triggers cyclic GC passes
    # of 100-250 ms that have nothing to do with growth: measured with the collector off.
    gc.collect()
    gc.disable()
    try:
        task = asyncio.get_running_loop().create_task(caller())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await work
        took_ms = (time.perf_counter() - started) * 1000
        await asyncio.sleep(0.05)
        done.set()
        await task
    finally:
        gc.enable()
    return max(gaps) * 1000, took_ms


async def upsert_nodes(engine: Engine, first: int, last: int) -> None:
    for index in range(first, last):
        command = UpsertNode(f"node-{index:05d}", NodeKind.STORE, ("EU", f"city-{index % 50}"))
        await engine.execute(command)


def crossing_stalls(limits: Limits, sku_count: int, rounds: int) -> dict[str, list[float]]:
    """The worst gap another caller sees while nodes are upserted one after the other through
    the engine from 1,000 to 1,100 and 2,000 to 2,100 nodes (crossing 1,024 and 2,048), and
    the same caller's worst gap with no upserts at all (the machine's own noise)."""
    stalls: dict[str, list[float]] = {"1025": [], "2049": [], "noise": []}
    for _ in range(rounds):
        for crossing in (1024, 2048):
            state = stocked_state(limits, sku_count, crossing - 24)

            async def run(state: AtpState = state, crossing: int = crossing) -> float:
                engine = Engine(state)
                gap, _ = await worst_gap_ms(
                    engine, sku_count, upsert_nodes(engine, crossing - 24, crossing + 76)
                )
                if engine.growth.task is not None:
                    await engine.growth.task
                return gap

            stalls[str(crossing + 1)].append(asyncio.run(run()))
            del state
            gc.collect()
        quiet = stocked_state(limits, sku_count, 1)

        async def noise(state: AtpState = quiet) -> float:
            engine = Engine(state)
            gap, _ = await worst_gap_ms(engine, sku_count, asyncio.sleep(1.0))
            return gap

        stalls["noise"].append(asyncio.run(noise()))
        del quiet
        gc.collect()
    return stalls


def summarize(stalls: dict[str, list[float]]) -> dict[str, float]:
    return {f"worst_gap_ms_{key}": round(statistics.median(v), 2) for key, v in stalls.items()}


@benchmark("upsert_node_stall_ms", "ms", Target("<=", 50.0))
def upsert_node_stall_ms(ctx: Context) -> Figure:
    """The longest gap between the answers of a caller reserving, reading and releasing while
    another upserts nodes across 1,024 -> 1,025 and 2,048 -> 2,049 with 20,000 SKUs, with the
    default initial_node_capacity (64: the table grows in the background) and pre-sized
    (4,096); `worst_gap_ms_noise` is that caller's worst gap with nothing growing."""
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
        max(default["worst_gap_ms_1025"], default["worst_gap_ms_2049"]),
        details,
        f"median of {rounds} over fresh states and engines (no journal): the worst gap between "
        "another caller's answers while 100 nodes are upserted across the boundary",
    )


@benchmark("sku_growth_stall_ms", "ms")
def sku_growth_stall_ms(ctx: Context) -> Figure:
    """The longest gap between the answers of a caller reserving, reading and releasing while
    20,000 new SKUs are registered one SetStock at a time at 1,025 nodes (the SKU axis
    doubles 1,024 -> ... -> 32,768 rows on the way)."""
    sku_count = ctx.size(20_000, 5_000)
    state = stocked_state(Limits(), 16, 1025)

    async def register(engine: Engine) -> None:
        for k in range(16, sku_count):
            await engine.execute(SetStock(f"SKU-{k:06d}", "node-00001", 10, 1))

    async def run() -> tuple[float, float]:
        engine = Engine(state)
        return await worst_gap_ms(engine, 16, register(engine))

    worst, took_ms = asyncio.run(run())
    return Figure(
        round(worst, 2),
        {"register_seconds": round(took_ms / 1000, 2), "summary_keys": ["register_seconds"]},
        f"{sku_count} new SKUs at 1,025 nodes through the engine, one SetStock each",
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


@benchmark("gc_full_pass_ms", "ms", Target("<=", 50.0))
def gc_full_pass_ms(ctx: Context) -> Figure:
    """A full cyclic-GC pass (what stalls every caller when it runs on the writer's thread) with
    N finished reservations retained, as the server runs it: after the periodic freeze of
    service/gc_pauses.py; `unfrozen_ms` is the same pass without it."""
    count = ctx.size(300_000, 50_000)
    state = AtpState()
    state.apply(UpsertNode("n1", NodeKind.WAREHOUSE, ("EU",)), 0)
    state.apply(SetStock("SKU-1", "n1", 10**8, 1), 0)
    for i in range(count):
        reservation_id = f"order-{i:012d}"
        state.apply(Reserve(reservation_id, (Line("SKU-1", "n1", 1),), 900_000), i + 1)
        state.apply(Release(reservation_id), i + 1)
    gc.collect()
    unfrozen: list[float] = []
    frozen: list[float] = []
    try:
        for _ in range(5):
            gc.unfreeze()
            start = time.perf_counter()
            gc.collect()
            unfrozen.append((time.perf_counter() - start) * 1000)
            freeze_survivors()
            start = time.perf_counter()
            gc.collect()
            frozen.append((time.perf_counter() - start) * 1000)
    finally:
        gc.unfreeze()
    details: dict[str, object] = {
        "retained_reservations": count,
        "unfrozen_ms": round(statistics.median(unfrozen), 2),
        "tracked_objects": len(gc.get_objects()),
        "summary_keys": ["unfrozen_ms", "retained_reservations"],
    }
    return Figure(
        round(statistics.median(frozen), 2),
        details,
        f"median of 5 full gc.collect() passes with {count:,} finished reservations retained, "
        "after freeze_survivors (value) and without it (unfrozen_ms)",
    )
