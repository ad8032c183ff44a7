"""Memory figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.registry import Context, Figure, Target, benchmark

ROOT = Path(__file__).resolve().parents[2]


@benchmark("memory_bytes_per_position", "bytes", Target("<=", 64.0))
def memory_bytes_per_position(ctx: Context) -> Figure:
    """RSS growth (VmRSS) of a fresh process holding 10M stock positions (100k SKUs x 100
    nodes) in the core, divided by the positions (see bench/memory_probe.py for how they are
    written)."""
    sku_count = ctx.size(100_000, 50_000)
    node_count = 100
    ctx.log(f"memory: {sku_count} SKUs x {node_count} nodes in a child process")
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory_probe", str(sku_count), str(node_count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed ({out.returncode}):\n{out.stderr[-3000:]}")
    details = json.loads(out.stdout.strip().splitlines()[-1])
    # The same layout at the demo data set's real (sparse) fill, from array sizes alone.
    demo = ctx.cache.get("demo_state")
    if demo is not None:
        stock = demo.stock
        details["demo_fill_array_bytes_per_position"] = round(
            stock.nbytes() / stock.position_count, 1
        )
    details["summary_keys"] = [
        "positions",
        "peak_rss_delta_bytes_per_position",
        "array_bytes_per_position",
        "demo_fill_array_bytes_per_position",
    ]
    quick = " (--quick: smaller than the 10M of the target)" if sku_count < 100_000 else ""
    return Figure(
        details["bytes_per_position"],
        details,
        f"at {sku_count * node_count:,} positions{quick}: VmRSS after minus VmRSS before "
        "creating and filling the state, in a fresh child process, divided by positions; "
        "SKUs registered via apply(SetStock), the other 99 "
        "positions per SKU bulk-written into the arrays",
    )


@benchmark("memory_bytes_per_reservation", "bytes", Target("<=", 200.0))
def memory_bytes_per_reservation(ctx: Context) -> Figure:
    """RSS growth (VmRSS) of a fresh process holding 1M open 3-line reservations (13-character
    ids) in the core's reservation table, divided by the reservations (see
    bench/reservation_memory_probe.py for how they are made)."""
    count = ctx.size(1_000_000, 200_000)
    ctx.log(f"memory: {count:,} open 3-line reservations in a child process")
    out = subprocess.run(
        [sys.executable, "-m", "bench.reservation_memory_probe", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"reservation memory probe failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    details = json.loads(out.stdout.strip().splitlines()[-1])
    details["summary_keys"] = ["reservations", "rss_delta_bytes", "array_bytes_per_reservation"]
    quick = " (--quick: smaller than the 1M of the target)" if count < 1_000_000 else ""
    return Figure(
        details["bytes_per_reservation"],
        details,
        f"at {count:,} open reservations of 3 lines{quick}: VmRSS after minus VmRSS before "
        "reserving them through apply(Reserve), in a fresh child process, divided by "
        "reservations; array_bytes_per_reservation splits the table's arrays (rows, lines, "
        "ids with their index, the time heaps)",
    )
