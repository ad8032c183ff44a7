"""The race against Redis + Lua (issue 13): durable 1-line reservations per second, atpd with
batches (fsync always) against Redis running the same check-and-decrement as a Lua script
(appendfsync always, then everysec), each server pinned to one core in the same run, and the
Python client's coalescing against one-at-a-time unary calls.

Redis is driven by redis-benchmark (C, 50 connections), atpd by Python load-generator
processes sending CommandBatch calls (several in flight each), so neither generator is the
bottleneck. Without redis-server and redis-benchmark (Debian: redis-server, redis-tools; `make
bench` installs them when it can) the Redis figures are skipped with a line saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import time
from typing import Any

from bench import servers
from bench.registry import Context, Figure, Skipped, Target, benchmark

NODE_ID = "WH-RACE-01"
SKUS = tuple(f"RACE-{i:03d}" for i in range(100))
ON_HAND = 1_000_000_000
# Finished reservations the server remembers (for idempotent retries): bounded so that a run
# of a few million reservations does not grow the server by gigabytes.
RETAINED = 50_000
BATCH_COMMANDS = 512
BATCHES_IN_FLIGHT = 4
COALESCED_CALLERS = 100
REDIS_CONNECTIONS = 50

# KEYS[1] the stock counter, KEYS[2] the reservation's hash; ARGV[1] the quantity.
# Idempotent on the reservation key, as atpd's Reserve is on its id.
RESERVE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local quantity = tonumber(ARGV[1])
local available = tonumber(redis.call('GET', KEYS[1]) or '0')
if available < quantity then return 0 end
redis.call('DECRBY', KEYS[1], quantity)
redis.call('HSET', KEYS[2], 'stock', KEYS[1], 'quantity', quantity, 'status', 'HELD')
return 1
"""
# Release gives the quantity back and deletes the reservation (a second release does nothing).
RELEASE_LUA = """
local quantity = redis.call('HGET', KEYS[1], 'quantity')
if not quantity then return 0 end
redis.call('INCRBY', redis.call('HGET', KEYS[1], 'stock'), quantity)
redis.call('DEL', KEYS[1])
return 1
"""


def redis_tools() -> str | None:
    """Why the Redis side cannot run, or None when it can."""
    missing = [t for t in ("redis-server", "redis-benchmark", "redis-cli") if not shutil.which(t)]
    if missing:
        return (
            f"{', '.join(missing)} not installed (Debian: apt-get install redis-server "
            "redis-tools; `make bench` tries): Redis figures skipped"
        )
    return None


# ---------------------------------------------------------------------------- Redis


def _redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def _redis_round(
    ctx: Context, appendfsync: str, requests: int, server_cpus: set[int], load_cpus: set[int]
) -> dict[str, Any]:
    """A fresh redis-server (AOF on, `appendfsync`), the Lua reserve run `requests` times by
    redis-benchmark with unique reservation keys; calls per second and server CPU per call."""
    directory = ctx.scratch / f"redis-{appendfsync}-{time.monotonic_ns()}"
    directory.mkdir()
    port = servers.free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--appendonly", "yes", "--appendfsync", appendfsync, "--save", ""]
    server = servers.start(f"redis-{appendfsync}", command, port, server_cpus, directory)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _redis_cli(port, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering:\n{server.log_tail()}")
            time.sleep(0.05)
        sha = _redis_cli(port, "SCRIPT", "LOAD", RESERVE_LUA)
        _redis_cli(port, "SCRIPT", "LOAD", RELEASE_LUA)
        _redis_cli(port, "SET", "stock:race", str(ON_HAND))
        cpu_before = server.cpu_seconds()
        benchmark_command = ["redis-benchmark", "-p", str(port), "-c", str(REDIS_CONNECTIONS)]
        benchmark_command += ["-n", str(requests), "-r", "1000000000", "--csv"]
        benchmark_command += ["EVALSHA", sha, "2", "stock:race", "res:__rand_int__", "1"]
        out = subprocess.run(
            benchmark_command,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, load_cpus),
        )
        cpu_used = server.cpu_seconds() - cpu_before
        rate = _csv_rate(out.stdout)
        left = int(_redis_cli(port, "GET", "stock:race"))
        held = ON_HAND - left
        if held <= 0 or held > requests:
            raise RuntimeError(f"redis: {held} units held after {requests} reserves")
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _redis_cli(port, "SHUTDOWN", "NOSAVE")
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    ctx.log(
        f"  redis {appendfsync:8s} {rate:9.0f} reserves/s  server CPU "
        f"{cpu_used / requests * 1e6:.1f} us per call"
    )
    return {"rate": rate, "cpu_us_per_call": cpu_used / requests * 1e6, "calls": requests}


