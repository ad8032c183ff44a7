"""The transport edge over a real channel: undecodable payloads, server bugs, message size
limits, connection bounds and idle timeouts, reflection v1, file descriptor limits."""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from persistence.server_support import daemon, free_port

from atpd import metrics as metrics_module
from atpd.config import (
    Config,
    ConfigError,
    max_load_chunk_bytes,
)
from atpd.core.limits import Limits
from atpd.core.state import AtpState
from atpd.metrics import Metrics
from atpd.service.server import connection_limit
from atpd.service.transport import RateLimitedLog
from atpd.v1 import admin_pb2, feeds_pb2, feeds_pb2_grpc, inventory_pb2, reservations_pb2

from .harness import (
    RPC_TIMEOUT_S,
    ServerThread,
    Stubs,
    reserve_request,
    running_server,
    seed_nodes,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
# HTTP/2 client preface and an empty SETTINGS frame: a connection that says hello, then idles.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
BAD_PAYLOADS = {
    "random bytes": bytes(random.Random(7).randrange(256) for _ in range(64)),
    "truncated message": reserve_request("r-1", ("SKU-1", "paris", 1)).SerializeToString()[:-3],
    # Field 1 (reservation_id, a string) holding bytes that are not UTF-8.
    "invalid utf-8": b"\x0a\x02\xff\xfe",
}


def raw_unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A client sending and receiving bytes as they are (no protobuf on the client side)."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def health_serving(api: Stubs) -> bool:
    request = health_pb2.HealthCheckRequest()
    serving: bool = api.health.Check(request, timeout=RPC_TIMEOUT_S).status == SERVING
    return serving


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info]


