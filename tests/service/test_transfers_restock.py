"""Transfers and restocking over a real gRPC channel: create -> ship -> receive, plan -> apply,
a stale plan refused, and bad input for every new call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from atpd.v1 import (
    availability_pb2,
    common_pb2,
    restock_pb2,
    restock_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
    transfers_pb2,
    transfers_pb2_grpc,
)

from .harness import RPC_TIMEOUT_S, FakeClock, ServerThread, World, reserve_request, rpc_error

TODAY = "2023-11-14"  # harness.FAKE_EPOCH_MS
RULES = """
version = "restock-1"
[defaults]
channel = "web"
segment = "standard"
[segments.standard]
supply = { kinds = ["TRANSFER"] }
[restock]
min_shipment_units = 2
default_lead_days = 2
[[restock.targets]]
kinds = ["STORE"]
min_days = 7
max_days = 14
keep_units = 1
"""


def transfers(server: ServerThread) -> transfers_pb2_grpc.TransferServiceStub:
    return transfers_pb2_grpc.TransferServiceStub(server.channel())


def restock(server: ServerThread) -> restock_pb2_grpc.RestockServiceStub:
    return restock_pb2_grpc.RestockServiceStub(server.channel())


def create_request(transfer_id: str = "T-1", **lines: int) -> transfers_pb2.CreateTransferRequest:
    return transfers_pb2.CreateTransferRequest(
        transfer_id=transfer_id,
        from_node_id="paris",
        to_node_id="lyon",
        lines=[transfers_pb2.TransferItem(sku=s, quantity=q) for s, q in lines.items()],
        ship_date=TODAY,
    )


def test_create_ship_receive_end_to_end(server: ServerThread, world: World) -> None:
    """A transfer holds at paris, shows as inbound at lyon in --explain, ships, and is received
    with one unit damaged; on_hand moves by exactly what the transfer says."""
    world.set_stock("bag", "paris", 10)
    stub = transfers(server)
    created = stub.CreateTransfer(create_request(bag=3), timeout=RPC_TIMEOUT_S)
    assert created.outcome == common_pb2.OUTCOME_OK
    assert created.transfer.status == transfers_pb2.TRANSFER_STATUS_CREATED
    assert world.position("bag", "paris").reserved == 3
    again = stub.CreateTransfer(create_request(bag=3), timeout=RPC_TIMEOUT_S)
    assert again.transfer == created.transfer
    explain = world.api.availability.GetAvailability(
        availability_pb2.GetAvailabilityRequest(skus=["bag"], explain=True, include_nodes=True),
        timeout=RPC_TIMEOUT_S,
    )
    nodes = {n.node_id: n for n in explain.items[0].nodes}
    assert nodes["lyon"].inbound_transfers[0].from_node_id == "paris"
    assert nodes["lyon"].inbound_transfers[0].quantity == 3
    assert nodes["paris"].held_for_transfers == 3
    stub.ShipTransfer(transfers_pb2.ShipTransferRequest(transfer_id="T-1"), timeout=RPC_TIMEOUT_S)
    assert world.position("bag", "paris").on_hand == 7
    receipt = transfers_pb2.ReceiveTransferRequest(
        transfer_id="T-1",
        receipt_id="R-1",
        lines=[transfers_pb2.ReceivedItem(sku="bag", received=2, damaged=1)],
    )
    received = stub.ReceiveTransfer(receipt, timeout=RPC_TIMEOUT_S)
    assert received.transfer.status == transfers_pb2.TRANSFER_STATUS_RECEIVED
    assert received.transfer.lines[0].damaged == 1
    assert world.position("bag", "lyon").on_hand == 2
    listed = stub.ListTransfers(
        transfers_pb2.ListTransfersRequest(node_id="lyon"), timeout=RPC_TIMEOUT_S
    )
    assert [t.transfer_id for t in listed.transfers] == ["T-1"]
    server.check_invariants()


def test_cancel_after_shipping_is_failed_precondition(server: ServerThread, world: World) -> None:
    """CancelTransfer on a shipped transfer answers FAILED_PRECONDITION saying why."""
    world.set_stock("bag", "paris", 10)
    stub = transfers(server)
    stub.CreateTransfer(create_request(bag=1), timeout=RPC_TIMEOUT_S)
    stub.ShipTransfer(transfers_pb2.ShipTransferRequest(transfer_id="T-1"), timeout=RPC_TIMEOUT_S)
    error = rpc_error(
        lambda: stub.CancelTransfer(
            transfers_pb2.CancelTransferRequest(transfer_id="T-1"), timeout=RPC_TIMEOUT_S
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "in transit" in str(error.details())


BAD_TRANSFER_CALLS: list[
    tuple[str, Callable[[transfers_pb2_grpc.TransferServiceStub], Any], str]
] = [
    ("empty id", lambda s: s.CreateTransfer(create_request("", bag=1)), "transfer_id"),
    ("hash in id", lambda s: s.CreateTransfer(create_request("T#1", bag=1)), "transfer_id"),
    ("no lines", lambda s: s.CreateTransfer(create_request()), "lines"),
    ("zero quantity", lambda s: s.CreateTransfer(create_request(bag=0)), "lines[0].quantity"),
    (
        "bad date",
        lambda s: s.CreateTransfer(
            transfers_pb2.CreateTransferRequest(
                transfer_id="T",
                from_node_id="paris",
                to_node_id="lyon",
                lines=[transfers_pb2.TransferItem(sku="bag", quantity=1)],
                ship_date="14/11/2023",
            )
        ),
        "ship_date",
    ),
    ("unknown", lambda s: s.ShipTransfer(transfers_pb2.ShipTransferRequest(transfer_id="x")), "x"),
    (
        "no receipt id",
        lambda s: s.ReceiveTransfer(transfers_pb2.ReceiveTransferRequest(transfer_id="T")),
        "receipt_id",
    ),
    (
        "bad status",
        lambda s: s.ListTransfers(transfers_pb2.ListTransfersRequest(status=9)),  # type: ignore[arg-type]
        "status",
    ),
]


@pytest.mark.parametrize(
    ("case", "call", "field"), BAD_TRANSFER_CALLS, ids=[c[0] for c in BAD_TRANSFER_CALLS]
)
def test_bad_transfer_calls_name_the_field(
    server: ServerThread, world: World, case: str, call: Any, field: str
) -> None:
    """Every bad transfer call is INVALID_ARGUMENT or NOT_FOUND naming what is wrong."""
    world.set_stock("bag", "paris", 10)
    before = server.digest()
    error = rpc_error(lambda: call(transfers(server)))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), case
    assert field in str(error.details()), error.details()
    assert server.digest() == before


def sell(world: World, sku: str, node_id: str, count: int) -> None:
    for i in range(count):
        request = reserve_request(f"sale-{sku}-{node_id}-{i}", (sku, node_id, 1))
        request.kind = common_pb2.RESERVATION_KIND_POS_SALE
        response = world.api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_OK, response


def restock_world(server: ServerThread, world: World) -> None:
    """lyon sells bags and has few left; paris has plenty and sells none."""
    rules = rules_pb2_grpc.RulesServiceStub(server.channel())
    rules.SetRules(rules_pb2.SetRulesRequest(text=RULES), timeout=RPC_TIMEOUT_S)
    world.set_stock("bag", "paris", 50)
    world.set_stock("bag", "lyon", 12)
    sell(world, "bag", "lyon", 10)


def test_plan_then_apply(server: ServerThread, world: World, clock: FakeClock) -> None:
    """A plan moves bags from paris (no demand) to lyon (below its min cover); applying it
    creates the transfer, and a second apply answers the same transfer ids."""
    restock_world(server, world)
    stub = restock(server)
    plan = stub.PlanRestock(restock_pb2.PlanRestockRequest(geo_prefix="EU"), timeout=RPC_TIMEOUT_S)
    assert [(s.from_node_id, s.to_node_id) for s in plan.shipments] == [("paris", "lyon")]
    move = plan.shipments[0].moves[0]
    assert move.to_cover_before_days < 7 <= move.to_cover_after_days
    applied = stub.ApplyRestock(
        restock_pb2.ApplyRestockRequest(plan_id=plan.plan_id), timeout=RPC_TIMEOUT_S
    )
    assert applied.outcome == common_pb2.OUTCOME_OK and len(applied.transfer_ids) == 1
    assert world.position("bag", "paris").reserved == move.units
    again = stub.ApplyRestock(
        restock_pb2.ApplyRestockRequest(plan_id=plan.plan_id), timeout=RPC_TIMEOUT_S
    )
    assert list(again.transfer_ids) == list(applied.transfer_ids)
    server.check_invariants()


def test_stale_plan_is_refused(server: ServerThread, world: World) -> None:
    """A position the plan used moved (a sale at the receiver): FAILED_PRECONDITION, no change."""
    restock_world(server, world)
    stub = restock(server)
    plan = stub.PlanRestock(restock_pb2.PlanRestockRequest(), timeout=RPC_TIMEOUT_S)
    assert plan.shipments
    request = reserve_request("late-sale", ("bag", "lyon", 1))
    request.kind = common_pb2.RESERVATION_KIND_POS_SALE
    world.api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    before = server.digest()
    error = rpc_error(
        lambda: stub.ApplyRestock(
            restock_pb2.ApplyRestockRequest(plan_id=plan.plan_id), timeout=RPC_TIMEOUT_S
        )
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "stale" in str(error.details())
    assert server.digest() == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (restock_pb2.PlanRestockRequest(horizon_days=400), "horizon_days"),
        (restock_pb2.PlanRestockRequest(geo_prefix="EU//FR"), "geo_prefix"),
        (restock_pb2.PlanRestockRequest(geo_prefix="ZZ"), "geo_prefix"),
        (restock_pb2.PlanRestockRequest(sku_prefix="bad sku"), "sku_prefix"),
        (restock_pb2.PlanRestockRequest(ship_date="2020-01-01"), "ship_date"),
    ],
)
def test_bad_plan_requests(server: ServerThread, world: World, request_: Any, field: str) -> None:
    """Bad PlanRestock input is INVALID_ARGUMENT / NOT_FOUND naming the field."""
    error = rpc_error(lambda: restock(server).PlanRestock(request_, timeout=RPC_TIMEOUT_S))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert field in str(error.details())


def test_unknown_plan_is_not_found(server: ServerThread, world: World) -> None:
    """ApplyRestock and GetRestockPlan of an unknown plan id: NOT_FOUND naming plan_id."""
    stub = restock(server)
    for call in (
        lambda: stub.ApplyRestock(restock_pb2.ApplyRestockRequest(plan_id="RP-0-x")),
        lambda: stub.GetRestockPlan(restock_pb2.GetRestockPlanRequest(plan_id="RP-0-x")),
    ):
        error = rpc_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert "plan_id" in str(error.details())


def test_schedule_round_applies_within_the_daily_limit(server: ServerThread, world: World) -> None:
    """A scheduled round plans and applies (journaled like any caller's ApplyRestock); the
    next round, past the units-per-day limit, plans but does not apply."""
    restock_world(server, world)
    restock_servicer = server.app.restock
    assert restock_servicer is not None
    said = server.run(restock_servicer.run_once("EU", 7, 1_000))
    assert "applied" in said, said
    moved = restock_servicer.units_applied_today(server.app.engine.now_ms())
    assert moved > 0
    world.set_stock("hat", "paris", 50)  # another SKU running short at lyon
    world.set_stock("hat", "lyon", 12)
    sell(world, "hat", "lyon", 10)
    said = server.run(restock_servicer.run_once("EU", 7, moved))
    assert "not applied" in said, said
    assert restock_servicer.units_applied_today(server.app.engine.now_ms()) == moved
    server.check_invariants()
