"""The full role x method matrix over TLS with real tokens: every method of every service,
called by every role, is allowed exactly when the role table says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from atpd.service.method_roles import DEFAULT_METHOD_ROLES, GLOBAL_WRITES
from atpd.service.server import SERVICE_NAMES

from .support import ROLE_NAMES, Credentials, SecureServer, secure_server, status_of

RPC_TIMEOUT_S = 20.0


def every_method() -> list[tuple[str, Any]]:
    pool = descriptor_pool.Default()
    methods: list[tuple[str, Any]] = []
    for service_name in SERVICE_NAMES:
        service = pool.FindServiceByName(service_name)
        methods.extend((f"/{service.full_name}/{m.name}", m) for m in service.methods)
    return methods


METHODS = every_method()


def role_refusal(channel: grpc.Channel, path: str, method: Any) -> str:
    """ "role" when the call was refused for the caller's role, "auth" when for credentials,
    else "" (answered, or refused for something else: an empty request, a node outside a
    terminal's scope)."""
    try:
        call_or_raise(channel, path, method)
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.UNAUTHENTICATED:
            return "auth"
        if error.code() is grpc.StatusCode.PERMISSION_DENIED:
            return "role" if "may not call it" in str(error.details()) else "scope"
    return ""


def call_or_raise(channel: grpc.Channel, path: str, method: Any) -> None:
    request = message_factory.GetMessageClass(method.input_type)()
    serialize = type(request).SerializeToString
    if method.client_streaming:
        channel.stream_unary(path, request_serializer=serialize, response_deserializer=None)(
            iter(()), timeout=RPC_TIMEOUT_S
        )
    elif method.server_streaming:
        responses = channel.unary_stream(
            path, request_serializer=serialize, response_deserializer=None
        )(request, timeout=RPC_TIMEOUT_S)
        try:
            for _ in responses:
                break
        finally:
            responses.cancel()  # type: ignore[no-untyped-call]
    else:
        channel.unary_unary(path, request_serializer=serialize, response_deserializer=None)(
            request, timeout=RPC_TIMEOUT_S
        )


@pytest.fixture(scope="module")
def matrix_server(module_credentials: Credentials) -> Iterator[SecureServer]:
    with secure_server(module_credentials) as running:
        yield running


def test_every_method_has_a_role_entry() -> None:
    """No method of ours is left out of the role table (it would be refused to everyone)."""
    names = {path.removeprefix("/atpd.v1.") for path, _ in METHODS}
    assert names == set(DEFAULT_METHOD_ROLES)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_role_matrix(matrix_server: SecureServer, role: str) -> None:
    """Each role reaches exactly the methods the table gives it; the others answer
    PERMISSION_DENIED naming the method and the role."""
    channel = matrix_server.as_role(role)
    wrong: list[str] = []
    for path, method in METHODS:
        short = path.removeprefix("/atpd.v1.")
        allowed = role in DEFAULT_METHOD_ROLES[short]
        refusal = role_refusal(channel, path, method)
        if allowed and refusal in ("role", "auth"):
            wrong.append(f"{short}: allowed for {role} but refused ({refusal})")
        if not allowed and refusal != "role":
            wrong.append(f"{short}: denied for {role} but not refused for its role")
    assert not wrong, "\n".join(wrong)


def test_denial_names_method_and_role(matrix_server: SecureServer) -> None:
    """PERMISSION_DENIED says which method and which role."""
    stub = matrix_server.as_role("reader").unary_unary(
        "/atpd.v1.RulesService/SetRules",
        request_serializer=lambda request: b"",
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as info:
        stub(None, timeout=RPC_TIMEOUT_S)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    details = str(info.value.details())
    assert "RulesService/SetRules" in details and "'reader'" in details


@pytest.mark.parametrize("name", ["till-paris", "till-paris-geo"])
def test_scoped_principal_refused_network_wide_writes(
    matrix_server: SecureServer, name: str
) -> None:
    """A scoped token cannot call a method acting on the whole network, even if its role
    could (here pos: none of them; the check is also unit-tested with a scoped admin)."""
    channel = matrix_server.as_role(name)
    for path, method in METHODS:
        if path.removeprefix("/atpd.v1.") in GLOBAL_WRITES:
            assert role_refusal(channel, path, method) in ("role", "scope"), path


def test_without_token_every_method_is_unauthenticated(matrix_server: SecureServer) -> None:
    """No credential: every method of every service answers UNAUTHENTICATED."""
    channel = matrix_server.secure_channel()
    for path, method in METHODS:
        assert role_refusal(channel, path, method) == "auth", path


def test_health_is_open(matrix_server: SecureServer) -> None:
    """Health answers without any credential (load balancers have none)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(matrix_server.secure_channel())
    response = stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_credential(matrix_server: SecureServer) -> None:
    """Reflection answers any authenticated principal and refuses an anonymous caller."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def ask(channel: grpc.Channel) -> None:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        for _ in stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT_S):
            break

    assert status_of(lambda: ask(matrix_server.as_role("reader"))) is grpc.StatusCode.OK
    anonymous = status_of(lambda: ask(matrix_server.secure_channel()))
    assert anonymous is grpc.StatusCode.UNAUTHENTICATED
