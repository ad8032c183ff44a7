"""A Reserve of an option that answers PROMISE_CHANGED offers the best option now
(best_option_token and best_option), which reserves; nothing offered when nothing is left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from network.support import NOW_MS
from service.harness import ServerThread

from atpd.core.commands import SetStock
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.v1 import common_pb2, promise_pb2, reservations_pb2

from .reserve_plan_support import SHIP_DATE, SHIP_DAY, pickup_plan
from .test_reserve_plan_grpc import Stub, reserve, start, token_for


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The network test server with one express slot at WH-1 on SHIP_DATE."""
    yield from start(slots=1)


def express_plan() -> Plan:
    """One unit of A by express from WH-1 on SHIP_DATE to fr-paris, for the web channel."""
    return Plan(
        (Shipment("WH-1", "express", SHIP_DAY, (PlannedLine("A", 1),)),), "fr-paris", "web", ""
    )


def test_changed_promise_offers_best_option_that_reserves(server: ServerThread) -> None:
    """The last slot taken, a second reserve of it answers PROMISE_CHANGED with a fresh best
    option (another slot, day or service) whose token reserves OK."""
    stub = Stub(server.channel())
    token = token_for(server, express_plan())
    assert reserve(stub, "first", token).outcome == common_pb2.OUTCOME_OK
    late = reserve(stub, "late", token)
    assert late.outcome == common_pb2.OUTCOME_PROMISE_CHANGED
    assert late.best_option_token
    best = late.best_option
    assert best.option_token == late.best_option_token
    assert promise_pb2.BEST in best.reasons
    assert [(line.sku, line.quantity) for s in best.shipments for line in s.lines] == [("A", 1)]
    assert all(
        (s.node_id, s.service, s.ship_date) != ("WH-1", "express", SHIP_DATE)
        for s in best.shipments
    )
    again = reserve(stub, "late", late.best_option_token)
    assert again.outcome == common_pb2.OUTCOME_OK, again
    assert [(s.node_id, s.service, s.ship_date) for s in again.reservation.shipments] == [
        (s.node_id, s.service, s.ship_date) for s in best.shipments
    ]
    server.check_invariants()


def test_changed_pickup_offers_soonest_pickup(server: ServerThread) -> None:
    """A pickup whose store lost its stock offers the next pickup plan (a token, no
    best_option message)."""
    stub = Stub(server.channel())
    token = token_for(server, pickup_plan())
    server.call(lambda: server.app.engine.state.apply(SetStock("A", "ST-PAR", 0, 2), NOW_MS))
    late = reserve(stub, "pick", token)
    assert late.outcome == common_pb2.OUTCOME_PROMISE_CHANGED
    assert not late.HasField("best_option")
    assert late.best_option_token  # WH-1 has A and a transfer lane to ST-PAR
    again = reserve(stub, "pick", late.best_option_token)
    assert again.outcome == common_pb2.OUTCOME_OK, again
    assert [(s.node_id, s.service) for s in again.reservation.shipments] == [("WH-1", "")]


def test_changed_promise_offers_nothing_when_nothing_is_left(server: ServerThread) -> None:
    """When no node has the cart any more, PROMISE_CHANGED leaves best_option_token empty."""
    stub = Stub(server.channel())
    token = token_for(server, express_plan())

    def empty() -> None:
        state = server.app.engine.state
        for node_id in ("WH-1", "ST-PAR"):
            state.apply(SetStock("A", node_id, 0, 2), NOW_MS)

    server.call(empty)
    late = reserve(stub, "late", token)
    assert late.outcome == common_pb2.OUTCOME_PROMISE_CHANGED
    assert late.best_option_token == ""
    assert not late.HasField("best_option")
    assert isinstance(late, reservations_pb2.ReserveResponse)
