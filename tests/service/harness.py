"""An in-process atpd server on its own event-loop thread, and small helpers for tests that talk
to it over a real gRPC channel (127.0.0.1:<port>, port 0 picked by the OS).

The server runs exactly as in production (grpc.aio on one loop, the engine as the one writer);
the test thread is a plain synchronous gRPC client. Anything that touches the state directly
(`digest`, `check_invariants`) is run on the server's loop so it never races the writer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from atpd.config import Config
from atpd.core.commands import NodeKind, UpsertNode
from atpd.core.geo import parse_geo_path
from atpd.core.limits import Limits
from atpd.service.server import App, create_server, start, stop
from atpd.v1 import (
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
)

T = TypeVar("T")

LOOP_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 30.0
# A fixed, realistic epoch for the fake clock (2023-11-14T22:13:20Z).
FAKE_EPOCH_MS = 1_700_000_000_000
# Small limits so tests can hit them cheaply.
TEST_LIMITS = Limits(max_lines_per_reservation=4, min_ttl_ms=1_000, max_ttl_ms=86_400_000)

# Four stores over three geo depths, as in tests/core/support.py.
NODES: dict[str, str] = {
    "paris": "EU/FR/Paris",
    "lyon": "EU/FR/Lyon",
    "berlin": "EU/DE/Berlin",
    "soho": "NA/US/NYC/SoHo",
}


class FakeClock:
    """A millisecond clock for `create_server(clock_ms=...)` that moves only when told to."""

    def __init__(self, start_ms: int = FAKE_EPOCH_MS) -> None:
        self._lock = threading.Lock()
        self._now_ms = start_ms

    def __call__(self) -> int:
        with self._lock:
            return self._now_ms

    def advance(self, delta_ms: int) -> int:
        assert delta_ms >= 0
        with self._lock:
            self._now_ms += delta_ms
            return self._now_ms


@dataclass(frozen=True)
class Stubs:
    """One client per service, all on the same channel."""

    availability: availability_pb2_grpc.AvailabilityServiceStub
    reservations: reservations_pb2_grpc.ReservationServiceStub
    inventory: inventory_pb2_grpc.InventoryServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            availability_pb2_grpc.AvailabilityServiceStub(channel),
            reservations_pb2_grpc.ReservationServiceStub(channel),
            inventory_pb2_grpc.InventoryServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


class ServerThread:
    """create_server + start on a private event loop running in a daemon thread."""

    def __init__(self, config: Config, clock_ms: Callable[[], int] | None = None) -> None:
        self.config = config
        self.clock_ms = clock_ms
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="atpd-test-server", daemon=True)
        self._thread.start()
        self._channels: list[grpc.Channel] = []
        # create_server builds grpc.aio objects: do it on the loop that will serve them.
        self.app: App = self.run(self._create())

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _create(self) -> App:
        return create_server(self.config, clock_ms=self.clock_ms)

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = LOOP_TIMEOUT_S) -> T:
        """Run a coroutine on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def call(self, function: Callable[[], T]) -> T:
        """Run a plain function on the server loop (between two commands, never during one)."""

        async def on_loop() -> T:
            return function()

        return self.run(on_loop())

    def start(self, prepare: Callable[[], None] | None = None) -> None:
        self.run(start(self.app, prepare))

    def digest(self) -> str:
        return self.call(self.app.engine.state.digest)

    def check_invariants(self) -> None:
        self.call(self.app.engine.state.check_invariants)

    def channel(self) -> grpc.Channel:
        """A new real channel to the server, closed by `close`."""
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return channel

    def stubs(self) -> Stubs:
        return Stubs.on(self.channel())

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self.loop.is_closed():
            return
        try:
            self.run(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(LOOP_TIMEOUT_S)
            assert not self._thread.is_alive(), "server loop thread did not stop"
            self.loop.close()

    async def _shutdown(self) -> None:
        await stop(self.app, grace_s=1.0)
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@contextmanager
def running_server(
    config: Config, clock_ms: Callable[[], int] | None = None
) -> Iterator[ServerThread]:
    server = ServerThread(config, clock_ms)
    try:
        server.start()
        yield server
    finally:
        server.close()


# ---------------------------------------------------------------------------- request helpers


def node(
    node_id: str,
    geo_path: str | None = None,
    *,
    enabled: bool = True,
    kind: int = common_pb2.NODE_KIND_STORE,
    tags: tuple[str, ...] = (),
) -> inventory_pb2.UpsertNodeRequest:
    return inventory_pb2.UpsertNodeRequest(
        node=inventory_pb2.Node(
            node_id=node_id,
            kind=kind,  # type: ignore[arg-type]
            geo_path=geo_path if geo_path is not None else NODES[node_id],
            ships=True,
            pickup=True,
            enabled=enabled,
            tags=list(tags),
        )
    )


def line(sku: str, node_id: str, quantity: int) -> reservations_pb2.ReservationLine:
    return reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity)


