"""Replication figures (issue 15): what a follower adds to read capacity, what sync replication
costs a durable write.

- `replica_read_scaling_ratio`: GetAvailability (one SKU per call, demo data set) calls per
  second served by a primary and one follower (each pinned to its own core), the load spread
  evenly over both (one h2load per server, pinned to the other server's core, same request
  count), over the same load on the primary alone (primary on one core, h2load on the other);
  median of alternating rounds.
- `sync_replication_reserve_ratio`: OK reserves per second (64 concurrent Python grpc.aio
  clients, 1-line reserve under a unique id then release, `--fsync always`) against a primary
  with `replication = "sync"` and one follower, over the same load against a single node;
  alternating rounds. Servers (the primary, the single node) on one core; the clients and the
  follower on the other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from atpd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
)
from bench import load, servers
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.grpc_capacity import CLIENTS, METHOD_PATH, STREAMS_PER_CLIENT, query_sku

RESERVE_PATH = "/atpd.v1.ReservationService/Reserve"
RELEASE_PATH = "/atpd.v1.ReservationService/Release"
CLIENT_PROCESSES = 4
STREAMS_PER_PROCESS = 16
NODES = 8
SKUS = 64
OUTCOME_OK = 1
CATCH_UP_TIMEOUT_S = 120.0


def _status(target: str) -> Any:
    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=10)


def _wait_caught_up(primary: str, follower: str) -> float:
    """Seconds until the follower holds the primary's last durable record."""
    started = time.monotonic()
    target = _status(primary).durable_sequence
    while time.monotonic() - started < CATCH_UP_TIMEOUT_S:
        if _status(follower).durable_sequence >= target:
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"follower {follower} not at sequence {target}")


def _wait_connected(primary: str) -> None:
    started = time.monotonic()
    while not _status(primary).followers:
        if time.monotonic() - started > CATCH_UP_TIMEOUT_S:
            raise TimeoutError(f"no follower connected to {primary}")
        time.sleep(0.1)


def _start(
    ctx: Context, name: str, cpus: set[int], extra: list[str], demo: bool
) -> servers.ServerProcess:
    port = servers.free_port()
    data_dir = ctx.scratch / f"{name}-data"
    command = [*servers.atpd_command(port, data_dir, demo=demo), *extra]
    return servers.start(name, command, port, cpus, ctx.scratch)


# ------------------------------------------------------------------------------ read scaling


