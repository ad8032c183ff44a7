"""Streams that stop: a BulkLoad that sends nothing for load_idle_timeout_s is ended with
DEADLINE_EXCEEDED naming the timeout and holds no load slot before its header; an
ExportPositions whose client stops reading is ended after stream_stall_timeout_s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from service.harness import RPC_TIMEOUT_S, FakeClock, ServerThread, running_server, seed_nodes

from atpd.config import Config, max_load_chunk_bytes
from atpd.core.limits import Limits
from atpd.service.feeds import FeedServicer
from atpd.v1 import feeds_pb2, feeds_pb2_grpc

from .support import DELTA, FEED_LIMITS, Gate, chunk, header, load, rpc_code

IDLE_TIMEOUT_S = 1.0
STALL_TIMEOUT_S = 1.0
# Liveness bound for a stream to be ended: well above the timeouts, not a speed target.
ENDED_WITHIN_S = 30.0
GOOD = [("SKU-1", "paris", 5, None)]


@pytest.fixture
def quick_server(servicers: list[FeedServicer]) -> Iterator[ServerThread]:
    """A server whose idle and stall timeouts are one second."""
    config = Config(
        port=0,
        metrics_port=-1,
        limits=FEED_LIMITS,
        load_idle_timeout_s=IDLE_TIMEOUT_S,
        stream_stall_timeout_s=STALL_TIMEOUT_S,
    )
    with running_server(config, FakeClock()) as running:
        seed_nodes(running)
        yield running


def _silent(gate: Gate, *first: feeds_pb2.BulkLoadRequest) -> Iterator[feeds_pb2.BulkLoadRequest]:
    """Sends `first`, then nothing until the gate opens."""
    yield from first
    gate.wait_here()


def _active_loads(server: ServerThread, servicers: list[FeedServicer]) -> int:
    return server.call(lambda: servicers[-1]._active)


def test_streams_without_a_header_hold_no_load_slot(
    quick_server: ServerThread, servicers: list[FeedServicer]
) -> None:
    """With max_concurrent_loads=2 streams open that sent nothing, a third load succeeds."""
    feeds = feeds_pb2_grpc.FeedServiceStub(quick_server.channel())
    gates = [Gate.new() for _ in range(FEED_LIMITS.max_concurrent_loads)]
    futures = [feeds.BulkLoad.future(_silent(g), timeout=RPC_TIMEOUT_S) for g in gates]
    try:
        for gate in gates:
            assert gate.reached.wait(RPC_TIMEOUT_S)
        response = load(feeds, "third", DELTA, GOOD)
        assert response.rows == 1
        assert _active_loads(quick_server, servicers) == 0
    finally:
        for gate in gates:
            gate.opened.set()
    for future in futures:
        with pytest.raises(grpc.RpcError):
            future.result(RPC_TIMEOUT_S)


@pytest.mark.parametrize("sent", ["nothing", "a header", "a header and a chunk"])
def test_an_idle_load_stream_is_ended_naming_the_timeout(
    sent: str, quick_server: ServerThread, servicers: list[FeedServicer]
) -> None:
    """A load that stops sending is ended DEADLINE_EXCEEDED naming load_idle_timeout_s, its
    slot is freed and nothing is applied."""
    feeds = feeds_pb2_grpc.FeedServiceStub(quick_server.channel())
    first = {
        "nothing": (),
        "a header": (header("idle", DELTA),),
        "a header and a chunk": (header("idle", DELTA), chunk(GOOD)),
    }[sent]
    gate = Gate.new()
    future = feeds.BulkLoad.future(_silent(gate, *first), timeout=ENDED_WITHIN_S)
    try:
        with pytest.raises(grpc.RpcError) as info:
            future.result(ENDED_WITHIN_S)
    finally:
        gate.opened.set()
    error = info.value
    assert rpc_code(error) is grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    details = error.details() or ""
    assert "load_idle_timeout_s" in details
    assert "nothing was applied" in details
    assert _active_loads(quick_server, servicers) == 0
    # The same load id can be sent again at once: the idle stream let it go.
    assert load(feeds, "idle", DELTA, GOOD).rows == 1


def test_two_idle_loads_after_their_headers_end_and_free_their_slots(
    quick_server: ServerThread,
) -> None:
    """Two loads that send a header then stall take both slots only until they time out."""
    feeds = feeds_pb2_grpc.FeedServiceStub(quick_server.channel())
    gates = [Gate.new(), Gate.new()]
    futures = [
        feeds.BulkLoad.future(_silent(g, header(f"stuck-{i}", DELTA)), timeout=ENDED_WITHIN_S)
        for i, g in enumerate(gates)
    ]
    try:
        codes = []
        for future in futures:
            with pytest.raises(grpc.RpcError) as info:
                future.result(ENDED_WITHIN_S)
            codes.append(rpc_code(info.value))
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        assert load(feeds, "after", DELTA, GOOD).rows == 1
    finally:
        for gate in gates:
            gate.opened.set()


EXPORT_ROWS = 400_000
EXPORT_CHUNK_ROWS = 100_000


@pytest.fixture
def export_server() -> Iterator[ServerThread]:
    """A server with EXPORT_ROWS positions and a one-second stall timeout."""
    limits = Limits(max_load_chunk_rows=EXPORT_CHUNK_ROWS, max_load_rows=EXPORT_ROWS)
    config = Config(
        port=0,
        metrics_port=-1,
        limits=limits,
        stream_stall_timeout_s=STALL_TIMEOUT_S,
        # Chunks this large need a receive limit above the default (sized for 25,000 rows).
        max_receive_message_bytes=max_load_chunk_bytes(EXPORT_CHUNK_ROWS),
    )
    with running_server(config, FakeClock()) as running:
        seed_nodes(running)
        feeds = feeds_pb2_grpc.FeedServiceStub(running.channel())

        def requests() -> Iterator[feeds_pb2.BulkLoadRequest]:
            yield header("big", DELTA)
            for start in range(0, EXPORT_ROWS, EXPORT_CHUNK_ROWS):
                message = feeds_pb2.PositionChunk(
                    skus=[f"SKU-{start + i:08d}" for i in range(EXPORT_CHUNK_ROWS)],
                    sku_index=range(EXPORT_CHUNK_ROWS),
                    node_ids=["paris"],
                    node_index=[0] * EXPORT_CHUNK_ROWS,
                    on_hand=[7] * EXPORT_CHUNK_ROWS,
                )
                yield feeds_pb2.BulkLoadRequest(chunk=message)
            chunks = EXPORT_ROWS // EXPORT_CHUNK_ROWS
            yield feeds_pb2.BulkLoadRequest(
                commit=feeds_pb2.BulkLoadCommit(rows=EXPORT_ROWS, chunks=chunks)
            )

        assert feeds.BulkLoad(requests(), timeout=RPC_TIMEOUT_S * 4).rows == EXPORT_ROWS
        yield running


def test_an_export_nobody_reads_is_ended_after_the_stall_timeout(
    export_server: ServerThread,
) -> None:
    """An ExportPositions whose client takes one chunk then stops reading is ended after
    stream_stall_timeout_s (counted DEADLINE_EXCEEDED, logged, the stream reset)."""
    # A fixed small flow-control window, so that unread chunks back up to the server.
    channel = grpc.insecure_channel(
        export_server.target,
        options=[("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 64 << 20)],
    )
    try:
        feeds = feeds_pb2_grpc.FeedServiceStub(channel)
        chunks = feeds.ExportPositions(
            feeds_pb2.ExportPositionsRequest(chunk_rows=EXPORT_CHUNK_ROWS), timeout=ENDED_WITHIN_S
        )
        next(chunks)
        ended = threading.Event()
        metrics = export_server.app.engine.metrics

        def stalled_calls() -> float:
            return float(
                metrics.rpc_calls.labels("ExportPositions", "DEADLINE_EXCEEDED")._value.get()
            )

        deadline = time.monotonic() + ENDED_WITHIN_S
        while time.monotonic() < deadline and not ended.is_set():
            if export_server.call(stalled_calls) >= 1:
                ended.set()
            time.sleep(0.05)
        assert ended.is_set(), "the stalled export was never ended"
        chunks.cancel()
    finally:
        channel.close()
