"""Timing helpers for in-process micro benchmarks.

Two views of the same call, both with `time.perf_counter_ns`:

- batch means: time `batch_size` consecutive calls as one interval and divide; the median over
  many batches is robust to the scheduler stealing the core now and then, and carries no
  per-call timer overhead;
- single calls: time each call on its own, minus the measured cost of two back-to-back timer
  reads, for a per-call distribution (p50, p99);
- alongside the batch wall time, the batch's thread CPU time (`time.thread_time_ns`): on a
  shared machine the gap between the two is time the scheduler gave to other processes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

perf_counter_ns = time.perf_counter_ns
thread_time_ns = time.thread_time_ns


def timer_overhead_ns(samples: int = 20_000) -> float:
    """Median cost of `t0 = perf_counter_ns(); t1 = perf_counter_ns()`."""
    deltas = []
    for _ in range(samples):
        t0 = perf_counter_ns()
        t1 = perf_counter_ns()
        deltas.append(t1 - t0)
    return float(statistics.median(deltas))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in [0, 1]) of unsorted values."""
    assert values and 0.0 <= fraction <= 1.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return float(ordered[rank])


def summary_us(
    batch_means_ns: Sequence[float],
    singles_ns: Sequence[float],
    cpu_means_ns: Sequence[float] = (),
) -> dict[str, float]:
    """Microsecond figures from batch means, single-call timings and (optionally) the batches'
    thread CPU time per call."""
    cpu = (
        {"batch_cpu_us_p50": round(statistics.median(cpu_means_ns) / 1000, 3)}
        if cpu_means_ns
        else {}
    )
    return cpu | {
        "batch_mean_us_p50": round(statistics.median(batch_means_ns) / 1000, 3),
        "batch_mean_us_min": round(min(batch_means_ns) / 1000, 3),
        "single_us_p50": round(percentile(singles_ns, 0.50) / 1000, 3),
        "single_us_p90": round(percentile(singles_ns, 0.90) / 1000, 3),
        "single_us_p99": round(percentile(singles_ns, 0.99) / 1000, 3),
        "batches": len(batch_means_ns),
        "single_calls": len(singles_ns),
    }


def trial_p50s_us(singles_ns: Sequence[float], trials: int = 5) -> list[float]:
    """Per-call p50 of each of `trials` consecutive slices of the single timings: on a shared
    machine the spread shows how much the neighbours moved the figure, and the lowest is the
    best estimate of an idle machine."""
    size = max(1, len(singles_ns) // trials)
    slices = [singles_ns[i * size : (i + 1) * size] for i in range(trials)]
    return [round(statistics.median(part) / 1000, 3) for part in slices if part]


def reference_workload_us(repeats: int = 300) -> float:
    """Median time of a fixed little workload in the core's style (dict lookups, numpy scalar
    reads, integer arithmetic, a small object per step). Recorded next to every figure: when it
    is slow, the shared machine was slow, and every other figure of that moment with it."""
    import numpy as np

    table = {f"key-{i}": i for i in range(64)}
    keys = list(table)
    cells = np.arange(64, dtype=np.int32)
    samples = []
    for _ in range(repeats):
        t0 = perf_counter_ns()
        total = 0
        for i in range(100):
            index = table[keys[i & 63]]
            total += int(cells[index]) - index
            _ = (index, total)
        samples.append(perf_counter_ns() - t0)
    return round(statistics.median(samples) / 1000, 2)
