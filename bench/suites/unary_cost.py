"""Unary per-call cost (issue 13, item 3): atpd's server CPU per unary call over a bare
grpc.aio server's answering the same methods, and how many journal records share an fsync.

- `unary_reserve_cpu_vs_floor_ratio`: three servers, each its own process pinned to one CPU:
  `atpd serve --demo --fsync always`, the same with `--fsync none`, and
  `bench/echo_reservations.py` (a bare grpc.aio server answering Reserve and Release with
  atpd's own pre-built replies). The same Python load (3 processes x 32 concurrent loops, each
  a Reserve of 1 unit under a unique id then a Release of it) on the other CPU, in alternating
  rounds of one run. Server CPU (utime + stime from /proc) over the round / calls answered.
  Headline: fsync always (the default) over the floor; fsync none beside it.
- `group_commit_records_per_fsync`: journal records per data fsync during the fsync-always
  rounds above, read from the server's own counters (`atpd_journal_records_total`,
  `atpd_journal_fsyncs_total`), and the same at 64 concurrent loops.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import servers
from bench.registry import Context, Figure, Target, benchmark

RESERVE_PATH = "/atpd.v1.ReservationService/Reserve"
RELEASE_PATH = "/atpd.v1.ReservationService/Release"
CHANNEL, SEGMENT = "store", "standard"
TTL_MS = 15 * 60_000
PROCESSES = 3
STREAMS_PER_PROCESS = 32
LINE_POOL = 5_000
OUTCOME_OK = 1


def reservable_lines(count: int) -> list[tuple[str, str]]:
    """(sku, node) demo positions the store/standard caller may reserve 1 unit of."""
    from atpd.core.commands import SetRules
    from atpd.core.state import AtpState
    from atpd.demo import dataset

    now_ms = 1_000_000
    state = AtpState()
    dataset.load_demo(state, now_ms)
    rules = Path(dataset.__file__).with_name("rules.toml")
    state.apply(SetRules(rules.read_text(), str(rules)), now_ms)
    policy = state.policy(CHANNEL, SEGMENT)
    assert policy is not None
    lines: list[tuple[str, str]] = []
    for line in dataset.demo_reservation_lines(count * 3, seed=31):
        row, node = state.skus.get(line.sku), state.node_ids.get(line.node_id)
        if state.caller_atp(policy, row, node) >= 2 and (line.sku, line.node_id) not in lines:
            lines.append((line.sku, line.node_id))
            if len(lines) == count:
                break
    assert len(lines) == count, len(lines)
    return lines


# ------------------------------------------------------------------------------ clients
# Run in spawned client processes pinned to the load CPU(s); module-level so they pickle.

LINES: list[tuple[str, str]] = []


def client_init(cpus: set[int], lines: list[tuple[str, str]]) -> None:
    os.sched_setaffinity(0, cpus)
    LINES[:] = lines


async def load_loop(
    target: str, prefix: str, offset: int, start_at: float, seconds: float, streams: int
) -> dict[str, Any]:
    import grpc

    from atpd.v1 import reservations_pb2

    parse = reservations_pb2.ReserveResponse.FromString
    lines = LINES
    counts = {"calls": 0, "ok": 0, "refused": 0, "errors": 0}
    async with grpc.aio.insecure_channel(target) as channel:
        reserve = channel.unary_unary(RESERVE_PATH, None, None)  # bytes in, bytes out
        release = channel.unary_unary(RELEASE_PATH, None, None)
        await channel.channel_ready()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds

        async def worker(number: int) -> None:
            position = (offset + number * 97) % len(lines)
            serial = 0
            while time.perf_counter() < deadline:
                sku, node_id = lines[position]
                position = (position + 1) % len(lines)
                serial += 1
                reservation_id = f"{prefix}-{number}-{serial}"
                body = reservations_pb2.ReserveRequest(
                    reservation_id=reservation_id,
                    lines=[reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=1)],
                    ttl_ms=TTL_MS,
                    channel=CHANNEL,
                    segment=SEGMENT,
                ).SerializeToString()
                release_body = reservations_pb2.ReleaseRequest(
                    reservation_id=reservation_id
                ).SerializeToString()
                try:
                    reply = parse(await reserve(body, timeout=30))
                    counts["calls"] += 1
                    if reply.outcome != OUTCOME_OK:
                        counts["refused"] += 1
                        continue
                    counts["ok"] += 1
                    await release(release_body, timeout=30)
                    counts["calls"] += 1
                except grpc.aio.AioRpcError:
                    counts["errors"] += 1

        await asyncio.gather(*(worker(i) for i in range(streams)))
    return counts


def load_process(args: tuple[str, str, int, float, float, int]) -> dict[str, Any]:
    return asyncio.run(load_loop(*args))


# ------------------------------------------------------------------------------ servers


def metric_values(port: int, names: tuple[str, ...]) -> dict[str, float]:
    """The current value of each named (unlabelled) metric from the scrape endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for name in names:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        values[name] = float(match.group(1)) if match else 0.0
    return values


