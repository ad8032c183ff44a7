"""The role object leadership drives (service/replication_role.py), on two durable servers in
this process: demote refuses writes at once and follows the new leader, promote takes writes;
after a switch both hold the same state. Also the Follow request checks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from feeds.support import DurableServer
from persistence.server_support import wait_until
from service.harness import FakeClock, ServerThread, Stubs

from atpd.config import Config
from atpd.v1 import (
    admin_pb2,
    common_pb2,
    inventory_pb2,
    replication_pb2,
    replication_pb2_grpc,
    reservations_pb2,
)

RPC_TIMEOUT_S = 10.0
CATCH_UP_TIMEOUT_S = 30.0


def started(data_dir: Path, clock: FakeClock) -> DurableServer:
    server = DurableServer(data_dir, clock)
    server.start_durable()
    replication = server.app.replication
    assert replication is not None
    server.run(replication.start())
    return server


def set_stock(stubs: Stubs, on_hand: int, sequence: int) -> None:
    response = stubs.inventory.SetStock(
        inventory_pb2.SetStockRequest(
            sku="BAG-1", node_id="PAR", on_hand=on_hand, source_sequence=sequence
        ),
        timeout=RPC_TIMEOUT_S,
    )
    assert response.outcome == common_pb2.OUTCOME_OK


def reserve(stubs: Stubs, reservation_id: str) -> None:
    request = reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[reservations_pb2.ReservationLine(sku="BAG-1", node_id="PAR", quantity=1)],
        ttl_ms=60_000,
    )
    assert stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S).outcome == 1


def durable_sequence(stubs: Stubs) -> int:
    status = stubs.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S)
    sequence: int = status.durable_sequence
    return sequence


def wait_same(leader: DurableServer, follower: DurableServer) -> None:
    target = durable_sequence(leader.stubs())
    wait_until(
        lambda: durable_sequence(follower.stubs()) >= target,
        CATCH_UP_TIMEOUT_S,
        f"the follower at sequence {target}",
    )
    assert follower.digest() == leader.digest()


def refused_for_leader(stubs: Stubs, leader: str) -> bool:
    try:
        set_stock(stubs, 1, 1_000)
    except grpc.RpcError as error:
        return error.code() is grpc.StatusCode.FAILED_PRECONDITION and leader in str(
            error.details()
        )
    return False


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[DurableServer, DurableServer]]:
    clock = FakeClock()
    first = started(tmp_path / "a", clock)
    second = started(tmp_path / "b", clock)
    try:
        yield first, second
    finally:
        for server in (first, second):
            replication = server.app.replication
            assert replication is not None
            server.run(replication.close())
            server.crash()


def test_demote_then_promote_switches_the_writer(
    pair: tuple[DurableServer, DurableServer],
) -> None:
    """B follows A; then A is demoted to follow B and B promoted: A refuses writes naming B,
    B takes them, and A ends with B's state."""
    a, b = pair
    role_a, role_b = a.app.replication, b.app.replication
    assert role_a is not None and role_b is not None
    b.run(role_b.demote(a.target))
    assert role_b.role == "follower"
    a_stubs, b_stubs = a.stubs(), b.stubs()
    a_stubs.inventory.UpsertNode(
        inventory_pb2.UpsertNodeRequest(
            node=inventory_pb2.Node(
                node_id="PAR",
                kind=common_pb2.NODE_KIND_STORE,
                geo_path="EU/FR/Paris",
                ships=True,
                enabled=True,
            )
        ),
        timeout=RPC_TIMEOUT_S,
    )
    set_stock(a_stubs, 10, 1)
    reserve(a_stubs, "before-switch")
    wait_same(a, b)
    assert refused_for_leader(b_stubs, a.target)

    a.run(role_a.demote(b.target))
    assert refused_for_leader(a_stubs, b.target)
    b.run(role_b.promote())
    assert role_b.role == "primary" and role_a.role == "follower"
    set_stock(b_stubs, 20, 2)
    reserve(b_stubs, "after-switch")
    wait_same(b, a)
    held = a_stubs.reservations.GetReservation(
        reservations_pb2.GetReservationRequest(reservation_id="after-switch"),
        timeout=RPC_TIMEOUT_S,
    )
    assert held.reservation.reservation_id == "after-switch"


