"""PromiseService over a real gRPC channel: Promise (delivery and pickup) with option tokens
the server verifies, PromiseBatch, AssociateView, and bad input answered with the status
naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from network.support import NETWORK, NODES, NOW_MS, SOURCE
from service.harness import TEST_LIMITS, FakeClock, ServerThread, running_server

from atpd.config import Config
from atpd.core.commands import SetNetwork, SetRules, SetStock, UpsertNode
from atpd.core.plan import Plan
from atpd.v1 import promise_pb2, promise_pb2_grpc

from .promise_support import RULES

Stub = promise_pb2_grpc.PromiseServiceStub
STOCK = {("BAG-1", "WH-1"): 5, ("BAG-1", "ST-PAR"): 1, ("SHOE-1", "ST-PAR"): 2}


def start(with_network: bool) -> Iterator[ServerThread]:
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config, FakeClock(NOW_MS)) as running:
        engine = running.app.engine

        def seed() -> None:
            state = engine.state
            for node_id, (kind, geo_path, ships, pickup) in NODES.items():
                state.apply(UpsertNode(node_id, kind, geo_path, ships=ships, pickup=pickup), NOW_MS)
            if with_network:
                state.apply(SetNetwork(NETWORK, SOURCE), NOW_MS)
            state.apply(SetRules(RULES, "rules.toml"), NOW_MS)
            for sequence, ((sku, node_id), on_hand) in enumerate(sorted(STOCK.items()), 1):
                state.apply(SetStock(sku, node_id, on_hand, sequence, safety_stock=0), NOW_MS)

        running.call(seed)
        yield running


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A server on a fake clock (Monday 2026-11-30 10:00 UTC): network, rules and stock."""
    yield from start(with_network=True)


@pytest.fixture
def stub(server: ServerThread) -> Stub:
    return Stub(server.channel())


def request(*lines: tuple[str, int], segment: str = "") -> promise_pb2.PromiseRequest:
    return promise_pb2.PromiseRequest(
        lines=[promise_pb2.PromiseLine(sku=sku, quantity=quantity) for sku, quantity in lines],
        destination=promise_pb2.Destination(country="FR", postal_code="75008"),
        segment=segment,
    )


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == code, error.value.details()
    return str(error.value.details())


def test_promise_answers_ranked_options_with_tokens(stub: Stub, server: ServerThread) -> None:
    """A delivery promise answers options with shipments, dates, cost, CO2, reasons and a
    token whose plan (verified by the server's key) is the option's shipments."""
    response = stub.Promise(request(("BAG-1", 1)), timeout=30)
    assert response.destination == "fr-paris" and response.options
    assert (response.channel, response.segment) == ("web", "standard")
    best = response.options[0]
    assert promise_pb2.BEST in best.reasons and best.shipment_count == 1
    shipment = best.shipments[0]
    assert shipment.node_id == "WH-1" and shipment.ship_date == "2026-11-30"
    assert shipment.delivery_earliest_date >= shipment.ship_date
    assert best.cost_minor > 0 and best.co2_grams > 0
    tokens = server.app.engine.option_tokens
    assert tokens is not None
    plan = tokens.verify(best.option_token, NOW_MS)
    assert isinstance(plan, Plan)
    assert plan.lines() == [("BAG-1", "WH-1", 1)] and plan.destination == "fr-paris"


def test_vip_gets_a_split_order(stub: Stub) -> None:
    """The same cart: no option for a standard customer, two parcels for a VIP."""
    cart = (("BAG-1", 2), ("SHOE-1", 1))
    standard = stub.Promise(request(*cart), timeout=30)
    assert not standard.options and standard.no_option_reason
    assert (standard.channel, standard.segment) == ("web", "standard")
    vip = stub.Promise(request(*cart, segment="vip"), timeout=30)
    assert vip.options and vip.options[0].shipment_count == 2


def test_pickup_options(stub: Stub, server: ServerThread) -> None:
    """A pickup promise lists the store's own stock first, then a transfer, with tokens."""
    response = stub.Promise(
        promise_pb2.PromiseRequest(
            lines=[promise_pb2.PromiseLine(sku="BAG-1", quantity=1)], pickup_node_id="ST-PAR"
        ),
        timeout=30,
    )
    sources = [(o.source_node_id, o.transfer_lead_days) for o in response.pickup_options]
    assert sources == [("ST-PAR", 0), ("WH-1", 2)]
    assert response.pickup_options[0].ready_by.startswith("2026-11-30T")
    tokens = server.app.engine.option_tokens
    assert tokens is not None
    plan = tokens.verify(response.pickup_options[1].option_token, NOW_MS)
    assert plan.shipments[0].is_pickup and plan.destination == "pickup:ST-PAR"


