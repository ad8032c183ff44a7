"""Reserve of lines that name no node: the server sources them (BEST option of a promise to
the request's destination) and holds that plan; retries replay the stored reservation; bad
requests are INVALID_ARGUMENT naming the field; nothing to source answers why."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from network.support import NOW_MS
from service.harness import ServerThread

from atpd.core.commands import SetStock
from atpd.service.access_lookup import NODES_OF
from atpd.service.ownership import PermissionDenied
from atpd.service.principals import Principal, Scope
from atpd.service.sourced_reserve import is_sourced, sourced_command
from atpd.service.validation import InvalidArgument
from atpd.v1 import batch_pb2, batch_pb2_grpc, common_pb2, promise_pb2, reservations_pb2

from .reserve_plan_support import plan_world
from .test_reserve_plan_grpc import TTL_MS, Stub, atpd, start

PARIS = promise_pb2.Destination(country="FR", postal_code="75008")


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The network test server: A, B and C at WH-1 and ST-PAR."""
    yield from start()


def request(
    reservation_id: str,
    lines: dict[str, int],
    node_id: str = "",
    **fields: object,
) -> reservations_pb2.ReserveRequest:
    return reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[
            reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity)
            for sku, quantity in lines.items()
        ],
        ttl_ms=TTL_MS,
        **fields,  # type: ignore[arg-type]
    )


def call(stub: Stub, message: reservations_pb2.ReserveRequest) -> reservations_pb2.ReserveResponse:
    response: reservations_pb2.ReserveResponse = stub.Reserve(message, timeout=30)
    return response


def test_nodeless_lines_hold_the_best_plan(server: ServerThread) -> None:
    """Node-less lines with a destination hold a plan: lines at nodes, shipments with a
    service, the destination's zone; the same request again replays it."""
    stub = Stub(server.channel())
    message = request("s1", {"A": 2, "B": 1}, destination=PARIS, channel="web")
    held = call(stub, message)
    assert held.outcome == common_pb2.OUTCOME_OK, held
    reservation = held.reservation
    assert reservation.destination == "fr-paris"
    assert sorted((x.sku, x.quantity) for x in reservation.lines) == [("A", 2), ("B", 1)]
    assert all(x.node_id for x in reservation.lines)
    assert reservation.shipments and all(s.service for s in reservation.shipments)
    again = call(stub, message)
    assert again.replayed and again.reservation.lines == reservation.lines
    server.check_invariants()


def test_retry_after_stock_moved_replays_stored_plan(server: ServerThread) -> None:
    """A retry after the sourced node lost its stock answers the stored reservation, not a
    plan sourced afresh (and not ALREADY_EXISTS)."""
    stub = Stub(server.channel())
    message = request("s2", {"A": 1}, destination=PARIS)
    held = call(stub, message)
    assert held.outcome == common_pb2.OUTCOME_OK, held
    node_id = held.reservation.lines[0].node_id
    server.call(lambda: server.app.engine.state.apply(SetStock("A", node_id, 1, 2), NOW_MS))
    again = call(stub, message)
    assert again.outcome == common_pb2.OUTCOME_OK and again.replayed
    assert again.reservation.shipments == held.reservation.shipments


def test_nodeless_pickup(server: ServerThread) -> None:
    """Node-less lines with pickup_node_id hold a pickup plan at the store."""
    stub = Stub(server.channel())
    held = call(stub, request("s3", {"A": 1}, pickup_node_id="ST-PAR"))
    assert held.outcome == common_pb2.OUTCOME_OK, held
    assert held.reservation.destination == "pickup:ST-PAR"
    assert [(s.node_id, s.service) for s in held.reservation.shipments] == [("ST-PAR", "")]


def test_nothing_to_source_answers_why(server: ServerThread) -> None:
    """An unknown SKU: OUTCOME_INSUFFICIENT_STOCK with the promise's reason, nothing held."""
    stub = Stub(server.channel())
    refused = call(stub, request("s4", {"NOPE": 1}, destination=PARIS))
    assert refused.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK
    assert "unknown SKU" in refused.no_option_reason and "NOPE" in refused.no_option_reason
    assert server.call(lambda: len(server.app.engine.state.reservations)) == 0