# ---------------------------------------------------------------------------- undecodable


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
@pytest.mark.parametrize(
    ("method", "type_name"),
    [
        ("/atpd.v1.ReservationService/Reserve", "atpd.v1.ReserveRequest"),
        ("/atpd.v1.AvailabilityService/GetAvailability", "atpd.v1.GetAvailabilityRequest"),
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_undecodable_unary_request_is_invalid_argument_naming_the_type(
    server: ServerThread,
    caplog: pytest.LogCaptureFixture,
    method: str,
    type_name: str,
    payload: bytes,
) -> None:
    """Bytes that are not the request message answer INVALID_ARGUMENT naming its type, no
    traceback is logged and the server keeps serving."""
    if method.endswith("Check") and payload == BAD_PAYLOADS["invalid utf-8"]:
        payload = b"\x0a\x02\xff\xfe"  # field 1 is HealthCheckRequest.service, a string too
    channel = server.channel()
    with pytest.raises(grpc.RpcError) as info:
        raw_unary(channel, method)(payload, timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"request is not a valid {type_name}" in (info.value.details() or "")
    assert not tracebacks(caplog)
    assert health_serving(Stubs.on(channel))


def test_undecodable_message_in_a_client_stream_ends_it_with_invalid_argument(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad message inside a BulkLoad stream ends the call with INVALID_ARGUMENT naming
    atpd.v1.BulkLoadRequest; nothing is loaded and no traceback is logged."""
    channel = server.channel()
    bulk_load = channel.stream_unary(
        "/atpd.v1.FeedService/BulkLoad", request_serializer=None, response_deserializer=None
    )
    header = feeds_pb2.BulkLoadRequest(
        header=feeds_pb2.BulkLoadHeader(load_id="bad-stream", mode=feeds_pb2.LOAD_MODE_DELTA)
    ).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        bulk_load(iter([header, BAD_PAYLOADS["random bytes"]]), timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request is not a valid atpd.v1.BulkLoadRequest" in (info.value.details() or "")
    assert not tracebacks(caplog)
    status = Stubs.on(channel).admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
    assert status.positions == 0


def test_undecodable_message_in_a_bidirectional_stream_is_invalid_argument(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Reflection (a bidirectional stream) ends with INVALID_ARGUMENT on a bad message."""
    reflect = server.channel().stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as info:
        list(reflect(iter([BAD_PAYLOADS["truncated message"]]), timeout=RPC_TIMEOUT_S))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.reflection.v1alpha.ServerReflectionRequest" in (info.value.details() or "")
    assert not tracebacks(caplog)


def test_many_undecodable_requests_log_one_line_per_second(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """200 random payloads in a burst log at most a few lines (one per second per kind), none
    with a traceback, and every one answers INVALID_ARGUMENT."""
    caplog.set_level(logging.WARNING)
    reserve = raw_unary(server.channel(), "/atpd.v1.ReservationService/Reserve")
    generator = random.Random(11)
    started = time.monotonic()
    codes = set()
    for _ in range(200):
        payload = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 80)))
        try:
            reserve(payload, timeout=RPC_TIMEOUT_S)
            codes.add(grpc.StatusCode.OK)  # a few random byte strings are valid messages
        except grpc.RpcError as error:
            codes.add(error.code())
    seconds = time.monotonic() - started
    assert codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK}
    lines = [r for r in caplog.records if "not a valid atpd.v1.ReserveRequest" in r.getMessage()]
    assert 1 <= len(lines) <= int(seconds) + 2
    assert not tracebacks(caplog)


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    """One line per interval per kind; the next line says how many were left out."""
    now = [100.0]
    limited = RateLimitedLog(logging.getLogger("atpd.test"), 1.0, lambda: now[0])
    caplog.set_level(logging.INFO, "atpd.test")
    assert limited.log(logging.INFO, "a", "first")
    assert not limited.log(logging.INFO, "a", "second")
    assert not limited.log(logging.INFO, "a", "third")
    assert limited.log(logging.INFO, "b", "other kind")
    now[0] += 1.5
    assert limited.log(logging.INFO, "a", "fourth")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "first"
    assert messages[1] == "other kind"
    assert messages[2].startswith("fourth (2 more like it in the last 1.5 s)")


def test_server_bug_answers_internal_with_one_traceback_per_second(
    server: ServerThread, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no servicer maps answers INTERNAL (never UNKNOWN) naming its type, and its
    traceback is logged once, not once per call."""

    def broken(self: AtpState, prefix: object) -> list[object]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(AtpState, "list_nodes", broken)
    api = server.stubs()
    for _ in range(20):
        with pytest.raises(grpc.RpcError) as info:
            api.inventory.ListNodes(inventory_pb2.ListNodesRequest(), timeout=RPC_TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "RuntimeError" in (info.value.details() or "")
    assert 1 <= len(tracebacks(caplog)) <= 2
    assert health_serving(api)


# ---------------------------------------------------------------------------- message sizes


def test_default_receive_limit_fits_the_largest_legitimate_requests() -> None:
    """The default receive limit holds a worst-case BulkLoad chunk of max_load_chunk_rows rows
    (distinct 64-character SKU and node ids, safety stock -1) and a 1 MiB SetRules text."""
    config = Config()
    rows = config.limits.max_load_chunk_rows
    skus = [f"S{i:063d}" for i in range(rows)]
    nodes = [f"N{i:063d}" for i in range(rows)]
    request = feeds_pb2.BulkLoadRequest(
        chunk=feeds_pb2.PositionChunk(
            skus=skus,
            sku_index=range(rows),
            node_ids=nodes,
            node_index=range(rows),
            on_hand=[1_000_000_000] * rows,
            safety_stock=[-1] * rows,
        )
    )
    size = request.ByteSize()
    assert size <= max_load_chunk_bytes(rows) <= config.max_receive_message_bytes
    assert config.max_receive_message_bytes < 16 * 1024 * 1024  # the old limit


def test_receive_limit_below_a_chunk_is_refused_at_configuration() -> None:
    """A receive limit too small for max_load_chunk_rows is a config error naming both."""
    with pytest.raises(ConfigError, match=r"max_receive_message_bytes.*max_load_chunk_rows"):
        Config(max_receive_message_bytes=1_000_000, limits=Limits(max_load_chunk_rows=25_000))


def test_oversize_request_is_resource_exhausted_and_server_keeps_serving(
    server: ServerThread,
) -> None:
    """A request above max_receive_message_bytes answers RESOURCE_EXHAUSTED; the server stays
    SERVING and answers the next call."""
    channel = server.channel()
    request = reservations_pb2.GetReservationRequest(
        reservation_id="x" * (server.config.max_receive_message_bytes + 1)
    )
    with pytest.raises(grpc.RpcError) as info:
        raw_unary(channel, "/atpd.v1.ReservationService/GetReservation")(
            request.SerializeToString(), timeout=RPC_TIMEOUT_S
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    api = Stubs.on(channel)
    assert health_serving(api)
    api.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S)


def test_max_size_bulk_load_chunk_passes(server: ServerThread) -> None:
    """A BulkLoad chunk of max_load_chunk_rows rows with 64-character SKU ids, one per row,
    goes through the default receive limit and is applied."""
    seed_nodes(server, {"paris": "EU/FR/Paris"})
    rows = server.config.limits.max_load_chunk_rows
    chunk = feeds_pb2.PositionChunk(
        skus=[f"S{i:063d}" for i in range(rows)],
        node_ids=["paris"],
        node_index=[0] * rows,
        on_hand=[1_000_000_000] * rows,
        safety_stock=[-1] * rows,
    )
    feeds = feeds_pb2_grpc.FeedServiceStub(server.channel())
    messages = [
        feeds_pb2.BulkLoadRequest(
            header=feeds_pb2.BulkLoadHeader(load_id="max-chunk", mode=feeds_pb2.LOAD_MODE_DELTA)
        ),
        feeds_pb2.BulkLoadRequest(chunk=chunk),
        feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=rows, chunks=1)),
    ]
    assert messages[1].ByteSize() > 2_000_000
    response = feeds.BulkLoad(iter(messages), timeout=120)
    assert response.rows == rows
    assert response.positions_written == rows


# ---------------------------------------------------------------------------- connections


def _idle_sockets(port: int, count: int) -> list[socket.socket]:
    """Half say the HTTP/2 preface and idle; half connect and send nothing at all."""
    sockets = []
    for i in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2 == 0:
            connection.sendall(HTTP2_PREFACE)
        sockets.append(connection)
    return sockets


def _closed_by_server(connection: socket.socket, timeout_s: float) -> bool:
    """Reads until the server closes the connection (True) or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        connection.settimeout(remaining)
        try:
            if not connection.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


@pytest.fixture
def small_server() -> Iterator[ServerThread]:
    """20 connections at most; idle ones closed after 1 s."""
    config = Config(port=0, metrics_port=-1, max_connections=20, connection_idle_timeout_s=1.0)
    with running_server(config) as running:
        yield running


def test_idle_connections_beyond_the_limit_do_not_lock_out_new_clients(
    small_server: ServerThread,
) -> None:
    """40 idle connections against max_connections=20: a new client still gets health SERVING
    and a real call answered, and every idle connection is closed by the idle timeout."""
    sockets = _idle_sockets(small_server.port, 40)
    try:
        channel = small_server.channel()
        api = Stubs.on(channel)
        request = health_pb2.HealthCheckRequest()
        response = api.health.Check(request, timeout=30, wait_for_ready=True)
        assert response.status == SERVING
        status = api.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=30, wait_for_ready=True)
        assert status.version
        assert all(_closed_by_server(connection, 15.0) for connection in sockets)
    finally:
        for connection in sockets:
            connection.close()


@pytest.mark.grpc
def test_connections_over_the_limit_are_refused_at_once() -> None:
    """With a long idle timeout, connections beyond max_connections are closed on accept."""
    config = Config(port=0, metrics_port=-1, max_connections=20, connection_idle_timeout_s=60.0)
    with running_server(config) as server:
        sockets = []
        try:
            for _ in range(30):
                connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                connection.sendall(HTTP2_PREFACE)
                sockets.append(connection)
            closed = sum(_closed_by_server(connection, 0.5) for connection in sockets)
            assert closed == 10
        finally:
            for connection in sockets:
                connection.close()


def test_connection_limit_keeps_the_fd_reserve() -> None:
    """max_connections is capped to the open-files limit minus fd_reserve; no room is an error."""
    config = Config(max_connections=10_000, fd_reserve=256)
    assert connection_limit(config, 1024) == 768
    assert connection_limit(config, 1_000_000) == 10_000
    with pytest.raises(OSError, match="fd_reserve"):
        connection_limit(config, 200)


@pytest.mark.durable
def test_serve_raises_the_open_files_soft_limit_to_the_hard_limit() -> None:
    """raise_fd_limit lifts a lowered soft RLIMIT_NOFILE back to the hard limit (in a child
    whose limits are set first: soft 256, hard 4096, lowering being always allowed)."""
    script = (
        "import resource\n"
        "from atpd.service.transport import raise_fd_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=dict(os.environ),
    )
    assert result.stdout.split() == ["4096", "4096"]


# ---------------------------------------------------------------------------- reflection v1


def test_reflection_v1_lists_services(server: ServerThread) -> None:
    """grpc.reflection.v1 answers list_services (newer clients ask it first) with the API
    services, health and both reflection versions, and describes its own service."""
    reflect = server.channel().stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        # The v1 messages are byte-for-byte the v1alpha ones.
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]
    listed, described = list(reflect(iter(requests), timeout=RPC_TIMEOUT_S))
    names = {service.name for service in listed.list_services_response.service}
    assert {
        "atpd.v1.ReservationService",
        "atpd.v1.AvailabilityService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    assert described.WhichOneof("message_response") == "file_descriptor_response"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.core
def test_healthz_follows_the_serving_flag() -> None:
    """/healthz on the metrics listener answers 200 SERVING or 503 NOT_SERVING as the flag
    says, and /metrics is still served beside it."""
    serving = [False]
    metrics = Metrics()
    port = metrics.serve_http("127.0.0.1", 0, serving=lambda: serving[0])
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz") == (503, "NOT_SERVING\n")
        serving[0] = True
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "SERVING\n")
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "atpd_rpc_calls" in body
    finally:
        assert metrics.http_server is not None
        metrics.http_server.shutdown()
        metrics.http_server.server_close()


