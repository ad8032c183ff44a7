"""Helpers for the store operation tests: stubs and request builders."""

from __future__ import annotations

from dataclasses import dataclass

from service.harness import RPC_TIMEOUT_S, ServerThread, Stubs

from atpd.core.limits import Limits
from atpd.v1 import (
    common_pb2,
    inventory_pb2,
    store_pb2,
    store_pb2_grpc,
    watch_pb2_grpc,
)

STORE_LIMITS = Limits(
    max_lines_per_reservation=4,
    min_ttl_ms=1_000,
    max_ttl_ms=86_400_000,
    max_offline_sales_per_call=5,
)
OK = common_pb2.OUTCOME_OK


@dataclass(frozen=True)
class StoreApi:
    base: Stubs
    store: store_pb2_grpc.StoreServiceStub
    watch: watch_pb2_grpc.WatchServiceStub

    @classmethod
    def on(cls, server: ServerThread) -> StoreApi:
        channel = server.channel()
        return cls(
            Stubs.on(channel),
            store_pb2_grpc.StoreServiceStub(channel),
            watch_pb2_grpc.WatchServiceStub(channel),
        )

    def set_stock(self, sku: str, node_id: str, on_hand: int, sequence: int = 1) -> None:
        request = inventory_pb2.SetStockRequest(
            sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=sequence
        )
        assert self.base.inventory.SetStock(request, timeout=RPC_TIMEOUT_S).outcome == OK

    def on_hand(self, sku: str, node_id: str) -> int:
        request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
        reply = self.base.inventory.GetStock(request, timeout=RPC_TIMEOUT_S)
        return int(reply.position.on_hand)

    def sale(self, request: store_pb2.RecordSaleRequest) -> store_pb2.RecordSaleResponse:
        reply: store_pb2.RecordSaleResponse = self.store.RecordSale(request, timeout=RPC_TIMEOUT_S)
        return reply


def sale_request(
    receipt_id: str,
    *lines: tuple[str, int],
    node_id: str = "paris",
    force: bool = False,
    sold_at_ms: int = 0,
    channel: str = "",
) -> store_pb2.RecordSaleRequest:
    return store_pb2.RecordSaleRequest(
        receipt_id=receipt_id,
        node_id=node_id,
        lines=[store_pb2.SaleLine(sku=s, quantity=q) for s, q in lines],
        force=force,
        sold_at_ms=sold_at_ms,
        channel=channel,
        terminal_id="till-1",
    )