def reserve_request(
    reservation_id: str,
    *lines: tuple[str, str, int],
    ttl_ms: int = 60_000,
    kind: int = common_pb2.RESERVATION_KIND_CART,
    channel: str = "",
    segment: str = "",
) -> reservations_pb2.ReserveRequest:
    return reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[line(*x) for x in lines],
        ttl_ms=ttl_ms,
        kind=kind,  # type: ignore[arg-type]
        channel=channel,
        segment=segment,
    )


def availability_request(
    *skus: str,
    node_ids: tuple[str, ...] = (),
    geo_prefix: str = "",
    include_nodes: bool = False,
) -> availability_pb2.GetAvailabilityRequest:
    return availability_pb2.GetAvailabilityRequest(
        skus=list(skus), node_ids=list(node_ids), geo_prefix=geo_prefix, include_nodes=include_nodes
    )


def seed_nodes(
    server: ServerThread, nodes: dict[str, str] = NODES, *, enabled: bool = True
) -> None:
    """Put nodes straight into the core on the server loop (setup, not under test: UpsertNode
    over gRPC has its own tests, so a bug there does not hide everything else)."""
    engine = server.app.engine

    def apply() -> None:
        for node_id, geo_path in nodes.items():
            path = parse_geo_path(geo_path)
            command = UpsertNode(node_id, NodeKind.STORE, path, enabled=enabled)
            engine.state.apply(command, engine.now_ms())

    server.call(apply)


class World:
    """The four NODES, then stock written through gRPC with per-position source sequences."""

    def __init__(self, server: ServerThread, api: Stubs) -> None:
        self.server = server
        self.api = api
        self._sequence: dict[tuple[str, str], int] = {}

    def add_nodes(self) -> None:
        seed_nodes(self.server)

    def set_stock(
        self, sku: str, node_id: str, on_hand: int, safety_stock: int | None = None
    ) -> inventory_pb2.SetStockResponse:
        sequence = self._sequence.get((sku, node_id), 0) + 1
        self._sequence[(sku, node_id)] = sequence
        request = inventory_pb2.SetStockRequest(
            sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=sequence
        )
        if safety_stock is not None:
            request.safety_stock = safety_stock
        response: inventory_pb2.SetStockResponse = self.api.inventory.SetStock(
            request, timeout=RPC_TIMEOUT_S
        )
        assert response.outcome == common_pb2.OUTCOME_OK, response
        return response

    def position(self, sku: str, node_id: str) -> inventory_pb2.Position:
        request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
        position: inventory_pb2.Position = self.api.inventory.GetStock(
            request, timeout=RPC_TIMEOUT_S
        ).position
        return position

    def total_atp(self, sku: str, **kwargs: Any) -> int:
        request = availability_request(sku, **kwargs)
        response = self.api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
        result: int = response.items[0].total_atp
        return result


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The grpc.RpcError a call raises (fails the test if it does not raise)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: grpc.RpcError = info.value
    return error
