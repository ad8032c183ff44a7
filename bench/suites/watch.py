"""Change-stream overhead: reservation throughput of a real `atpd serve` while 100 Watch
subscribers consume their streams, against the same load on the same server before anyone
watched it.

Each round starts a fresh in-memory demo server pinned to one core and measures it first never
watched (`none`: no change capture at all), then with the subscribers of each mode connected.
The figure is the median of the per-round ratios. Comparing within one process matters: server
processes doing identical work differ by up to ~10 % from one start to the next (measured
2026-11-30: three fresh servers, the same load, medians of 1,455, 1,475 and 1,586 pairs/s),
which a ratio between two processes would report as overhead (or as a gain). The order is
fixed (never watched first), so what a server accumulates over a round counts against the
watched ones. The load generator (client processes on the other core) runs Reserve + Release
pairs with unique reservation ids over a hot set of 100 warehouse positions.

Subscriber scopes (one subscriber process, grpc.aio, on the load core):
- `batched` (the headline): subscriber i watches SKU i of the hot set at the warehouse, as a
  product page or a search index shard would, through `WatchBatch` (several events per
  message, the server holding a message up to BATCH_DELAY_MS to fill it); every change reaches
  exactly one subscriber, and the server still tests each change against all 100 scopes;
- `scoped` (a detail): the same scopes through `Watch`, one event per message (the figure
  before WatchBatch existed);
- `all` (a detail): every subscriber watches everything through `WatchBatch`, so each change
  is sent 100 times.
Every event is counted by the subscriber process and checked against the changes made: a
round whose subscribers missed events or were cut off does not count.

After the last round, that server with nobody subscribed, against its own never-watched round:
right away (`none_after_watchers`: changes are still recorded while a resume could replay
them), and once the change log has rolled over (`none_after_log_rolled`: recording has
stopped, so it should match).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from atpd.config import Config
from atpd.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    watch_pb2,
    watch_pb2_grpc,
)
from bench import servers
from bench.registry import Context, Figure, Target, benchmark

SUBSCRIBERS = 100
NODE = "WH-EU-01"
STOCK = 1_000_000
CLIENT_PROCESSES = 2
STREAMS_PER_CLIENT = 16
SUBSCRIBER_CHANNELS = 4
RESERVE_PATH = "/atpd.v1.ReservationService/Reserve"
RELEASE_PATH = "/atpd.v1.ReservationService/Release"
# Bounds on waiting for the subscriber process (start, catching up after a round).
SUBSCRIBER_READY_S = 60.0
SUBSCRIBER_DRAIN_S = 60.0
# WatchBatch subscribers let the server hold a message this long to put more events in it.
BATCH_DELAY_MS = 50
# The servers' change log (watch_buffer_events, the default): once this many changes followed
# the last subscriber's leaving, the watched server stops recording them.
LOG_EVENTS = Config().watch_buffer_events


def hot_skus() -> list[str]:
    """100 SKUs without prefix rules in the demo rule set (no protection, no SKU safety)."""
    from atpd.demo.dataset import demo_skus

    skus = [sku for sku in demo_skus() if not sku.startswith(("WCH-", "BAG-"))]
    assert len(skus) >= SUBSCRIBERS
    return skus[:SUBSCRIBERS]


# ---------------------------------------------------------------------------- load generator


async def _pairs(target: str, skus: list[str], prefix: str, seconds: float, streams: int) -> int:
    """Reserve one unit then release it, `streams` at a time, for `seconds`: pairs done."""
    async with grpc.aio.insecure_channel(target) as channel:
        # No serializers: bytes in, bytes out.
        reserve = channel.unary_unary(
            RESERVE_PATH, request_serializer=None, response_deserializer=None
        )
        release = channel.unary_unary(
            RELEASE_PATH, request_serializer=None, response_deserializer=None
        )
        deadline = time.monotonic() + seconds
        done = 0

        async def worker(index: int) -> None:
            nonlocal done
            k = 0
            while time.monotonic() < deadline:
                reservation_id = f"{prefix}-{index}-{k}"
                sku = skus[(index * 7 + k) % len(skus)]
                request = reservations_pb2.ReserveRequest(
                    reservation_id=reservation_id,
                    lines=[reservations_pb2.ReservationLine(sku=sku, node_id=NODE, quantity=1)],
                    ttl_ms=600_000,
                )
                reply = reservations_pb2.ReserveResponse.FromString(
                    await reserve(request.SerializeToString(), timeout=30)
                )
                if reply.outcome != 1:  # OUTCOME_OK
                    raise RuntimeError(f"Reserve {reservation_id}: {reply}")
                await release(
                    reservations_pb2.ReleaseRequest(
                        reservation_id=reservation_id
                    ).SerializeToString(),
                    timeout=30,
                )
                done += 1
                k += 1

        await asyncio.gather(*(worker(i) for i in range(streams)))
        return done


def _client_process(args: tuple[str, list[str], str, float, int, set[int]]) -> int:
    target, skus, prefix, seconds, streams, cpus = args
    os.sched_setaffinity(0, cpus)
    return asyncio.run(_pairs(target, skus, prefix, seconds, streams))


def run_pairs(
    target: str, skus: list[str], prefix: str, seconds: float, cpus: set[int]
) -> tuple[float, int]:
    """(pairs per second, pairs) from CLIENT_PROCESSES processes."""
    context = multiprocessing.get_context("spawn")
    args = [
        (target, skus, f"{prefix}-p{p}", seconds, STREAMS_PER_CLIENT, cpus)
        for p in range(CLIENT_PROCESSES)
    ]
    with context.Pool(CLIENT_PROCESSES) as pool:
        counts = pool.map(_client_process, args)
    return sum(counts) / seconds, sum(counts)


# ---------------------------------------------------------------------------- subscribers


async def _subscribe(
    target: str, requests: list[bytes], conn: Connection, delay_ms: int | None
) -> None:
    """Consume the streams: Watch when delay_ms is None, else WatchBatch with that delay."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(SUBSCRIBER_CHANNELS)]
    counts = [0] * len(requests)
    errors: list[str] = []
    ready = asyncio.Event()
    synced = 0

    async def consume(index: int, request: watch_pb2.WatchRequest) -> None:
        nonlocal synced
        stub = watch_pb2_grpc.WatchServiceStub(channels[index % len(channels)])

        def take(event: watch_pb2.WatchEvent) -> None:
            nonlocal synced
            if event.kind == watch_pb2.WATCH_EVENT_KIND_SYNC:
                synced += 1
                if synced == len(requests):
                    ready.set()
                return
            counts[index] += 1

        try:
            if delay_ms is None:
                async for event in stub.Watch(request):
                    take(event)
            else:
                batched = watch_pb2.WatchBatchRequest(watch=request, max_delay_ms=delay_ms)
                async for message in stub.WatchBatch(batched):
                    for event in message.events:
                        take(event)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                errors.append(f"{index}: {error.code().name} {error.details()}")

    tasks = [
        asyncio.create_task(consume(i, watch_pb2.WatchRequest.FromString(r)))
        for i, r in enumerate(requests)
    ]
    await asyncio.wait_for(ready.wait(), SUBSCRIBER_READY_S)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        conn.send((sum(counts), min(counts), list(errors)))
        if command == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)


