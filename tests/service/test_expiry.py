"""Expiry over gRPC: exact expiry on an injected clock, and the timer on the real clock."""

from __future__ import annotations

import time

import grpc

from atpd.v1 import common_pb2, inventory_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    FakeClock,
    ServerThread,
    Stubs,
    World,
    reserve_request,
    rpc_error,
)

OK = common_pb2.OUTCOME_OK
HELD = common_pb2.RESERVATION_STATUS_HELD
CONFIRMED = common_pb2.RESERVATION_STATUS_CONFIRMED
EXPIRED = common_pb2.RESERVATION_STATUS_EXPIRED
TTL_MS = 60_000
# Bounded polling for the real-clock timer: at most this many polls, this far apart.
POLLS = 400
POLL_INTERVAL_S = 0.025


def status_of(api: Stubs, reservation_id: str) -> reservations_pb2.Reservation:
    request = reservations_pb2.GetReservationRequest(reservation_id=reservation_id)
    response: reservations_pb2.Reservation = api.reservations.GetReservation(
        request, timeout=RPC_TIMEOUT_S
    ).reservation
    return response


def nudge(api: Stubs) -> None:
    """Any write: the engine expires every due hold before applying it."""
    request = inventory_pb2.AdjustStockRequest(sku="OTHER", node_id="lyon", delta=1)
    assert api.inventory.AdjustStock(request, timeout=RPC_TIMEOUT_S).outcome == OK


def test_hold_expires_exactly_at_expires_at_ms(
    server: ServerThread, world: World, api: Stubs, clock: FakeClock
) -> None:
    """On the injected clock a hold is HELD 1 ms before expires_at_ms and EXPIRED at it."""
    world.set_stock("SKU-1", "paris", 5)
    held = api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 5), ttl_ms=TTL_MS))
    expires_at_ms = held.reservation.expires_at_ms
    assert expires_at_ms == clock() + TTL_MS
    assert world.total_atp("SKU-1") == 0
    clock.advance(TTL_MS - 1)
    nudge(api)
    assert status_of(api, "cart-1").status == HELD
    assert world.total_atp("SKU-1") == 0
    clock.advance(1)
    nudge(api)
    reservation = status_of(api, "cart-1")
    assert (reservation.status, reservation.updated_at_ms) == (EXPIRED, expires_at_ms)
    assert world.total_atp("SKU-1") == 5
    assert world.position("SKU-1", "paris").reserved == 0
    server.check_invariants()


def test_expiry_is_stamped_at_expires_at_even_when_noticed_late(
    world: World, api: Stubs, clock: FakeClock
) -> None:
    """Holds noticed late expire together, each stamped updated_at_ms = expires_at_ms."""
    world.set_stock("SKU-1", "paris", 5)
    first = api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 2)))
    clock.advance(5_000)
    second = api.reservations.Reserve(reserve_request("cart-2", ("SKU-1", "paris", 3)))
    clock.advance(3_600_000)
    nudge(api)
    for response in (first, second):
        reservation = status_of(api, response.reservation.reservation_id)
        assert reservation.status == EXPIRED
        assert reservation.updated_at_ms == response.reservation.expires_at_ms
    assert world.total_atp("SKU-1") == 5


def test_lifecycle_commands_after_expiry(
    server: ServerThread, world: World, api: Stubs, clock: FakeClock
) -> None:
    """After expiry Confirm/Fulfil are EXPIRED, Release is OK, and a retry replays, not re-holds."""
    world.set_stock("SKU-1", "paris", 5)
    request = reserve_request("cart-1", ("SKU-1", "paris", 2), ttl_ms=TTL_MS)
    api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    clock.advance(TTL_MS)
    rid = "cart-1"
    confirm = api.reservations.Confirm(reservations_pb2.ConfirmRequest(reservation_id=rid))
    assert (confirm.outcome, confirm.reservation.status) == (common_pb2.OUTCOME_EXPIRED, EXPIRED)
    fulfil = api.reservations.Fulfil(reservations_pb2.FulfilRequest(reservation_id=rid))
    assert fulfil.outcome == common_pb2.OUTCOME_EXPIRED
    release = api.reservations.Release(reservations_pb2.ReleaseRequest(reservation_id=rid))
    assert (release.outcome, release.reservation.status) == (OK, EXPIRED)
    retry = api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    assert (retry.outcome, retry.replayed, retry.reservation.status) == (OK, True, EXPIRED)
    assert world.position("SKU-1", "paris").atp == 5
    server.check_invariants()


def test_rejected_command_still_expires_due_holds(
    server: ServerThread, world: World, api: Stubs, clock: FakeClock
) -> None:
    """A command refused as NOT_FOUND still moves the clock: holds due by then expire."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 5), ttl_ms=TTL_MS))
    clock.advance(TTL_MS)
    unknown = reservations_pb2.ConfirmRequest(reservation_id="no-such-cart")
    error = rpc_error(lambda: api.reservations.Confirm(unknown, timeout=RPC_TIMEOUT_S))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert status_of(api, "cart-1").status == EXPIRED
    assert world.total_atp("SKU-1") == 5
    server.check_invariants()


def test_reads_after_expiry_see_it_without_a_write(
    world: World, api: Stubs, clock: FakeClock
) -> None:
    """Reads after expires_at_ms show the hold EXPIRED and its stock back, with no write between."""
    world.set_stock("SKU-1", "paris", 5)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 5), ttl_ms=TTL_MS))
    clock.advance(TTL_MS)
    assert status_of(api, "cart-1").status == EXPIRED
    assert world.total_atp("SKU-1") == 5


def test_timer_expires_holds_on_the_real_clock(live_server: ServerThread) -> None:
    """With no traffic the real-clock timer expires every due hold; a confirmed one stays."""
    api = live_server.stubs()
    world = World(live_server, api)
    world.add_nodes()
    world.set_stock("SKU-1", "paris", 10)
    kept = api.reservations.Reserve(reserve_request("order-1", ("SKU-1", "paris", 1), ttl_ms=50))
    confirmed = api.reservations.Confirm(reservations_pb2.ConfirmRequest(reservation_id="order-1"))
    assert (kept.outcome, confirmed.outcome) == (OK, OK)
    ids = {"cart-a": 120, "cart-b": 50, "cart-c": 80}
    for reservation_id, ttl_ms in ids.items():
        request = reserve_request(reservation_id, ("SKU-1", "paris", 2), ttl_ms=ttl_ms)
        assert api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S).outcome == OK
    for _ in range(POLLS):
        statuses = {rid: status_of(api, rid).status for rid in ids}
        if set(statuses.values()) == {EXPIRED}:
            break
        time.sleep(POLL_INTERVAL_S)
    assert statuses == dict.fromkeys(ids, EXPIRED)
    for reservation_id in ids:
        reservation = status_of(api, reservation_id)
        assert reservation.updated_at_ms == reservation.expires_at_ms
    assert status_of(api, "order-1").status == CONFIRMED
    position = world.position("SKU-1", "paris")
    assert (position.reserved, position.atp) == (1, 9)
    live_server.check_invariants()
