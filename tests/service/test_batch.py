"""CommandBatch over a real channel: each command answered on its own, in order, exactly as its
unary call; batch-level refusals; idempotent retries; metrics and watch events as unary."""

from __future__ import annotations

import functools
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpd.config import Config
from atpd.core.state import AtpState
from atpd.v1 import batch_pb2, batch_pb2_grpc, common_pb2, inventory_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    TEST_LIMITS,
    FakeClock,
    ServerThread,
    Stubs,
    World,
    reserve_request,
    rpc_error,
    running_server,
    seed_nodes,
)


def reserve(reservation_id: str, *lines: tuple[str, str, int]) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(reserve=reserve_request(reservation_id, *lines))


def release(reservation_id: str) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        release=reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
    )


def confirm(reservation_id: str) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        confirm=reservations_pb2.ConfirmRequest(reservation_id=reservation_id)
    )


def fulfil(reservation_id: str) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        fulfil=reservations_pb2.FulfilRequest(reservation_id=reservation_id)
    )


def set_stock(sku: str, node_id: str, on_hand: int, sequence: int) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        set_stock=inventory_pb2.SetStockRequest(
            sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=sequence
        )
    )


def adjust(sku: str, node_id: str, delta: int) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        adjust_stock=inventory_pb2.AdjustStockRequest(sku=sku, node_id=node_id, delta=delta)
    )


def batch_stub(server: ServerThread) -> batch_pb2_grpc.CommandServiceStub:
    return batch_pb2_grpc.CommandServiceStub(server.channel())


def send(
    stub: batch_pb2_grpc.CommandServiceStub, *commands: batch_pb2.BatchCommand
) -> list[batch_pb2.BatchResult]:
    response = stub.CommandBatch(
        batch_pb2.CommandBatchRequest(commands=list(commands)), timeout=RPC_TIMEOUT_S
    )
    return list(response.results)


