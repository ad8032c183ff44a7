"""Batches over TLS with real tokens: each command is checked exactly as its unary method
(role, node scope, channel, reservation maker), refusing that command only, with the unary
call's message; audited commands are audited one by one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from service.harness import reserve_request

from atpd.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
)

from .support import Credentials, SecureServer, details_of, secure_server

RPC_TIMEOUT_S = 20.0
DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


@pytest.fixture(scope="module")
def shared(module_credentials: Credentials) -> Iterator[SecureServer]:
    with secure_server(module_credentials) as running:
        admin = running.as_role("admin")
        stock = batch_pb2_grpc.CommandServiceStub(admin)
        cells = [("SKU-1", "ST-PAR-01"), ("SKU-1", "ST-LON-01")]
        stock.CommandBatch(
            batch_pb2.CommandBatchRequest(
                commands=[
                    batch_pb2.BatchCommand(
                        set_stock=inventory_pb2.SetStockRequest(
                            sku=sku, node_id=node_id, on_hand=50, source_sequence=1
                        )
                    )
                    for sku, node_id in cells
                ]
            ),
            timeout=RPC_TIMEOUT_S,
        )
        yield running


def run(
    server: SecureServer, principal: str, *commands: batch_pb2.BatchCommand
) -> list[batch_pb2.BatchResult]:
    stub = batch_pb2_grpc.CommandServiceStub(server.as_role(principal))
    request = batch_pb2.CommandBatchRequest(commands=list(commands))
    return list(stub.CommandBatch(request, timeout=RPC_TIMEOUT_S).results)


def reserve(
    reservation_id: str, node_id: str = "ST-PAR-01", channel: str = ""
) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        reserve=reserve_request(reservation_id, ("SKU-1", node_id, 1), channel=channel)
    )


def adjust(node_id: str) -> batch_pb2.BatchCommand:
    return batch_pb2.BatchCommand(
        adjust_stock=inventory_pb2.AdjustStockRequest(sku="SKU-1", node_id=node_id, delta=1)
    )


def test_checkout_may_reserve_but_not_set_stock(shared: SecureServer) -> None:
    """A checkout token's Reserve is served and its SetStock alone is PERMISSION_DENIED, with
    the message the unary SetStock gives."""
    set_stock = inventory_pb2.SetStockRequest(
        sku="SKU-1", node_id="ST-PAR-01", on_hand=1, source_sequence=99
    )
    results = run(
        shared, "checkout", reserve("batch-a1"), batch_pb2.BatchCommand(set_stock=set_stock)
    )
    assert results[0].reserve.outcome == common_pb2.OUTCOME_OK
    assert results[1].error.code == DENIED
    unary = inventory_pb2_grpc.InventoryServiceStub(shared.as_role("checkout"))
    assert results[1].error.message == details_of(
        lambda: unary.SetStock(set_stock, timeout=RPC_TIMEOUT_S)
    )


def test_reader_may_not_send_batches(shared: SecureServer) -> None:
    """The gate refuses a batch to a role that may make none of its commands."""
    with pytest.raises(grpc.RpcError) as info:
        run(shared, "reader", reserve("batch-r1"))
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "CommandService/CommandBatch" in str(info.value.details())


def test_scope_and_channel_checked_per_command(shared: SecureServer) -> None:
    """A till limited to Paris adjusts Paris but not London; a web checkout reserves for web
    but not for the app channel; each refusal is that command's only."""
    results = run(shared, "till-paris", adjust("ST-PAR-01"), adjust("ST-LON-01"))
    assert results[0].WhichOneof("result") == "adjust_stock"
    assert results[1].error.code == DENIED and "ST-LON-01" in results[1].error.message
    results = run(
        shared,
        "web-checkout",
        reserve("batch-w1", channel="web"),
        reserve("batch-w2", channel="app"),
    )
    assert results[0].reserve.outcome == common_pb2.OUTCOME_OK
    assert results[1].error.code == DENIED and "'app'" in results[1].error.message


def test_reservation_owner_checked_after_earlier_commands(shared: SecureServer) -> None:
    """A Confirm following its Reserve in the same batch is checked against the reservation
    the batch just made; another checkout principal's Release of it is refused."""
    results = run(
        shared,
        "checkout",
        reserve("batch-o1"),
        batch_pb2.BatchCommand(confirm=reservations_pb2.ConfirmRequest(reservation_id="batch-o1")),
    )
    assert results[1].reservation.reservation.status == common_pb2.RESERVATION_STATUS_CONFIRMED
    release = batch_pb2.BatchCommand(
        release=reservations_pb2.ReleaseRequest(reservation_id="batch-o1")
    )
    refused = run(shared, "web-checkout", release)[0]
    assert refused.error.code == DENIED
    unary = reservations_pb2_grpc.ReservationServiceStub(shared.as_role("web-checkout"))
    assert refused.error.message == details_of(
        lambda: unary.Release(release.release, timeout=RPC_TIMEOUT_S)
    )


def test_audited_commands_audited_one_by_one(shared: SecureServer) -> None:
    """Each AdjustStock of a batch leaves its own audit line, as the unary call does."""
    log = shared.credentials.directory / "audit.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    run(shared, "admin", adjust("ST-PAR-01"), adjust("ST-LON-01"))
    lines = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    adjusted = [x for x in lines if x["method"] == "InventoryService/AdjustStock"]
    assert [x["summary"]["node_id"] for x in adjusted] == ["ST-PAR-01", "ST-LON-01"]
    assert all(x["outcome"] == "OK" and x["principal"] == "admin" for x in adjusted)