JOURNAL_COUNTERS = ("atpd_journal_records_total", "atpd_journal_fsyncs_total")


def start_atpd(
    ctx: Context, name: str, fsync: str, cpus: set[int]
) -> tuple[servers.ServerProcess, int]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-data-", dir=ctx.scratch))
    port, metrics_port = servers.free_port(), servers.free_port()
    command = servers.atpd_command(port, data_dir)
    command[command.index("--metrics-port") + 1] = str(metrics_port)
    command += ["--fsync", fsync]
    return servers.start(name, command, port, cpus, ctx.scratch), metrics_port


def fixed_replies(ctx: Context, target: str, line: tuple[str, str]) -> tuple[Path, Path]:
    """atpd's own answers to one Reserve and its Release, for the echo server to send."""
    import grpc

    from atpd.v1 import reservations_pb2, reservations_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = reservations_pb2_grpc.ReservationServiceStub(channel)
        reserved = stub.Reserve(
            reservations_pb2.ReserveRequest(
                reservation_id="bench-fixed-reply",
                lines=[reservations_pb2.ReservationLine(sku=line[0], node_id=line[1], quantity=1)],
                ttl_ms=TTL_MS,
                channel=CHANNEL,
                segment=SEGMENT,
            ),
            timeout=10,
        )
        assert reserved.outcome == OUTCOME_OK, reserved
        released = stub.Release(
            reservations_pb2.ReleaseRequest(reservation_id="bench-fixed-reply"), timeout=10
        )
    reserve_file, release_file = ctx.scratch / "reserve.reply", ctx.scratch / "release.reply"
    reserve_file.write_bytes(reserved.SerializeToString())
    release_file.write_bytes(released.SerializeToString())
    return reserve_file, release_file


