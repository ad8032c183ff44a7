"""Promise-date figures (issue 12, phase A): ship and delivery dates for every node of a
300-node network and 6 carrier services in one promise, from day tables compiled once a day
(core/calendar_kernels.py), and the earliest date of 1,000 positions from time-phased ATP
(core/time_phased.py).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

import numpy as np

from atpd.core import calendar_kernels, time_phased
from atpd.core.calendar import CarrierSchedule, NodeCalendar
from bench.registry import Context, Figure, benchmark

NOW_MS = 1_764_000_000_000  # 2025-11-24 16:00 UTC, a Monday
HOUR_MS = 3_600_000
ZONES = (
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Australia/Sydney",
    "Europe/Zurich",
)
HOLIDAYS = frozenset({dt.date(2025, 12, 25), dt.date(2026, 1, 1)})


def network(node_count: int) -> tuple[list[NodeCalendar], list[CarrierSchedule]]:
    nodes = [
        NodeCalendar(
            tz=ZONES[index % len(ZONES)],
            cutoff_minutes=720 + 60 * (index % 6),
            processing_minutes=60 + 30 * (index % 5),
            open_weekdays=frozenset(range(5 if index % 3 else 6)),
            closed_dates=HOLIDAYS,
            open_minutes=480,
            close_minutes=1200,
        )
        for index in range(node_count)
    ]
    carriers = [
        CarrierSchedule(frozenset(range(5)), 1080, 1),  # express
        CarrierSchedule(frozenset(range(5)), 1020, 3, spread_business_days=2),  # road
        CarrierSchedule(frozenset(range(6)), 1200, 0, frozenset(range(6))),  # same day
        CarrierSchedule(frozenset({0, 2, 4}), 960, 5, spread_business_days=3),  # economy
        CarrierSchedule(frozenset(range(5)), 1020, 2, closed_dates=HOLIDAYS),  # international
        CarrierSchedule(frozenset(range(5)), 900, 1, frozenset(range(5))),  # air
    ]
    return nodes, carriers


@benchmark(
    "promise_dates_us_per_call",
    "us",
    description="ready instant of 300 nodes, then ship / delivery dates for 6 carrier services "
    "from each, in one promise (numba passes over day tables compiled once a day)",
)
def promise_dates(ctx: Context) -> Figure:
    nodes, carriers = network(300)
    compile_start = time.perf_counter()
    first = calendar_kernels.table_first_day(NOW_MS)
    table = calendar_kernels.compile_node_days(nodes, first)
    carrier_tables = [calendar_kernels.compile_carrier_days(c, first) for c in carriers]
    compile_ms = (time.perf_counter() - compile_start) * 1000
    calendar_kernels.warm_up()
    ready = np.empty(len(nodes), np.int64)
    outs = [np.empty((len(nodes), 3), np.int32) for _ in carriers]
    rounds = ctx.size(2000, 200)
    # Orders placed every 7 minutes over the day: before and after cut-offs.
    instants = [NOW_MS - 8 * HOUR_MS + 420_000 * index for index in range(200)]
    means: list[float] = []
    for batch in range(rounds // 50):
        start = time.perf_counter_ns()
        for step in range(50):
            now_ms = instants[(batch * 50 + step) % len(instants)]
            calendar_kernels.ready_many(table, now_ms, ready)
            for carrier_table, out in zip(carrier_tables, outs, strict=True):
                calendar_kernels.dates_many(table, carrier_table, ready, out)
        means.append((time.perf_counter_ns() - start) / 50 / 1000)
    value = round(statistics.median(means), 3)
    missing = sum(int((out[:, 0] < 0).sum()) for out in outs)
    return Figure(
        value,
        {
            "nodes": len(nodes),
            "services": len(carriers),
            "us_per_node_service": round(value / (len(nodes) * len(carriers)), 4),
            "table_compile_ms": round(compile_ms, 1),
            "past_table_answers": missing,
        },
        f"median over {len(means)} batches of 50 promises of one ready_many and 6 dates_many "
        f"calls (preallocated outputs); tables of 32 days compiled once ({compile_ms:.0f} ms)",
    )


@benchmark(
    "promise_time_phased_us_per_position",
    "us",
    description="earliest instant of a wanted quantity for 1,000 positions with incoming "
    "supply, in one time_phased.earliest_many call",
)
def promise_time_phased(ctx: Context) -> Figure:
    generator = np.random.default_rng(12)
    positions = 1000
    supply_counts = generator.integers(0, 4, positions)
    offsets = np.concatenate([[0], np.cumsum(supply_counts)]).astype(np.int64)
    eta = NOW_MS + generator.integers(1, 200, int(offsets[-1])).astype(np.int64) * HOUR_MS
    quantity = generator.integers(1, 20, int(offsets[-1])).astype(np.int64)
    atp_now = generator.integers(0, 40, positions).astype(np.int64)
    wanted = generator.integers(1, 10, positions).astype(np.int64)
    out = np.empty(positions, np.int64)
    time_phased.warm_up()
    means = []
    for _ in range(ctx.size(400, 40)):
        start = time.perf_counter_ns()
        time_phased.earliest_many(atp_now, wanted, offsets, eta, quantity, NOW_MS, out)
        means.append((time.perf_counter_ns() - start) / positions / 1000)
    value = round(statistics.median(means), 4)
    return Figure(
        value,
        {"positions": positions, "supply_entries": int(offsets[-1])},
        f"median over {len(means)} calls of earliest_many for {positions} positions",
    )
