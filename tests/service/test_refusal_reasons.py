"""Over a real gRPC channel: every short Reserve line says why (stock, line cap, not visible,
node disabled, unknown SKU), GetAvailability shows the caller's per-line cap, and per-position
quantity totals are bounded so that no sum overflows and a refused command changes nothing."""

from __future__ import annotations

from typing import Any

import grpc

from atpd.core.limits import MAX_QUANTITY
from atpd.v1 import (
    availability_pb2,
    common_pb2,
    reservations_pb2,
    rules_pb2,
    rules_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
)

from .harness import (
    RPC_TIMEOUT_S,
    ServerThread,
    Stubs,
    World,
    reserve_request,
    rpc_error,
    seed_nodes,
)

OK = common_pb2.OUTCOME_OK
INSUFFICIENT = common_pb2.OUTCOME_INSUFFICIENT_STOCK
STOCK = reservations_pb2.SHORTAGE_REASON_STOCK
LINE_CAP = reservations_pb2.SHORTAGE_REASON_LINE_CAP
NOT_VISIBLE = reservations_pb2.SHORTAGE_REASON_NOT_VISIBLE
NODE_DISABLED = reservations_pb2.SHORTAGE_REASON_NODE_DISABLED
UNKNOWN_SKU = reservations_pb2.SHORTAGE_REASON_UNKNOWN_SKU
FAR_ETA_MS = 10**13
# Web sees every store but soho and caps a line at 3; store counts purchase orders.
RULES = """
version = "reasons"
[defaults]
channel = "web"
segment = "standard"
[channels.web]
nodes = { exclude = ["soho"] }
max_per_line = 3
[channels.store]
supply = { kinds = ["PURCHASE_ORDER"] }
[segments.standard]
"""


def set_rules(server: ServerThread, text: str = RULES) -> None:
    stub = rules_pb2_grpc.RulesServiceStub(server.channel())
    request = rules_pb2.SetRulesRequest(text=text, source="reasons.toml")
    assert stub.SetRules(request, timeout=RPC_TIMEOUT_S).outcome == OK


def add_supply(server: ServerThread, supply_id: str, sku: str, node_id: str, quantity: int) -> Any:
    stub = supply_pb2_grpc.SupplyServiceStub(server.channel())
    request = supply_pb2.AddSupplyRequest(
        supply_id=supply_id,
        sku=sku,
        node_id=node_id,
        quantity=quantity,
        eta_ms=FAR_ETA_MS,
        kind=supply_pb2.SUPPLY_KIND_PURCHASE_ORDER,
    )
    return stub.AddSupply(request, timeout=RPC_TIMEOUT_S)


