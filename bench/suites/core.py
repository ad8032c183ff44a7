"""In-process figures of the core state machine (no gRPC, no journal)."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from atpd.core import kernels
from atpd.core.commands import Line, Release, Reserve
from atpd.core.reservations import ReservationStatus
from atpd.core.state import AtpState
from bench import fixtures
from bench.registry import Context, Figure, Target, benchmark
from bench.timing import (
    perf_counter_ns,
    summary_us,
    thread_time_ns,
    timer_overhead_ns,
    trial_p50s_us,
)

DEMO_NOW_MS = 1_000_000
# Calls per timed batch: short batches (~0.1-0.5 ms) are rarely cut by the scheduler.
BATCH = 20
WARM_UP_BATCHES = 50


def _demo(ctx: Context) -> AtpState:
    return ctx.fixture("demo_state", lambda: fixtures.demo_state(DEMO_NOW_MS))  # type: ignore[no-any-return]


def measure_calls(
    call: Callable[[Any], object],
    arguments: Sequence[Any],
    batch_size: int,
    rounds: int,
    overhead_ns: float,
    cpu_means: list[float] | None = None,
) -> tuple[list[float], list[float]]:
    """Each round times `batch_size` calls as one interval (-> one per-call mean), then the
    same number of calls one by one (-> single timings minus the timer's own cost). Arguments
    are taken in order, cycling. `cpu_means` collects the batches' thread CPU time per call
    (time the scheduler gave to other processes is not in it: a noise indicator)."""
    batch_means: list[float] = []
    singles: list[float] = []
    count = len(arguments)
    position = 0
    for _ in range(rounds):
        chunk = [arguments[(position + i) % count] for i in range(batch_size)]
        position = (position + batch_size) % count
        c0 = thread_time_ns()
        t0 = perf_counter_ns()
        for argument in chunk:
            call(argument)
        t1 = perf_counter_ns()
        c1 = thread_time_ns()
        batch_means.append((t1 - t0) / batch_size)
        if cpu_means is not None:
            cpu_means.append((c1 - c0) / batch_size)
        for argument in chunk:
            t0 = perf_counter_ns()
            call(argument)
            t1 = perf_counter_ns()
            singles.append(t1 - t0 - overhead_ns)
    return batch_means, singles


def _batch_mean_us(call: Callable[[Any], object], arguments: Sequence[Any], rounds: int) -> float:
    batch_means, _ = measure_calls(call, arguments, BATCH, rounds, 0.0)
    return round(statistics.median(batch_means) / 1000, 3)


@benchmark(
    "core_availability_us_p50",
    "us",
    Target("<=", 5.0),
)
def core_availability(ctx: Context) -> Figure:
    """In-process `state.availability([sku])` for one SKU over 100 nodes (3 geo levels,
    realistic sparse fill) with every geo roll-up: p50 of single-call timings."""
    sku_count = ctx.size(4000, 1000)
    ctx.log(f"availability: building a 100-node state with {sku_count} SKUs")
    synthetic = ctx.fixture(
        f"synthetic_{sku_count}", lambda: fixtures.synthetic_state(sku_count, node_count=100)
    )
    state: AtpState = synthetic.state
    arguments = [[sku] for sku in synthetic.query_skus]
    overhead_ns = timer_overhead_ns()
    rounds = ctx.size(5000, 1000)
    gc.collect()
    measure_calls(state.availability, arguments, BATCH, rounds // 10, overhead_ns)  # warm-up
    cpu_means: list[float] = []
    batch_means, singles = measure_calls(
        state.availability, arguments, BATCH, rounds, overhead_ns, cpu_means
    )
    details: dict[str, Any] = summary_us(batch_means, singles, cpu_means)
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["timer_overhead_ns"] = overhead_ns
    details["nodes"] = synthetic.node_count
    details["geo_prefixes"] = len(state.geo)
    details["skus"] = synthetic.sku_count
    details["positions"] = synthetic.positions
    details["stocked_nodes_per_query_mean"] = round(synthetic.stocked_nodes_mean, 1)

    # Where the time goes: the same call taken apart (batch means, same method).
    rows = [np.array([state.skus.get(sku)], np.int64) for sku in synthetic.query_skus]
    cells, node_geo, geo_count = state.stock.cells, state.geo.node_geo, len(state.geo)
    mask = state.node_mask()
    part_rounds = ctx.size(1500, 300)
    kernel_us = _batch_mean_us(
        lambda row: kernels.rollup_atp(cells, row, mask, node_geo, geo_count), rows, part_rounds
    )
    rows_us = _batch_mean_us(
        lambda skus: np.array([state.skus.get(sku) for sku in skus], np.int64),
        arguments,
        part_rounds,
    )
    mask_us = _batch_mean_us(lambda _: state.node_mask((), ""), arguments, part_rounds)
    total_us = details["batch_mean_us_p50"]
    details["breakdown_us"] = {
        "numba_kernel_call": kernel_us,
        "sku_rows_array": rows_us,
        "node_mask_lookup": mask_us,
        "rest (view, tuple, attribute reads)": round(total_us - kernel_us - rows_us - mask_us, 3),
    }

    # The same query on the demo data set (62 nodes, 20,000 SKUs) for comparison.
    demo = _demo(ctx)
    demo_skus = demo.skus.names
    picks = np.random.default_rng(5).integers(0, len(demo_skus), 1000).tolist()
    demo_arguments = [[demo_skus[i]] for i in picks]
    _, demo_singles = measure_calls(
        demo.availability, demo_arguments, BATCH, part_rounds, overhead_ns
    )
    details["demo_62_nodes_single_us_p50"] = round(statistics.median(demo_singles) / 1000, 3)
    details["summary_keys"] = [
        "single_us_p99",
        "trial_single_us_p50",
        "batch_mean_us_p50",
        "batch_cpu_us_p50",
        "demo_62_nodes_single_us_p50",
    ]
    return Figure(
        details["single_us_p50"],
        details,
        f"p50 of single calls each timed with perf_counter_ns (timer cost subtracted), "
        f"interleaved with batches of {BATCH} calls timed as one (batch_mean_*); GC on",
    )


def _reservation_batches(
    state: AtpState, count: int, batch_size: int, seed: int, prefix: str
) -> list[list[Reserve]]:
    """`count` 3-line reservations (distinct positions within each), grouped in batches whose
    total demand per position fits the position's ATP, so every one of them succeeds."""
    from atpd.demo.dataset import demo_reservation_lines

    lines = demo_reservation_lines(count * 4, seed=seed)
    atp: dict[tuple[str, str], int] = {}

    def available(sku: str, node_id: str) -> int:
        key = (sku, node_id)
        if key not in atp:
            atp[key] = state.position(sku, node_id).atp
        return atp[key]

    batches: list[list[Reserve]] = []
    batch: list[Reserve] = []
    demand: dict[tuple[str, str], int] = {}
    pending: list[Line] = []
    serial = 0
    for line in lines:
        key = (line.sku, line.node_id)
        if any((p.sku, p.node_id) == key for p in pending):
            continue
        if demand.get(key, 0) + line.quantity > available(*key):
            continue
        pending.append(line)
        if len(pending) < 3:
            continue
        for p in pending:
            demand[(p.sku, p.node_id)] = demand.get((p.sku, p.node_id), 0) + p.quantity
        serial += 1
        batch.append(Reserve(f"{prefix}-{serial:08d}", tuple(pending), ttl_ms=15 * 60_000))
        pending = []
        if len(batch) == batch_size:
            batches.append(batch)
            batch, demand = [], {}
            if len(batches) * batch_size >= count:
                break
    assert len(batches) * batch_size >= count, "not enough satisfiable reservation lines"
    return batches


@benchmark(
    "core_reserve_us_p50",
    "us",
    Target("<=", 15.0),
)
def core_reserve(ctx: Context) -> Figure:
    """In-process `state.apply(Reserve(3 lines))` that succeeds, on the demo data set (62 nodes,
    20,000 SKUs): p50 of single-call timings; each batch is released (untimed) afterwards."""
    state = _demo(ctx)
    batch_size = BATCH
    count = ctx.size(100_000, 20_000)
    ctx.log(f"reserve: preparing {count} three-line reservations on the demo data set")
    ctx.cache["reserve_runs"] = runs = ctx.cache.get("reserve_runs", 0) + 1
    batches = _reservation_batches(
        state,
        count + WARM_UP_BATCHES * batch_size,
        batch_size,
        seed=17,
        prefix=f"bench-cart-{runs}",
    )
    overhead_ns = timer_overhead_ns()
    apply = state.apply
    now_ms = max(state.now_ms, DEMO_NOW_MS)
    batch_means: list[float] = []
    cpu_means: list[float] = []
    singles: list[float] = []
    gc.collect()
    for number, batch in enumerate(batches):
        warm_up = number < WARM_UP_BATCHES
        single = number % 2 == 1
        if single:
            for command in batch:
                now_ms += 1
                t0 = perf_counter_ns()
                apply(command, now_ms)
                t1 = perf_counter_ns()
                if not warm_up:
                    singles.append(t1 - t0 - overhead_ns)
        else:
            c0 = thread_time_ns()
            t0 = perf_counter_ns()
            for command in batch:
                now_ms += 1
                apply(command, now_ms)
            t1 = perf_counter_ns()
            c1 = thread_time_ns()
            if not warm_up:
                batch_means.append((t1 - t0) / len(batch))
                cpu_means.append((c1 - c0) / len(batch))
        reservations = state.reservations
        for command in batch:
            reservation = reservations[command.reservation_id]
            assert reservation.status is ReservationStatus.HELD, reservation
            now_ms += 1
            apply(Release(command.reservation_id), now_ms)
    assert state.open_reservations == 0
    details: dict[str, Any] = summary_us(batch_means, singles, cpu_means)
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["timer_overhead_ns"] = overhead_ns
    details["lines_per_reservation"] = 3
    details["reservations_timed"] = (len(batches) - WARM_UP_BATCHES) * batch_size
    details["terminal_reservations_retained"] = len(state.reservations)
    try:
        details["breakdown_us"] = _reserve_breakdown(state, batches[-1], ctx.size(200, 50))
    except Exception as error:  # the breakdown reads internals that may change: never fatal
        details["breakdown_error"] = repr(error)
    details["summary_keys"] = [
        "single_us_p99",
        "trial_single_us_p50",
        "batch_mean_us_p50",
        "batch_cpu_us_p50",
    ]
    return Figure(
        details["single_us_p50"],
        details,
        f"p50 of single reserves each timed with perf_counter_ns (timer cost subtracted), "
        f"alternating with batches of {BATCH} timed as one (batch_mean_*); every reserve "
        f"succeeds; each batch is released untimed; GC on",
    )


@benchmark("core_release_us_p50", "us", None)
def core_release(ctx: Context) -> Figure:
    """In-process `state.apply(Release(id))` of a HELD 1-line reservation on the demo data set:
    p50 of single-call timings; next to it the 1-line Reserve that made it (also timed singly,
    `reserve_1_line_single_us_p50`), and the same for 3-line reservations."""
    state = _demo(ctx)
    count = ctx.size(40_000, 10_000)
    ctx.cache["release_runs"] = runs = ctx.cache.get("release_runs", 0) + 1
    ctx.log(f"release: preparing {count} one-line and {count} three-line reservations")
    overhead_ns = timer_overhead_ns()
    apply = state.apply
    now_ms = max(state.now_ms, DEMO_NOW_MS)
    details: dict[str, Any] = {"timer_overhead_ns": overhead_ns}
    for lines in (1, 3):
        batches = _reservation_batches(
            state,
            count + WARM_UP_BATCHES * BATCH,
            BATCH,
            seed=23 + lines,
            prefix=f"bench-release-{lines}-{runs}",
        )
        reserves: list[float] = []
        releases: list[float] = []
        for number, batch in enumerate(batches):
            commands = [
                Reserve(command.reservation_id, command.lines[:lines], ttl_ms=command.ttl_ms)
                for command in batch
            ]
            release_commands = [Release(command.reservation_id) for command in commands]
            for command in commands:
                now_ms += 1
                t0 = perf_counter_ns()
                apply(command, now_ms)
                t1 = perf_counter_ns()
                reserves.append(t1 - t0 - overhead_ns)
            for release in release_commands:
                now_ms += 1
                t0 = perf_counter_ns()
                apply(release, now_ms)
                t1 = perf_counter_ns()
                releases.append(t1 - t0 - overhead_ns)
            if number < WARM_UP_BATCHES:
                reserves.clear()
                releases.clear()
        details[f"release_{lines}_line_single_us_p50"] = round(
            statistics.median(releases) / 1000, 3
        )
        details[f"reserve_{lines}_line_single_us_p50"] = round(
            statistics.median(reserves) / 1000, 3
        )
        details[f"release_{lines}_line_trial_single_us_p50"] = trial_p50s_us(releases)
        details[f"calls_timed_{lines}_line"] = len(releases)
    assert state.open_reservations == 0
    details["summary_keys"] = [
        "reserve_1_line_single_us_p50",
        "release_3_line_single_us_p50",
        "reserve_3_line_single_us_p50",
    ]
    return Figure(
        details["release_1_line_single_us_p50"],
        details,
        "p50 of single releases (1 line) each timed with perf_counter_ns (timer cost "
        "subtracted), each batch of 20 reserved (timed singly too) then released; GC on",
    )


def _reserve_breakdown(state: AtpState, commands: list[Reserve], rounds: int) -> dict[str, float]:
    """The steps of a successful 3-line `reserve`, each timed on its own (batch means of 100
    calls, same method as the headline). Reads `AtpState` internals; state is left as found."""
    import functools

    from atpd.core import caller_atp, state_fields
    from atpd.core.reservations import ReservationStatus, fingerprint
    from atpd.core.stock import FIELD_RESERVED

    cells = state.stock.cells
    skus_get = state.skus.get
    node_index = functools.partial(state_fields.node_index, state)
    atp = functools.partial(caller_atp.stock_atp, state)
    resolved = []
    for command in commands:
        skus = [skus_get(line.sku) for line in command.lines]
        nodes = [node_index(line.node_id, "") for line in command.lines]
        resolved.append((command, skus, nodes))

    def fingerprint_step(item: Any) -> object:
        command = item[0]
        return fingerprint(command.kind, "", "", command.ttl_ms, command.lines)

    def ids_step(item: Any) -> object:
        command = item[0]
        state.reservations.get(command.reservation_id)
        nodes = [node_index(line.node_id, "lines") for line in command.lines]
        return nodes, [skus_get(line.sku) for line in command.lines]

    def atp_step(item: Any) -> object:
        return [atp(sku, node) for sku, node in zip(item[1], item[2], strict=True)]

    def hold_step(item: Any) -> None:
        for line, sku, node in zip(item[0].lines, item[1], item[2], strict=True):
            cells[sku, FIELD_RESERVED, node] += line.quantity
        for line, sku, node in zip(item[0].lines, item[1], item[2], strict=True):
            cells[sku, FIELD_RESERVED, node] -= line.quantity

    table = state.reservations
    caller = table.intern_caller("", "")

    def record_step(item: Any) -> object:
        command = item[0]
        quantities = [line.quantity for line in command.lines]
        row = table.insert(
            command.reservation_id + "~",
            command.kind,
            caller,
            -1,
            0,
            0,
            item[1],
            item[2],
            quantities,
        )
        view = table.view(row)
        table.status[row] = ReservationStatus.RELEASED
        table.delete(row)
        return view

    expiry = state.expiry
    # A row for the expiry step: inserted and finished here, deleted at the end.
    first = resolved[0]
    spare = table.insert(
        "breakdown~spare", first[0].kind, caller, -1, 0, 0, first[1], first[2], [1] * len(first[1])
    )
    table.status[spare] = ReservationStatus.RELEASED

    def expiry_step(item: Any) -> None:
        expiry.push(state.now_ms + 1, spare)
        expiry.discard(spare)

    def expire_due_step(item: Any) -> object:
        return state._expire_due(state.now_ms)

    steps = {
        "fingerprint": fingerprint_step,
        "id lookups (reservation, 3 nodes, 3 SKUs)": ids_step,
        "3 ATP reads (numpy scalars)": atp_step,
        "3 reserved += q (numpy scalars), x2 (hold and undo)": hold_step,
        "table row insert + view + delete": record_step,
        "expiry heap push + discard": expiry_step,
        "expire-due check per apply": expire_due_step,
    }
    try:
        return {name: _batch_mean_us(step, resolved, rounds) for name, step in steps.items()}
    finally:
        table.delete(spare)