def _subscriber_process(
    target: str, requests: list[bytes], conn: Connection, cpus: set[int], delay_ms: int | None
) -> None:
    os.sched_setaffinity(0, cpus)
    asyncio.run(_subscribe(target, requests, conn, delay_ms))


@dataclass
class Subscribers:
    """A process holding len(requests) Watch streams, each consumed and counted."""

    process: Any
    conn: Connection

    @classmethod
    def start(
        cls,
        target: str,
        requests: list[watch_pb2.WatchRequest],
        cpus: set[int],
        delay_ms: int | None,
    ) -> Subscribers:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        encoded = [r.SerializeToString() for r in requests]
        process = context.Process(
            target=_subscriber_process,
            args=(target, encoded, child, cpus, delay_ms),
            daemon=True,
        )
        process.start()
        if not parent.poll(SUBSCRIBER_READY_S) or parent.recv() != "ready":
            process.kill()
            raise RuntimeError("the subscriber process did not get every SYNC in time")
        return cls(process, parent)

    def counts(self, command: str = "count") -> tuple[int, int, list[str]]:
        """(events over all streams, fewest on one stream, errors)."""
        self.conn.send(command)
        if not self.conn.poll(SUBSCRIBER_DRAIN_S):
            raise RuntimeError("the subscriber process stopped answering")
        total, fewest, errors = self.conn.recv()
        return total, fewest, errors

    def wait_for(self, expected: int) -> tuple[int, int, list[str]]:
        """Poll (bounded) until the streams received `expected` events or one failed."""
        deadline = time.monotonic() + SUBSCRIBER_DRAIN_S
        while True:
            total, fewest, errors = self.counts()
            if total >= expected or errors or time.monotonic() > deadline:
                return total, fewest, errors
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            self.counts("stop")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()


