"""Reservations over gRPC: reserve, confirm, fulfil, release, POS sales, idempotent retries,
all-or-nothing refusals."""

from __future__ import annotations

from functools import partial

import grpc
import pytest

from atpd.config import Config
from atpd.core.limits import Limits
from atpd.v1 import common_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    FakeClock,
    ServerThread,
    Stubs,
    World,
    line,
    reserve_request,
    rpc_error,
    running_server,
    seed_nodes,
)

OK = common_pb2.OUTCOME_OK
HELD = common_pb2.RESERVATION_STATUS_HELD
CONFIRMED = common_pb2.RESERVATION_STATUS_CONFIRMED
FULFILLED = common_pb2.RESERVATION_STATUS_FULFILLED
RELEASED = common_pb2.RESERVATION_STATUS_RELEASED


def get(api: Stubs, reservation_id: str) -> reservations_pb2.ReservationResponse:
    request = reservations_pb2.GetReservationRequest(reservation_id=reservation_id)
    response: reservations_pb2.ReservationResponse = api.reservations.GetReservation(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def confirm(api: Stubs, reservation_id: str) -> reservations_pb2.ReservationResponse:
    request = reservations_pb2.ConfirmRequest(reservation_id=reservation_id)
    response: reservations_pb2.ReservationResponse = api.reservations.Confirm(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def release(api: Stubs, reservation_id: str) -> reservations_pb2.ReservationResponse:
    request = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
    response: reservations_pb2.ReservationResponse = api.reservations.Release(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def fulfil(
    api: Stubs,
    reservation_id: str,
    *lines: tuple[str, str, int],
    release_remainder: bool = False,
) -> reservations_pb2.ReservationResponse:
    request = reservations_pb2.FulfilRequest(
        reservation_id=reservation_id,
        lines=[line(*x) for x in lines],
        release_remainder=release_remainder,
    )
    response: reservations_pb2.ReservationResponse = api.reservations.Fulfil(
        request, timeout=RPC_TIMEOUT_S
    )
    return response


def stock_of(world: World, sku: str, node_id: str) -> tuple[int, int, int]:
    """(on_hand, reserved, atp)"""
    position = world.position(sku, node_id)
    return position.on_hand, position.reserved, position.atp


def fulfilled_of(reservation: reservations_pb2.Reservation) -> dict[tuple[str, str], int]:
    return {(x.sku, x.node_id): x.quantity for x in reservation.fulfilled}


def test_reserve_holds_stock_until_expiry(world: World, api: Stubs, clock: FakeClock) -> None:
    """Reserve and GetReservation answer a HELD hold expiring at now + ttl; ATP drops."""
    world.set_stock("SKU-1", "paris", 5)
    world.set_stock("SKU-2", "berlin", 2)
    request = reserve_request(
        "cart-1",
        ("SKU-1", "paris", 2),
        ("SKU-2", "berlin", 2),
        ttl_ms=900_000,
        channel="web",
        segment="vip",
    )
    response = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert (response.outcome, response.replayed) == (OK, False)
    assert not response.shortages
    reservation = response.reservation
    assert reservation == reservations_pb2.Reservation(
        reservation_id="cart-1",
        status=HELD,
        kind=common_pb2.RESERVATION_KIND_CART,
        lines=request.lines,
        created_at_ms=clock(),
        expires_at_ms=clock() + 900_000,
        updated_at_ms=clock(),
        channel="web",
        segment="vip",
    )
    assert get(api, "cart-1") == reservations_pb2.ReservationResponse(
        outcome=OK, reservation=reservation
    )
    assert stock_of(world, "SKU-1", "paris") == (5, 2, 3)
    assert stock_of(world, "SKU-2", "berlin") == (2, 2, 0)


def test_unspecified_kind_is_a_cart(world: World, api: Stubs) -> None:
    """kind=UNSPECIFIED is stored and answered as CART."""
    world.set_stock("SKU-1", "paris", 5)
    request = reserve_request("cart-1", ("SKU-1", "paris", 1))
    request.kind = common_pb2.RESERVATION_KIND_UNSPECIFIED
    response = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert response.reservation.kind == common_pb2.RESERVATION_KIND_CART


def test_confirm_stops_expiry_and_keeps_the_hold(
    world: World, api: Stubs, clock: FakeClock
) -> None:
    """Confirm makes a hold CONFIRMED (expires_at_ms 0) that outlives the old expiry; idempotent."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("order-1", ("SKU-1", "paris", 3), ttl_ms=60_000))
    clock.advance(1_000)
    response = confirm(api, "order-1")
    assert response.outcome == OK
    assert (response.reservation.status, response.reservation.expires_at_ms) == (CONFIRMED, 0)
    assert response.reservation.updated_at_ms == clock()
    clock.advance(3_600_000)
    assert confirm(api, "order-1").outcome == OK
    assert get(api, "order-1").reservation.status == CONFIRMED
    assert stock_of(world, "SKU-1", "paris") == (5, 3, 2)


def test_partial_then_full_fulfilment(
    server: ServerThread, world: World, api: Stubs, clock: FakeClock
) -> None:
    """Fulfil with lines takes part and keeps the rest held; Fulfil without lines takes the rest."""
    world.set_stock("SKU-1", "paris", 10)
    world.set_stock("SKU-2", "lyon", 4)
    api.reservations.Reserve(
        reserve_request("order-1", ("SKU-1", "paris", 3), ("SKU-2", "lyon", 4)),
        timeout=RPC_TIMEOUT_S,
    )
    confirm(api, "order-1")
    partial = fulfil(api, "order-1", ("SKU-1", "paris", 2))
    assert (partial.outcome, partial.reservation.status) == (OK, CONFIRMED)
    assert fulfilled_of(partial.reservation) == {("SKU-1", "paris"): 2}
    assert stock_of(world, "SKU-1", "paris") == (8, 1, 7)
    assert stock_of(world, "SKU-2", "lyon") == (4, 4, 0)
    clock.advance(10)
    rest = fulfil(api, "order-1")
    assert (rest.outcome, rest.reservation.status) == (OK, FULFILLED)
    assert rest.reservation.updated_at_ms == clock()
    assert fulfilled_of(rest.reservation) == {("SKU-1", "paris"): 3, ("SKU-2", "lyon"): 4}
    assert stock_of(world, "SKU-1", "paris") == (7, 0, 7)
    assert stock_of(world, "SKU-2", "lyon") == (0, 0, 0)
    # Fulfilling a fulfilled reservation again is OK and changes nothing; with lines it is not.
    before = server.digest()
    assert fulfil(api, "order-1").outcome == OK
    again = fulfil(api, "order-1", ("SKU-1", "paris", 1))
    assert again.outcome == common_pb2.OUTCOME_INVALID_STATE
    assert server.digest() == before
    server.check_invariants()


def test_fulfil_of_a_held_reservation_and_release_remainder(world: World, api: Stubs) -> None:
    """Fulfilling part of a HELD cart with release_remainder frees the rest and ends FULFILLED."""
    world.set_stock("SKU-1", "paris", 10)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 5)))
    response = fulfil(api, "cart-1", ("SKU-1", "paris", 2), release_remainder=True)
    assert (response.outcome, response.reservation.status) == (OK, FULFILLED)
    assert fulfilled_of(response.reservation) == {("SKU-1", "paris"): 2}
    assert stock_of(world, "SKU-1", "paris") == (8, 0, 8)


def test_fulfil_more_than_held_is_exceeds_held(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """Fulfilling more than a line still holds answers EXCEEDS_HELD and changes nothing."""
    world.set_stock("SKU-1", "paris", 10)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 3)))
    fulfil(api, "cart-1", ("SKU-1", "paris", 2))
    before = server.digest()
    response = fulfil(api, "cart-1", ("SKU-1", "paris", 2))
    assert response.outcome == common_pb2.OUTCOME_EXCEEDS_HELD
    assert response.reservation.status == HELD
    assert server.digest() == before


def test_release_frees_stock_and_is_idempotent(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """Release frees the stock; releasing again is OK; Confirm/Fulfil of it are INVALID_STATE."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 5)))
    assert stock_of(world, "SKU-1", "paris") == (5, 5, 0)
    response = release(api, "cart-1")
    assert (response.outcome, response.reservation.status) == (OK, RELEASED)
    assert stock_of(world, "SKU-1", "paris") == (5, 0, 5)
    before = server.digest()
    again = release(api, "cart-1")
    assert (again.outcome, again.reservation.status) == (OK, RELEASED)
    assert confirm(api, "cart-1").outcome == common_pb2.OUTCOME_INVALID_STATE
    assert fulfil(api, "cart-1").outcome == common_pb2.OUTCOME_INVALID_STATE
    assert server.digest() == before
    assert get(api, "cart-1").reservation.status == RELEASED


def test_release_of_confirmed_and_of_fulfilled(world: World, api: Stubs) -> None:
    """A CONFIRMED reservation can be released; a FULFILLED one cannot (INVALID_STATE)."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("order-1", ("SKU-1", "paris", 2)))
    confirm(api, "order-1")
    assert release(api, "order-1").reservation.status == RELEASED
    api.reservations.Reserve(reserve_request("order-2", ("SKU-1", "paris", 2)))
    fulfil(api, "order-2")
    refused = release(api, "order-2")
    assert (refused.outcome, refused.reservation.status) == (
        common_pb2.OUTCOME_INVALID_STATE,
        FULFILLED,
    )
    assert stock_of(world, "SKU-1", "paris") == (3, 0, 3)


def test_pos_sale_is_fulfilled_at_once(server: ServerThread, world: World, api: Stubs) -> None:
    """A POS_SALE ignores ttl_ms and is FULFILLED at once: on_hand drops, nothing stays held."""
    world.set_stock("SKU-1", "paris", 5)
    request = reserve_request(
        "pos-1", ("SKU-1", "paris", 2), ttl_ms=0, kind=common_pb2.RESERVATION_KIND_POS_SALE
    )
    response = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert response.outcome == OK
    assert response.reservation.status == FULFILLED
    assert response.reservation.kind == common_pb2.RESERVATION_KIND_POS_SALE
    assert fulfilled_of(response.reservation) == {("SKU-1", "paris"): 2}
    assert stock_of(world, "SKU-1", "paris") == (3, 0, 3)
    assert server.call(lambda: server.app.engine.state.open_reservations) == 0
    server.check_invariants()
    # A POS sale for more than is available is refused like any other reservation.
    short = reserve_request(
        "pos-2", ("SKU-1", "paris", 4), ttl_ms=0, kind=common_pb2.RESERVATION_KIND_POS_SALE
    )
    refused = api.reservations.Reserve(short, timeout=RPC_TIMEOUT_S)
    assert refused.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert stock_of(world, "SKU-1", "paris") == (3, 0, 3)


def test_same_id_same_content_is_replayed(server: ServerThread, world: World, api: Stubs) -> None:
    """Same id and content (any line order) replays the stored reservation and changes nothing."""
    world.set_stock("SKU-1", "paris", 5)
    world.set_stock("SKU-2", "lyon", 5)
    request = reserve_request("cart-1", ("SKU-1", "paris", 2), ("SKU-2", "lyon", 1))
    first = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    before = server.digest()
    retry = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert (retry.outcome, retry.replayed) == (OK, True)
    assert retry.reservation == first.reservation
    reordered = reserve_request("cart-1", ("SKU-2", "lyon", 1), ("SKU-1", "paris", 2))
    assert api.reservations.Reserve(reordered, timeout=RPC_TIMEOUT_S).replayed
    assert server.digest() == before
    assert stock_of(world, "SKU-1", "paris") == (5, 2, 3)


def test_retry_after_release_does_not_hold_again(world: World, api: Stubs) -> None:
    """A retry of a since-released reservation replays RELEASED instead of holding again."""
    world.set_stock("SKU-1", "paris", 5)
    request = reserve_request("cart-1", ("SKU-1", "paris", 2))
    api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    release(api, "cart-1")
    retry = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert (retry.outcome, retry.replayed, retry.reservation.status) == (OK, True, RELEASED)
    assert stock_of(world, "SKU-1", "paris") == (5, 0, 5)


def test_same_id_different_content_is_already_exists(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """Same id with any different content is ALREADY_EXISTS naming reservation_id; no change."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 2)))
    before = server.digest()
    variants = (
        reserve_request("cart-1", ("SKU-1", "paris", 3)),
        reserve_request("cart-1", ("SKU-1", "lyon", 2)),
        reserve_request("cart-1", ("SKU-1", "paris", 2), ("SKU-2", "paris", 1)),
        reserve_request("cart-1", ("SKU-1", "paris", 2), ttl_ms=61_000),
        reserve_request("cart-1", ("SKU-1", "paris", 2), kind=common_pb2.RESERVATION_KIND_ORDER),
        reserve_request("cart-1", ("SKU-1", "paris", 2), channel="app"),
        reserve_request("cart-1", ("SKU-1", "paris", 2), segment="vip"),
    )
    for request in variants:
        error = rpc_error(partial(api.reservations.Reserve, request, timeout=RPC_TIMEOUT_S))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS, request
        assert "reservation_id" in (error.details() or "")
    assert server.digest() == before


def test_insufficient_stock_lists_every_short_line_and_holds_nothing(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """INSUFFICIENT_STOCK lists every short line (requested, available) and holds nothing."""
    world.set_stock("SKU-1", "paris", 5)
    world.set_stock("SKU-2", "lyon", 1)
    world.set_stock("SKU-3", "berlin", 2, safety_stock=1)
    before = server.digest()
    request = reserve_request(
        "cart-1",
        ("SKU-1", "paris", 5),  # fits
        ("SKU-2", "lyon", 3),  # 1 available
        ("SKU-3", "berlin", 2),  # 1 available: safety stock is never promised
        ("NEVER-WRITTEN", "soho", 1),  # unknown SKU: 0 available
    )
    response = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert response.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert not response.HasField("reservation")
    assert not response.replayed
    assert [(s.sku, s.node_id, s.requested, s.available) for s in response.shortages] == [
        ("SKU-2", "lyon", 3, 1),
        ("SKU-3", "berlin", 2, 1),
        ("NEVER-WRITTEN", "soho", 1, 0),
    ]
    assert server.digest() == before
    assert stock_of(world, "SKU-1", "paris") == (5, 0, 5)
    error = rpc_error(lambda: get(api, "cart-1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_refused_reservation_can_be_retried_after_restock(world: World, api: Stubs) -> None:
    """A refusal stores nothing: the same id retried after a restock is evaluated afresh."""
    world.set_stock("SKU-1", "paris", 1)
    request = reserve_request("cart-1", ("SKU-1", "paris", 3))
    first = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert first.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    world.set_stock("SKU-1", "paris", 3)
    retry = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert (retry.outcome, retry.replayed, retry.reservation.status) == (OK, False, HELD)


def test_reserve_at_a_disabled_node_is_node_disabled(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """A line at a disabled node is NODE_DISABLED naming it; holds made before it stay."""
    world.set_stock("SKU-1", "paris", 5)
    world.set_stock("SKU-1", "soho", 5)
    api.reservations.Reserve(reserve_request("cart-0", ("SKU-1", "soho", 2)))
    seed_nodes(server, {"soho": "NA/US/NYC/SoHo"}, enabled=False)
    before = server.digest()
    request = reserve_request("cart-1", ("SKU-1", "paris", 1), ("SKU-1", "soho", 1))
    response = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert response.outcome == common_pb2.OUTCOME_NODE_DISABLED
    assert response.disabled_node_id == "soho"
    assert server.digest() == before
    assert get(api, "cart-0").reservation.status == HELD
    assert release(api, "cart-0").outcome == OK
    assert stock_of(world, "SKU-1", "soho") == (5, 0, 5)


@pytest.mark.grpc
def test_open_reservation_limit_is_resource_exhausted(clock: FakeClock) -> None:
    """Past max_open_reservations Reserve is RESOURCE_EXHAUSTED naming the limit until a release."""
    limits = Limits(max_open_reservations=2)
    with running_server(Config(port=0, metrics_port=-1, limits=limits), clock) as server:
        api = server.stubs()
        world = World(server, api)
        world.add_nodes()
        world.set_stock("SKU-1", "paris", 10)
        for reservation_id in ("cart-1", "cart-2"):
            request = reserve_request(reservation_id, ("SKU-1", "paris", 1))
            assert api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S).outcome == OK
        before = server.digest()
        third = reserve_request("cart-3", ("SKU-1", "paris", 1))
        error = rpc_error(lambda: api.reservations.Reserve(third, timeout=RPC_TIMEOUT_S))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_open_reservations" in (error.details() or "")
        assert server.digest() == before
        release(api, "cart-1")
        assert api.reservations.Reserve(third, timeout=RPC_TIMEOUT_S).outcome == OK
        server.check_invariants()
