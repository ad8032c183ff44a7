"""Bulk loads end to end: positions streamed by a Python client to a real `atpd serve` (journal
on, fsync=always) and applied atomically."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from atpd.core.limits import Limits
from atpd.v1 import common_pb2, feeds_pb2, feeds_pb2_grpc, inventory_pb2, inventory_pb2_grpc
from bench import servers
from bench.registry import Context, Figure, Target, benchmark

NODES = 100
CHUNK_ROWS = Limits().max_load_chunk_rows
SKUS_PER_CHUNK = CHUNK_ROWS // NODES


def _requests(
    load_id: str, sequence: int, skus: int, seed: int
) -> Iterator[feeds_pb2.BulkLoadRequest]:
    """A FULL load of every node: `skus` SKUs x NODES positions, SKU-major, built chunk by chunk
    while streaming (the client's encoding is part of what is measured)."""
    node_ids = [f"N{n:03d}" for n in range(NODES)]
    yield feeds_pb2.BulkLoadRequest(
        header=feeds_pb2.BulkLoadHeader(
            load_id=load_id,
            mode=feeds_pb2.LOAD_MODE_FULL,
            source_sequence=sequence,
            node_ids=node_ids,
        )
    )
    random = np.random.default_rng(seed)
    sku_index = np.repeat(np.arange(SKUS_PER_CHUNK), NODES).tolist()
    node_index = np.tile(np.arange(NODES), SKUS_PER_CHUNK).tolist()
    rows = chunks = 0
    for first in range(0, skus, SKUS_PER_CHUNK):
        count = min(SKUS_PER_CHUNK, skus - first)
        size = count * NODES
        chunk = feeds_pb2.PositionChunk(
            skus=[f"SKU-{s:08d}" for s in range(first, first + count)],
            sku_index=sku_index[:size],
            node_ids=node_ids,
            node_index=node_index[:size],
            on_hand=random.integers(0, 40, size).tolist(),
        )
        rows += size
        chunks += 1
        yield feeds_pb2.BulkLoadRequest(chunk=chunk)
    yield feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=rows, chunks=chunks))


@benchmark(
    "bulk_load_positions_per_s",
    "positions/s",
    Target(">=", 1_000_000),
)
def bulk_load_positions_per_s(ctx: Context) -> Figure:
    """Positions per second of a FULL BulkLoad of 10M positions (100k SKUs x 100 nodes, 100k
    rows per chunk, dictionary-encoded) from a Python client to `atpd serve` with its journal
    (fsync=always): from the first message built to the durable reply, load file included.
    Median of 3 loads (the first one also registers the 100k SKUs)."""
    skus = ctx.size(100_000, 10_000)
    positions = skus * NODES
    rounds = 3
    server_cpus, client_cpus = servers.cpu_split()
    port = servers.free_port()
    server = servers.start(
        "atpd-feeds",
        servers.atpd_command(port, ctx.scratch / "feeds-data", demo=False),
        port,
        server_cpus,
        ctx.scratch,
    )
    own_cpus = os.sched_getaffinity(0)
    results: list[dict[str, Any]] = []
    try:
        server.wait_serving(180)
        options = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
        with grpc.insecure_channel(server.target, options=options) as channel:
            inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
            for n in range(NODES):
                node = inventory_pb2.Node(
                    node_id=f"N{n:03d}",
                    kind=common_pb2.NODE_KIND_STORE,
                    geo_path=f"EU/C{n % 10}/City{n}",
                    ships=True,
                    enabled=True,
                )
                inventory.UpsertNode(inventory_pb2.UpsertNodeRequest(node=node), timeout=10)
            feeds = feeds_pb2_grpc.FeedServiceStub(channel)
            os.sched_setaffinity(0, client_cpus)
            for round_number in range(rounds):
                cpu_before = server.cpu_seconds()
                started = time.perf_counter()
                reply = feeds.BulkLoad(
                    _requests(f"bench-{round_number}", round_number + 1, skus, round_number),
                    timeout=600,
                )
                seconds = time.perf_counter() - started
                if reply.rows != positions or reply.positions_written != positions:
                    raise RuntimeError(f"load {round_number}: {reply}")
                result = {
                    "positions_per_s": round(positions / seconds),
                    "seconds": round(seconds, 3),
                    "server_seconds": round(reply.seconds, 3),
                    "apply_and_durable_seconds": round(reply.apply_seconds, 3),
                    "server_cpu_seconds": round(server.cpu_seconds() - cpu_before, 2),
                    "skus_created": reply.skus_created,
                    "positions_changed": reply.positions_changed,
                }
                results.append(result)
                ctx.log(f"  load {round_number}: {result}")
    finally:
        os.sched_setaffinity(0, own_cpus)
        server.stop()
    rates = [r["positions_per_s"] for r in results]
    median = round(statistics.median(rates))
    load_files = sorted((ctx.scratch / "feeds-data" / "loads").glob("*.load"))
    details: dict[str, Any] = {
        "positions": positions,
        "rounds": results,
        "rates_positions_per_s": rates,
        "load_file_bytes": [p.stat().st_size for p in load_files],
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "summary_keys": ["positions", "rates_positions_per_s"],
    }
    return Figure(
        median,
        details,
        f"median of {rounds} FULL loads of {positions:,} positions, client building and "
        "streaming dictionary-encoded chunks, reply once durable (fsync=always)",
    )