# ---------------------------------------------------------------------------- the benchmark


def start_server(
    name: str, scratch: Path, cpus: set[int], source: Path | None = None
) -> servers.ServerProcess:
    """An in-memory demo server allowing SUBSCRIBERS streams from one host, hot SKUs stocked;
    run from the `atpd` package under `source` (a src directory) when given."""
    port = servers.free_port()
    config = scratch / f"{name}.toml"
    config.write_text(f"max_watch_subscribers_per_peer = {SUBSCRIBERS}\n")
    command = [*servers.atpd_command(port, scratch / f"{name}-data"), "--in-memory"]
    if source is not None:
        # Ahead of the installed package on the path: that tree's atpd is the one imported.
        arguments = command[command.index("serve") :]
        command = ["env", f"PYTHONPATH={source}", sys.executable, "-m", "atpd.cli", *arguments]
    server = servers.start(name, [*command, "--config", str(config)], port, cpus, scratch)
    server.wait_serving(180)
    with grpc.insecure_channel(server.target) as channel:
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        for sku in hot_skus():
            request = inventory_pb2.AdjustStockRequest(
                sku=sku, node_id=NODE, delta=STOCK, reason="bench"
            )
            inventory.AdjustStock(request, timeout=30)
    return server


def _start_server(ctx: Context, name: str, cpus: set[int]) -> servers.ServerProcess:
    return start_server(name, ctx.scratch, cpus)


def _scopes(mode: str, skus: list[str]) -> list[watch_pb2.WatchRequest]:
    if mode in ("scoped", "batched"):
        return [watch_pb2.WatchRequest(skus=[sku], node_ids=[NODE]) for sku in skus]
    return [watch_pb2.WatchRequest() for _ in range(SUBSCRIBERS)]


def _round(
    ctx: Context,
    server: servers.ServerProcess,
    mode: str,
    seconds: float,
    load_cpus: set[int],
    tag: str,
) -> dict[str, Any]:
    skus = hot_skus()
    subscribers = None
    if mode != "none":
        delay_ms = None if mode == "scoped" else BATCH_DELAY_MS
        subscribers = Subscribers.start(server.target, _scopes(mode, skus), load_cpus, delay_ms)
    try:
        before = subscribers.counts()[0] if subscribers else 0
        cpu_before = server.cpu_seconds()
        rate, pairs = run_pairs(server.target, skus, tag, seconds, load_cpus)
        cpu_used = server.cpu_seconds() - cpu_before
        result: dict[str, Any] = {
            "mode": mode,
            "pairs_per_s": round(rate),
            "pairs": pairs,
            "server_cpu_us_per_pair": round(cpu_used / pairs * 1e6, 1),
        }
        if subscribers:
            per_change = SUBSCRIBERS if mode == "all" else 1
            expected = 2 * pairs * per_change
            total, fewest, errors = subscribers.wait_for(before + expected)
            result["events"] = total - before
            result["events_expected"] = expected
            result["fewest_events_on_a_stream"] = fewest
            result["subscriber_errors"] = errors[:3]
            result["valid"] = not errors and total - before == expected and fewest > 0
        else:
            result["valid"] = True
    finally:
        if subscribers:
            subscribers.stop()
    ctx.log(f"  {server.name:7s} {mode:6s} {result}")
    return result


