"""Reservation ownership over TLS with real tokens: a reservation records who made it, and
another principal may confirm, release or fulfil it only as admin or with the same role and a
scope that covers the maker's (issue 11: "a Release freed another caller's cart")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from service.harness import TEST_LIMITS, reserve_request, running_server, seed_nodes

from atpd.config import Config
from atpd.v1 import (
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
)

from .support import Credentials, SecureServer, details_of, secure_server, status_of

RPC_TIMEOUT_S = 20.0
HELD = common_pb2.RESERVATION_STATUS_HELD
RELEASED = common_pb2.RESERVATION_STATUS_RELEASED
_numbers = iter(range(1_000_000))


def stub(server: SecureServer, principal: str) -> reservations_pb2_grpc.ReservationServiceStub:
    return reservations_pb2_grpc.ReservationServiceStub(server.as_role(principal))


def reserve(
    server: SecureServer, principal: str, node_id: str = "ST-PAR-01", channel: str = ""
) -> str:
    """A fresh one-line cart made by `principal`; its id."""
    reservation_id = f"cart-{next(_numbers)}"
    response = stub(server, principal).Reserve(
        reserve_request(reservation_id, ("SKU-1", node_id, 1), channel=channel),
        timeout=RPC_TIMEOUT_S,
    )
    assert response.outcome == common_pb2.OUTCOME_OK
    return reservation_id


def lifecycle_calls(
    server: SecureServer, principal: str, reservation_id: str
) -> dict[str, Callable[[], Any]]:
    calls = stub(server, principal)
    return {
        "Confirm": lambda: calls.Confirm(
            reservations_pb2.ConfirmRequest(reservation_id=reservation_id), timeout=RPC_TIMEOUT_S
        ),
        "Fulfil": lambda: calls.Fulfil(
            reservations_pb2.FulfilRequest(reservation_id=reservation_id), timeout=RPC_TIMEOUT_S
        ),
        "Release": lambda: calls.Release(
            reservations_pb2.ReleaseRequest(reservation_id=reservation_id), timeout=RPC_TIMEOUT_S
        ),
    }


def reservation(server: SecureServer, reservation_id: str) -> reservations_pb2.Reservation:
    answer = stub(server, "admin").GetReservation(
        reservations_pb2.GetReservationRequest(reservation_id=reservation_id),
        timeout=RPC_TIMEOUT_S,
    )
    found: reservations_pb2.Reservation = answer.reservation
    return found


@pytest.fixture(scope="module")
def shared(module_credentials: Credentials) -> Iterator[SecureServer]:
    module_credentials.add_token("till-london", "pos", nodes=["ST-LON-01"])
    module_credentials.add_token("web-app-checkout", "checkout", channels=["web", "app"])
    module_credentials.add_token("checkout-2", "checkout")
    with secure_server(module_credentials) as running:
        admin = inventory_pb2_grpc.InventoryServiceStub(running.as_role("admin"))
        for node_id in ("ST-PAR-01", "ST-LON-01", "WH-EU-01"):
            admin.SetStock(
                inventory_pb2.SetStockRequest(
                    sku="SKU-1", node_id=node_id, on_hand=10_000, source_sequence=1
                ),
                timeout=RPC_TIMEOUT_S,
            )
        yield running


def test_another_checkout_principal_cannot_release_a_cart(shared: SecureServer) -> None:
    """The hostile case: a checkout token for the web channel cannot confirm, fulfil or release
    a cart the network-wide checkout service made; the hold stays, and the refusal names the
    method, the role and the reservation."""
    cart = reserve(shared, "checkout", channel="web")
    before = shared.digest()
    for method, call in lifecycle_calls(shared, "web-checkout", cart).items():
        message = details_of(call)
        assert status_of(call) is grpc.StatusCode.PERMISSION_DENIED
        assert f"ReservationService/{method}" in message, message
        assert "role 'checkout'" in message and f"'{cart}'" in message, message
    assert shared.digest() == before
    assert reservation(shared, cart).status == HELD


def test_a_till_cannot_release_an_online_cart_at_its_own_store(shared: SecureServer) -> None:
    """A Paris terminal (pos) may act at ST-PAR-01, but not on a checkout's cart held there."""
    cart = reserve(shared, "checkout")
    for call in lifecycle_calls(shared, "till-paris", cart).values():
        assert status_of(call) is grpc.StatusCode.PERMISSION_DENIED
    assert reservation(shared, cart).status == HELD


def test_a_till_cannot_release_another_stores_reservation(shared: SecureServer) -> None:
    """A London terminal cannot touch a Paris terminal's reservation (nor the reverse)."""
    paris = reserve(shared, "till-paris")
    london = reserve(shared, "till-london", node_id="ST-LON-01")
    for call in lifecycle_calls(shared, "till-london", paris).values():
        assert status_of(call) is grpc.StatusCode.PERMISSION_DENIED
    for call in lifecycle_calls(shared, "till-paris", london).values():
        assert status_of(call) is grpc.StatusCode.PERMISSION_DENIED
    assert reservation(shared, paris).status == HELD
    assert reservation(shared, london).status == HELD


def test_same_role_with_a_covering_scope_may_act(shared: SecureServer) -> None:
    """Another till of the same store, and a token for the whole region, may finish a till's
    reservation; a checkout covering the maker's channels may release its cart."""
    confirmed = reserve(shared, "till-paris")
    assert status_of(lifecycle_calls(shared, "pos", confirmed)["Confirm"]) is grpc.StatusCode.OK
    released = reserve(shared, "till-paris")
    assert (
        status_of(lifecycle_calls(shared, "till-paris-geo", released)["Release"])
        is grpc.StatusCode.OK
    )
    assert reservation(shared, released).status == RELEASED
    cart = reserve(shared, "web-checkout", channel="web")
    for principal in ("web-app-checkout", "checkout-2"):
        assert status_of(lifecycle_calls(shared, principal, cart)["Confirm"]) is grpc.StatusCode.OK


