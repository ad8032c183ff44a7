"""Many clients at once over real channels: no oversell, all-or-nothing holds, invariants."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from atpd.v1 import common_pb2, reservations_pb2, reservations_pb2_grpc

from .harness import RPC_TIMEOUT_S, ServerThread, Stubs, World, reserve_request

OK = common_pb2.OUTCOME_OK
INSUFFICIENT = common_pb2.OUTCOME_INSUFFICIENT_STOCK
CLIENTS = 50
LAST_UNITS = 7


def test_threads_race_for_the_last_units(server: ServerThread, world: World) -> None:
    """50 threads racing for the last 7 units: exactly 7 holds, 43 INSUFFICIENT_STOCK."""
    world.set_stock("SKU-1", "paris", LAST_UNITS)
    barrier = threading.Barrier(CLIENTS, timeout=RPC_TIMEOUT_S)
    channels = [server.channel() for _ in range(CLIENTS)]
    for channel in channels:  # connect first, so the race is on Reserve, not on connecting
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)

    def client(i: int) -> reservations_pb2.ReserveResponse:
        stub = Stubs.on(channels[i]).reservations
        request = reserve_request(f"cart-{i}", ("SKU-1", "paris", 1))
        barrier.wait()
        response: reservations_pb2.ReserveResponse = stub.Reserve(request, timeout=RPC_TIMEOUT_S)
        return response

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        responses = list(pool.map(client, range(CLIENTS)))
    outcomes = [r.outcome for r in responses]
    assert outcomes.count(OK) == LAST_UNITS
    assert outcomes.count(INSUFFICIENT) == CLIENTS - LAST_UNITS
    for response in responses:
        if response.outcome == INSUFFICIENT:
            assert [(s.requested, s.available) for s in response.shortages] == [(1, 0)]
    position = world.position("SKU-1", "paris")
    assert (position.on_hand, position.reserved, position.atp) == (LAST_UNITS, LAST_UNITS, 0)
    assert server.call(lambda: server.app.engine.state.open_reservations) == LAST_UNITS
    server.check_invariants()


def test_asyncio_clients_get_all_or_nothing_holds(server: ServerThread, world: World) -> None:
    """50 aio clients reserving two SKUs: the scarcer decides; refusals leave no partial hold."""
    world.set_stock("SKU-A", "paris", 10)
    world.set_stock("SKU-B", "lyon", 6)

    async def race() -> list[reservations_pb2.ReserveResponse]:
        channels = [grpc.aio.insecure_channel(server.target) for _ in range(CLIENTS)]
        try:
            await asyncio.gather(*(c.channel_ready() for c in channels))
            start = asyncio.Event()

            async def client(i: int) -> reservations_pb2.ReserveResponse:
                stub = reservations_pb2_grpc.ReservationServiceStub(channels[i])
                request = reserve_request(f"cart-{i}", ("SKU-A", "paris", 1), ("SKU-B", "lyon", 1))
                await start.wait()
                response: reservations_pb2.ReserveResponse = await stub.Reserve(
                    request, timeout=RPC_TIMEOUT_S
                )
                return response

            tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
            await asyncio.sleep(0)
            start.set()
            return await asyncio.gather(*tasks)
        finally:
            await asyncio.gather(*(c.close(None) for c in channels))

    responses = asyncio.run(race())
    outcomes = [r.outcome for r in responses]
    assert outcomes.count(OK) == 6
    assert outcomes.count(INSUFFICIENT) == CLIENTS - 6
    for response in responses:
        if response.outcome == INSUFFICIENT:
            assert [s.sku for s in response.shortages] == ["SKU-B"]
    assert world.position("SKU-A", "paris").reserved == 6
    assert world.position("SKU-B", "lyon").reserved == 6
    server.check_invariants()


def test_concurrent_lifecycles_conserve_stock(server: ServerThread, world: World) -> None:
    """Concurrent reserve/release/confirm/fulfil conserves on_hand and reserved exactly."""
    world.set_stock("SKU-1", "paris", 1_000)
    threads, per_thread = 8, 12

    def worker(t: int) -> tuple[int, int]:
        api = server.stubs()
        fulfilled = kept = 0
        for i in range(per_thread):
            rid = f"t{t}-{i}"
            quantity = 1 + (t + i) % 3
            response = api.reservations.Reserve(
                reserve_request(rid, ("SKU-1", "paris", quantity)), timeout=RPC_TIMEOUT_S
            )
            assert response.outcome == OK
            action = (t + i) % 3
            if action == 0:
                release = reservations_pb2.ReleaseRequest(reservation_id=rid)
                assert api.reservations.Release(release, timeout=RPC_TIMEOUT_S).outcome == OK
            elif action == 1:
                fulfil = reservations_pb2.FulfilRequest(reservation_id=rid)
                assert api.reservations.Fulfil(fulfil, timeout=RPC_TIMEOUT_S).outcome == OK
                fulfilled += quantity
            else:
                confirm = reservations_pb2.ConfirmRequest(reservation_id=rid)
                assert api.reservations.Confirm(confirm, timeout=RPC_TIMEOUT_S).outcome == OK
                kept += quantity
        return fulfilled, kept

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(worker, range(threads)))
    fulfilled = sum(f for f, _ in results)
    kept = sum(k for _, k in results)
    position = world.position("SKU-1", "paris")
    assert (position.on_hand, position.reserved) == (1_000 - fulfilled, kept)
    server.check_invariants()