def reserve(
    api: Stubs, reservation_id: str, *lines: tuple[str, str, int], channel: str = ""
) -> reservations_pb2.ReserveResponse:
    request = reserve_request(reservation_id, *lines)
    request.channel = channel
    response: reservations_pb2.ReserveResponse = api.reservations.Reserve(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def shortages(response: reservations_pb2.ReserveResponse) -> list[tuple[str, str, int, int, int]]:
    return [(s.sku, s.node_id, s.requested, s.available, s.reason) for s in response.shortages]


def test_each_short_line_carries_its_reason(server: ServerThread, world: World, api: Stubs) -> None:
    """Stock, line cap, invisible node and unknown SKU are told apart line by line."""
    world.set_stock("BAG-1", "paris", 44)
    world.set_stock("BAG-1", "lyon", 2)
    world.set_stock("BAG-1", "soho", 9)
    set_rules(server)
    before = server.digest()
    response = reserve(
        api,
        "cart-1",
        ("BAG-1", "paris", 4),
        ("BAG-1", "lyon", 3),
        ("BAG-1", "soho", 1),
        ("NOPE", "berlin", 1),
    )
    assert response.outcome == INSUFFICIENT
    assert shortages(response) == [
        ("BAG-1", "paris", 4, 3, LINE_CAP),
        ("BAG-1", "lyon", 3, 2, STOCK),
        ("BAG-1", "soho", 1, 0, NOT_VISIBLE),
        ("NOPE", "berlin", 1, 0, UNKNOWN_SKU),
    ]
    assert server.digest() == before
    # Within the cap the same line is held: the shortage was the cap, not the stock.
    assert reserve(api, "cart-2", ("BAG-1", "paris", 3)).outcome == OK


def test_without_rules_unknown_sku_and_stock_are_told_apart(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """With no rule set loaded, a short line is STOCK or UNKNOWN_SKU."""
    world.set_stock("BAG-1", "paris", 1)
    response = reserve(api, "cart-1", ("BAG-1", "paris", 2), ("NOPE", "paris", 1))
    assert shortages(response) == [
        ("BAG-1", "paris", 2, 1, STOCK),
        ("NOPE", "paris", 1, 0, UNKNOWN_SKU),
    ]


def test_disabled_node_lines_are_listed_with_their_reason(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """NODE_DISABLED lists every line on a disabled node as a NODE_DISABLED shortage."""
    world.set_stock("BAG-1", "paris", 5)
    world.set_stock("BAG-1", "soho", 5)
    world.set_stock("BAG-2", "soho", 5)
    seed_nodes(server, {"soho": "NA/US/NYC/SoHo"}, enabled=False)
    response = reserve(
        api, "cart-1", ("BAG-1", "soho", 1), ("BAG-1", "paris", 1), ("BAG-2", "soho", 2)
    )
    assert response.outcome == common_pb2.OUTCOME_NODE_DISABLED
    assert response.disabled_node_id == "soho"
    assert shortages(response) == [
        ("BAG-1", "soho", 1, 0, NODE_DISABLED),
        ("BAG-2", "soho", 2, 0, NODE_DISABLED),
    ]


def test_availability_shows_the_callers_line_cap(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """GetAvailability answers max_per_line for the caller (0: no cap), in both encodings."""
    world.set_stock("BAG-1", "paris", 44)
    request = availability_pb2.GetAvailabilityRequest(skus=["BAG-1"])
    assert api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S).max_per_line == 0
    set_rules(server)
    for include_nodes in (False, True):
        for channel, cap in (("web", 3), ("store", 0)):
            request = availability_pb2.GetAvailabilityRequest(
                skus=["BAG-1"], channel=channel, include_nodes=include_nodes
            )
            answer = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
            assert (answer.max_per_line, answer.items[0].total_atp) == (cap, 44)


def test_reserved_units_per_position_are_bounded(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """Supply lifts ATP above on_hand, but reserved at one position stops at MAX_QUANTITY:
    a line past it is RESOURCE_EXHAUSTED naming the bound, and nothing of the command stays."""
    world.set_stock("BAG-1", "paris", MAX_QUANTITY)
    world.set_stock("BAG-2", "paris", 10)
    set_rules(server)
    assert add_supply(server, "po-1", "BAG-1", "paris", MAX_QUANTITY // 2).outcome == OK
    assert add_supply(server, "po-2", "BAG-1", "paris", MAX_QUANTITY // 2).outcome == OK
    first = reserve(api, "cart-1", ("BAG-1", "paris", MAX_QUANTITY), channel="store")
    assert first.outcome == OK
    before = server.digest()
    # The overflowing line second of two: the first must not stay reserved.
    error = rpc_error(
        lambda: reserve(
            api, "cart-2", ("BAG-2", "paris", 1), ("BAG-1", "paris", MAX_QUANTITY), channel="store"
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error.details() or ""
    assert "lines[1].quantity" in details and "MAX_QUANTITY" in details
    assert server.digest() == before
    server.check_invariants()
    assert world.position("BAG-2", "paris").reserved == 0


def test_open_supply_per_position_is_bounded(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """Open supply expected at one position stops at MAX_QUANTITY, refused naming the bound."""
    world.set_stock("BAG-1", "paris", 1)
    assert add_supply(server, "po-1", "BAG-1", "paris", MAX_QUANTITY).outcome == OK
    before = server.digest()
    error = rpc_error(lambda: add_supply(server, "po-2", "BAG-1", "paris", 1))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAX_QUANTITY" in (error.details() or "")
    assert server.digest() == before
    # Another position has its own room.
    assert add_supply(server, "po-3", "BAG-1", "lyon", MAX_QUANTITY).outcome == OK
