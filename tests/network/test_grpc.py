"""NetworkService over a real gRPC channel: SetNetwork, GetNetwork, SetCarrierCapacity and
GetCarrierCapacity, and bad input answered with the right status naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from service.harness import TEST_LIMITS, FakeClock, ServerThread, running_server

from atpd.config import Config
from atpd.core.commands import UpsertNode
from atpd.v1 import common_pb2, network_pb2, network_pb2_grpc

from .support import NETWORK, NODES, NOW_MS, SOURCE

Stub = network_pb2_grpc.NetworkServiceStub


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A started server on a fake clock (2026-11-30 10:00 UTC) with the four network nodes."""
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config, FakeClock(NOW_MS)) as running:
        engine = running.app.engine

        def seed() -> None:
            for node_id, (kind, geo_path, ships, pickup) in NODES.items():
                engine.state.apply(
                    UpsertNode(node_id, kind, geo_path, ships=ships, pickup=pickup),
                    engine.now_ms(),
                )

        running.call(seed)
        yield running


@pytest.fixture
def stub(server: ServerThread) -> Stub:
    return Stub(server.channel())


def set_network(stub: Stub, text: str = NETWORK) -> network_pb2.SetNetworkResponse:
    response: network_pb2.SetNetworkResponse = stub.SetNetwork(
        network_pb2.SetNetworkRequest(text=text, source=SOURCE), timeout=30
    )
    return response


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call()  # type: ignore[operator]
    assert error.value.code() == code, error.value.details()
    return str(error.value.details())


def test_set_and_get_network(stub: Stub, server: ServerThread) -> None:
    """SetNetwork answers OK with the versions; GetNetwork the text and summary counts."""
    assert stub.GetNetwork(network_pb2.GetNetworkRequest()).version == ""
    response = set_network(stub)
    assert response.outcome == common_pb2.OUTCOME_OK
    assert (response.version, response.previous_version) == ("n1", "")
    got = stub.GetNetwork(network_pb2.GetNetworkRequest())
    assert (got.version, got.source, got.text) == ("n1", SOURCE, NETWORK)
    assert got.node_count == 4 and got.lane_count == 2
    assert list(got.services) == ["courier", "express"]
    assert list(got.zones) == ["fr", "fr-paris", "gb-london", "us"]
    server.check_invariants()


def test_bad_network_keeps_old(stub: Stub) -> None:
    """A bad file is INVALID_ARGUMENT naming the file and key; the old network stays."""
    set_network(stub)
    details = refused(
        lambda: set_network(stub, NETWORK.replace('"n1"', '"n2"').replace("lead_days = 2", "")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert f"{SOURCE}: lanes[0].lead_days: missing" in details
    assert refused(lambda: set_network(stub, "  "), grpc.StatusCode.INVALID_ARGUMENT).startswith(
        "text: is empty"
    )
    assert stub.GetNetwork(network_pb2.GetNetworkRequest()).version == "n1"


def test_capacity_set_and_get(stub: Stub) -> None:
    """Slots set for a date show in the capacity calendar next to defaulted dates."""
    set_network(stub)
    request = network_pb2.SetCarrierCapacityRequest(
        service="express", node_id="WH-1", date="2026-12-01", slots=3
    )
    response = stub.SetCarrierCapacity(request)
    assert response.outcome == common_pb2.OUTCOME_OK
    assert (response.day.slots, response.day.left, response.had_slots) == (3, 3, False)
    again = stub.SetCarrierCapacity(request)
    assert again.had_slots and again.previous_slots == 3
    calendar = stub.GetCarrierCapacity(
        network_pb2.GetCarrierCapacityRequest(
            service="express", node_id="WH-1", from_date="2026-11-30", to_date="2026-12-01"
        )
    )
    assert [(d.date, d.slots, d.held, d.left, d.explicit) for d in calendar.days] == [
        ("2026-11-30", 10, 0, 10, False),
        ("2026-12-01", 3, 0, 3, True),
    ]


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"service": "", "node_id": "WH-1"}, "INVALID_ARGUMENT", "service: is empty"),
        ({"service": "Express"}, "INVALID_ARGUMENT", "service: 'Express' is not"),
        ({"node_id": "WH 1"}, "INVALID_ARGUMENT", "node_id: "),
        ({"date": "2026-12-32"}, "INVALID_ARGUMENT", "date: '2026-12-32' is not a valid date"),
        ({"date": "01/12/2026"}, "INVALID_ARGUMENT", "date: '01/12/2026' is not a date like"),
        ({"date": ""}, "INVALID_ARGUMENT", "date: is empty"),
        ({"slots": 1_000_000_001}, "INVALID_ARGUMENT", "slots: 1000000001 is more than"),
        ({"service": "ghost"}, "NOT_FOUND", "service: unknown carrier service 'ghost'"),
        ({"node_id": "WH-9"}, "NOT_FOUND", "node_id: unknown node 'WH-9'"),
        ({"node_id": "ST-PAR"}, "INVALID_ARGUMENT", "is not an origin of service 'express'"),
        ({"date": "2026-01-01"}, "INVALID_ARGUMENT", "date: 2026-01-01 is in the past"),
    ],
)
def test_bad_capacity(stub: Stub, fields: dict[str, object], code: str, message: str) -> None:
    """Bad SetCarrierCapacity input gets the right status, naming the field."""
    set_network(stub)
    values: dict[str, object] = {
        "service": "express",
        "node_id": "WH-1",
        "date": "2026-12-01",
        "slots": 1,
    }
    values.update(fields)
    request = network_pb2.SetCarrierCapacityRequest(**values)  # type: ignore[arg-type]
    details = refused(lambda: stub.SetCarrierCapacity(request), getattr(grpc.StatusCode, code))
    assert message in details


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"from_date": ""}, "INVALID_ARGUMENT", "from_date: is empty"),
        ({"to_date": "2026-11-01"}, "INVALID_ARGUMENT", "to_date: 2026-11-01 is before"),
        ({"to_date": "2028-12-01"}, "INVALID_ARGUMENT", "more than the 366 allowed"),
        ({"service": "ghost"}, "NOT_FOUND", "service: unknown carrier service"),
        ({"node_id": "nowhere"}, "NOT_FOUND", "node_id: unknown node"),
    ],
)
def test_bad_capacity_query(stub: Stub, fields: dict[str, object], code: str, message: str) -> None:
    """Bad GetCarrierCapacity input gets the right status, naming the field."""
    set_network(stub)
    values: dict[str, object] = {
        "service": "express",
        "node_id": "WH-1",
        "from_date": "2026-11-30",
    }
    values.update(fields)
    request = network_pb2.GetCarrierCapacityRequest(**values)  # type: ignore[arg-type]
    details = refused(lambda: stub.GetCarrierCapacity(request), getattr(grpc.StatusCode, code))
    assert message in details


def test_capacity_before_any_network(stub: Stub) -> None:
    """Without a network every service is unknown: NOT_FOUND, not INTERNAL."""
    request = network_pb2.SetCarrierCapacityRequest(
        service="express", node_id="WH-1", date="2026-12-01", slots=1
    )
    assert "unknown carrier service" in refused(
        lambda: stub.SetCarrierCapacity(request), grpc.StatusCode.NOT_FOUND
    )
