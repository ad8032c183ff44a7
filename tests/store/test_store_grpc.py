"""StoreService over a real channel: forced sales and their discrepancies (list and Watch),
offline queues, returns, exchanges, inspection, and bad input named by field."""

from __future__ import annotations

import grpc
import pytest
from service.harness import FAKE_EPOCH_MS, RPC_TIMEOUT_S, FakeClock, ServerThread
from watch.support import Api, Watcher, watch_request

from atpd.v1 import common_pb2, inventory_pb2, store_pb2, supply_pb2, watch_pb2

from .support import OK, StoreApi, sale_request

DISCREPANCY = watch_pb2.WATCH_EVENT_KIND_DISCREPANCY


def supply_row(supply_id: str, node_id: str) -> supply_pb2.AddSupplyRequest:
    return supply_pb2.AddSupplyRequest(
        supply_id=supply_id,
        sku="bag",
        node_id=node_id,
        quantity=3,
        eta_ms=FAKE_EPOCH_MS + 86_400_000,
        kind=supply_pb2.SUPPLY_KIND_PURCHASE_ORDER,
    )


def test_forced_sale_when_short_is_recorded_listed_and_watched(
    server: ServerThread, store: StoreApi, clock: FakeClock
) -> None:
    """2 sold where the system counted 1: on_hand 0, a discrepancy in the answer, in
    ListDiscrepancies and as a DISCREPANCY event on Watch (with the till's and the apply time)."""
    store.set_stock("bag", "paris", 1)
    watcher = Watcher(Api.on(server), watch_request(skus=["bag"]))
    watcher.sync()
    clock.advance(1_000)
    reply = store.sale(sale_request("r-1", ("bag", 2), force=True, sold_at_ms=FAKE_EPOCH_MS))
    assert reply.outcome == OK and not reply.replayed
    [found] = reply.discrepancies
    assert (found.expected, found.sold, found.missing) == (1, 2, 1)
    assert (found.sold_at_ms, found.recorded_at_ms) == (FAKE_EPOCH_MS, FAKE_EPOCH_MS + 1_000)
    assert store.on_hand("bag", "paris") == 0
    events = [watcher.next(), watcher.next()]
    watcher.cancel()
    kinds = {event.kind for event in events}
    assert DISCREPANCY in kinds
    [event] = [e for e in events if e.kind == DISCREPANCY]
    assert event.discrepancy.receipt_id == "r-1" and event.node_id == "paris"
    listed = store.store.ListDiscrepancies(
        store_pb2.ListDiscrepanciesRequest(node_id="paris"), timeout=RPC_TIMEOUT_S
    )
    assert [d.receipt_id for d in listed.discrepancies] == ["r-1"]
    assert store.sale(
        sale_request("r-1", ("bag", 2), force=True, sold_at_ms=FAKE_EPOCH_MS)
    ).replayed
    server.check_invariants()


def test_unforced_short_sale_is_refused(store: StoreApi) -> None:
    """Without force a short sale answers INSUFFICIENT_STOCK with the shortage; nothing moves."""
    store.set_stock("bag", "paris", 1)
    reply = store.sale(sale_request("r-1", ("bag", 2)))
    assert reply.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert reply.shortages[0].available == 1
    assert store.on_hand("bag", "paris") == 1


def test_list_discrepancies_pages_by_sequence(store: StoreApi) -> None:
    """limit and after_sequence page through the records, filtered by node and SKU."""
    for i in range(5):
        store.sale(sale_request(f"r-{i}", ("bag", 1), force=True))
    store.sale(sale_request("r-lyon", ("bag", 1), node_id="lyon", force=True))
    first = store.store.ListDiscrepancies(
        store_pb2.ListDiscrepanciesRequest(node_id="paris", limit=2), timeout=RPC_TIMEOUT_S
    )
    assert [d.sequence for d in first.discrepancies] == [1, 2]
    assert first.next_after_sequence == 2
    rest = store.store.ListDiscrepancies(
        store_pb2.ListDiscrepanciesRequest(node_id="paris", after_sequence=2),
        timeout=RPC_TIMEOUT_S,
    )
    assert [d.sequence for d in rest.discrepancies] == [3, 4, 5]
    assert rest.next_after_sequence == 0


def test_offline_queue_twice_is_applied_once(store: StoreApi) -> None:
    """A queue sent again (after a lost answer) reports duplicates and changes nothing more."""
    store.set_stock("bag", "paris", 3)
    sales = [
        sale_request(f"q-{i}", ("bag", 2), sold_at_ms=FAKE_EPOCH_MS - 60_000 + i) for i in range(3)
    ]
    request = store_pb2.RecordOfflineSalesRequest(sales=sales)
    first = store.store.RecordOfflineSales(request, timeout=RPC_TIMEOUT_S)
    assert [r.duplicate for r in first.results] == [False] * 3
    assert [len(r.discrepancies) for r in first.results] == [0, 1, 1]
    again = store.store.RecordOfflineSales(request, timeout=RPC_TIMEOUT_S)
    assert [r.duplicate for r in again.results] == [True] * 3
    assert store.on_hand("bag", "paris") == 0


