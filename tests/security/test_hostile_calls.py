"""The hostile calls of issue 11 refused for reader, checkout and pos tokens; POS terminals kept
inside their node scope; channels; the audit log; per-principal limits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from service.harness import reserve_request

from atpd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    feeds_pb2,
    feeds_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
)

from .support import Credentials, SecureServer, details_of, secure_server, status_of

RPC_TIMEOUT_S = 20.0


def full_load(channel: grpc.Channel) -> Any:
    """The three-message FULL BulkLoad that zeroed a warehouse."""
    messages = [
        feeds_pb2.BulkLoadRequest(
            header=feeds_pb2.BulkLoadHeader(
                load_id="zero-1", mode=feeds_pb2.LOAD_MODE_FULL, node_ids=["WH-EU-01"]
            )
        ),
        feeds_pb2.BulkLoadRequest(
            chunk=feeds_pb2.PositionChunk(skus=["SKU-1"], node_ids=["WH-EU-01"], on_hand=[0])
        ),
        feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=1, chunks=1)),
    ]
    return feeds_pb2_grpc.FeedServiceStub(channel).BulkLoad(iter(messages), timeout=RPC_TIMEOUT_S)


def set_rules(channel: grpc.Channel) -> Any:
    return rules_pb2_grpc.RulesServiceStub(channel).SetRules(
        rules_pb2.SetRulesRequest(text="", source="hostile"), timeout=RPC_TIMEOUT_S
    )


def adjust(node_id: str) -> Callable[[grpc.Channel], Any]:
    def call(channel: grpc.Channel) -> Any:
        return inventory_pb2_grpc.InventoryServiceStub(channel).AdjustStock(
            inventory_pb2.AdjustStockRequest(sku="SKU-1", node_id=node_id, delta=-5),
            timeout=RPC_TIMEOUT_S,
        )

    return call


def snapshot(channel: grpc.Channel) -> Any:
    return admin_pb2_grpc.AdminServiceStub(channel).Snapshot(
        admin_pb2.SnapshotRequest(), timeout=RPC_TIMEOUT_S
    )


def reserve(node_id: str, reservation_id: str = "r-1", channel_name: str = "") -> Any:
    def call(channel: grpc.Channel) -> Any:
        return reservations_pb2_grpc.ReservationServiceStub(channel).Reserve(
            reserve_request(reservation_id, ("SKU-1", node_id, 1), channel=channel_name),
            timeout=RPC_TIMEOUT_S,
        )

    return call


HOSTILE = {
    "full BulkLoad": full_load,
    "SetRules": set_rules,
    "AdjustStock at the warehouse": adjust("WH-EU-01"),
    "Snapshot": snapshot,
}


@pytest.fixture(scope="module")
def shared(module_credentials: Credentials) -> Iterator[SecureServer]:
    with secure_server(module_credentials) as running:
        admin = inventory_pb2_grpc.InventoryServiceStub(running.as_role("admin"))
        for node_id in ("ST-PAR-01", "ST-LON-01", "WH-EU-01"):
            admin.SetStock(
                inventory_pb2.SetStockRequest(
                    sku="SKU-1", node_id=node_id, on_hand=100, source_sequence=1
                ),
                timeout=RPC_TIMEOUT_S,
            )
        yield running


@pytest.mark.parametrize("call", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("principal", ["reader", "checkout", "pos", "till-paris"])
def test_hostile_calls_refused(
    shared: SecureServer, principal: str, call: Callable[[grpc.Channel], Any]
) -> None:
    """The calls that zeroed a warehouse, rewrote the rules, adjusted and snapshotted without
    any credential are refused to reader, checkout and pos tokens; nothing changes."""
    before = shared.digest()
    assert status_of(lambda: call(shared.as_role(principal))) is (grpc.StatusCode.PERMISSION_DENIED)
    assert shared.digest() == before


@pytest.mark.parametrize("call", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_calls_without_credentials_refused(
    shared: SecureServer, call: Callable[[grpc.Channel], Any]
) -> None:
    """Without a credential the same calls answer UNAUTHENTICATED."""
    assert status_of(lambda: call(shared.secure_channel())) is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("principal", ["till-paris", "till-paris-geo"])
def test_pos_outside_scope_refused(shared: SecureServer, principal: str) -> None:
    """A Paris terminal (by node id or by geo prefix) reserves in Paris but not in London,
    and cannot adjust the warehouse; the refusal names the method, role and node."""
    channel = shared.as_role(principal)
    response = reserve("ST-PAR-01", f"paris-{principal}")(channel)
    assert response.outcome == common_pb2.OUTCOME_OK
    message = details_of(lambda: reserve("ST-LON-01", f"london-{principal}")(channel))
    assert "ReservationService/Reserve" in message
    assert "'pos'" in message and "'ST-LON-01'" in message
    assert status_of(lambda: adjust("WH-EU-01")(channel)) is grpc.StatusCode.PERMISSION_DENIED
    assert status_of(lambda: adjust("ST-PAR-01")(channel)) is grpc.StatusCode.OK


def test_pos_cannot_touch_another_stores_reservation(shared: SecureServer) -> None:
    """A reservation at London cannot be confirmed, released or read by the Paris terminal."""
    reserve("ST-LON-01", "london-cart")(shared.as_role("checkout"))
    stub = reservations_pb2_grpc.ReservationServiceStub(shared.as_role("till-paris"))
    calls: list[Callable[[], Any]] = [
        lambda: stub.Release(reservations_pb2.ReleaseRequest(reservation_id="london-cart")),
        lambda: stub.Confirm(reservations_pb2.ConfirmRequest(reservation_id="london-cart")),
        lambda: stub.GetReservation(
            reservations_pb2.GetReservationRequest(reservation_id="london-cart")
        ),
    ]
    for call in calls:
        assert status_of(call) is grpc.StatusCode.PERMISSION_DENIED


def test_scoped_bulk_load_refused_at_the_row(credentials: Credentials) -> None:
    """A loader token scoped to Paris cannot load rows at the warehouse: the stream ends at the
    first message naming it and nothing is applied."""
    credentials.add_token("paris-loader", "loader", nodes=["ST-PAR-01"])
    with secure_server(credentials) as server:
        before = server.digest()
        message = details_of(lambda: full_load(server.as_role("paris-loader")))
        assert "'WH-EU-01'" in message and "FeedService/BulkLoad" in message
        assert server.digest() == before


def test_checkout_channels(credentials: Credentials) -> None:
    """A checkout token for the web channel reserves for web and is refused for another."""
    with secure_server(credentials) as server:
        inventory_pb2_grpc.InventoryServiceStub(server.as_role("admin")).SetStock(
            inventory_pb2.SetStockRequest(
                sku="SKU-1", node_id="ST-PAR-01", on_hand=10, source_sequence=1
            ),
            timeout=RPC_TIMEOUT_S,
        )
        channel = server.as_role("web-checkout")
        assert reserve("ST-PAR-01", "w-1", "web")(channel).outcome == common_pb2.OUTCOME_OK
        message = details_of(lambda: reserve("ST-PAR-01", "w-2", "vip")(channel))
        assert "'vip'" in message and "channel" in message


def test_audit_log_records_actions_and_refusals(credentials: Credentials) -> None:
    """Admin and loader actions are audited with principal, peer, method, outcome and a
    summary; a call refused for permission is audited too."""
    with secure_server(credentials) as server:
        inventory_pb2_grpc.InventoryServiceStub(server.as_role("loader")).SetStock(
            inventory_pb2.SetStockRequest(
                sku="SKU-1", node_id="WH-EU-01", on_hand=7, source_sequence=1
            ),
            timeout=RPC_TIMEOUT_S,
        )
        status_of(lambda: set_rules(server.as_role("reader")))
        status_of(lambda: full_load(server.as_role("admin")))
    lines = [
        json.loads(line)
        for line in (credentials.directory / "audit.log").read_text().split("\n")
        if line
    ]
    by_method = {(line["method"], line["principal"]): line for line in lines}
    stock = by_method[("InventoryService/SetStock", "loader")]
    assert stock["outcome"] == "OK" and stock["summary"]["on_hand"] == 7
    assert stock["peer"].startswith("ipv") and stock["time"].endswith("Z")
    refused = by_method[("RulesService/SetRules", "reader")]
    assert refused["outcome"] == "PERMISSION_DENIED" and refused["role"] == "reader"
    load = by_method[("FeedService/BulkLoad", "admin")]
    assert load["outcome"] == "OK" and load["summary"]["rows"] == 1


def test_inflight_per_principal_limit(credentials: Credentials) -> None:
    """Past max_inflight_per_principal, a principal's further calls answer RESOURCE_EXHAUSTED
    naming the limit; another principal is not affected."""
    with secure_server(credentials, max_inflight_per_principal=1) as server:
        access = server.app.access
        assert access is not None
        # Hold the one slot as a call in flight would (the counter the gate keeps).
        server.call(lambda: access.inflight.__setitem__("reader", 1))
        message = details_of(lambda: snapshot_or_read(server, "reader"))
        assert "max_inflight_per_principal" in message
        assert status_of(lambda: snapshot_or_read(server, "checkout")) is grpc.StatusCode.OK


def snapshot_or_read(server: SecureServer, principal: str) -> Any:
    return inventory_pb2_grpc.InventoryServiceStub(server.as_role(principal)).ListNodes(
        inventory_pb2.ListNodesRequest(), timeout=RPC_TIMEOUT_S
    )


def test_watch_subscribers_per_principal_limit(credentials: Credentials) -> None:
    """A principal holding max_watch_subscribers_per_principal streams is refused another."""
    from atpd.v1 import watch_pb2, watch_pb2_grpc

    with secure_server(credentials, max_watch_subscribers_per_principal=1) as server:
        stub = watch_pb2_grpc.WatchServiceStub(server.as_role("reader"))
        first = stub.Watch(watch_pb2.WatchRequest(), timeout=RPC_TIMEOUT_S)
        next(first)  # subscribed
        try:
            second = stub.Watch(watch_pb2.WatchRequest(), timeout=RPC_TIMEOUT_S)
            message = details_of(lambda: next(second))
            assert "max_watch_subscribers_per_principal" in message
        finally:
            first.cancel()
