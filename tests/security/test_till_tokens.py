"""Till terminals over TLS with real tokens: a pos token's default channel fills in calls that
name none (Reserve and StoreService), its node scope bounds the store it may sell at, and a
tokens file whose default channel is outside the token's channels is refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from service.harness import FAKE_EPOCH_MS, reserve_request

from atpd.service.tokens import TokenFileError, create_token
from atpd.v1 import (
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
)

from .support import Credentials, SecureServer, secure_server, status_of

RPC_TIMEOUT_S = 20.0


def sale(receipt_id: str, node_id: str = "ST-PAR-01") -> store_pb2.RecordSaleRequest:
    return store_pb2.RecordSaleRequest(
        receipt_id=receipt_id,
        node_id=node_id,
        lines=[store_pb2.SaleLine(sku="SKU-1", quantity=2)],
        force=True,
    )


def test_default_channel_fills_in_and_scope_bounds_the_store(credentials: Credentials) -> None:
    """A till token limited to channel `store` with that default may Reserve and sell naming no
    channel (the reservation records `store`), may not sell at another store, and a reader may
    not sell at all."""
    credentials.add_token(
        "till-store", "pos", nodes=["ST-PAR-01"], channels=["store"], default_channel="store"
    )
    server: SecureServer
    with secure_server(credentials) as server:
        till = server.as_role("till-store")
        inventory_pb2_grpc.InventoryServiceStub(server.as_role("admin")).AdjustStock(
            inventory_pb2.AdjustStockRequest(sku="SKU-1", node_id="ST-PAR-01", delta=1),
            timeout=RPC_TIMEOUT_S,
        )
        reply = reservations_pb2_grpc.ReservationServiceStub(till).Reserve(
            reserve_request("cart-1", ("SKU-1", "ST-PAR-01", 1)), timeout=RPC_TIMEOUT_S
        )
        assert reply.outcome == common_pb2.OUTCOME_OK
        assert reply.reservation.channel == "store"
        store = store_pb2_grpc.StoreServiceStub(till)
        recorded = store.RecordSale(sale("r-1"), timeout=RPC_TIMEOUT_S)
        assert recorded.outcome == common_pb2.OUTCOME_OK and len(recorded.discrepancies) == 1
        assert (
            status_of(lambda: store.RecordSale(sale("r-2", "ST-LON-01"), timeout=RPC_TIMEOUT_S))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        reader = store_pb2_grpc.StoreServiceStub(server.as_role("reader"))
        assert (
            status_of(lambda: reader.RecordSale(sale("r-3"), timeout=RPC_TIMEOUT_S))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        listed = reader.ListDiscrepancies(
            store_pb2.ListDiscrepanciesRequest(), timeout=RPC_TIMEOUT_S
        )
        assert [d.receipt_id for d in listed.discrepancies] == ["r-1"]


def test_default_channel_outside_the_tokens_channels_is_refused(tmp_path: Path) -> None:
    """create_token refuses a default channel the token may not use, or one badly spelled."""
    path = tmp_path / "tokens"
    with pytest.raises(TokenFileError, match="default_channel 'web' is not one of its channels"):
        create_token(
            path, "t", "pos", FAKE_EPOCH_MS, nodes=["A"], channels=["store"], default_channel="web"
        )
    with pytest.raises(TokenFileError, match="default_channel"):
        create_token(path, "u", "pos", FAKE_EPOCH_MS, nodes=["A"], default_channel="Web Shop")
