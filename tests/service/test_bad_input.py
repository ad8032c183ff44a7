"""Bad input over gRPC: each malformed request is INVALID_ARGUMENT (or NOT_FOUND for unknown
ids) with details naming the field, and leaves the state exactly as it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from atpd.core.limits import MAX_QUANTITY
from atpd.v1 import availability_pb2, common_pb2, inventory_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    TEST_LIMITS,
    ServerThread,
    Stubs,
    World,
    availability_request,
    line,
    node,
    reserve_request,
    rpc_error,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class Case:
    code: grpc.StatusCode
    field: str
    call: Callable[[Stubs], Any]


def reserve(*lines: tuple[str, str, int], **kwargs: Any) -> Callable[[Stubs], Any]:
    reservation_id = kwargs.pop("reservation_id", "cart-new")
    request = reserve_request(reservation_id, *lines, **kwargs)
    return lambda api: api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)


def set_stock(**fields: Any) -> Callable[[Stubs], Any]:
    values: dict[str, Any] = {
        "sku": "SKU-1",
        "node_id": "paris",
        "on_hand": 1,
        "source_sequence": 99,
    } | fields
    request = inventory_pb2.SetStockRequest(**values)
    return lambda api: api.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)


def adjust(**fields: Any) -> Callable[[Stubs], Any]:
    values: dict[str, Any] = {"sku": "SKU-1", "node_id": "paris", "delta": 1} | fields
    request = inventory_pb2.AdjustStockRequest(**values)
    return lambda api: api.inventory.AdjustStock(request, timeout=RPC_TIMEOUT_S)


def availability(request: availability_pb2.GetAvailabilityRequest) -> Callable[[Stubs], Any]:
    return lambda api: api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)


def upsert(request: inventory_pb2.UpsertNodeRequest) -> Callable[[Stubs], Any]:
    return lambda api: api.inventory.UpsertNode(request, timeout=RPC_TIMEOUT_S)


def fulfil(reservation_id: str, *lines: tuple[str, str, int]) -> Callable[[Stubs], Any]:
    request = reservations_pb2.FulfilRequest(
        reservation_id=reservation_id, lines=[line(*x) for x in lines]
    )
    return lambda api: api.reservations.Fulfil(request, timeout=RPC_TIMEOUT_S)


def node_with(**fields: Any) -> inventory_pb2.UpsertNodeRequest:
    request = node("rome", "EU/IT/Rome")
    for name, value in fields.items():
        if name == "tags":
            request.node.tags[:] = value
        else:
            setattr(request.node, name, value)
    return request


GOOD = ("SKU-1", "paris", 1)
TOO_MANY_LINES = tuple(
    (f"SKU-{i}", "paris", 1) for i in range(TEST_LIMITS.max_lines_per_reservation + 1)
)

CASES: dict[str, Case] = {
    # Reserve
    "reserve: empty reservation_id": Case(
        INVALID, "reservation_id", reserve(GOOD, reservation_id="")
    ),
    "reserve: reservation_id with a space": Case(
        INVALID, "reservation_id", reserve(GOOD, reservation_id="cart 1")
    ),
    "reserve: reservation_id over 128 chars": Case(
        INVALID, "reservation_id", reserve(GOOD, reservation_id="c" * 129)
    ),
    "reserve: quantity 0": Case(INVALID, "lines[0].quantity", reserve(("SKU-1", "paris", 0))),
    "reserve: negative quantity": Case(
        INVALID, "lines[0].quantity", reserve(("SKU-1", "paris", -3))
    ),
    "reserve: quantity 0 on the second line": Case(
        INVALID, "lines[1].quantity", reserve(GOOD, ("SKU-2", "paris", 0))
    ),
    "reserve: quantity over MAX_QUANTITY": Case(
        INVALID, "lines[0].quantity", reserve(("SKU-1", "paris", MAX_QUANTITY + 1))
    ),
    "reserve: ttl 0": Case(INVALID, "ttl_ms", reserve(GOOD, ttl_ms=0)),
    "reserve: ttl below min_ttl_ms": Case(
        INVALID, "ttl_ms", reserve(GOOD, ttl_ms=TEST_LIMITS.min_ttl_ms - 1)
    ),
    "reserve: ttl above max_ttl_ms": Case(
        INVALID, "ttl_ms", reserve(GOOD, ttl_ms=TEST_LIMITS.max_ttl_ms + 1)
    ),
    "reserve: negative ttl": Case(INVALID, "ttl_ms", reserve(GOOD, ttl_ms=-60_000)),
    "reserve: no lines": Case(INVALID, "lines", reserve()),
    "reserve: more than max_lines_per_reservation": Case(
        INVALID, "lines", reserve(*TOO_MANY_LINES)
    ),
    "reserve: duplicate (sku, node) lines": Case(
        INVALID, "lines[1]", reserve(GOOD, ("SKU-1", "paris", 2))
    ),
    "reserve: unknown kind 99": Case(INVALID, "kind", reserve(GOOD, kind=99)),
    "reserve: empty sku": Case(INVALID, "lines[0].sku", reserve(("", "paris", 1))),
    "reserve: sku with a space": Case(INVALID, "lines[0].sku", reserve(("SKU 1", "paris", 1))),
    "reserve: empty node": Case(INVALID, "lines[0].node_id", reserve(("SKU-1", "", 1))),
    "reserve: bad channel": Case(INVALID, "channel", reserve(GOOD, channel="Web!")),
    "reserve: bad segment": Case(INVALID, "segment", reserve(GOOD, segment="V I P")),
    "reserve: unknown node": Case(
        NOT_FOUND, "lines[1].node_id", reserve(GOOD, ("SKU-1", "madrid", 1))
    ),
    # Confirm / Release / Fulfil / GetReservation
    "confirm: empty reservation_id": Case(
        INVALID,
        "reservation_id",
        lambda api: api.reservations.Confirm(reservations_pb2.ConfirmRequest()),
    ),
    "confirm: unknown reservation": Case(
        NOT_FOUND,
        "reservation_id",
        lambda api: api.reservations.Confirm(reservations_pb2.ConfirmRequest(reservation_id="x")),
    ),
    "release: unknown reservation": Case(
        NOT_FOUND,
        "reservation_id",
        lambda api: api.reservations.Release(reservations_pb2.ReleaseRequest(reservation_id="x")),
    ),
    "fulfil: unknown reservation": Case(NOT_FOUND, "reservation_id", fulfil("x")),
    "fulfil: quantity 0": Case(
        INVALID, "lines[0].quantity", fulfil("cart-1", ("SKU-1", "paris", 0))
    ),
    "fulfil: line not in the reservation": Case(
        INVALID, "lines[0]", fulfil("cart-1", ("SKU-1", "lyon", 1))
    ),
    "get reservation: empty id": Case(
        INVALID,
        "reservation_id",
        lambda api: api.reservations.GetReservation(reservations_pb2.GetReservationRequest()),
    ),
    "get reservation: unknown": Case(
        NOT_FOUND,
        "reservation_id",
        lambda api: api.reservations.GetReservation(
            reservations_pb2.GetReservationRequest(reservation_id="no-such-cart")
        ),
    ),
    # Availability
    "availability: empty sku list": Case(INVALID, "skus", availability(availability_request())),
    "availability: more than max_skus_per_query": Case(
        INVALID,
        "skus",
        availability(
            availability_request(*(f"S{i}" for i in range(TEST_LIMITS.max_skus_per_query + 1)))
        ),
    ),
    "availability: bad sku": Case(INVALID, "skus[1]", availability(availability_request("A", ""))),
    "availability: empty geo segment": Case(
        INVALID, "geo_prefix", availability(availability_request("SKU-1", geo_prefix="EU//FR"))
    ),
    "availability: trailing slash": Case(
        INVALID, "geo_prefix", availability(availability_request("SKU-1", geo_prefix="EU/"))
    ),
    "availability: geo deeper than 4 levels": Case(
        INVALID, "geo_prefix", availability(availability_request("SKU-1", geo_prefix="A/B/C/D/E"))
    ),
    "availability: bad node id": Case(
        INVALID, "node_ids[0]", availability(availability_request("SKU-1", node_ids=("a b",)))
    ),
    "availability: unknown node": Case(
        NOT_FOUND,
        "node_ids[1]",
        availability(availability_request("SKU-1", node_ids=("paris", "madrid"))),
    ),
    "availability: geo prefix with no node under it": Case(
        NOT_FOUND, "geo_prefix", availability(availability_request("SKU-1", geo_prefix="EU/ES"))
    ),
    "availability: bad channel": Case(
        INVALID,
        "channel",
        availability(availability_pb2.GetAvailabilityRequest(skus=["SKU-1"], channel="WEB")),
    ),
    # Nodes
    "list nodes: bad geo prefix": Case(
        INVALID,
        "geo_prefix",
        lambda api: api.inventory.ListNodes(inventory_pb2.ListNodesRequest(geo_prefix="EU//")),
    ),
    "upsert node: node missing": Case(INVALID, "node", upsert(inventory_pb2.UpsertNodeRequest())),
    "upsert node: empty node_id": Case(INVALID, "node.node_id", upsert(node_with(node_id=""))),
    "upsert node: node_id with '/'": Case(
        INVALID, "node.node_id", upsert(node_with(node_id="a/b"))
    ),
    "upsert node: unspecified kind": Case(
        INVALID, "node.kind", upsert(node_with(kind=common_pb2.NODE_KIND_UNSPECIFIED))
    ),
    "upsert node: unknown kind 99": Case(INVALID, "node.kind", upsert(node_with(kind=99))),
    "upsert node: empty geo path": Case(INVALID, "node.geo_path", upsert(node_with(geo_path=""))),
    "upsert node: geo path too deep": Case(
        INVALID, "node.geo_path", upsert(node_with(geo_path="EU/IT/Lazio/Rome/Centro"))
    ),
    "upsert node: bad tag": Case(INVALID, "node.tags[1]", upsert(node_with(tags=["ok", "no way"]))),
    # Stock feeds
    "set stock: source_sequence 0": Case(INVALID, "source_sequence", set_stock(source_sequence=0)),
    "set stock: negative on_hand": Case(INVALID, "on_hand", set_stock(on_hand=-1)),
    "set stock: on_hand over MAX_QUANTITY": Case(
        INVALID, "on_hand", set_stock(on_hand=MAX_QUANTITY + 1)
    ),
    "set stock: negative safety_stock": Case(INVALID, "safety_stock", set_stock(safety_stock=-1)),
    "set stock: empty sku": Case(INVALID, "sku", set_stock(sku="")),
    "set stock: empty node_id": Case(INVALID, "node_id", set_stock(node_id="")),
    "set stock: unknown node": Case(NOT_FOUND, "node_id", set_stock(node_id="madrid")),
    "adjust stock: delta 0": Case(INVALID, "delta", adjust(delta=0)),
    "adjust stock: delta over MAX_QUANTITY": Case(
        INVALID, "delta", adjust(delta=-(MAX_QUANTITY + 1))
    ),
    "adjust stock: on_hand would exceed MAX_QUANTITY": Case(
        INVALID, "delta", adjust(delta=MAX_QUANTITY)
    ),
    "adjust stock: reason over 128 chars": Case(INVALID, "reason", adjust(reason="r" * 129)),
    "adjust stock: unknown node": Case(NOT_FOUND, "node_id", adjust(node_id="madrid")),
    "get stock: empty sku": Case(
        INVALID,
        "sku",
        lambda api: api.inventory.GetStock(inventory_pb2.GetStockRequest(node_id="paris")),
    ),
    "get stock: unknown node": Case(
        NOT_FOUND,
        "node_id",
        lambda api: api.inventory.GetStock(
            inventory_pb2.GetStockRequest(sku="SKU-1", node_id="madrid")
        ),
    ),
}


@pytest.fixture
def seeded(server: ServerThread, world: World, api: Stubs) -> World:
    """Stock at two nodes and one open reservation ("cart-1", 2 x SKU-1 at paris)."""
    world.set_stock("SKU-1", "paris", 5)
    world.set_stock("SKU-1", "lyon", 5)
    response = api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 2)))
    assert response.outcome == common_pb2.OUTCOME_OK
    return world


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_is_refused_naming_the_field_and_changes_nothing(
    name: str, server: ServerThread, seeded: World, api: Stubs
) -> None:
    """Each bad request gets its status with details "<field>: ..." and leaves the digest as is."""
    case = CASES[name]
    before = server.digest()
    error = rpc_error(lambda: case.call(api))
    assert error.code() == case.code, error.details()
    assert (error.details() or "").startswith(f"{case.field}:"), error.details()
    assert server.digest() == before
    server.check_invariants()


def test_unknown_enum_value_survives_the_wire() -> None:
    """Proto3 enums are open: kind=99 reaches the server as 99 (so the server must check it)."""
    request = reserve_request("cart-1", GOOD, kind=99)
    decoded = reservations_pb2.ReserveRequest.FromString(request.SerializeToString())
    assert decoded.kind == 99


def test_rejected_command_leaves_no_trace_on_the_real_clock(live_server: ServerThread) -> None:
    """A request the core refuses leaves the digest unchanged even after the wall clock moved."""
    # core/results.py: "a failed command never leaves a trace in state or journal". The digest
    # includes state.now_ms; if a refused command moves it without a journal record, a replay
    # of the journal cannot reproduce the live digest.
    api = live_server.stubs()
    world = World(live_server, api)
    world.add_nodes()
    world.set_stock("SKU-1", "paris", 5)
    engine = live_server.app.engine
    before = live_server.digest()
    state_now_ms = live_server.call(lambda: engine.state.now_ms)
    for _ in range(1_000):  # bounded: the wall clock moves within a few ms
        if live_server.call(engine.now_ms) > state_now_ms:
            break
        time.sleep(0.002)
    error = rpc_error(lambda: reserve(("SKU-1", "madrid", 1))(api))
    assert error.code() == NOT_FOUND
    assert live_server.digest() == before
