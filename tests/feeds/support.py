"""Helpers for the feed tests: BulkLoad request streams, exports read back as dicts, and an
in-process durable server (journal + snapshots on a real data directory, fake clock)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from service.harness import NODES, RPC_TIMEOUT_S, FakeClock, ServerThread, Stubs, node

from atpd.config import Config
from atpd.core.limits import Limits
from atpd.service.durability import Durability, write_snapshot_now
from atpd.service.server import ServeOptions, open_durable_state
from atpd.v1 import common_pb2, feeds_pb2, feeds_pb2_grpc, inventory_pb2

FULL = feeds_pb2.LOAD_MODE_FULL
DELTA = feeds_pb2.LOAD_MODE_DELTA
# Small limits so tests reach them with a handful of rows.
FEED_LIMITS = Limits(
    max_lines_per_reservation=4,
    min_ttl_ms=1_000,
    max_ttl_ms=86_400_000,
    max_load_chunk_rows=10,
    max_load_rows=40,
    max_concurrent_loads=2,
    max_remembered_loads=50,
)
WAIT_ROUNDS = 500
WAIT_STEP_S = 0.01

# (sku, node_id, on_hand, safety_stock or None)
Row = tuple[str, str, int, int | None]
# (on_hand, safety_stock, reserved, atp, last_source_sequence)
Position = tuple[int, int, int, int, int]


def header(
    load_id: str,
    mode: int,
    sequence: int = 0,
    nodes: Sequence[str] = (),
) -> feeds_pb2.BulkLoadRequest:
    return feeds_pb2.BulkLoadRequest(
        header=feeds_pb2.BulkLoadHeader(
            load_id=load_id,
            mode=mode,  # type: ignore[arg-type]
            source_sequence=sequence,
            node_ids=list(nodes),
        )
    )


def chunk(rows: Sequence[Row], dictionary: bool = True) -> feeds_pb2.BulkLoadRequest:
    """One chunk, dictionary-encoded or with one SKU / node id per row."""
    message = feeds_pb2.PositionChunk(on_hand=[r[2] for r in rows])
    if dictionary:
        skus = sorted({r[0] for r in rows}, reverse=True)  # any order: indexes say which
        nodes = sorted({r[1] for r in rows})
        message.skus.extend(skus)
        message.sku_index.extend(skus.index(r[0]) for r in rows)
        message.node_ids.extend(nodes)
        message.node_index.extend(nodes.index(r[1]) for r in rows)
    else:
        message.skus.extend(r[0] for r in rows)
        message.node_ids.extend(r[1] for r in rows)
    if any(r[3] is not None for r in rows):
        message.safety_stock.extend(-1 if r[3] is None else r[3] for r in rows)
    return feeds_pb2.BulkLoadRequest(chunk=message)


def commit(rows: int, chunks: int) -> feeds_pb2.BulkLoadRequest:
    return feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=rows, chunks=chunks))


def stream(
    load_id: str,
    mode: int,
    rows: Sequence[Row],
    *,
    sequence: int = 0,
    nodes: Sequence[str] = (),
    chunk_rows: int = 3,
    dictionary: bool = True,
) -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header(load_id, mode, sequence, nodes)
    chunks = 0
    for start in range(0, len(rows), chunk_rows):
        yield chunk(rows[start : start + chunk_rows], dictionary)
        chunks += 1
    yield commit(len(rows), chunks)


def load(
    feeds: feeds_pb2_grpc.FeedServiceStub,
    load_id: str,
    mode: int,
    rows: Sequence[Row],
    **options: object,
) -> feeds_pb2.BulkLoadResponse:
    response: feeds_pb2.BulkLoadResponse = feeds.BulkLoad(
        stream(load_id, mode, rows, **options),  # type: ignore[arg-type]
        timeout=RPC_TIMEOUT_S,
    )
    return response


def exported(
    feeds: feeds_pb2_grpc.FeedServiceStub, **request: object
) -> dict[tuple[str, str], Position]:
    """ExportPositions as {(sku, node_id): (on_hand, safety, reserved, atp, sequence)}."""
    positions: dict[tuple[str, str], Position] = {}
    message = feeds_pb2.ExportPositionsRequest(**request)  # type: ignore[arg-type]
    for part in feeds.ExportPositions(message, timeout=RPC_TIMEOUT_S):
        for i in range(len(part.on_hand)):
            key = (part.skus[part.sku_index[i]], part.node_ids[part.node_index[i]])
            assert key not in positions, key
            positions[key] = (
                part.on_hand[i],
                part.safety_stock[i],
                part.reserved[i],
                part.atp[i],
                part.last_source_sequence[i],
            )
    return positions


def set_stock(
    api: Stubs, sku: str, node_id: str, on_hand: int, sequence: int
) -> inventory_pb2.SetStockResponse:
    request = inventory_pb2.SetStockRequest(
        sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=sequence
    )
    response: inventory_pb2.SetStockResponse = api.inventory.SetStock(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def upsert_nodes(api: Stubs, nodes: Iterable[str] = NODES) -> None:
    """Nodes through the API (journaled, unlike seed_nodes)."""
    for node_id in nodes:
        response = api.inventory.UpsertNode(node(node_id), timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_OK


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


@dataclass
class Gate:
    """Pauses a request generator between two messages until the test opens it."""

    reached: threading.Event
    opened: threading.Event

    @classmethod
    def new(cls) -> Gate:
        return cls(threading.Event(), threading.Event())

    def wait_here(self) -> None:
        self.reached.set()
        assert self.opened.wait(RPC_TIMEOUT_S), "the test never opened the gate"


class DurableServer(ServerThread):
    """ServerThread whose state is recovered from `data_dir` and journaled, as `atpd serve`
    does. `crash()` stops it without the final snapshot (every acknowledged record is durable
    under fsync=always, so this is what a SIGKILL leaves)."""

    def __init__(self, data_dir: Path, clock: FakeClock, limits: Limits = FEED_LIMITS) -> None:
        config = Config(port=0, metrics_port=-1, data_dir=data_dir, fsync="always", limits=limits)
        super().__init__(config, clock)
        self.durability: Durability | None = None

    def start_durable(self) -> None:
        engine = self.app.engine

        def prepare() -> None:
            engine.state, self.durability = open_durable_state(
                self.config, ServeOptions(), engine.now_ms
            )

        self.start(prepare)

        async def attach() -> None:
            assert self.durability is not None
            self.durability.attach(engine)
            self.app.durability = self.durability

        self.run(attach())

    def snapshot(self) -> None:
        """A snapshot written synchronously on the loop (the start-up / shutdown path): the
        forked background path is the persistence tests' subject, and a fork of this test
        process, full of client threads, is not what production forks."""
        durability = self.durability
        assert durability is not None

        async def write() -> None:
            await durability.log.wait_durable(durability.journal.last_sequence)
            write_snapshot_now(self.app.engine.state, durability.data_dir, durability.journal)

        self.run(write())

    def crash(self) -> None:
        durability = self.durability

        async def close_journal() -> None:
            if durability is not None:
                await durability.close(final_snapshot=False)

        try:
            self.run(close_journal())
        finally:
            self.close()
