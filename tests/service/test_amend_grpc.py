"""AmendReservation over a real channel: a cart grows, shrinks and moves all or nothing, its
expiry moves within max_ttl_ms, and bad requests are refused naming the field."""

from __future__ import annotations

import grpc
import pytest

from atpd.v1 import common_pb2, reservations_pb2

from .harness import RPC_TIMEOUT_S, FakeClock, ServerThread, World, line, reserve_request


def amend_request(
    reservation_id: str, *lines: tuple[str, str, int], ttl_ms: int = 0
) -> reservations_pb2.AmendReservationRequest:
    return reservations_pb2.AmendReservationRequest(
        reservation_id=reservation_id, lines=[line(*x) for x in lines], ttl_ms=ttl_ms
    )


def test_a_cart_changes_without_losing_its_stock(
    server: ServerThread, world: World, clock: FakeClock
) -> None:
    """Adding an item keeps the first one held; a refused change leaves the cart as it was;
    the expiry moves to now + ttl_ms; a retry is replayed."""
    world.set_stock("bag", "paris", 2)
    world.set_stock("belt", "paris", 1)
    stub = world.api.reservations
    assert stub.Reserve(
        reserve_request("cart", ("bag", "paris", 1)), timeout=RPC_TIMEOUT_S
    ).outcome == (common_pb2.OUTCOME_OK)
    clock.advance(10_000)
    grown = stub.AmendReservation(
        amend_request("cart", ("bag", "paris", 2), ("belt", "paris", 1), ttl_ms=120_000),
        timeout=RPC_TIMEOUT_S,
    )
    assert grown.outcome == common_pb2.OUTCOME_OK and not grown.replayed
    assert grown.reservation.expires_at_ms == clock() + 120_000
    assert world.position("bag", "paris").reserved == 2
    refused = stub.AmendReservation(
        amend_request("cart", ("bag", "paris", 3)), timeout=RPC_TIMEOUT_S
    )
    assert refused.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert [(s.sku, s.available) for s in refused.shortages] == [("bag", 2)]
    assert len(refused.reservation.lines) == 2
    assert world.position("belt", "paris").reserved == 1
    again = stub.AmendReservation(
        amend_request("cart", ("bag", "paris", 2), ("belt", "paris", 1), ttl_ms=120_000),
        timeout=RPC_TIMEOUT_S,
    )
    assert again.replayed
    server.check_invariants()


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (amend_request("", ("bag", "paris", 1)), "INVALID_ARGUMENT", "reservation_id"),
        (amend_request("cart"), "INVALID_ARGUMENT", "lines"),
        (amend_request("cart", ("bag", "paris", 0)), "INVALID_ARGUMENT", "lines[0].quantity"),
        (amend_request("cart", ("bag", "paris", 1), ttl_ms=5), "INVALID_ARGUMENT", "ttl_ms"),
        (
            amend_request("cart", ("bag", "paris", 1), ttl_ms=86_400_001),
            "INVALID_ARGUMENT",
            "max_ttl_ms",
        ),
        (amend_request("nope", ("bag", "paris", 1)), "NOT_FOUND", "reservation_id"),
        (amend_request("cart", ("bag", "mars", 1)), "NOT_FOUND", "lines[0].node_id"),
    ],
)
def test_bad_amendments_are_refused_naming_the_field(
    server: ServerThread, world: World, request_: object, code: str, field: str
) -> None:
    """Each bad request answers its status with the field named and changes nothing."""
    world.set_stock("bag", "paris", 2)
    world.api.reservations.Reserve(
        reserve_request("cart", ("bag", "paris", 1)), timeout=RPC_TIMEOUT_S
    )
    digest = server.digest()
    with pytest.raises(grpc.RpcError) as caught:
        world.api.reservations.AmendReservation(request_, timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert field in (caught.value.details() or "")
    assert server.digest() == digest