def test_unknown_sku_has_no_option_and_a_reason(stub: Stub) -> None:
    """An unknown SKU is not an error: no option, the reason names it."""
    response = stub.Promise(request(("NOPE", 1)), timeout=30)
    assert not response.options and "NOPE" in response.no_option_reason


def test_promise_batch(stub: Stub) -> None:
    """PromiseBatch: the earliest delivery date per SKU, unavailable for unknown SKUs."""
    response = stub.PromiseBatch(
        promise_pb2.PromiseBatchRequest(
            skus=["BAG-1", "SHOE-1", "NOPE"],
            destination=promise_pb2.Destination(country="FR", postal_code="75008"),
            segment="vip",
        ),
        timeout=30,
    )
    assert response.zone == "fr-paris"
    items = {item.sku: item for item in response.items}
    assert items["BAG-1"].available and items["BAG-1"].earliest_delivery_date >= "2026-11-30"
    assert items["SHOE-1"].node_id == "ST-PAR"
    assert not items["NOPE"].available and items["NOPE"].earliest_delivery_date == ""


def test_associate_view(stub: Stub) -> None:
    """From a store: every node with the SKU, with the lead time to the store; home delivery
    only from the nodes the caller's sourcing rules ship from (warehouses, for standard)."""
    response = stub.AssociateView(
        promise_pb2.AssociateViewRequest(
            sku="BAG-1",
            store_id="ST-PAR",
            destination=promise_pb2.Destination(country="FR", postal_code="75008"),
        ),
        timeout=30,
    )
    leads = {row.node_id: row.transfer_lead_days for row in response.rows}
    assert leads == {"ST-PAR": 0, "WH-1": 2}
    assert all(row.pickup_ready for row in response.rows)
    delivery = {row.node_id: row.delivery_earliest_date for row in response.rows}
    assert delivery["ST-PAR"] == "" and delivery["WH-1"] >= "2026-11-30"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (request(), "lines"),
        (request(("BAG-1", 0)), "lines[0].quantity"),
        (request(("BAG-1", 1), ("BAG-1", 1)), "lines[1].sku"),
        (
            promise_pb2.PromiseRequest(lines=[promise_pb2.PromiseLine(sku="A", quantity=1)]),
            "destination",
        ),
        (
            promise_pb2.PromiseRequest(
                lines=[promise_pb2.PromiseLine(sku="A", quantity=1)],
                destination=promise_pb2.Destination(country="ZZ"),
            ),
            "destination",
        ),
        (
            promise_pb2.PromiseRequest(
                lines=[promise_pb2.PromiseLine(sku="A", quantity=1)], pickup_node_id="WH-1"
            ),
            "pickup_node_id",
        ),
        (request(("BAG-1", 1), segment="nobody"), "segment"),
    ],
)
def test_bad_promise_is_invalid_argument(
    stub: Stub, message: promise_pb2.PromiseRequest, field: str
) -> None:
    """Bad input is INVALID_ARGUMENT naming the field."""
    details = refused(lambda: stub.Promise(message, timeout=30), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in details


def test_bad_batch_and_associate_requests(stub: Stub) -> None:
    """PromiseBatch without a destination and AssociateView without a store name the field;
    an unknown store is NOT_FOUND."""
    details = refused(
        lambda: stub.PromiseBatch(promise_pb2.PromiseBatchRequest(skus=["A"]), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "destination.country" in details
    details = refused(
        lambda: stub.AssociateView(promise_pb2.AssociateViewRequest(sku="A"), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "store_id" in details
    details = refused(
        lambda: stub.AssociateView(
            promise_pb2.AssociateViewRequest(sku="A", store_id="NOPE"), timeout=30
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "store_id" in details


@pytest.fixture
def bare_server() -> Iterator[ServerThread]:
    """The same server without a network."""
    yield from start(with_network=False)


def test_no_network_is_failed_precondition(bare_server: ServerThread) -> None:
    """Without a network every promise RPC is FAILED_PRECONDITION saying what to do."""
    stub = Stub(bare_server.channel())
    details = refused(
        lambda: stub.Promise(request(("BAG-1", 1)), timeout=30),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "network" in details
