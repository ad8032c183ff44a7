"""Which methods grpc serves as registered methods, and that every other one is still served
(through the generic path, from CheckedServer's one table), checked the same way."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from atpd.service.server import REGISTERED_METHODS, SERVICE_NAMES
from atpd.service.transport import CallGuard, CheckedServer, RateLimitedLog
from atpd.v1 import admin_pb2, admin_pb2_grpc, reservations_pb2

from .harness import RPC_TIMEOUT_S, ServerThread


class RecordingServer:
    """Stands in for grpc.aio.Server: records what reaches it."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.setdefault(service, {}).update(handlers)


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def guard() -> CallGuard:
    return CallGuard(
        RateLimitedLog(logging.getLogger("t1")), RateLimitedLog(logging.getLogger("t2"))
    )


async def answer(request: Any, context: Any) -> Any:
    return request


def handler() -> Any:
    return grpc.unary_unary_rpc_method_handler(
        answer,
        request_deserializer=reservations_pb2.ReleaseRequest.FromString,
        response_serializer=reservations_pb2.ReleaseRequest.SerializeToString,
    )


@pytest.mark.core
def test_only_the_named_methods_are_registered_and_the_table_holds_every_method() -> None:
    """A service's methods all land in the table, first among the generic handlers; only the
    ones named in `registered` reach grpc's registered methods, wrapped the same way."""
    server = RecordingServer()
    checked = CheckedServer(server, guard(), frozenset({"/pkg.Svc/Hot"}))  # type: ignore[arg-type]
    checked.add_registered_method_handlers("pkg.Svc", {"Hot": handler(), "Cold": handler()})
    assert list(server.registered) == ["pkg.Svc"]
    assert list(server.registered["pkg.Svc"]) == ["Hot"]
    assert server.generic[0] is checked.table
    hot = checked.table.service(Details("/pkg.Svc/Hot"))
    cold = checked.table.service(Details("/pkg.Svc/Cold"))
    assert hot is server.registered["pkg.Svc"]["Hot"]
    assert cold is not None and cold.unary_unary is not answer  # the checked wrapper
    assert checked.table.service(Details("/pkg.Svc/Missing")) is None


@pytest.mark.core
def test_without_a_list_every_method_is_registered() -> None:
    """`registered=None` keeps grpc's default: every method of the service is registered."""
    server = RecordingServer()
    checked = CheckedServer(server, guard())  # type: ignore[arg-type]
    checked.add_registered_method_handlers("pkg.Svc", {"A": handler(), "B": handler()})
    assert sorted(server.registered["pkg.Svc"]) == ["A", "B"]


@pytest.mark.core
def test_the_registered_list_names_real_methods_of_atpd_services() -> None:
    """Every registered method is a method of one of atpd's own services (a typo would leave
    a hot method on the slower generic path without anyone noticing)."""
    services = set(SERVICE_NAMES)
    for path in REGISTERED_METHODS:
        service, method = path.removeprefix("/").split("/")
        assert service in services, path
        assert method[0].isupper(), path
    assert "/atpd.v1.ReservationService/Reserve" in REGISTERED_METHODS


@pytest.mark.grpc
def test_a_method_outside_the_list_is_served_and_checked_like_a_registered_one(
    server: ServerThread,
) -> None:
    """AdminService/GetStatus (generic path) answers, and undecodable bytes sent to it answer
    INVALID_ARGUMENT naming the message type, as for a registered method."""
    assert "/atpd.v1.AdminService/GetStatus" not in REGISTERED_METHODS
    channel = server.channel()
    status = admin_pb2_grpc.AdminServiceStub(channel).GetStatus(
        admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S
    )
    assert status.version
    raw = channel.unary_unary("/atpd.v1.AdminService/GetStatus", None, None)
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x0a\x02\xff\xfe\xff", timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "atpd.v1.GetStatusRequest" in (info.value.details() or "")
