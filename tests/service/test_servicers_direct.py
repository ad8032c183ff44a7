"""The servicers without a socket.

grpc_testing calls servicer methods synchronously on its own threads and would get a coroutine
back from a grpc.aio servicer, so it cannot drive them as they are. `SyncBridge` runs each
coroutine on an event loop thread and hands grpc_testing the result; grpc_testing's context is
passed through unchanged (its `abort` raises synchronously, which `await context.abort(...)`
propagates the same way). The second half calls the coroutines directly with a fake context.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

import grpc
import grpc_testing
import pytest

from atpd.core.commands import NodeKind, UpsertNode
from atpd.core.state import AtpState
from atpd.service.engine import Engine
from atpd.service.servicers import (
    AdminServicer,
    AvailabilityServicer,
    InventoryServicer,
    ReservationServicer,
)
from atpd.v1 import (
    admin_pb2,
    availability_pb2,
    common_pb2,
    inventory_pb2,
    reservations_pb2,
)

from .harness import FAKE_EPOCH_MS, LOOP_TIMEOUT_S, TEST_LIMITS, FakeClock, reserve_request

RESERVATIONS = reservations_pb2.DESCRIPTOR.services_by_name["ReservationService"]
INVENTORY = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"]
AVAILABILITY = availability_pb2.DESCRIPTOR.services_by_name["AvailabilityService"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]


class LoopThread:
    """A bare event loop on a daemon thread (no gRPC server)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(LOOP_TIMEOUT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(LOOP_TIMEOUT_S)
        self.loop.close()


class SyncBridge:
    """Presents an async servicer to grpc_testing as a synchronous one."""

    def __init__(self, servicer: object, loop: LoopThread) -> None:
        self._servicer = servicer
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[[Any, Any], Any]:
        method = getattr(self._servicer, name)

        def call(request: Any, context: Any) -> Any:
            return self._loop.run(method(request, context))

        return call


def new_engine(clock: FakeClock) -> Engine:
    state = AtpState(TEST_LIMITS)
    state.apply(UpsertNode("paris", NodeKind.STORE, ("EU", "FR", "Paris")), clock())
    engine = Engine(state, clock_ms=clock)
    engine.ready = True
    return engine


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def engine(loop: LoopThread) -> Iterator[Engine]:
    engine = new_engine(FakeClock())
    try:
        yield engine
    finally:

        async def stop() -> None:
            engine.stop()

        loop.run(stop())


@pytest.fixture
def testing_server(engine: Engine, loop: LoopThread) -> grpc_testing.Server:
    servicers = {
        RESERVATIONS: SyncBridge(ReservationServicer(engine), loop),
        INVENTORY: SyncBridge(InventoryServicer(engine), loop),
        AVAILABILITY: SyncBridge(AvailabilityServicer(engine), loop),
        ADMIN: SyncBridge(AdminServicer(engine), loop),
    }
    return grpc_testing.server_from_dictionary(servicers, grpc_testing.strict_real_time())


def invoke(server: grpc_testing.Server, service: Any, method: str, request: Any) -> tuple[Any, ...]:
    """(response, code, details) of one unary call through grpc_testing."""
    rpc = server.invoke_unary_unary(service.methods_by_name[method], (), request, None)
    response, _trailing_metadata, code, details = rpc.termination()
    return response, code, details


def test_grpc_testing_drives_the_write_path(testing_server: grpc_testing.Server) -> None:
    """Through grpc_testing: SetStock and Reserve answer OK, and GetAvailability sees the hold."""
    request = inventory_pb2.SetStockRequest(sku="S", node_id="paris", on_hand=3, source_sequence=1)
    response, code, _ = invoke(testing_server, INVENTORY, "SetStock", request)
    assert (code, response.outcome, response.position.atp) == (grpc.StatusCode.OK, 1, 3)
    reserve = reserve_request("cart-1", ("S", "paris", 2))
    response, code, _ = invoke(testing_server, RESERVATIONS, "Reserve", reserve)
    assert code == grpc.StatusCode.OK
    assert (response.outcome, response.reservation.status) == (
        common_pb2.OUTCOME_OK,
        common_pb2.RESERVATION_STATUS_HELD,
    )
    assert response.reservation.expires_at_ms == FAKE_EPOCH_MS + 60_000
    query = availability_pb2.GetAvailabilityRequest(skus=["S"])
    response, code, _ = invoke(testing_server, AVAILABILITY, "GetAvailability", query)
    assert (code, response.items[0].total_atp) == (grpc.StatusCode.OK, 1)


def test_grpc_testing_sees_status_codes(testing_server: grpc_testing.Server) -> None:
    """Through grpc_testing, bad input is INVALID_ARGUMENT and an unknown node NOT_FOUND."""
    bad = reserve_request("cart-1", ("S", "paris", 1), ttl_ms=5)
    _, code, details = invoke(testing_server, RESERVATIONS, "Reserve", bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("ttl_ms:")
    unknown = inventory_pb2.GetStockRequest(sku="S", node_id="madrid")
    _, code, details = invoke(testing_server, INVENTORY, "GetStock", unknown)
    assert code == grpc.StatusCode.NOT_FOUND
    assert details.startswith("node_id:")
    status, code, _ = invoke(testing_server, ADMIN, "GetStatus", admin_pb2.GetStatusRequest())
    assert (code, status.nodes, status.now_ms) == (grpc.StatusCode.OK, 1, FAKE_EPOCH_MS)


class Aborted(Exception):
    pass


class FakeContext:
    """The part of grpc.aio.ServicerContext the servicers use: `abort` records and raises."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self.code, self.details = code, details
        raise Aborted(details)


def calls_counted(engine: Engine, method: str, code: str) -> float:
    value = engine.metrics.registry.get_sample_value(
        "atpd_rpc_calls_total", {"method": method, "code": code}
    )
    return value or 0.0


def test_direct_coroutine_call_answers_and_counts() -> None:
    """Awaiting a servicer method returns the response and counts the call as OK."""

    async def scenario() -> None:
        engine = new_engine(FakeClock())
        inventory = InventoryServicer(engine)
        context = FakeContext()
        request = inventory_pb2.SetStockRequest(
            sku="S", node_id="paris", on_hand=4, source_sequence=1
        )
        response = await inventory.SetStock(request, context)
        assert isinstance(response, inventory_pb2.SetStockResponse)
        assert (response.outcome, response.position.on_hand) == (common_pb2.OUTCOME_OK, 4)
        assert context.code is None
        assert calls_counted(engine, "SetStock", "OK") == 1
        engine.stop()

    asyncio.run(scenario())


def test_direct_coroutine_call_aborts_with_the_mapped_code() -> None:
    """Each core error aborts with its mapped status and is counted under that code."""

    async def scenario() -> None:
        engine = new_engine(FakeClock())
        inventory = InventoryServicer(engine)
        reservations = ReservationServicer(engine)
        await inventory.SetStock(
            inventory_pb2.SetStockRequest(sku="S", node_id="paris", on_hand=4, source_sequence=1),
            FakeContext(),
        )
        await reservations.Reserve(reserve_request("r", ("S", "paris", 1)), FakeContext())
        cases = (
            (reserve_request("", ("S", "paris", 1)), grpc.StatusCode.INVALID_ARGUMENT),
            (reserve_request("r2", ("S", "madrid", 1)), grpc.StatusCode.NOT_FOUND),
            (reserve_request("r", ("S", "paris", 2)), grpc.StatusCode.ALREADY_EXISTS),
        )
        for request, expected in cases:
            context = FakeContext()
            with pytest.raises(Aborted):
                await reservations.Reserve(request, context)
            assert context.code == expected
            assert context.details.split(":")[0] in ("reservation_id", "lines[0].node_id")
            assert calls_counted(engine, "Reserve", expected.name) == 1
        engine.stop()

    asyncio.run(scenario())


def test_direct_write_before_ready_is_unavailable() -> None:
    """Writes before the engine is ready abort UNAVAILABLE; reads are answered."""

    async def scenario() -> None:
        engine = new_engine(FakeClock())
        engine.ready = False
        context = FakeContext()
        with pytest.raises(Aborted):
            await ReservationServicer(engine).Reserve(
                reserve_request("r", ("S", "paris", 1)), context
            )
        assert context.code == grpc.StatusCode.UNAVAILABLE
        status = await AdminServicer(engine).GetStatus(admin_pb2.GetStatusRequest(), FakeContext())
        assert status.nodes == 1

    asyncio.run(scenario())