def _csv_rate(text: str) -> float:
    """The requests per second of redis-benchmark --csv (one header line, one data line)."""
    for line in text.strip().splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if len(cells) > 1 and cells[0] != "test":
            return float(cells[1])
    raise RuntimeError(f"no rate in redis-benchmark output:\n{text[-2000:]}")


# ---------------------------------------------------------------------------- atpd


def _start_atpd(ctx: Context, name: str, server_cpus: set[int]) -> servers.ServerProcess:
    port = servers.free_port()
    config = ctx.scratch / f"{name}.toml"
    config.write_text(f"[limits]\nmax_retained_reservations = {RETAINED}\n")
    command = servers.atpd_command(port, ctx.scratch / f"{name}-data", demo=False)
    command += ["--fsync", "always", "--config", str(config)]
    server = servers.start(name, command, port, server_cpus, ctx.scratch)
    server.wait_serving(120)
    from atpd.client import Client

    with Client(server.target) as client:
        client.upsert_node(NODE_ID, "WAREHOUSE", "EU/FR/Paris")
        for sku in SKUS:
            client.set_stock(sku, NODE_ID, ON_HAND, 1)
    return server


async def _batch_load(target: str, prefix: str, seconds: float) -> int:
    """BATCHES_IN_FLIGHT workers, each sending CommandBatch calls of BATCH_COMMANDS 1-line
    reserves with unique ids, as redis-benchmark sends the Lua reserve; reserves made (each
    checked OK). The holds stay (as Redis's hashes do): a few hundred MB over a run."""
    import grpc

    from atpd.v1 import batch_pb2, batch_pb2_grpc, reservations_pb2

    async with grpc.aio.insecure_channel(target) as channel:
        stub = batch_pb2_grpc.CommandServiceStub(channel)
        deadline = time.monotonic() + seconds
        made = 0

        async def worker(number: int) -> None:
            nonlocal made
            batch = 0
            while time.monotonic() < deadline:
                ids = [f"{prefix}-{number}-{batch}-{i}" for i in range(BATCH_COMMANDS)]
                reserves = [
                    batch_pb2.BatchCommand(
                        reserve=reservations_pb2.ReserveRequest(
                            reservation_id=rid,
                            lines=[
                                reservations_pb2.ReservationLine(
                                    sku=SKUS[i % len(SKUS)], node_id=NODE_ID, quantity=1
                                )
                            ],
                            ttl_ms=600_000,
                        )
                    )
                    for i, rid in enumerate(ids)
                ]
                answer = await stub.CommandBatch(
                    batch_pb2.CommandBatchRequest(commands=reserves), timeout=60
                )
                if any(
                    r.WhichOneof("result") != "reserve" or r.reserve.outcome != 1
                    for r in answer.results
                ):
                    raise RuntimeError(f"a reserve failed: {answer.results[0]}")
                made += len(ids)
                batch += 1

        await asyncio.gather(*(worker(n) for n in range(BATCHES_IN_FLIGHT)))
        return made


def _batch_process(args: tuple[str, str, float, set[int]]) -> int:
    target, prefix, seconds, cpus = args
    os.sched_setaffinity(0, cpus)
    return asyncio.run(_batch_load(target, prefix, seconds))


def _atpd_round(
    ctx: Context,
    server: servers.ServerProcess,
    seconds: float,
    processes: int,
    load_cpus: set[int],
    round_number: int,
) -> dict[str, Any]:
    cpu_before = server.cpu_seconds()
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    args = [(server.target, f"r{round_number}p{p}", seconds, load_cpus) for p in range(processes)]
    with context.Pool(processes) as pool:
        counts = pool.map(_batch_process, args)
    elapsed = time.monotonic() - started
    made = sum(counts)
    cpu_used = server.cpu_seconds() - cpu_before
    # Spawning the pool takes a moment: rate over the load's own seconds (each process ran
    # for `seconds` after its start, and the last batches finish just after).
    rate = made / seconds
    ctx.log(
        f"  atpd batches {rate:9.0f} reserves/s  server CPU "
        f"{cpu_used / made * 1e6:.1f} us per command  ({elapsed:.1f} s wall)"
    )
    return {"rate": rate, "cpu_us_per_command": cpu_used / made * 1e6, "reserves": made}