@pytest.mark.durable
def test_healthz_answers_while_the_grpc_port_is_flooded(tmp_path: Path) -> None:
    """With every gRPC connection slot taken by idle connections, a probe of /healthz on the
    metrics listener (apart from the gRPC port and its limit) still answers SERVING."""
    config_file = tmp_path / "atpd.toml"
    config_file.write_text("max_connections = 5\nconnection_idle_timeout_s = 60.0\n")
    metrics_port = free_port()
    with daemon(
        tmp_path / "data",
        tmp_path,
        extra_args=["--config", str(config_file), "--metrics-port", str(metrics_port)],
    ) as server:
        server.start()
        sockets = []
        try:
            for _ in range(10):
                connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                connection.sendall(HTTP2_PREFACE)
                sockets.append(connection)
            assert sum(_closed_by_server(connection, 0.5) for connection in sockets) >= 4
            assert _get(f"http://127.0.0.1:{metrics_port}/healthz") == (200, "SERVING\n")
        finally:
            for connection in sockets:
                connection.close()


@pytest.mark.core
def test_idle_metrics_connections_are_bounded_and_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections to the metrics listener that send nothing hold at most
    MAX_METRICS_CONNECTIONS threads (the rest are closed at once) and are dropped after the
    read timeout, after which /healthz answers again."""
    monkeypatch.setattr(metrics_module, "MAX_METRICS_CONNECTIONS", 4)
    monkeypatch.setattr(metrics_module._QuietHandler, "timeout", 0.5)
    metrics = Metrics()
    port = metrics.serve_http("127.0.0.1", 0, serving=lambda: True)
    baseline = threading.active_count()
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
    try:
        time.sleep(0.2)
        assert threading.active_count() - baseline <= 4
        closed = sum(_closed_by_server(connection, 0.2) for connection in sockets)
        assert closed >= 8
        time.sleep(1.0)  # the idle ones pass the read timeout
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "SERVING\n")
    finally:
        for connection in sockets:
            connection.close()
        assert metrics.http_server is not None
        metrics.http_server.shutdown()
        metrics.http_server.server_close()
