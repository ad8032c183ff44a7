"""The Submit stream over a real channel: answers carry their correlation ids, in order; a bad
batch is answered and the stream goes on; a bad correlation id ends the stream naming it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from atpd.config import Config
from atpd.v1 import batch_pb2, batch_pb2_grpc, common_pb2

from .harness import (
    RPC_TIMEOUT_S,
    TEST_LIMITS,
    FakeClock,
    ServerThread,
    World,
    running_server,
    seed_nodes,
)
from .test_batch import release, reserve


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    """Small bounds, to reach them cheaply: 8 commands a batch, 2 batches in flight a stream."""
    config = Config(
        port=0,
        metrics_port=-1,
        limits=TEST_LIMITS,
        max_batch_commands=8,
        max_submit_inflight_batches=2,
    )
    with running_server(config, clock) as running:
        yield running


def submit(
    server: ServerThread, *requests: batch_pb2.SubmitRequest
) -> list[batch_pb2.SubmitResponse]:
    stub = batch_pb2_grpc.CommandServiceStub(server.channel())
    return list(stub.Submit(iter(requests), timeout=RPC_TIMEOUT_S))


def batch(tag: str, *commands: batch_pb2.BatchCommand) -> batch_pb2.SubmitRequest:
    return batch_pb2.SubmitRequest(correlation_id=tag, commands=list(commands))


def test_answers_in_order_with_their_ids(world: World, server: ServerThread) -> None:
    """Many batches on one stream: one answer each, in order, with its correlation id; a later
    batch sees the effects of an earlier one."""
    world.set_stock("sku-1", "paris", 100)
    requests = [batch(f"b{i}", reserve(f"r{i}", ("sku-1", "paris", 1))) for i in range(40)]
    requests.append(batch("last", release("r0"), release("r39")))
    answers = submit(server, *requests)
    assert [a.correlation_id for a in answers] == [f"b{i}" for i in range(40)] + ["last"]
    assert all(a.results[0].reserve.outcome == common_pb2.OUTCOME_OK for a in answers[:40])
    statuses = [r.reservation.reservation.status for r in answers[-1].results]
    assert statuses == [common_pb2.RESERVATION_STATUS_RELEASED] * 2
    assert world.position("sku-1", "paris").reserved == 38


def test_bad_batch_answered_and_stream_goes_on(world: World, server: ServerThread) -> None:
    """An empty or oversize batch is answered with `error` and nothing applied; the next batch
    on the stream is served."""
    world.set_stock("sku-1", "paris", 5)
    too_many = [reserve(f"x{i}", ("sku-1", "paris", 1)) for i in range(9)]
    answers = submit(
        server,
        batch("empty"),
        batch("big", *too_many),
        batch("ok", reserve("r1", ("sku-1", "paris", 1))),
    )
    assert [a.correlation_id for a in answers] == ["empty", "big", "ok"]
    assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "max_batch_commands (8)" in answers[1].error.message and not answers[1].results
    assert answers[2].results[0].reserve.outcome == common_pb2.OUTCOME_OK
    assert world.position("sku-1", "paris").reserved == 1


@pytest.mark.parametrize("tag", ["", "x" * 65, "caf\u00e9", "tab\there"])
def test_bad_correlation_id_ends_the_stream(server: ServerThread, tag: str) -> None:
    """A correlation id that is empty, too long or not printable ASCII: INVALID_ARGUMENT naming
    correlation_id, after the answers to the batches before it."""
    seed_nodes(server)
    stub = batch_pb2_grpc.CommandServiceStub(server.channel())
    answers = stub.Submit(
        iter([batch("fine", release("nope")), batch(tag, release("nope"))]), timeout=RPC_TIMEOUT_S
    )
    first = next(answers)
    assert first.correlation_id == "fine"
    with pytest.raises(grpc.RpcError) as info:
        next(answers)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "correlation_id" in str(info.value.details())