# ---------------------------------------------------------------------------- the figures


def _race(ctx: Context) -> dict[str, Any]:
    """One run of all three servers, alternating rounds; cached for the two ratio figures."""

    def run() -> dict[str, Any]:
        rounds = ctx.size(3, 1)
        seconds = float(ctx.size(5, 3))
        server_cpus, load_cpus = servers.cpu_split()
        processes = max(2, len(load_cpus) + 1)
        skipped = redis_tools()
        if skipped:
            ctx.log(f"race: {skipped}")
        measured: dict[str, list[dict[str, Any]]] = {"atpd": [], "always": [], "everysec": []}
        atpd = _start_atpd(ctx, "atpd-race", server_cpus)
        try:
            _atpd_round(ctx, atpd, 1.5, processes, load_cpus, 0)  # warm-up
            guesses = {"always": 20_000.0, "everysec": 60_000.0}
            for number in range(1, rounds + 1):
                measured["atpd"].append(
                    _atpd_round(ctx, atpd, seconds, processes, load_cpus, number)
                )
                if skipped:
                    continue
                for policy in ("always", "everysec"):
                    requests = max(20_000, round(guesses[policy] * seconds))
                    result = _redis_round(ctx, policy, requests, server_cpus, load_cpus)
                    guesses[policy] = result["rate"]
                    measured[policy].append(result)
        finally:
            atpd.stop()
        return {
            "measured": measured,
            "skipped": skipped,
            "rounds": rounds,
            "seconds": seconds,
            "processes": processes,
        }

    race: dict[str, Any] = ctx.fixture("race", run)
    return race


def _ratio_figure(ctx: Context, policy: str) -> Figure:
    race = _race(ctx)
    measured = race["measured"]
    atpd_rate = statistics.median(r["rate"] for r in measured["atpd"])
    details: dict[str, Any] = {
        "atpd_reserves_per_s": round(atpd_rate),
        "atpd_server_cpu_us_per_command": round(
            statistics.median(r["cpu_us_per_command"] for r in measured["atpd"]), 1
        ),
        "atpd_load": f"{race['processes']} processes x {BATCHES_IN_FLIGHT} CommandBatch calls "
        f"in flight x {BATCH_COMMANDS} 1-line reserves (unique ids)",
        "rounds": race["rounds"],
        "seconds_per_round": race["seconds"],
    }
    if race["skipped"]:
        raise Skipped(f"{race['skipped']} (atpd alone: {round(atpd_rate)} reserves/s)")
    redis_rate = statistics.median(r["rate"] for r in measured[policy])
    details[f"redis_{policy}_reserves_per_s"] = round(redis_rate)
    details[f"redis_{policy}_server_cpu_us_per_call"] = round(
        statistics.median(r["cpu_us_per_call"] for r in measured[policy]), 1
    )
    details["redis_load"] = f"redis-benchmark -c {REDIS_CONNECTIONS} EVALSHA (Lua reserve)"
    details["summary_keys"] = [
        "atpd_reserves_per_s",
        f"redis_{policy}_reserves_per_s",
        "atpd_server_cpu_us_per_command",
        f"redis_{policy}_server_cpu_us_per_call",
    ]
    return Figure(
        round(atpd_rate / redis_rate, 3),
        details,
        f"median atpd (fsync always, CommandBatch) reserves/s over median Redis+Lua "
        f"(appendfsync {policy}, redis-benchmark) reserves/s, {race['rounds']} alternating "
        "rounds, servers pinned to one core, load on the other",
    )


@benchmark("batched_reserve_vs_redis_always_ratio", "ratio", Target(">=", 1.0))
def batched_reserve_vs_redis_always_ratio(ctx: Context) -> Figure:
    """Durable 1-line reservations per second: atpd (fsync always) fed batches by Python
    processes, over Redis + Lua check-and-decrement with appendfsync always fed by
    redis-benchmark; both pinned to one core, same run."""
    return _ratio_figure(ctx, "always")


