"""The stock table grows in the background while a real server keeps answering correctly."""

from __future__ import annotations

import logging
import threading

import pytest

from atpd.config import Config
from atpd.core.limits import Limits
from atpd.v1 import common_pb2, inventory_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    availability_request,
    node,
    reserve_request,
    running_server,
)

OK = common_pb2.OUTCOME_OK
SKUS = [f"SKU-{k:03d}" for k in range(40)]
NEW_NODES = 70  # from a capacity of 4 nodes: crosses 4, 8, 16, 32 and 64
ON_HAND = 1_000


def test_nodes_and_skus_past_capacity_while_reservations_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node upserts and new SKUs cross the table's capacities (grown in the background) while
    another client reserves, releases and reads: every answer is exact, nothing is lost."""
    caplog.set_level(logging.INFO, logger="atpd.service.table_growth")
    limits = Limits(initial_node_capacity=4, initial_sku_capacity=8)
    with running_server(Config(port=0, metrics_port=-1, limits=limits)) as server:
        stubs = server.stubs()
        stubs.inventory.UpsertNode(node("hub", "EU/FR/Hub"), timeout=RPC_TIMEOUT_S)
        for sku in SKUS[:4]:
            request = inventory_pb2.SetStockRequest(
                sku=sku, node_id="hub", on_hand=ON_HAND, source_sequence=1
            )
            stubs.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)
        failures: list[str] = []
        done = threading.Event()

        def shopper() -> None:
            """Reserve / read / release on the hub: ATP must always be exactly what it holds."""
            client = server.stubs()
            count = 0
            while not done.is_set() and not failures:
                sku = SKUS[count % 4]
                reservation_id = f"cart-{count}"
                answer = client.reservations.Reserve(
                    reserve_request(reservation_id, (sku, "hub", 3)), timeout=RPC_TIMEOUT_S
                )
                read = client.availability.GetAvailability(
                    availability_request(sku, node_ids=("hub",)), timeout=RPC_TIMEOUT_S
                )
                if answer.outcome != OK or read.items[0].total_atp != ON_HAND - 3:
                    failures.append(f"{reservation_id}: {answer.outcome} {read.items[0]}")
                client.reservations.Release(
                    reservations_pb2.ReleaseRequest(reservation_id=reservation_id),
                    timeout=RPC_TIMEOUT_S,
                )
                count += 1

        thread = threading.Thread(target=shopper)
        thread.start()
        try:
            for index in range(NEW_NODES):
                node_id = f"store-{index:03d}"
                stubs.inventory.UpsertNode(node(node_id, f"EU/C{index % 5}"), timeout=RPC_TIMEOUT_S)
                sku = SKUS[index % len(SKUS)]  # new SKUs too: the SKU axis crosses 8, 16, 32
                request = inventory_pb2.SetStockRequest(
                    sku=sku, node_id=node_id, on_hand=index + 1, source_sequence=1
                )
                assert stubs.inventory.SetStock(request, timeout=RPC_TIMEOUT_S).outcome == OK
        finally:
            done.set()
            thread.join(RPC_TIMEOUT_S)
        assert not failures, failures[:3]
        for index in range(NEW_NODES):
            query = inventory_pb2.GetStockRequest(
                sku=SKUS[index % len(SKUS)], node_id=f"store-{index:03d}"
            )
            position = stubs.inventory.GetStock(query, timeout=RPC_TIMEOUT_S).position
            assert (position.on_hand, position.reserved) == (index + 1, 0)
        server.check_invariants()

        def table() -> tuple[int, int]:
            stock = server.app.engine.state.stock
            return stock.sku_capacity, stock.node_capacity

        sku_capacity, node_capacity = server.call(table)
        assert sku_capacity >= len(SKUS) and node_capacity >= NEW_NODES + 1
    grown = [r.getMessage() for r in caplog.records if "stock table grown" in r.getMessage()]
    assert grown, "no background resize happened"