def test_a_narrower_scope_does_not_cover_a_wider_one(shared: SecureServer) -> None:
    """A reservation made by the region's token is refused to a single store's till, and one
    made for web+app to a web-only checkout, even where the reservation's lines are in scope."""
    regional = reserve(shared, "till-paris-geo")
    assert (
        status_of(lifecycle_calls(shared, "till-paris", regional)["Release"])
        is grpc.StatusCode.PERMISSION_DENIED
    )
    cart = reserve(shared, "web-app-checkout", channel="web")
    assert (
        status_of(lifecycle_calls(shared, "web-checkout", cart)["Release"])
        is grpc.StatusCode.PERMISSION_DENIED
    )


def test_admin_may_act_on_any_reservation(shared: SecureServer) -> None:
    """An admin releases a checkout's cart and fulfils a till's sale."""
    cart = reserve(shared, "checkout")
    assert status_of(lifecycle_calls(shared, "admin", cart)["Release"]) is grpc.StatusCode.OK
    sale = reserve(shared, "till-paris")
    assert status_of(lifecycle_calls(shared, "admin", sale)["Fulfil"]) is grpc.StatusCode.OK


def test_the_maker_acts_on_its_own(shared: SecureServer) -> None:
    """The principal that made a reservation confirms, fulfils and releases it as before."""
    for method in ("Confirm", "Fulfil", "Release"):
        own = reserve(shared, "web-checkout", channel="web")
        assert status_of(lifecycle_calls(shared, "web-checkout", own)[method]) is grpc.StatusCode.OK


def test_get_reservation_shows_who_made_it(shared: SecureServer) -> None:
    """GetReservation answers the maker's name, role, scope and channels."""
    cart = reserve(shared, "web-checkout", channel="web")
    maker = reservation(shared, cart).principal
    assert (maker.name, maker.role, list(maker.channels)) == ("web-checkout", "checkout", ["web"])
    assert list(maker.node_ids) == [] and list(maker.geo_prefixes) == []
    sale = reserve(shared, "till-paris-geo")
    maker = reservation(shared, sale).principal
    assert (maker.name, maker.role, list(maker.geo_prefixes)) == (
        "till-paris-geo",
        "pos",
        ["EU/FR"],
    )


def test_reserve_retry_by_another_principal_is_already_exists(shared: SecureServer) -> None:
    """The same id and content from another principal is ALREADY_EXISTS naming the id, never
    the other's stored reservation; the maker's own retry is still answered as replayed."""
    request = reserve_request("shared-id", ("SKU-1", "ST-PAR-01", 1), channel="web")
    first = stub(shared, "checkout").Reserve(request, timeout=RPC_TIMEOUT_S)
    assert first.outcome == common_pb2.OUTCOME_OK and not first.replayed
    other = stub(shared, "web-checkout")
    call = lambda: other.Reserve(request, timeout=RPC_TIMEOUT_S)  # noqa: E731
    assert status_of(call) is grpc.StatusCode.ALREADY_EXISTS
    message = details_of(call)
    assert "'shared-id'" in message and "another principal" in message, message
    again = stub(shared, "checkout").Reserve(request, timeout=RPC_TIMEOUT_S)
    assert again.replayed and again.reservation.principal.name == "checkout"


def test_ownership_refusal_is_audited(credentials: Credentials) -> None:
    """A Release refused for ownership is in the audit log with the caller and the reason."""
    with secure_server(credentials) as server:
        inventory_pb2_grpc.InventoryServiceStub(server.as_role("admin")).SetStock(
            inventory_pb2.SetStockRequest(
                sku="SKU-1", node_id="ST-PAR-01", on_hand=5, source_sequence=1
            ),
            timeout=RPC_TIMEOUT_S,
        )
        cart = reserve(server, "checkout", channel="web")
        status_of(lifecycle_calls(server, "web-checkout", cart)["Release"])
    lines = [
        json.loads(line)
        for line in (credentials.directory / "audit.log").read_text().split("\n")
        if line
    ]
    refused = [line for line in lines if line["method"] == "ReservationService/Release"]
    assert len(refused) == 1, lines
    assert refused[0]["outcome"] == "PERMISSION_DENIED"
    assert refused[0]["principal"] == "web-checkout" and cart in refused[0]["detail"]


def test_with_authentication_off_reservations_have_no_principal() -> None:
    """The loopback demo (no tokens): anyone confirms and releases, and no principal shows."""
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config) as server:
        seed_nodes(server, {"ST-PAR-01": "EU/FR/Paris"})
        inventory_pb2_grpc.InventoryServiceStub(server.channel()).SetStock(
            inventory_pb2.SetStockRequest(
                sku="SKU-1", node_id="ST-PAR-01", on_hand=5, source_sequence=1
            ),
            timeout=RPC_TIMEOUT_S,
        )
        first = reservations_pb2_grpc.ReservationServiceStub(server.channel())
        second = reservations_pb2_grpc.ReservationServiceStub(server.channel())
        made = first.Reserve(
            reserve_request("open-1", ("SKU-1", "ST-PAR-01", 1)), timeout=RPC_TIMEOUT_S
        )
        assert not made.reservation.HasField("principal")
        released = second.Release(
            reservations_pb2.ReleaseRequest(reservation_id="open-1"), timeout=RPC_TIMEOUT_S
        )
        assert released.reservation.status == RELEASED
