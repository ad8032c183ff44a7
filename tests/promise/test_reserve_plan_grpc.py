"""Reserve with an option token over a real gRPC channel: the held shipments in the answer,
PROMISE_CHANGED holding nothing, a race of many reserves for the last slots and pick capacity
that never over-books, and bad tokens refused with INVALID_ARGUMENT naming option_token."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from network.support import NETWORK, NODES, NOW_MS
from service.harness import TEST_LIMITS, FakeClock, ServerThread, running_server

from atpd.config import Config
from atpd.core.commands import SetCarrierCapacity, SetNetwork, SetStock, UpsertNode
from atpd.core.plan import Plan
from atpd.service.option_tokens import OptionTokens
from atpd.v1 import common_pb2, reservations_pb2, reservations_pb2_grpc

from .reserve_plan_support import SHIP_DATE, pickup_plan, two_shipment_plan

Stub = reservations_pb2_grpc.ReservationServiceStub
TTL_MS = 60_000


def start(pick_capacity: int = 40, slots: int = 3) -> Iterator[ServerThread]:
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config, FakeClock(NOW_MS)) as running:
        engine = running.app.engine
        text = NETWORK.replace(
            "pick_capacity_orders = 40", f"pick_capacity_orders = {pick_capacity}"
        )

        def seed() -> None:
            now_ms = engine.now_ms()
            state = engine.state
            for node_id, (kind, geo_path, ships, pickup) in NODES.items():
                state.apply(UpsertNode(node_id, kind, geo_path, ships=ships, pickup=pickup), now_ms)
            state.apply(SetNetwork(text, "net.toml"), now_ms)
            for sku in ("A", "B", "C"):
                for node_id in ("WH-1", "ST-PAR"):
                    state.apply(SetStock(sku, node_id, 100, 1), now_ms)
            state.apply(SetCarrierCapacity("express", "WH-1", SHIP_DATE, slots), now_ms)

        running.call(seed)
        yield running


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A started server (fake clock at 2026-11-30 10:00 UTC) with the network, stock of A, B
    and C at WH-1 and ST-PAR, and 3 express slots at WH-1 on 2026-12-01."""
    yield from start()


def token_for(server: ServerThread, plan: Plan) -> str:
    tokens = server.app.engine.option_tokens
    assert tokens is not None
    return tokens.issue(plan, NOW_MS, 1)


def reserve(stub: Stub, reservation_id: str, token: str) -> reservations_pb2.ReserveResponse:
    response: reservations_pb2.ReserveResponse = stub.Reserve(
        reservations_pb2.ReserveRequest(
            reservation_id=reservation_id, option_token=token, ttl_ms=TTL_MS
        ),
        timeout=30,
    )
    return response


def test_reserve_option_shows_held_shipments(server: ServerThread) -> None:
    """An OK reserve of an option answers its shipments, channel and lines from the plan."""
    stub = Stub(server.channel())
    response = reserve(stub, "r1", token_for(server, two_shipment_plan(2)))
    assert response.outcome == common_pb2.OUTCOME_OK
    reservation = response.reservation
    assert reservation.channel == "web" and reservation.destination == "fr-paris"
    assert [(s.node_id, s.service, s.ship_date) for s in reservation.shipments] == [
        ("WH-1", "express", SHIP_DATE),
        ("ST-PAR", "courier", SHIP_DATE),
    ]
    assert [(x.sku, x.node_id, x.quantity) for x in reservation.lines] == [
        ("A", "WH-1", 2),
        ("B", "WH-1", 2),
        ("C", "ST-PAR", 2),
    ]
    again = reserve(stub, "r1", token_for(server, two_shipment_plan(2)))
    assert again.replayed
    server.check_invariants()


def test_race_for_last_slots_never_overbooks(server: ServerThread) -> None:
    """20 concurrent reserves of options sharing 3 slots: exactly 3 OK, the rest
    PROMISE_CHANGED naming the carrier slot; nothing over-booked."""
    stub = Stub(server.channel())
    token = token_for(server, two_shipment_plan())
    futures = [
        stub.Reserve.future(
            reservations_pb2.ReserveRequest(
                reservation_id=f"race-{i}", option_token=token, ttl_ms=TTL_MS
            ),
            timeout=30,
        )
        for i in range(20)
    ]
    outcomes = [future.result() for future in futures]
    ok = [r for r in outcomes if r.outcome == common_pb2.OUTCOME_OK]
    changed = [r for r in outcomes if r.outcome == common_pb2.OUTCOME_PROMISE_CHANGED]
    assert (len(ok), len(changed)) == (3, 17)
    assert all(
        r.changes[0].resource == reservations_pb2.CHANGED_RESOURCE_CARRIER_SLOT for r in changed
    )
    assert all(not r.HasField("reservation") for r in changed)

    def held() -> tuple[int, int]:
        state = server.app.engine.state
        entry = state.carrier_capacity.get(
            "express", "WH-1", two_shipment_plan().shipments[0].ship_day
        )
        assert entry is not None
        return entry.held, state.position("A", "WH-1").reserved

    assert server.call(held) == (3, 3)
    server.check_invariants()


