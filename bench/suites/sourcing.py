"""Sourcing-search figures (issue 12 §5): `core.sourcing.search` for a 3-line order over 300
candidate origins, max_shipments 3, k = 8 candidates per line and criterion.

Synthetic orders on a seeded random network: origins scattered up to 4,000 km from the
destination, delivery day, cost and CO2 growing with distance (plus noise: several carriers),
each line's SKU stocked at about a third of the origins with 0 to 4 units, 1 to 2 units a line,
10 % of origins excluded and a quarter carrying a priority penalty. The search must stay well
under the promise's 1,000 us budget.
"""

from __future__ import annotations

import gc
import statistics
from typing import Any

import numpy as np

from atpd.core import sourcing_kernels
from atpd.core.sourcing import SourcingProblem, Weights, run_kernel, search
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.core import BATCH, measure_calls
from bench.timing import summary_us, timer_overhead_ns, trial_p50s_us

LINES = 3
ORIGINS = 300
MAX_SHIPMENTS = 3
CANDIDATES_PER_LINE = 8
WEIGHTS = Weights(speed_per_day=300.0, cost=1.0, co2_per_gram=0.02, per_shipment=200.0)


def synthetic_order(rng: np.random.Generator, lines: int, origins: int) -> SourcingProblem:
    """One order over a random network (see the module docstring)."""
    distance_km = rng.uniform(5.0, 4000.0, origins)
    delivery_day = np.tile(1 + (distance_km // 800).astype(np.int64), (lines, 1))
    delivery_day += rng.integers(0, 2, (lines, origins))  # stock arriving later at some nodes
    stocked = rng.random((lines, origins)) < 0.35
    available = np.where(stocked, rng.integers(0, 5, (lines, origins)), 0).astype(np.int64)
    penalty = np.where(rng.random(origins) < 0.25, 150.0, 0.0)
    return SourcingProblem(
        quantity=rng.integers(1, 3, lines).astype(np.int64),
        available=available,
        delivery_day=delivery_day,
        shipment_cost=(500 + distance_km * rng.uniform(0.3, 0.8, origins)).astype(np.int64),
        cost_per_item=rng.integers(20, 80, origins).astype(np.int64),
        shipment_co2_grams=(distance_km * rng.uniform(50.0, 600.0, origins)).astype(np.int64),
        co2_grams_per_item=rng.integers(10, 200, origins).astype(np.int64),
        allowed=rng.random(origins) >= 0.1,
        penalty=penalty,
        max_shipments=MAX_SHIPMENTS,
        weights=WEIGHTS,
    )


def timed_search_us(
    problems: list[SourcingProblem], rounds: int, overhead_ns: float, **options: Any
) -> tuple[dict[str, Any], list[float]]:
    """Single-call and batch figures of `search` over `problems`, cycling."""

    def call(problem: SourcingProblem) -> object:
        return search(problem, **options)

    measure_calls(call, problems, BATCH, max(1, rounds // 10), overhead_ns)  # warm-up
    cpu_means: list[float] = []
    batch_means, singles = measure_calls(call, problems, BATCH, rounds, overhead_ns, cpu_means)
    return summary_us(batch_means, singles, cpu_means), singles


@benchmark("sourcing_search_us_p50", "us", Target("<=", 200.0))
def sourcing_search(ctx: Context) -> Figure:
    """In-process `sourcing.search` of a 3-line order over 300 candidate origins, max_shipments
    3, k = 8: p50 of single calls (timer cost subtracted), cycling over 200 random orders."""
    sourcing_kernels.warm_up()
    rng = np.random.default_rng(12)
    problems = [synthetic_order(rng, LINES, ORIGINS) for _ in range(200)]
    results = [search(problem, CANDIDATES_PER_LINE) for problem in problems]
    feasible = sum(result.feasible for result in results)
    assert feasible > len(problems) // 2, feasible
    assert all(result.exhaustive for result in results)
    overhead_ns = timer_overhead_ns()
    rounds = ctx.size(2000, 300)
    gc.collect()
    details, singles = timed_search_us(
        problems, rounds, overhead_ns, candidates_per_line=CANDIDATES_PER_LINE
    )
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["timer_overhead_ns"] = overhead_ns
    details["feasible_orders"] = f"{feasible}/{len(problems)}"
    details["options_per_order_mean"] = round(
        statistics.mean(len(result.options) for result in results), 2
    )
    details["steps_per_order_median"] = statistics.median(result.steps for result in results)

    # Supporting figures: building (validating) the problem, the kernel alone, and the whole
    # 300-node x 6-service network as 1,800 origins.
    def kernel(problem: SourcingProblem) -> object:
        return run_kernel(problem, None, CANDIDATES_PER_LINE, 200_000)

    kernel_means, _ = measure_calls(kernel, problems, BATCH, max(1, rounds // 4), 0.0)

    def build(problem: SourcingProblem) -> object:
        return SourcingProblem(
            problem.quantity,
            problem.available,
            problem.delivery_day,
            problem.shipment_cost,
            problem.cost_per_item,
            problem.shipment_co2_grams,
            problem.co2_grams_per_item,
            problem.allowed,
            problem.penalty,
            problem.max_shipments,
            problem.weights,
        )

    build_means, _ = measure_calls(build, problems, BATCH, max(1, rounds // 4), 0.0)
    wide = [synthetic_order(rng, LINES, ORIGINS * 6) for _ in range(50)]
    wide_details, _ = timed_search_us(
        wide, max(1, rounds // 4), overhead_ns, candidates_per_line=CANDIDATES_PER_LINE
    )
    details["breakdown_us"] = {
        "search_plans kernel (batch mean)": round(statistics.median(kernel_means) / 1000, 3),
        "SourcingProblem construction + checks (batch mean)": round(
            statistics.median(build_means) / 1000, 3
        ),
    }
    details["origins_1800_single_us_p50"] = wide_details["single_us_p50"]
    details["summary_keys"] = [
        "single_us_p50",
        "single_us_p99",
        "origins_1800_single_us_p50",
        "steps_per_order_median",
    ]
    return Figure(
        value=details["single_us_p50"],
        details=details,
        note=(
            "p50 of single search() calls (perf_counter_ns, timer cost subtracted), interleaved "
            "with batches of 20; 200 random 3-line orders over 300 origins, max_shipments 3, "
            "k = 8; GC on"
        ),
    )