def load_round(
    pool: Any,
    server: servers.ServerProcess,
    label: str,
    seconds: float,
    processes: int,
    streams: int,
    metrics_port: int | None,
) -> dict[str, Any]:
    start_at = time.time() + 0.5
    args = [
        (server.target, f"{label}-p{i}", i * (LINE_POOL // processes), start_at, seconds, streams)
        for i in range(processes)
    ]
    journal_before = metric_values(metrics_port, JOURNAL_COUNTERS) if metrics_port else {}
    cpu_before = server.cpu_seconds()
    results = pool.map(load_process, args)
    cpu_used = server.cpu_seconds() - cpu_before
    journal_after = metric_values(metrics_port, JOURNAL_COUNTERS) if metrics_port else {}
    totals = {k: sum(r[k] for r in results) for k in ("calls", "ok", "refused", "errors")}
    if totals["errors"] or totals["ok"] < 0.9 * (totals["ok"] + totals["refused"]):
        raise RuntimeError(f"{server.name}: too many failed calls: {totals}")
    result = totals | {
        "server_cpu_s": cpu_used,
        "cpu_us_per_call": cpu_used / totals["calls"] * 1e6,
        "calls_per_s": totals["calls"] / seconds,
    }
    if metrics_port:
        records, fsyncs = (journal_after[n] - journal_before[n] for n in JOURNAL_COUNTERS)
        result["records_per_fsync"] = records / fsyncs if fsyncs else 0.0
    return result


@benchmark("unary_reserve_cpu_vs_floor_ratio", "ratio", Target("<=", 1.1))
def unary_reserve_cpu_vs_floor_ratio(ctx: Context) -> Figure:
    """atpd server CPU per unary call (Reserve 1 unit, then Release; --fsync always) over a
    bare grpc.aio server's answering the same methods with fixed replies; the same Python
    clients (3 processes x 32 concurrent loops) on the other core; median of alternating
    rounds."""
    rounds = ctx.size(3, 1)
    seconds = float(ctx.size(4, 2))
    server_cpus, load_cpus = servers.cpu_split()
    ctx.log("unary cost: choosing reservable demo lines")
    lines = ctx.fixture("unary_cost_lines", lambda: reservable_lines(LINE_POOL))
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(PROCESSES, initializer=client_init, initargs=(load_cpus, lines))
    started: list[servers.ServerProcess] = []
    metrics_ports: dict[str, int | None] = {"echo": None}
    measured: dict[str, list[dict[str, Any]]] = {"echo": [], "always": [], "none": []}
    wide: list[dict[str, Any]] = []
    try:
        by_name: dict[str, servers.ServerProcess] = {}
        for fsync in ("always", "none"):
            server, metrics_ports[fsync] = start_atpd(ctx, f"atpd-{fsync}", fsync, server_cpus)
            started.append(server)
            by_name[fsync] = server
            ready_s = server.wait_serving(180)
            ctx.log(f"  {server.name} SERVING after {ready_s:.1f} s")
        reserve_file, release_file = fixed_replies(ctx, by_name["none"].target, lines[0])
        echo_port = servers.free_port()
        echo = servers.start(
            "echo",
            [
                sys.executable,
                "-m",
                "bench.echo_reservations",
                str(echo_port),
                str(reserve_file),
                str(release_file),
            ],
            echo_port,
            server_cpus,
            ctx.scratch,
        )
        started.append(echo)
        echo.wait_serving(60)
        by_name = {"echo": echo, **by_name}
        for name, server in by_name.items():  # warm-up: connections, first-call paths
            load_round(pool, server, f"warm-{name}", 1.5, PROCESSES, STREAMS_PER_PROCESS, None)
        for number in range(rounds):
            for name, server in by_name.items():
                result = load_round(
                    pool,
                    server,
                    f"r{number}-{name}",
                    seconds,
                    PROCESSES,
                    STREAMS_PER_PROCESS,
                    metrics_ports[name],
                )
                measured[name].append(result)
                ctx.log(
                    f"  {name:6s} {result['calls_per_s']:7.0f} calls/s, server CPU "
                    f"{result['cpu_us_per_call']:.1f} us/call"
                    + (
                        f", {result['records_per_fsync']:.1f} records/fsync"
                        if "records_per_fsync" in result
                        else ""
                    )
                )
        # Group commit at 64 concurrent loops (the figure): 4 x 16 against always.
        for number in range(rounds):
            result = load_round(
                pool,
                by_name["always"],
                f"w{number}",
                seconds,
                PROCESSES,
                64 // PROCESSES + 1,
                metrics_ports["always"],
            )
            wide.append(result)
            ctx.log(f"  64+ loops: {result['records_per_fsync']:.1f} records/fsync")
    finally:
        for server in started:
            server.stop()
        pool.terminate()
        pool.join()

    def median(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in measured[name]))

    floor = median("echo", "cpu_us_per_call")
    always, none = median("always", "cpu_us_per_call"), median("none", "cpu_us_per_call")
    details: dict[str, Any] = {
        "always_cpu_us_per_call": round(always, 1),
        "none_cpu_us_per_call": round(none, 1),
        "echo_cpu_us_per_call": round(floor, 1),
        "none_vs_floor_ratio": round(none / floor, 3),
        "always_calls_per_s": round(median("always", "calls_per_s")),
        "none_calls_per_s": round(median("none", "calls_per_s")),
        "echo_calls_per_s": round(median("echo", "calls_per_s")),
        "records_per_fsync_96_loops": round(median("always", "records_per_fsync"), 2),
        "records_per_fsync_66_loops": round(
            float(statistics.median(r["records_per_fsync"] for r in wide)), 2
        ),
        "rounds": measured,
        "concurrency": f"{PROCESSES} processes x {STREAMS_PER_PROCESS} loops",
        "seconds_per_round": seconds,
        "server_cpus": sorted(server_cpus),
        "load_cpus": sorted(load_cpus),
        "summary_keys": [
            "always_cpu_us_per_call",
            "none_cpu_us_per_call",
            "echo_cpu_us_per_call",
            "none_vs_floor_ratio",
            "records_per_fsync_66_loops",
        ],
    }
    return Figure(
        round(always / floor, 3),
        details,
        f"median server CPU per call (Reserve 1 unit + Release) of atpd --fsync always over "
        f"the bare grpc.aio echo's, {rounds} alternating rounds of {seconds} s, "
        f"{PROCESSES}x{STREAMS_PER_PROCESS} Python grpc.aio loops",
    )