def test_race_for_pick_capacity() -> None:
    """With 2 picks a day at ST-PAR, 10 concurrent pickup reserves: 2 OK, 8 PROMISE_CHANGED."""
    for server in start(pick_capacity=2):
        stub = Stub(server.channel())
        token = token_for(server, pickup_plan())
        futures = [
            stub.Reserve.future(
                reservations_pb2.ReserveRequest(
                    reservation_id=f"pick-{i}", option_token=token, ttl_ms=TTL_MS
                ),
                timeout=30,
            )
            for i in range(10)
        ]
        outcomes = [future.result().outcome for future in futures]
        assert outcomes.count(common_pb2.OUTCOME_OK) == 2
        assert outcomes.count(common_pb2.OUTCOME_PROMISE_CHANGED) == 8
        server.check_invariants()


def test_release_gives_slot_back_over_grpc(server: ServerThread) -> None:
    """After the last slot is taken a reserve gets PROMISE_CHANGED; a release frees it."""
    stub = Stub(server.channel())
    token = token_for(server, two_shipment_plan())
    for i in range(3):
        assert reserve(stub, f"r{i}", token).outcome == common_pb2.OUTCOME_OK
    before = server.digest()
    assert reserve(stub, "late", token).outcome == common_pb2.OUTCOME_PROMISE_CHANGED
    assert server.digest() == before
    stub.Release(reservations_pb2.ReleaseRequest(reservation_id="r0"), timeout=30)
    assert reserve(stub, "late", token).outcome == common_pb2.OUTCOME_OK


def refused(call: object) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return str(error.value.details())


def test_bad_tokens_refused(server: ServerThread) -> None:
    """Garbage, another key's, altered and expired tokens: INVALID_ARGUMENT naming
    option_token (expired: ask for a promise again); lines that differ: naming lines."""
    stub = Stub(server.channel())
    good = token_for(server, two_shipment_plan())
    other = OptionTokens(b"k" * 32, 60_000).issue(two_shipment_plan(), NOW_MS, 1)
    tokens = server.app.engine.option_tokens
    assert tokens is not None
    expired_token = tokens.issue(two_shipment_plan(), NOW_MS - 10 * tokens.ttl_ms, 1)
    payload, _, signature = good.partition(".")
    altered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    for token in ("garbage", other, altered):
        assert refused(lambda t=token: reserve(stub, "r1", t)).startswith("option_token:")
    assert "ask for a promise again" in refused(lambda: reserve(stub, "r1", expired_token))
    wrong_lines = reservations_pb2.ReserveRequest(
        reservation_id="r1",
        option_token=good,
        ttl_ms=TTL_MS,
        lines=[reservations_pb2.ReservationLine(sku="A", node_id="WH-1", quantity=5)],
    )
    assert refused(lambda: stub.Reserve(wrong_lines, timeout=30)).startswith("lines:")
    other_channel = reservations_pb2.ReserveRequest(
        reservation_id="r1", option_token=good, ttl_ms=TTL_MS, channel="store"
    )
    assert refused(lambda: stub.Reserve(other_channel, timeout=30)).startswith("channel:")
    assert server.call(lambda: len(server.app.engine.state.reservations)) == 0


def atpd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_reserve_option(server: ServerThread) -> None:
    """`atpd reserve ID --option TOKEN` holds the option and prints its shipments; a second
    reserve of the last slot prints what changed and exits 3; neither lines nor option: 2."""
    token = token_for(server, two_shipment_plan())
    target = ("--target", server.target)
    for i in range(2):
        assert reserve(Stub(server.channel()), f"pre-{i}", token).outcome == common_pb2.OUTCOME_OK
    held = atpd("reserve", "cli-1", "--option", token, "--ttl", "10m", *target)
    assert held.returncode == 0, held.stderr
    assert held.stdout.startswith("outcome: OK\nreservation cli-1: HELD")
    assert re.search(r"^WH-1\s+express\s+2026-12-01\s+slot$", held.stdout, re.MULTILINE)
    late = atpd("reserve", "cli-2", "--option", token, *target)
    assert late.returncode == 3, late.stderr
    assert "PROMISE_CHANGED" in late.stdout and "changed: shipment 0 carrier_slot" in late.stdout
    assert atpd("reserve", "cli-3", *target).returncode == 2


def test_a_retry_after_the_token_expired_answers_the_stored_reservation(
    server: ServerThread,
) -> None:
    """A client that lost the answer and retries the same request after its token's lifetime
    (but within the hold) gets the stored reservation, not "expired": it must never be led to
    hold the same cart twice. A new id with the expired token is still refused."""
    stub = Stub(server.channel())
    token = token_for(server, two_shipment_plan(1))
    assert reserve(stub, "r1", token).outcome == common_pb2.OUTCOME_OK
    clock = server.clock_ms
    assert isinstance(clock, FakeClock)
    tokens = server.app.engine.option_tokens
    assert tokens is not None
    clock.advance(tokens.ttl_ms + 1_000)
    again = reserve(stub, "r1", token)
    assert again.outcome == common_pb2.OUTCOME_OK and again.replayed
    assert "ask for a promise again" in refused(lambda: reserve(stub, "r2", token))
    server.check_invariants()


def test_an_unknown_kind_with_a_token_is_invalid_argument(server: ServerThread) -> None:
    """kind out of range with an option token is INVALID_ARGUMENT naming kind, never INTERNAL."""
    stub = Stub(server.channel())
    request = reservations_pb2.ReserveRequest(
        reservation_id="r1",
        option_token=token_for(server, two_shipment_plan(1)),
        ttl_ms=TTL_MS,
        kind=cast(Any, 99),  # proto3 enums are open: an out-of-range value reaches the server
    )
    assert refused(lambda: stub.Reserve(request, timeout=30)).startswith("kind:")