def details(stub: Stub, message: reservations_pb2.ReserveRequest) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call(stub, message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return str(error.value.details())


def test_bad_sourced_requests_refused(server: ServerThread) -> None:
    """Mixed node ids name the line; no destination names lines[0].node_id, saying a
    destination is needed; a destination with
    lines that name nodes, both destination kinds, or an empty country are refused."""
    stub = Stub(server.channel())
    mixed = request("b1", {"A": 1}, node_id="WH-1", destination=PARIS)
    mixed.lines.add(sku="B", node_id="", quantity=1)
    assert details(stub, mixed).startswith("lines[1].node_id:")
    no_destination = details(stub, request("b2", {"A": 1}))
    assert no_destination.startswith("lines[0].node_id:") and "need a destination" in no_destination
    assert details(stub, request("b3", {"A": 1}, "WH-1", destination=PARIS)).startswith(
        "destination:"
    )
    both = request("b4", {"A": 1}, destination=PARIS, pickup_node_id="ST-PAR")
    assert details(stub, both).startswith("destination:")
    no_country = request("b5", {"A": 1}, destination=promise_pb2.Destination(postal_code="75"))
    assert details(stub, no_country).startswith("destination.country:")
    assert server.call(lambda: len(server.app.engine.state.reservations)) == 0


def test_is_sourced_only_for_nodeless_lines() -> None:
    """Lines naming nodes are a plain Reserve; node-less lines with a destination are sourced;
    a first node-less line among named ones is refused naming it."""
    assert not is_sourced(request("x", {"A": 1}, "WH-1"))
    assert is_sourced(request("x", {"A": 1, "B": 2}, pickup_node_id="ST-PAR"))
    mixed = request("x", {"A": 1}, "")
    mixed.lines.add(sku="B", node_id="WH-1", quantity=1)
    with pytest.raises(InvalidArgument, match=r"lines\[0\]\.node_id"):
        is_sourced(mixed)


def test_cli_reserve_sourced(server: ServerThread) -> None:
    """`atpd reserve ID A=2 --to FR:75008` holds a sourced plan and prints its shipments; a
    cart nobody has prints why and exits 3."""
    target = ("--target", server.target)
    held = atpd("reserve", "cli-s", "A=2", "B=1", "--to", "FR:75008", *target)
    assert held.returncode == 0, held.stderr
    assert "outcome: OK" in held.stdout and "to fr-paris, holding:" in held.stdout
    none = atpd("reserve", "cli-n", "NOPE=1", "--to", "FR:75008", *target)
    assert none.returncode == 3, none.stderr
    assert "no option: unknown SKU" in none.stdout


def test_scoped_principal_may_hold_only_a_sourced_plan_in_its_scope() -> None:
    """The access gate sees no node in node-less lines; the sourced plan's nodes are checked:
    a principal scoped to WH-1 may not hold a pickup sourced at ST-PAR, one scoped to it may."""
    state = plan_world()
    message = request("scoped", {"A": 1}, pickup_node_id="ST-PAR")
    assert NODES_OF["ReservationService/Reserve"](message, None) == ((), "")  # type: ignore[arg-type]
    geo = {"WH-1": ("EU", "FR", "Lyon"), "ST-PAR": ("EU", "FR", "Paris")}.get
    lyon = Principal("wh", "checkout", "token", Scope(frozenset({"WH-1"}), ()))
    with pytest.raises(PermissionDenied, match="node 'ST-PAR'"):
        sourced_command(state, message, state.limits, NOW_MS, lyon, geo)
    paris = Principal("till", "checkout", "token", Scope(frozenset({"ST-PAR"}), ()))
    command = sourced_command(state, message, state.limits, NOW_MS, paris, geo)
    assert not isinstance(command, str) and command.plan is not None
    assert command.plan.destination == "pickup:ST-PAR"


def test_batch_sources_nodeless_lines_between_grouped_reserves(server: ServerThread) -> None:
    """In a CommandBatch, a Reserve to source (node-less lines) between plain ones is sourced
    as the unary call would, and one without a destination is refused with the unary
    message; the plain ones around it are held."""
    commands = batch_pb2_grpc.CommandServiceStub(server.channel())
    plain = request("g1", {"A": 1}, node_id="WH-1")
    sourced = request("g2", {"B": 1}, destination=PARIS)
    no_destination = request("g3", {"A": 1})
    last = request("g4", {"C": 1}, node_id="WH-1")
    answer = commands.CommandBatch(
        batch_pb2.CommandBatchRequest(
            commands=[
                batch_pb2.BatchCommand(reserve=message)
                for message in (plain, sourced, no_destination, last)
            ]
        ),
        timeout=30,
    )
    first, second, third, fourth = answer.results
    assert first.reserve.outcome == common_pb2.OUTCOME_OK, first
    assert second.reserve.outcome == common_pb2.OUTCOME_OK, second
    assert second.reserve.reservation.shipments and all(
        x.node_id for x in second.reserve.reservation.lines
    )
    assert third.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert third.error.message == details(Stub(server.channel()), request("g5", {"A": 1}))
    assert fourth.reserve.outcome == common_pb2.OUTCOME_OK, fourth
    server.check_invariants()
