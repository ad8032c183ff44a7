"""Lifecycle over the wire: health status around `start`, writes refused until ready, reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from atpd.config import Config
from atpd.service.server import SERVICE_NAMES, stop
from atpd.v1 import (
    admin_pb2,
    availability_pb2,
    common_pb2,
    feeds_pb2,
    inventory_pb2,
    network_pb2,
    promise_pb2,
    replication_pb2,
    reservations_pb2,
    rules_pb2,
    supply_pb2,
    watch_pb2,
)

from .harness import RPC_TIMEOUT_S, ServerThread, Stubs, rpc_error, seed_nodes

API_SERVICES = (
    "atpd.v1.AvailabilityService",
    "atpd.v1.ReservationService",
    "atpd.v1.InventoryService",
    "atpd.v1.AdminService",
    "atpd.v1.RulesService",
    "atpd.v1.SupplyService",
    "atpd.v1.WatchService",
    "atpd.v1.FeedService",
    "atpd.v1.NetworkService",
    "atpd.v1.PromiseService",
    "atpd.v1.ReplicationService",
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(api: Stubs, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    status: int = api.health.Check(request, timeout=RPC_TIMEOUT_S).status
    return status


def test_service_names_are_the_api_services() -> None:
    """SERVICE_NAMES (what health and reflection advertise) are exactly the atpd.v1 APIs."""
    assert sorted(SERVICE_NAMES) == sorted(API_SERVICES)


@pytest.mark.grpc
def test_health_not_serving_and_writes_unavailable_until_start_completes() -> None:
    """Health is NOT_SERVING and writes UNAVAILABLE while start() prepares; SERVING after."""
    server = ServerThread(Config(port=0, metrics_port=-1))
    seen: dict[str, object] = {}
    set_stock = inventory_pb2.SetStockRequest(
        sku="SKU-1", node_id="paris", on_hand=5, source_sequence=1
    )

    def prepare() -> None:
        # Runs off the loop while the server is already listening.
        with grpc.insecure_channel(server.target) as channel:
            api = Stubs.on(channel)
            seen["health"] = {name: health_of(api, name) for name in ("", *API_SERVICES)}
            seen["write"] = rpc_error(lambda: api.inventory.SetStock(set_stock)).code()
            status = api.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S)
            seen["read_nodes"] = status.nodes

    try:
        assert not server.app.engine.ready
        server.start(prepare)
        assert seen["health"] == dict.fromkeys(("", *API_SERVICES), NOT_SERVING)
        assert seen["write"] == grpc.StatusCode.UNAVAILABLE
        assert seen["read_nodes"] == 0
        api = server.stubs()
        assert {name: health_of(api, name) for name in ("", *API_SERVICES)} == dict.fromkeys(
            ("", *API_SERVICES), SERVING
        )
        seed_nodes(server, {"paris": "EU/FR/Paris"})
        response = api.inventory.SetStock(set_stock, timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_OK
        assert response.position.on_hand == 5
    finally:
        server.close()


def test_health_unknown_service_is_not_found(api: Stubs) -> None:
    """Health Check for a service the server does not host is NOT_FOUND."""
    error = rpc_error(lambda: health_of(api, "atpd.v1.NoSuchService"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_api_service(server: ServerThread) -> None:
    """Server reflection lists the four atpd.v1 services (plus health and reflection itself)."""
    database = ProtoReflectionDescriptorDatabase(server.channel())
    services = set(database.get_services())
    assert set(API_SERVICES) <= services
    assert "grpc.health.v1.Health" in services


def test_reflection_serves_method_descriptors(server: ServerThread) -> None:
    """Reflection serves full descriptors: every RPC resolves as compiled, without the .proto."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(server.channel()))
    compiled = {
        service.full_name: service
        for module in (
            availability_pb2,
            reservations_pb2,
            inventory_pb2,
            admin_pb2,
            rules_pb2,
            supply_pb2,
            watch_pb2,
            feeds_pb2,
            network_pb2,
            promise_pb2,
            replication_pb2,
        )
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert sorted(compiled) == sorted(API_SERVICES)
    for name, expected in compiled.items():
        served = pool.FindServiceByName(name)
        assert {
            m.name: (m.input_type.full_name, m.output_type.full_name) for m in served.methods
        } == {m.name: (m.input_type.full_name, m.output_type.full_name) for m in expected.methods}
    reserve = pool.FindMethodByName("atpd.v1.ReservationService.Reserve")
    assert reserve.input_type.full_name == "atpd.v1.ReserveRequest"
    assert reserve.output_type.full_name == "atpd.v1.ReserveResponse"


@pytest.mark.grpc
def test_stop_flips_health_to_not_serving_and_refuses_writes() -> None:
    """stop() sets health NOT_SERVING for every service and makes the engine refuse writes."""
    server = ServerThread(Config(port=0, metrics_port=-1))
    try:
        server.start()
        app = server.app
        server.run(stop(app, grace_s=1.0))
        assert server.call(lambda: app.engine.ready) is False

        async def statuses() -> dict[str, int]:
            result = {}
            for name in ("", *API_SERVICES):
                request = health_pb2.HealthCheckRequest(service=name)
                result[name] = (await app.health.Check(request, None)).status
            return result

        assert server.run(statuses()) == dict.fromkeys(("", *API_SERVICES), NOT_SERVING)
    finally:
        server.close()