def test_return_inspection_and_exchange(store: StoreApi) -> None:
    """A return to inspect is not sellable until released; an exchange whose sale is short is
    refused whole (the return leg not applied)."""
    returned = store_pb2.RecordReturnRequest(
        return_id="ret-1",
        node_id="paris",
        lines=[
            store_pb2.ReturnLine(sku="bag", quantity=1),
            store_pb2.ReturnLine(sku="scarf", quantity=2, inspect=True),
        ],
    )
    assert store.store.RecordReturn(returned, timeout=RPC_TIMEOUT_S).outcome == OK
    assert store.on_hand("bag", "paris") == 1
    listed = store.store.ListInspection(store_pb2.ListInspectionRequest(), timeout=RPC_TIMEOUT_S)
    assert [(e.sku, e.node_id, e.quantity) for e in listed.entries] == [("scarf", "paris", 2)]
    release = store_pb2.ReleaseInspectionRequest(
        release_id="rel-1",
        sku="scarf",
        node_id="paris",
        quantity=2,
        outcome=store_pb2.INSPECTION_OUTCOME_RESTOCK,
    )
    assert store.store.ReleaseInspection(release, timeout=RPC_TIMEOUT_S).outcome == OK
    assert store.on_hand("scarf", "paris") == 2
    swap = store_pb2.ExchangeRequest(
        exchange_id="x-1",
        node_id="paris",
        returned=[store_pb2.ReturnLine(sku="bag", quantity=1)],
        sold=[store_pb2.SaleLine(sku="belt", quantity=1)],
    )
    refused = store.store.Exchange(swap, timeout=RPC_TIMEOUT_S)
    assert refused.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert store.on_hand("bag", "paris") == 1
    swap.force = True
    assert store.store.Exchange(swap, timeout=RPC_TIMEOUT_S).outcome == OK
    assert store.on_hand("bag", "paris") == 2