def unary(api: Stubs, command: batch_pb2.BatchCommand) -> batch_pb2.BatchResult:
    """The same command through its unary method, answered in a BatchResult's form."""
    kind = command.WhichOneof("command")
    assert kind is not None
    request = getattr(command, kind)
    call: Any = {
        "reserve": api.reservations.Reserve,
        "release": api.reservations.Release,
        "confirm": api.reservations.Confirm,
        "fulfil": api.reservations.Fulfil,
        "set_stock": api.inventory.SetStock,
        "adjust_stock": api.inventory.AdjustStock,
    }[kind]
    try:
        response = call(request, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        return batch_pb2.BatchResult(
            error=batch_pb2.CommandStatus(code=error.code().value[0], message=error.details())
        )
    field = "reservation" if kind in ("release", "confirm", "fulfil") else kind
    result = batch_pb2.BatchResult()
    getattr(result, field).CopyFrom(response)
    return result


def test_mixed_batch_each_answered_in_order(world: World, server: ServerThread) -> None:
    """Good and bad commands in one batch: each gets its own answer, in order, and the bad ones
    change nothing."""
    world.set_stock("sku-1", "paris", 5)
    stub = batch_stub(server)
    results = send(
        stub,
        reserve("r1", ("sku-1", "paris", 2)),
        reserve("r2", ("sku-1", "paris", 9)),
        reserve("", ("sku-1", "paris", 1)),
        confirm("r1"),
        release("nope"),
        adjust("sku-1", "paris", 3),
        batch_pb2.BatchCommand(),
    )
    kinds = [r.WhichOneof("result") for r in results]
    assert kinds == ["reserve", "reserve", "error", "reservation", "error", "adjust_stock", "error"]
    assert results[0].reserve.outcome == common_pb2.OUTCOME_OK
    assert results[1].reserve.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "reservation_id" in results[2].error.message
    assert results[3].reservation.reservation.status == common_pb2.RESERVATION_STATUS_CONFIRMED
    assert results[4].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert results[5].adjust_stock.position.on_hand == 8
    assert "commands[6]" in results[6].error.message
    assert world.position("sku-1", "paris").reserved == 2
    server.check_invariants()


def test_empty_and_oversize_batches_refused(server: ServerThread) -> None:
    """An empty batch is INVALID_ARGUMENT and one over max_batch_commands RESOURCE_EXHAUSTED,
    each naming the field and the limit; nothing is applied."""
    seed_nodes(server)
    stub = batch_stub(server)
    error = rpc_error(lambda: send(stub))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "commands" in str(error.details())
    too_many = [
        reserve(f"r{i}", ("sku-1", "paris", 1)) for i in range(server.config.max_batch_commands + 1)
    ]
    error = rpc_error(lambda: send(stub, *too_many))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_batch_commands" in str(error.details())
    assert server.call(lambda: server.app.engine.state.open_reservations) == 0


def test_idempotent_retry_inside_and_across_batches(world: World, server: ServerThread) -> None:
    """The same Reserve twice in a batch, then the batch again: one hold; the repeats answer the
    stored reservation, marked replayed."""
    world.set_stock("sku-1", "paris", 5)
    stub = batch_stub(server)
    batch = [reserve("r1", ("sku-1", "paris", 2)), reserve("r1", ("sku-1", "paris", 2))]
    first = send(stub, *batch)
    again = send(stub, *batch)
    assert first[0].reserve.outcome == common_pb2.OUTCOME_OK
    assert not first[0].reserve.replayed
    assert first[1].reserve.replayed and again[0].reserve.replayed and again[1].reserve.replayed
    held = first[0].reserve.reservation
    assert first[1].reserve.reservation == again[0].reserve.reservation == held
    assert world.position("sku-1", "paris").reserved == 2


def test_batch_counts_like_unary_calls(world: World, server: ServerThread) -> None:
    """Each command is counted under its unary method and status; the batch size is observed."""
    world.set_stock("sku-1", "paris", 5)
    send(batch_stub(server), reserve("r1", ("sku-1", "paris", 1)), release("nope"))
    registry = server.app.engine.metrics.registry
    value = registry.get_sample_value
    assert value("atpd_rpc_calls_total", {"method": "Reserve", "code": "OK"}) == 1
    assert value("atpd_rpc_calls_total", {"method": "Release", "code": "NOT_FOUND"}) == 1
    assert value("atpd_rpc_calls_total", {"method": "CommandBatch", "code": "OK"}) == 1
    assert value("atpd_batch_commands_count") == 1
    assert value("atpd_batch_commands_sum") == 2


SKUS = ("sku-1", "sku-2")
NODE_IDS = ("paris", "lyon")
IDS = ("r1", "r2", "r3", "bad id")

command_strategy = st.one_of(
    st.builds(
        lambda rid, sku, node, quantity: reserve(rid, (sku, node, quantity)),
        st.sampled_from(IDS),
        st.sampled_from(SKUS),
        st.sampled_from(NODE_IDS),
        st.integers(0, 4),
    ),
    st.builds(release, st.sampled_from(IDS)),
    st.builds(confirm, st.sampled_from(IDS)),
    st.builds(fulfil, st.sampled_from(IDS)),
    st.builds(adjust, st.sampled_from(SKUS), st.sampled_from(NODE_IDS), st.integers(-3, 3)),
    st.builds(
        set_stock,
        st.sampled_from(SKUS),
        st.sampled_from(NODE_IDS),
        st.integers(0, 6),
        st.integers(1, 4),
    ),
)


@pytest.fixture(scope="module")
def twin_servers() -> Any:
    """Two servers on the same fake clock: one takes batches, the other the same commands unary."""
    clock = FakeClock()
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config, clock) as batched, running_server(config, clock) as one_by_one:
        yield batched, one_by_one


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(commands=st.lists(command_strategy, min_size=1, max_size=12))
def test_batch_equals_the_same_commands_unary(
    twin_servers: tuple[ServerThread, ServerThread], commands: list[batch_pb2.BatchCommand]
) -> None:
    """A batch answers each command as its unary call would and leaves the same state (digest)."""
    batched, one_by_one = twin_servers
    for server in twin_servers:
        server.call(functools.partial(server.app.engine.replace_state, AtpState(TEST_LIMITS)))
        seed_nodes(server)
    results = send(batch_stub(batched), *commands)
    api = one_by_one.stubs()
    expected = [unary(api, command) for command in commands]
    assert results == expected
    assert batched.digest() == one_by_one.digest()
    batched.check_invariants()