@benchmark("batched_reserve_vs_redis_everysec_ratio", "ratio")
def batched_reserve_vs_redis_everysec_ratio(ctx: Context) -> Figure:
    """The same atpd figure over Redis + Lua with appendfsync everysec (reported; beating it
    is the next goal)."""
    return _ratio_figure(ctx, "everysec")


async def _callers(target: str, seconds: float, coalesce: bool) -> tuple[int, int]:
    """COALESCED_CALLERS tasks, each: reserve (1 line), then release, one at a time, through
    atpd.client; (reserves made, batches sent)."""
    from atpd.client import AsyncClient

    made = 0
    tag = "c" if coalesce else "u"
    async with AsyncClient(target, coalesce=coalesce, timeout_s=60) as client:
        deadline = time.monotonic() + seconds

        async def caller(number: int) -> None:
            nonlocal made
            i = 0
            while time.monotonic() < deadline:
                rid = f"{tag}{time.monotonic_ns()}-{number}-{i}"
                result = await client.reserve(rid, [(SKUS[number % len(SKUS)], NODE_ID, 1)])
                if not result.ok:
                    raise RuntimeError(f"reserve {rid}: {result.outcome}")
                made += 1
                await client.release(rid)
                i += 1

        await asyncio.gather(*(caller(n) for n in range(COALESCED_CALLERS)))
        return made, client.coalescer.batches_sent


def _callers_process(args: tuple[str, float, bool, set[int]]) -> tuple[int, int]:
    target, seconds, coalesce, cpus = args
    os.sched_setaffinity(0, cpus)
    return asyncio.run(_callers(target, seconds, coalesce))


@benchmark("client_coalesced_reserves_per_s", "reserves/s")
def client_coalesced_reserves_per_s(ctx: Context) -> Figure:
    """100 asyncio callers in one process, each doing one Reserve (then its Release) at a time
    through atpd.client, which coalesces them into batches on one Submit stream; the same
    callers with coalesce=False (one unary call each) beside it. atpd fsync always."""
    rounds = ctx.size(3, 1)
    seconds = float(ctx.size(5, 3))
    server_cpus, load_cpus = servers.cpu_split()
    atpd = _start_atpd(ctx, "atpd-client", server_cpus)
    measured: dict[bool, list[float]] = {True: [], False: []}
    # Server CPU seconds per second of load: well under 1 means the server waited (the client
    # or the disk was the bottleneck).
    server_cpu: dict[bool, list[float]] = {True: [], False: []}
    batches: list[float] = []
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(1, maxtasksperchild=1) as pool:
            pool.map(_callers_process, [(atpd.target, 1.0, True, load_cpus)])  # warm-up
            for _ in range(rounds):
                for coalesce in (True, False):
                    cpu_before = atpd.cpu_seconds()
                    made, sent = pool.map(
                        _callers_process, [(atpd.target, seconds, coalesce, load_cpus)]
                    )[0]
                    server_cpu[coalesce].append((atpd.cpu_seconds() - cpu_before) / seconds)
                    measured[coalesce].append(made / seconds)
                    if coalesce:
                        # Reserves and releases both go through the stream.
                        batches.append(2 * made / max(1, sent))
                    ctx.log(
                        f"  client {'coalesced' if coalesce else 'unary    '} "
                        f"{made / seconds:8.0f} reserves/s, server busy "
                        f"{server_cpu[coalesce][-1]:.0%}"
                    )
    finally:
        atpd.stop()
    coalesced = statistics.median(measured[True])
    unary = statistics.median(measured[False])
    details = {
        "unary_reserves_per_s": round(unary),
        "coalesced_over_unary": round(coalesced / unary, 2),
        "mean_commands_per_batch": round(statistics.median(batches), 1),
        "server_cpu_busy_coalesced": round(statistics.median(server_cpu[True]), 2),
        "server_cpu_busy_unary": round(statistics.median(server_cpu[False]), 2),
        "callers": COALESCED_CALLERS,
        "rounds": rounds,
        "seconds_per_round": seconds,
        "summary_keys": ["unary_reserves_per_s", "coalesced_over_unary", "mean_commands_per_batch"],
    }
    return Figure(
        round(coalesced),
        details,
        f"median of {rounds} rounds of {seconds} s; one client process on the load core "
        "(the client is the bottleneck: it builds and reads every message in Python)",
    )