def _h2load_rounds(
    targets: list[tuple[servers.ServerProcess, set[int]]], body_file: Path, requests: int
) -> dict[str, float]:
    """One h2load per (server, CPUs), all at once, the same request count each; the combined
    rate counts every call over the longest run (conservative when they end apart)."""
    results: dict[str, load.LoadResult] = {}

    def run(server: servers.ServerProcess, cpus: set[int]) -> None:
        results[server.name] = load.run_h2load(
            server.port, METHOD_PATH, body_file, requests, CLIENTS, STREAMS_PER_CLIENT, cpus
        )

    threads = [threading.Thread(target=run, args=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(targets):
        raise RuntimeError("an h2load run failed")
    for name, result in results.items():
        if result.failed or not result.succeeded:
            raise RuntimeError(f"{name}: {result.failed} failed calls\n{result.raw[-2000:]}")
    longest_s = max(r.succeeded / r.requests_per_s for r in results.values())
    rates = {name: result.requests_per_s for name, result in results.items()}
    return rates | {"combined": sum(r.succeeded for r in results.values()) / longest_s}


@benchmark("replica_read_scaling_ratio", "ratio", Target(">=", 1.6))
def replica_read_scaling_ratio(ctx: Context) -> Figure:
    """GetAvailability capacity of a primary plus one follower (load spread over both, each
    server on its own core) over the primary alone; median of alternating rounds."""
    if not load.h2load_available():
        raise RuntimeError("h2load (Debian nghttp2-client) is needed for this figure")
    rounds = ctx.size(3, 1)
    cpus = sorted(os.sched_getaffinity(0))
    first, second = {cpus[0]}, {cpus[-1]}
    request = availability_pb2.GetAvailabilityRequest(skus=[query_sku()])
    body_file = ctx.scratch / "replica_read.body"
    body_file.write_bytes(load.grpc_frame(request.SerializeToString()))
    started: list[servers.ServerProcess] = []
    alone: list[float] = []
    spread: list[float] = []
    busy: list[list[float]] = []  # CPU share of its core each server used while spread
    alone_busy: list[float] = []  # ... and the primary alone
    try:
        primary = _start(ctx, "primary", first, [], demo=True)
        started.append(primary)
        ctx.log(f"  primary SERVING after {primary.wait_serving(180):.1f} s")
        follower = _start(ctx, "follower", second, ["--follow", primary.target], demo=False)
        started.append(follower)
        ctx.log(f"  follower SERVING after {follower.wait_serving(180):.1f} s")
        ctx.log(f"  follower caught up in {_wait_caught_up(primary.target, follower.target):.1f} s")
        with grpc.insecure_channel(follower.target) as channel:
            reply = availability_pb2_grpc.AvailabilityServiceStub(channel).GetAvailability(
                request, timeout=10
            )
        assert reply.items[0].known and reply.items[0].total_atp > 0, reply
        # Warm-up, which also sizes the rounds to about `seconds` each.
        warm = _h2load_rounds([(primary, second)], body_file, 3000)["combined"]
        _h2load_rounds([(primary, second), (follower, first)], body_file, 3000)
        requests = max(5000, round(warm * ctx.size(5, 2)))
        for number in range(rounds):
            cpu_alone, wall_alone = primary.cpu_seconds(), time.monotonic()
            alone.append(_h2load_rounds([(primary, second)], body_file, requests)["combined"])
            alone_busy.append(
                round((primary.cpu_seconds() - cpu_alone) / (time.monotonic() - wall_alone), 2)
            )
            cpu_before = (primary.cpu_seconds(), follower.cpu_seconds())
            wall_before = time.monotonic()
            both = _h2load_rounds([(primary, second), (follower, first)], body_file, requests)
            wall_s = time.monotonic() - wall_before
            busy.append(
                [
                    round((server.cpu_seconds() - before) / wall_s, 2)
                    for server, before in zip((primary, follower), cpu_before, strict=True)
                ]
            )
            spread.append(both["combined"])
            ctx.log(
                f"  round {number}: primary alone {alone[-1]:7.0f}/s, primary + follower "
                f"{spread[-1]:7.0f}/s ({both['primary']:.0f} + {both['follower']:.0f})"
            )
    finally:
        for server in started:
            server.stop()
    ratios = [s / a for s, a in zip(spread, alone, strict=True)]
    details: dict[str, Any] = {
        "primary_alone_calls_per_s": round(statistics.median(alone)),
        "primary_and_follower_calls_per_s": round(statistics.median(spread)),
        "round_ratios": [round(r, 3) for r in ratios],
        "requests_per_round_per_server": requests,
        "spread_cpu_share_primary_follower": busy,
        "alone_cpu_share_primary": alone_busy,
        "load": f"h2load {CLIENTS} connections x {STREAMS_PER_CLIENT} streams per server",
        "summary_keys": [
            "primary_alone_calls_per_s",
            "primary_and_follower_calls_per_s",
            "spread_cpu_share_primary_follower",
            "alone_cpu_share_primary",
        ],
    }
    return Figure(
        round(statistics.median(spread) / statistics.median(alone), 3),
        details,
        f"median GetAvailability calls/s (1 SKU, demo data) of primary + follower (each on its "
        f"own core, one h2load per server on the other core) over the primary alone (h2load on "
        f"the other core), {rounds} alternating rounds",
    )


# ------------------------------------------------------------------------------ sync reserves


def _setup_world(target: str) -> None:
    """NODES stores x SKUS SKUs with stock that never runs out under the load."""
    with grpc.insecure_channel(target) as channel:
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        for node in range(NODES):
            node_message = inventory_pb2.Node(
                node_id=f"N{node}",
                kind=1,  # type: ignore[arg-type]
                geo_path=f"EU/FR/City{node}",
                ships=True,
                pickup=True,
                enabled=True,
            )
            inventory.UpsertNode(inventory_pb2.UpsertNodeRequest(node=node_message), timeout=10)
            for sku in range(SKUS):
                inventory.SetStock(
                    inventory_pb2.SetStockRequest(
                        sku=f"S{sku}", node_id=f"N{node}", on_hand=10**9, source_sequence=1
                    ),
                    timeout=10,
                )


async def _reserve_loop(
    target: str, prefix: str, start_at: float, seconds: float
) -> dict[str, float]:
    parse = reservations_pb2.ReserveResponse.FromString
    counts = {"ok": 0.0, "failed": 0.0}
    async with grpc.aio.insecure_channel(target) as channel:
        reserve = channel.unary_unary(RESERVE_PATH, None, None)
        release = channel.unary_unary(RELEASE_PATH, None, None)
        await channel.channel_ready()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(number: int) -> None:
            serial = 0
            while time.perf_counter() < deadline:
                serial += 1
                reservation_id = f"{prefix}-{number}-{serial}"
                line = reservations_pb2.ReservationLine(
                    sku=f"S{serial % SKUS}", node_id=f"N{number % NODES}", quantity=1
                )
                body = reservations_pb2.ReserveRequest(
                    reservation_id=reservation_id, lines=[line], ttl_ms=900_000
                ).SerializeToString()
                try:
                    reply = parse(await reserve(body, timeout=30))
                    if reply.outcome != OUTCOME_OK:
                        counts["failed"] += 1
                        continue
                    counts["ok"] += 1
                    request = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
                    await release(request.SerializeToString(), timeout=30)
                except grpc.aio.AioRpcError:
                    counts["failed"] += 1

        await asyncio.gather(*(worker(i) for i in range(STREAMS_PER_PROCESS)))
        counts["elapsed_s"] = time.perf_counter() - started
    return counts


def _reserve_process(args: tuple[str, str, float, float, set[int]]) -> dict[str, float]:
    target, prefix, start_at, seconds, cpus = args
    os.sched_setaffinity(0, cpus)
    return asyncio.run(_reserve_loop(target, prefix, start_at, seconds))


def _reserve_round(
    pool: Any, target: str, label: str, seconds: float, cpus: set[int]
) -> dict[str, float]:
    start_at = time.time() + 0.5
    args = [(target, f"{label}-p{i}", start_at, seconds, cpus) for i in range(CLIENT_PROCESSES)]
    results = pool.map(_reserve_process, args)
    ok = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    if failed > 0.01 * (ok + failed):
        raise RuntimeError(f"{label}: {failed} of {ok + failed} reserves failed")
    return {"rate": ok / max(r["elapsed_s"] for r in results), "ok": ok, "failed": failed}


@benchmark("sync_replication_reserve_ratio", "ratio", Target(">=", 0.7))
def sync_replication_reserve_ratio(ctx: Context) -> Figure:
    """Durable reserves per second with sync replication (a primary and one follower, both
    --fsync always) over a single node; alternating rounds, median."""
    rounds = ctx.size(3, 1)
    seconds = ctx.size(5, 3)
    server_cpus, load_cpus = servers.cpu_split()
    config = ctx.scratch / "sync.toml"
    config.write_text('replication = "sync"\nsync_timeout_ms = 5000\nsync_fallback = "refuse"\n')
    started: list[servers.ServerProcess] = []
    measured: dict[str, list[float]] = {"single": [], "sync": []}
    pool = multiprocessing.get_context("spawn").Pool(CLIENT_PROCESSES)
    try:
        single = _start(ctx, "single", server_cpus, ["--fsync", "always"], demo=False)
        primary = _start(
            ctx, "sync-primary", server_cpus, ["--fsync", "always", "--config", str(config)], False
        )
        started += [single, primary]
        follower = _start(
            ctx,
            "sync-follower",
            load_cpus,
            ["--fsync", "always", "--follow", primary.target],
            False,
        )
        started.append(follower)
        for server in started:
            ctx.log(f"  {server.name} SERVING after {server.wait_serving(180):.1f} s")
        _wait_connected(primary.target)  # sync + refuse: no write before a follower is there
        for server in (single, primary):
            _setup_world(server.target)
        _wait_caught_up(primary.target, follower.target)
        targets = {"single": single.target, "sync": primary.target}
        for name, target in targets.items():
            _reserve_round(pool, target, f"warm-{name}", 1.5, load_cpus)
        for number in range(rounds):
            for name, target in targets.items():
                result = _reserve_round(pool, target, f"r{number}-{name}", seconds, load_cpus)
                measured[name].append(result["rate"])
                ctx.log(f"  round {number} {name:6s} {result['rate']:7.0f} OK reserves/s")
        status = _status(primary.target)
        if status.replication_degraded or not status.followers:
            raise RuntimeError(f"sync replication was not in force: {status}")
        lag = _status(primary.target).durable_sequence - status.followers[0].durable_sequence
    finally:
        for server in started:
            server.stop()
        pool.terminate()
        pool.join()
    rate = {name: statistics.median(values) for name, values in measured.items()}
    ratios = [s / n for s, n in zip(measured["sync"], measured["single"], strict=True)]
    details: dict[str, Any] = {
        "sync_reserves_per_s": round(rate["sync"]),
        "single_reserves_per_s": round(rate["single"]),
        "round_ratios": [round(r, 3) for r in ratios],
        "follower_lag_sequences_at_end": lag,
        "concurrency": f"{CLIENT_PROCESSES} processes x {STREAMS_PER_PROCESS} streams",
        "summary_keys": ["sync_reserves_per_s", "single_reserves_per_s", "round_ratios"],
    }
    return Figure(
        round(rate["sync"] / rate["single"], 3),
        details,
        f"median OK reserves/s (1 line, unique id, then release; --fsync always) against a "
        f"sync primary + follower over a single node, {rounds} alternating rounds of {seconds} s; "
        f"servers on one core, clients and the follower on the other",
    )