@pytest.mark.parametrize(
    ("call", "request_", "code", "field"),
    [
        ("RecordSale", sale_request("", ("bag", 1)), "INVALID_ARGUMENT", "receipt_id"),
        ("RecordSale", sale_request("r", ("bag", 0)), "INVALID_ARGUMENT", "lines[0].quantity"),
        ("RecordSale", sale_request("r", ("bag", 1), ("bag", 1)), "INVALID_ARGUMENT", "lines[1]"),
        ("RecordSale", sale_request("r"), "INVALID_ARGUMENT", "lines"),
        ("RecordSale", sale_request("r", ("bag", 1), node_id="mars"), "NOT_FOUND", "node_id"),
        (
            "RecordSale",
            sale_request("r", ("bag", 1), channel="Web!"),
            "INVALID_ARGUMENT",
            "channel",
        ),
        (
            "RecordSale",
            sale_request("r", ("bag", 1), sold_at_ms=FAKE_EPOCH_MS + 86_400_000),
            "INVALID_ARGUMENT",
            "sold_at_ms",
        ),
        (
            "RecordOfflineSales",
            store_pb2.RecordOfflineSalesRequest(
                sales=[sale_request(f"q{i}", ("bag", 1)) for i in range(6)]
            ),
            "INVALID_ARGUMENT",
            "max_offline_sales_per_call",
        ),
        (
            "RecordOfflineSales",
            store_pb2.RecordOfflineSalesRequest(sales=[sale_request("q", ("bag", -1))]),
            "INVALID_ARGUMENT",
            "sales[0].lines[0].quantity",
        ),
        (
            "RecordReturn",
            store_pb2.RecordReturnRequest(return_id="ret", node_id="paris"),
            "INVALID_ARGUMENT",
            "lines",
        ),
        (
            "ReleaseInspection",
            store_pb2.ReleaseInspectionRequest(
                release_id="rel", sku="bag", node_id="paris", quantity=1
            ),
            "INVALID_ARGUMENT",
            "outcome",
        ),
        (
            "ReleaseInspection",
            store_pb2.ReleaseInspectionRequest(
                release_id="rel",
                sku="bag",
                node_id="paris",
                quantity=1,
                outcome=store_pb2.INSPECTION_OUTCOME_WRITE_OFF,
            ),
            "INVALID_ARGUMENT",
            "quantity",
        ),
        (
            "Exchange",
            store_pb2.ExchangeRequest(exchange_id="x", node_id="paris"),
            "INVALID_ARGUMENT",
            "returned",
        ),
        (
            "ListDiscrepancies",
            store_pb2.ListDiscrepanciesRequest(limit=10_001),
            "INVALID_ARGUMENT",
            "limit",
        ),
        (
            "ListInspection",
            store_pb2.ListInspectionRequest(node_id="a b"),
            "INVALID_ARGUMENT",
            "node_id",
        ),
        ("LoadNodes", store_pb2.LoadNodesRequest(load_id="n-1"), "INVALID_ARGUMENT", "rows"),
        (
            "LoadNodes",
            store_pb2.LoadNodesRequest(
                load_id="n-1",
                nodes=[
                    inventory_pb2.Node(node_id="X", kind=common_pb2.NODE_KIND_STORE, geo_path="")
                ],
            ),
            "INVALID_ARGUMENT",
            "rows[0].node.geo_path",
        ),
        (
            "LoadSupply",
            store_pb2.LoadSupplyRequest(load_id="bad/id", rows=[supply_row("PO-1", "paris")]),
            "INVALID_ARGUMENT",
            "load_id",
        ),
        (
            "LoadSupply",
            store_pb2.LoadSupplyRequest(
                load_id="s-1", rows=[supply_row("PO-1", "paris"), supply_row("PO-2", "oslo")]
            ),
            "NOT_FOUND",
            "rows[1].node_id: unknown node 'oslo': add it first",
        ),
        (
            "LoadSupply",
            store_pb2.LoadSupplyRequest(
                load_id="s-1", rows=[supply_row("PO-1", "paris"), supply_row("PO-1", "lyon")]
            ),
            "INVALID_ARGUMENT",
            "rows[1].supply_id",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    server: ServerThread, store: StoreApi, call: str, request_: object, code: str, field: str
) -> None:
    """Each bad request answers its status with the field named, and changes nothing."""
    digest = server.digest()
    with pytest.raises(grpc.RpcError) as caught:
        getattr(store.store, call)(request_, timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert field in (caught.value.details() or "")
    assert server.digest() == digest


def test_a_load_is_applied_whole_or_not_at_all(server: ServerThread, store: StoreApi) -> None:
    """A supply load whose last row clashes with open supply changes nothing; fixed, it adds
    every row; the same id with other rows is ALREADY_EXISTS."""
    call = store.store.LoadSupply
    first = store_pb2.LoadSupplyRequest(load_id="s-0", rows=[supply_row("PO-9", "lyon")])
    assert call(first, timeout=RPC_TIMEOUT_S).created == 1
    clash = supply_row("PO-9", "lyon")
    clash.quantity = 4
    digest = server.digest()
    bad = store_pb2.LoadSupplyRequest(load_id="s-1", rows=[supply_row("PO-1", "paris"), clash])
    with pytest.raises(grpc.RpcError) as caught:
        call(bad, timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "rows[1].supply_id" in (caught.value.details() or "")
    assert server.digest() == digest
    good = store_pb2.LoadSupplyRequest(
        load_id="s-1", rows=[supply_row("PO-1", "paris"), supply_row("PO-9", "lyon")]
    )
    reply = call(good, timeout=RPC_TIMEOUT_S)
    assert (reply.created, reply.unchanged, reply.replayed) == (1, 1, False)
    assert call(good, timeout=RPC_TIMEOUT_S).replayed
    with pytest.raises(grpc.RpcError) as caught:
        call(
            first.__class__(load_id="s-1", rows=[supply_row("PO-3", "paris")]),
            timeout=RPC_TIMEOUT_S,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_reconnecting_watcher_gets_missed_discrepancies(
    server: ServerThread, store: StoreApi
) -> None:
    """A DISCREPANCY event sits in the change log: a subscriber resuming from before it gets
    it replayed, and one filtered on another SKU does not."""
    api = Api.on(server)
    first = Watcher(api, watch_request(skus=["bag"]))
    first.sync()
    store.set_stock("bag", "paris", 1)
    head = first.next().sequence  # from_sequence 0 means "live only": resume after a change
    first.cancel()
    store.sale(sale_request("r-9", ("bag", 2), force=True))
    resumed = Watcher(api, watch_request(skus=["bag"], from_sequence=head))
    events = [resumed.next() for _ in range(3)]
    resumed.cancel()
    assert events[0].kind == watch_pb2.WATCH_EVENT_KIND_SYNC
    assert DISCREPANCY in [e.kind for e in events[1:]]
    other = Watcher(api, watch_request(skus=["belt"], from_sequence=head))
    assert other.next().kind == watch_pb2.WATCH_EVENT_KIND_SYNC
    other.cancel()
