"""A load that fails in any way leaves the state exactly as it was (digest), names the first
problem by chunk and row, and does not consume its load id."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from service.harness import RPC_TIMEOUT_S, ServerThread, Stubs, rpc_error

from atpd.v1 import feeds_pb2, feeds_pb2_grpc

from .support import (
    DELTA,
    FULL,
    WAIT_ROUNDS,
    WAIT_STEP_S,
    Row,
    chunk,
    commit,
    exported,
    header,
    load,
    rpc_code,
    set_stock,
)

GOOD: list[Row] = [("A", "paris", 1, None), ("B", "paris", 2, None), ("C", "lyon", 3, 1)]
Requests = Callable[[], Iterator[feeds_pb2.BulkLoadRequest]]


def _raw_chunk(**fields: object) -> feeds_pb2.BulkLoadRequest:
    return feeds_pb2.BulkLoadRequest(chunk=feeds_pb2.PositionChunk(**fields))  # type: ignore[arg-type]


def _with_second_chunk(second: feeds_pb2.BulkLoadRequest, mode: int = DELTA) -> Requests:
    def requests() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("bad", mode, 3, ["paris"] if mode == FULL else [])
        yield chunk(GOOD[:2])
        yield second
        yield commit(2 + len(second.chunk.on_hand), 2)

    return requests


CASES: dict[str, tuple[Requests, grpc.StatusCode, str]] = {
    "negative on_hand": (
        _with_second_chunk(_raw_chunk(skus=["D", "E"], node_ids=["paris"] * 2, on_hand=[4, -1])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[1].on_hand: must be 0..1000000000, got -1",
    ),
    "malformed sku": (
        _with_second_chunk(
            _raw_chunk(skus=["D", "bad sku"], node_ids=["paris"] * 2, on_hand=[1, 2])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[1].sku: 'bad sku'",
    ),
    "malformed sku in a dictionary": (
        _with_second_chunk(
            _raw_chunk(
                skus=["ok", "no way"],
                sku_index=[0, 0, 1],
                node_ids=["lyon"],
                node_index=[0, 0, 0],
                on_hand=[1, 2, 3],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[2].sku: 'no way'",
    ),
    "unknown node": (
        _with_second_chunk(_raw_chunk(skus=["D", "E"], node_ids=["paris", "oslo"], on_hand=[1, 2])),
        grpc.StatusCode.NOT_FOUND,
        "chunks[1].rows[1].node_id: unknown node 'oslo'",
    ),
    "node outside a FULL load": (
        _with_second_chunk(_raw_chunk(skus=["D"], node_ids=["lyon"], on_hand=[1]), FULL),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[0].node_id: 'lyon' is not one of the header's node_ids",
    ),
    "index out of range": (
        _with_second_chunk(
            _raw_chunk(skus=["D"], sku_index=[0, 1], node_ids=["paris", "lyon"], on_hand=[1, 2])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[1].sku_index: 1 is out of range",
    ),
    "column lengths differ": (
        _with_second_chunk(
            _raw_chunk(skus=["D", "E"], node_ids=["paris"] * 2, on_hand=[1, 2], safety_stock=[1])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].safety_stock: has 1 values for 2 rows",
    ),
    "chunk over max_load_chunk_rows": (
        _with_second_chunk(chunk([(f"S{i}", "soho", i, None) for i in range(11)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1]: has 11 rows, max_load_chunk_rows is 10",
    ),
    "position listed twice": (
        _with_second_chunk(chunk([("Z", "lyon", 1, None), ("B", "paris", 9, None)])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1].rows[1]: position ('B', 'paris') is listed twice (first at chunks[0].rows[1])",
    ),
    "second header": (
        _with_second_chunk(header("bad", DELTA)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunks[1]: a second header: a load is one header, chunks, then one commit",
    ),
}


def _load_rows_past_the_limit() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header("bad", DELTA)
    for part in range(5):
        yield chunk([(f"S{part}-{i}", "berlin", i, None) for i in range(10)])
    yield commit(50, 5)


def _no_commit() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header("bad", FULL, 1, ["paris"])
    yield chunk(GOOD[:2])


def _commit_mismatch() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header("bad", FULL, 1, ["paris"])
    yield chunk(GOOD[:2])
    yield commit(3, 1)


def _chunk_after_commit() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header("bad", DELTA)
    yield chunk(GOOD[:2])
    yield commit(2, 1)
    yield chunk(GOOD[2:])


def _no_header() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield chunk(GOOD)
    yield commit(3, 1)


def _unknown_scope_node() -> Iterator[feeds_pb2.BulkLoadRequest]:
    yield header("bad", FULL, 1, ["paris", "oslo"])
    yield chunk(GOOD[:2])
    yield commit(2, 1)


CASES.update(
    {
        "load over max_load_rows": (
            _load_rows_past_the_limit,
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunks[4]: takes the load past max_load_rows (40 rows)",
        ),
        "stream ends without commit": (
            _no_commit,
            grpc.StatusCode.INVALID_ARGUMENT,
            "commit: the stream ended after 1 chunks (2 rows) without its commit message",
        ),
        "commit counts differ": (
            _commit_mismatch,
            grpc.StatusCode.INVALID_ARGUMENT,
            "commit: says 3 rows in 1 chunks, 2 rows in 1 chunks arrived",
        ),
        "chunk after commit": (
            _chunk_after_commit,
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunks[1]: after the commit",
        ),
        "no header": (
            _no_header,
            grpc.StatusCode.INVALID_ARGUMENT,
            "header: the first message of a load must be its header",
        ),
        "unknown node in the header": (
            _unknown_scope_node,
            grpc.StatusCode.NOT_FOUND,
            "header.node_ids[1]: unknown node 'oslo'",
        ),
    }
)


def _retry_until_not_aborted(
    call: Callable[[], feeds_pb2.BulkLoadResponse],
) -> feeds_pb2.BulkLoadResponse:
    """The server learns that a broken stream ended a moment after the client: a retry of the
    same load id meanwhile is ABORTED (still streaming); poll, bounded."""
    for _ in range(WAIT_ROUNDS):
        try:
            return call()
        except grpc.RpcError as error:
            if rpc_code(error) != grpc.StatusCode.ABORTED:
                raise
        time.sleep(WAIT_STEP_S)
    raise AssertionError("the load id stayed busy")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_load_reports_its_first_problem_and_changes_nothing(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub, case: str
) -> None:
    """Each malformed stream fails with the status and the chunk/row named; state unchanged;
    the same load id then loads fine."""
    set_stock(api, "A", "paris", 50, 1)
    set_stock(api, "Q", "paris", 7, 1)  # a FULL load of paris would zero it
    digest = server.digest()
    requests, code, message = CASES[case]
    error = rpc_error(lambda: feeds.BulkLoad(requests(), timeout=RPC_TIMEOUT_S))
    assert rpc_code(error) == code, error.details()
    assert message in (error.details() or "")
    assert server.digest() == digest
    response = load(feeds, "bad", DELTA, GOOD, sequence=3)
    assert not response.replayed and response.positions_written == 3


def test_a_stream_broken_by_the_client_changes_nothing(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """A client whose request iterator fails mid-stream gets an error and the state is as
    before; the load id stays free for the retry."""
    set_stock(api, "A", "paris", 50, 1)
    digest = server.digest()

    def breaks() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("broken", FULL, 2, ["paris"])
        yield chunk(GOOD[:2])
        raise RuntimeError("the batch job died")

    rpc_error(lambda: feeds.BulkLoad(breaks(), timeout=RPC_TIMEOUT_S))
    assert server.digest() == digest
    retry = _retry_until_not_aborted(
        lambda: load(feeds, "broken", FULL, GOOD[:2], sequence=2, nodes=["paris"])
    )
    assert not retry.replayed
    assert {k: v[0] for k, v in exported(feeds).items()} == {("A", "paris"): 1, ("B", "paris"): 2}


def test_a_stream_cancelled_by_the_client_changes_nothing(
    server: ServerThread, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """Cancelling the call before the stream ends applies nothing."""
    digest = server.digest()
    from .support import Gate

    gate = Gate.new()

    def paused() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("cancelled", DELTA)
        yield chunk(GOOD)
        gate.wait_here()
        yield chunk([("late", "soho", 1, None)])
        yield commit(4, 2)

    future = feeds.BulkLoad.future(paused(), timeout=RPC_TIMEOUT_S)
    assert gate.reached.wait(RPC_TIMEOUT_S)
    future.cancel()
    gate.opened.set()
    assert future.cancelled()
    assert server.digest() == digest
    _retry_until_not_aborted(lambda: load(feeds, "cancelled", DELTA, GOOD))


def test_too_many_concurrent_loads_is_resource_exhausted(
    server: ServerThread, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """Beyond max_concurrent_loads streams at once, a new load is RESOURCE_EXHAUSTED."""
    from .support import Gate

    gates = [Gate.new(), Gate.new()]

    def held(name: str, gate: Gate) -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header(name, DELTA)
        yield chunk([(name, "paris", 1, None)])
        gate.wait_here()
        yield commit(1, 1)

    futures = [
        feeds.BulkLoad.future(held(f"L{i}", g), timeout=RPC_TIMEOUT_S) for i, g in enumerate(gates)
    ]
    try:
        for gate in gates:
            assert gate.reached.wait(RPC_TIMEOUT_S)
        error = None
        for _ in range(WAIT_ROUNDS):  # until the server has both streams open
            try:
                load(feeds, "third", DELTA, GOOD)
            except grpc.RpcError as caught:
                error = caught
                break
            time.sleep(WAIT_STEP_S)
        assert error is not None and rpc_code(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_concurrent_loads" in (error.details() or "")
    finally:
        for gate in gates:
            gate.opened.set()
    assert [f.result(RPC_TIMEOUT_S).rows for f in futures] == [1, 1]
