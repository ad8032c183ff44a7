"""Server CPU per Reserve+Release pair with and without 100 WatchBatch subscribers:
`.venv/bin/python -m bench.watch_cpu [--rounds N] [--seconds S] [--modes batched,...]
[--compare SRC]`.

A tool for working on the change stream's cost, not a registered benchmark (the figure that is
recorded is `watch_overhead_ratio`, bench/suites/watch.py, whose load and subscribers this
reuses). Throughput moves with whatever else runs on the 2 shared cores; the CPU time the
server process spends per pair moves less, so this reports that: user + system time of the
whole server process (every thread: the event loop and grpc's own) over the pairs done.

Server processes doing identical work differ by several per cent from one start to the next,
so the overhead is measured within one process: each round starts a fresh
`atpd serve --demo --in-memory` pinned to one core and runs the load on it first never watched
(`none`: no change capture at all), then with the subscribers of each mode connected
(`batched`: subscriber i watches SKU i of the hot set at the warehouse through WatchBatch,
max_delay_ms 50; `scoped`: the same through Watch; `all`: every subscriber watches everything
through WatchBatch). With `--compare`, every round does the same on a fresh server of the
other build too (alternating which goes first), so both builds see the same machine. Each
watched round checks that the subscribers received exactly the events expected. Prints one
line per round and, at the end, the median over rounds of each mode's CPU per pair and of its
extra over `none` on the same server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from atpd.v1 import watch_pb2
from bench import servers
from bench.suites.watch import (
    BATCH_DELAY_MS,
    NODE,
    SUBSCRIBERS,
    Subscribers,
    hot_skus,
    run_pairs,
    start_server,
)

MODES = ("none", "batched", "scoped", "all")


def scopes(mode: str) -> list[watch_pb2.WatchRequest]:
    if mode == "all":
        return [watch_pb2.WatchRequest() for _ in range(SUBSCRIBERS)]
    return [watch_pb2.WatchRequest(skus=[sku], node_ids=[NODE]) for sku in hot_skus()]


def one_round(
    server: servers.ServerProcess,
    mode: str,
    seconds: float,
    load_cpus: set[int],
    tag: str,
    delay_ms: int = BATCH_DELAY_MS,
) -> tuple[float, float, int]:
    """(server CPU us per pair, pairs per second, pairs) of one round; raises if the
    subscribers missed events."""
    subscribers = None
    if mode != "none":
        batch_delay_ms = None if mode == "scoped" else delay_ms
        subscribers = Subscribers.start(server.target, scopes(mode), load_cpus, batch_delay_ms)
    try:
        before = subscribers.counts()[0] if subscribers else 0
        cpu_before = server.cpu_seconds()
        rate, pairs = run_pairs(server.target, hot_skus(), tag, seconds, load_cpus)
        cpu_used = server.cpu_seconds() - cpu_before
        if subscribers:
            expected = 2 * pairs * (SUBSCRIBERS if mode == "all" else 1)
            total, _, errors = subscribers.wait_for(before + expected)
            if errors or total - before != expected:
                raise RuntimeError(
                    f"{server.name} {mode}: {total - before} of {expected} events, {errors[:3]}"
                )
    finally:
        if subscribers:
            subscribers.stop()
    return cpu_used / pairs * 1e6, rate, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.watch_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="load per mode (default 4)")
    parser.add_argument(
        "--modes",
        default="batched",
        help=f"watched modes, comma-separated, of {','.join(MODES[1:])} (none always runs)",
    )
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=BATCH_DELAY_MS,
        help=f"WatchBatch max_delay_ms (default {BATCH_DELAY_MS}, as the benchmark)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="a src directory of another build (e.g. `git archive` of a commit, plus the "
        "generated src/atpd/v1): measured in the same rounds, labelled MODE@base",
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip() not in ("", "none")]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown} (known: {', '.join(MODES[1:])})")
    server_cpus, load_cpus = servers.cpu_split()
    builds: list[tuple[str, Path | None]] = [("", None)]
    if args.compare is not None:
        builds.append(("@base", args.compare))
    cpu: dict[str, list[float]] = {}
    extra: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="atpd-watch-cpu-") as scratch:
        for round_number in range(args.rounds):
            order = builds if round_number % 2 == 0 else builds[::-1]
            for suffix, source in order:
                name = f"r{round_number}{suffix.replace('@', '-')}"
                server = start_server(name, Path(scratch), server_cpus, source)
                try:
                    # Warm-up (connections, first-call paths) on the never-watched server.
                    one_round(server, "none", 1.5, load_cpus, f"{name}-warm", args.delay_ms)
                    baseline = 0.0
                    for mode in ["none", *modes]:
                        us, rate, pairs = one_round(
                            server, mode, args.seconds, load_cpus, f"{name}-{mode}", args.delay_ms
                        )
                        label = f"{mode}{suffix}"
                        cpu.setdefault(label, []).append(us)
                        if mode == "none":
                            baseline = us
                        else:
                            extra.setdefault(label, []).append(us - baseline)
                        print(
                            f"round {round_number} {label:14s} {us:7.1f} us/pair "
                            f"(+{us - baseline:5.1f}) {rate:7.0f} pairs/s ({pairs} pairs)",
                            flush=True,
                        )
                finally:
                    server.stop()
    print(f"server CPU per pair, median of {args.rounds} rounds (fresh servers):")
    for label, values in cpu.items():
        over = f"  +{statistics.median(extra[label]):5.1f} us over none" if label in extra else ""
        print(f"  {label:14s} {statistics.median(values):7.1f} us{over}")


if __name__ == "__main__":
    main()
