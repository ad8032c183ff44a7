"""Run atpd's benchmarks: `python -m bench.run [--only NAME[,NAME]] [--quick] [--list]`.

Benchmarks are registered in `bench.suites.*` (see bench/registry.py). Progress goes to stderr;
at the end, one JSON line per benchmark `{"name": ..., "value": ..., "unit": ...}` goes to
stdout, all together, and the figures are merged into bench/RESULTS.md (unless --no-record).
Benchmarks are not tests: a missed target is reported, not failed; only a benchmark that
crashes makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import time
import traceback
from typing import Any

from bench import report
from bench.machine import describe, source_revision
from bench.registry import Benchmark, Context, Skipped, discover, new_context
from bench.timing import reference_workload_us


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--no-record", action="store_true", help="do not update bench/RESULTS.md")
    return parser.parse_args(argv)


def select(registry: dict[str, Benchmark], only: str | None) -> list[Benchmark]:
    if not only:
        return list(registry.values())
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in registry]
    if unknown:
        known = ", ".join(registry)
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)} (known: {known})")
    return [registry[name] for name in names]


def loadavg() -> float:
    """The 1-minute load average: how busy the (shared) machine was."""
    with open("/proc/loadavg", encoding="ascii") as source:
        return float(source.read().split()[0])


def summary(details: dict[str, Any]) -> str:
    """The supporting figures worth a table cell (the rest stays in the JSON details)."""
    keys = details.get("summary_keys") or [
        "single_us_p50",
        "single_us_p99",
        "atpd_requests_per_s",
        "echo_requests_per_s",
        "positions",
    ]
    return "; ".join(f"{key} {details[key]}" for key in keys if key in details)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = discover()
    if args.list:
        for item in registry.values():
            target = f" (target {item.target})" if item.target else ""
            print(f"{item.name} [{item.unit}]{target}: {item.description}")
        return 0
    chosen = select(registry, args.only)
    ctx = new_context(args.quick)
    try:
        return run(args, chosen, ctx)
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)


def run(args: argparse.Namespace, chosen: list[Benchmark], ctx: Context) -> int:
    started = datetime.datetime.now(datetime.UTC)
    run_id = started.strftime("%Y-%m-%d %H:%M UTC") + (" quick" if args.quick else "")
    command = "make bench" + (
        f" ARGS={shlex.quote(shlex.join(sys.argv[1:]))}" if sys.argv[1:] else ""
    )
    machine = describe()
    ctx.log(f"{len(chosen)} benchmark(s), {'quick' if args.quick else 'full'} sizes")
    figures: dict[str, dict[str, Any]] = {}
    json_lines: list[str] = []
    failed = 0
    for item in chosen:
        ctx.log(f"--- {item.name}")
        load_before = loadavg()
        reference_us = reference_workload_us()
        t0 = time.perf_counter()
        try:
            figure = item.function(ctx)
        except Skipped as skipped:
            ctx.log(f"{item.name} SKIPPED: {skipped}")
            continue
        except Exception:
            failed += 1
            ctx.log(f"{item.name} FAILED:\n{traceback.format_exc()}")
            continue
        elapsed = time.perf_counter() - t0
        met = item.target.met(figure.value) if item.target else None
        status = "no target" if met is None else ("pass" if met else "MISS")
        margin = item.target.margin(figure.value) if item.target else ""
        verdict = f"target {item.target}: {status}, {margin}" if item.target else status
        ctx.log(f"{item.name} = {figure.value} {item.unit} ({verdict}) in {elapsed:.1f} s")
        figure.details.setdefault("elapsed_s", round(elapsed, 1))
        figure.details.setdefault("loadavg_1min_before_after", [load_before, loadavg()])
        figure.details.setdefault(
            "reference_workload_us_before_after",
            [
                reference_us,
                reference_workload_us(),
            ],
        )
        figures[item.name] = {
            "value": figure.value,
            "unit": item.unit,
            "target": str(item.target) if item.target else "",
            "status": status,
            "margin": margin,
            "summary": summary(figure.details),  # before summary_keys is dropped below
            "note": figure.note or item.description,
            "details": {k: v for k, v in figure.details.items() if k != "summary_keys"},
            "run": run_id,
        }
        json_lines.append(json.dumps({"name": item.name, "value": figure.value, "unit": item.unit}))
    if figures and not args.no_record:
        report.record(
            figures,
            run_id,
            {
                "date": started.isoformat(timespec="seconds"),
                "machine": machine,
                "command": command,
                "source": source_revision(str(report.RESULTS_PATH.parents[1])),
            },
        )
        ctx.log(f"recorded in {report.RESULTS_PATH}")
    sys.stdout.write("".join(line + "\n" for line in json_lines))
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