@pytest.mark.grpc
def test_follow_requests_are_checked() -> None:
    """A Follow stream must start with `start` (follower id, sequence >= 0): otherwise
    INVALID_ARGUMENT naming the field; a server without a journal refuses to be followed
    (FAILED_PRECONDITION)."""
    server = ServerThread(Config(port=0, metrics_port=-1))
    server.start()
    try:
        stub = replication_pb2_grpc.ReplicationServiceStub(server.channel())
        cases = [
            ([], "FollowerMessage.start"),
            ([replication_pb2.FollowerMessage(ack=replication_pb2.FollowAck())], "start"),
            (
                [
                    replication_pb2.FollowerMessage(
                        start=replication_pb2.FollowRequest(from_sequence=0)
                    )
                ],
                "follower_id",
            ),
            (
                [
                    replication_pb2.FollowerMessage(
                        start=replication_pb2.FollowRequest(from_sequence=-1, follower_id="x")
                    )
                ],
                "from_sequence",
            ),
        ]
        for messages, field in cases:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Follow(iter(messages), timeout=RPC_TIMEOUT_S))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert field in str(info.value.details())
        start = replication_pb2.FollowRequest(from_sequence=0, follower_id="x")
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.Follow(
                    iter([replication_pb2.FollowerMessage(start=start)]), timeout=RPC_TIMEOUT_S
                )
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "no journal" in str(info.value.details())
    finally:
        server.close()


@pytest.mark.grpc
def test_followers_gone_before_their_answer_leave_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Follow calls whose deadline passes before the server answers (the request stream just
    ends) are ended quietly: no server error, no traceback."""
    server = ServerThread(Config(port=0, metrics_port=-1))
    server.start()
    try:
        call = server.channel().stream_stream(
            "/atpd.v1.ReplicationService/Follow",
            request_serializer=None,
            response_deserializer=None,
        )
        codes: set[grpc.StatusCode] = set()

        def hurry() -> None:
            for attempt in range(50):
                try:
                    list(call(iter(()), timeout=0.001 * (attempt % 5)))
                except grpc.RpcError as error:
                    codes.add(error.code())

        threads = [threading.Thread(target=hurry) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT}
    finally:
        server.close()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


@pytest.mark.durable
def test_an_undecodable_ack_ends_follow_with_invalid_argument_and_no_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower that sends bytes that are not a FollowerMessage after a valid start, while
    the primary streams to it, gets INVALID_ARGUMENT naming the type; the server logs no
    error (the status is sent by the handler, never from the task reading acks during a
    write: gRPC refuses that with TOO_MANY_OPERATIONS, then "Abort already called")."""
    clock = FakeClock()
    primary = started(tmp_path / "a", clock)
    try:
        stubs = primary.stubs()
        stubs.inventory.UpsertNode(
            inventory_pb2.UpsertNodeRequest(
                node=inventory_pb2.Node(
                    node_id="PAR", kind=common_pb2.NODE_KIND_STORE, geo_path="EU/FR/Paris"
                )
            ),
            timeout=RPC_TIMEOUT_S,
        )
        for sequence in range(1, 30):
            set_stock(stubs, sequence, sequence)
        start = replication_pb2.FollowerMessage(
            start=replication_pb2.FollowRequest(from_sequence=0, follower_id="garbled")
        ).SerializeToString()
        call = primary.channel().stream_stream(
            "/atpd.v1.ReplicationService/Follow",
            request_serializer=None,
            response_deserializer=None,
        )
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as info:
                list(call(iter([start, b"\x0a\x02\xff"]), timeout=RPC_TIMEOUT_S))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert "atpd.v1.FollowerMessage" in str(info.value.details())
        set_stock(stubs, 99, 99)  # still serving writes
    finally:
        replication = primary.app.replication
        assert replication is not None
        primary.run(replication.close())
        primary.crash()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]