@benchmark("watch_overhead_ratio", "ratio", Target(">=", 0.9))
def watch_overhead_ratio(ctx: Context) -> Figure:
    """Reserve + Release pairs per second against `atpd serve --demo --in-memory` with 100
    WatchBatch subscribers consuming their streams (each watching one SKU of the 100 the load
    touches), divided by the same load on the same server process before anyone watched it;
    median of the per-round ratios, a fresh server per round, same load generator."""
    rounds = ctx.size(3, 1)
    seconds = 3.0 if ctx.quick else 5.0
    server_cpus, load_cpus = servers.cpu_split()
    modes = ("none", "batched", "scoped", "all")
    measured: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    ratios: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    # Server CPU per pair never watched over watched: the same comparison, unaffected by a
    # load generator that falls short of saturating the server (a busy machine).
    cpu_ratios: list[float] = []
    after_ratios: tuple[float, float] | None = None
    ctx.log(f"watch: servers on CPUs {server_cpus}, load + subscribers on {load_cpus}")
    for round_number in range(rounds):
        server = _start_server(ctx, f"round{round_number}", server_cpus)
        try:
            _round(ctx, server, "none", 1.5, load_cpus, f"warm-{round_number}")
            for mode in modes:
                result = _round(ctx, server, mode, seconds, load_cpus, f"r{round_number}-{mode}")
                measured[mode].append(result)
            bare = measured["none"][-1]["pairs_per_s"]
            if measured["batched"][-1]["valid"]:
                cpu_ratios.append(
                    measured["none"][-1]["server_cpu_us_per_pair"]
                    / measured["batched"][-1]["server_cpu_us_per_pair"]
                )
            for mode in modes[1:]:
                if measured[mode][-1]["valid"]:
                    ratios[mode].append(measured[mode][-1]["pairs_per_s"] / bare)
            if round_number == rounds - 1:
                after_ratios = _after_watchers(ctx, server, seconds, load_cpus, bare)
        finally:
            server.stop()

    invalid = [r for results in measured.values() for r in results if not r["valid"]]
    if any(r["mode"] in ("scoped", "batched") for r in invalid):
        raise RuntimeError(f"scoped subscribers missed events or were cut off: {invalid}")

    def median_ratio(mode: str) -> float | None:
        return round(statistics.median(ratios[mode]), 3) if ratios[mode] else None

    details: dict[str, Any] = {
        "bare_pairs_per_s": round(statistics.median(r["pairs_per_s"] for r in measured["none"])),
        "batched_pairs_per_s": round(
            statistics.median(r["pairs_per_s"] for r in measured["batched"])
        ),
        "scoped_pairs_per_s": round(
            statistics.median(r["pairs_per_s"] for r in measured["scoped"])
        ),
        "single_event_watch_ratio": median_ratio("scoped"),
        "batch_delay_ms": BATCH_DELAY_MS,
        "round_ratios": [round(ratio, 3) for ratio in ratios["batched"]],
        "cpu_per_pair_ratio": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
        "all_watch_everything_ratio": median_ratio("all"),
        "all_watch_everything_valid_rounds": f"{len(ratios['all'])}/{len(measured['all'])}",
        "none_after_watchers_ratio": after_ratios[0] if after_ratios else None,
        "none_after_log_rolled_ratio": after_ratios[1] if after_ratios else None,
        "server_cpu_us_per_pair": {
            mode: statistics.median(r["server_cpu_us_per_pair"] for r in measured[mode])
            for mode in modes
        },
        "rounds": {mode: measured[mode] for mode in modes},
        "subscribers": SUBSCRIBERS,
        "load_generator": (
            f"{CLIENT_PROCESSES} python grpc.aio client processes x {STREAMS_PER_CLIENT} "
            "concurrent Reserve+Release loops"
        ),
        "server_cpus": sorted(server_cpus),
        "load_cpus": sorted(load_cpus),
        "seconds_per_round": seconds,
        "summary_keys": [
            "bare_pairs_per_s",
            "batched_pairs_per_s",
            "round_ratios",
            "cpu_per_pair_ratio",
            "single_event_watch_ratio",
            "all_watch_everything_ratio",
            "none_after_watchers_ratio",
            "none_after_log_rolled_ratio",
        ],
    }
    return Figure(
        median_ratio("batched") or 0.0,
        details,
        f"median over {rounds} fresh servers of Reserve+Release pairs/s with {SUBSCRIBERS} "
        f"scoped WatchBatch subscribers (max_delay_ms {BATCH_DELAY_MS}) over the same server's "
        f"pairs/s before anyone watched it, {seconds} s each",
    )


def _after_watchers(
    ctx: Context,
    server: servers.ServerProcess,
    seconds: float,
    load_cpus: set[int],
    bare: float,
) -> tuple[float, float]:
    """The server once its subscribers left, against its own never-watched round: at first it
    still records changes (a subscriber could resume from the log); once the log has rolled
    over it records none, and should cost what it did before anyone watched. Answers both
    ratios to `bare`."""
    after = _round(ctx, server, "none", seconds, load_cpus, "after")
    changes = 2 * after["pairs"]
    while changes <= LOG_EVENTS:
        ctx.log(f"  rolling the change log over: {changes} of {LOG_EVENTS} changes")
        _, pairs = run_pairs(server.target, hot_skus(), "roll", 10.0, load_cpus)
        changes += 2 * pairs
    rolled = _round(ctx, server, "none", seconds, load_cpus, "rolled")
    return round(after["pairs_per_s"] / bare, 3), round(rolled["pairs_per_s"] / bare, 3)
