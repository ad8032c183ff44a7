"""What TLS and bearer tokens cost: GetAvailability capacity of `atpd serve --demo` with TLS and
a token over the same server in plaintext without one, same load generator, same run."""

from __future__ import annotations

import statistics
import time
from typing import Any

import grpc
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atpd.service.tokens import create_token
from atpd.v1 import availability_pb2
from bench import load, servers
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.grpc_capacity import METHOD_PATH, query_sku

PROCESSES_STREAMS = 64


def _wait_serving_tls(server: servers.ServerProcess, root_pem: bytes, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    credentials = grpc.ssl_channel_credentials(root_pem)
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{server.name} not SERVING after {timeout_s} s:\n{server.log_tail()}")


@benchmark("tls_auth_overhead_ratio", "ratio", Target(">=", 0.8))
def tls_auth_overhead_ratio(ctx: Context) -> Figure:
    """GetAvailability calls per second with TLS and a bearer token (reader role) divided by
    the same load in plaintext without one; two `atpd serve --demo --in-memory` on one core,
    Python grpc.aio load processes on the other (h2load would need the token header and TLS
    set up per run; one generator for both keeps the ratio fair); median of alternating rounds."""
    rounds = ctx.size(3, 1)
    seconds = ctx.size(5, 3)
    server_cpus, load_cpus = servers.cpu_split()
    request = availability_pb2.GetAvailabilityRequest(skus=[query_sku()]).SerializeToString()
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = ctx.scratch / "server.pem", ctx.scratch / "server.key"
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    tokens_file = ctx.scratch / "tokens.toml"
    tokens_file.unlink(missing_ok=True)
    token, _ = create_token(tokens_file, "bench-reader", "reader", int(time.time() * 1000))
    root_pem = ca.cert_pem.bytes()
    processes = max(1, len(load_cpus))

    started: list[servers.ServerProcess] = []
    measured: dict[str, list[float]] = {"plain": [], "secure": []}
    try:
        plain_port = servers.free_port()
        plain_command = servers.atpd_command(plain_port, ctx.scratch / "plain-data")
        plain = servers.start(
            "plain", [*plain_command, "--in-memory"], plain_port, server_cpus, ctx.scratch
        )
        started.append(plain)
        plain.wait_serving(180)
        secure_port = servers.free_port()
        secure_command = servers.atpd_command(secure_port, ctx.scratch / "secure-data")
        secure_command += [
            "--in-memory",
            "--tls-cert",
            str(cert_file),
            "--tls-key",
            str(key_file),
            "--tokens-file",
            str(tokens_file),
        ]
        secure = servers.start("secure", secure_command, secure_port, server_cpus, ctx.scratch)
        started.append(secure)
        _wait_serving_tls(secure, root_pem, 180)

        def one_round(name: str, duration_s: float) -> float:
            tls: dict[str, Any] = {"root_pem": root_pem, "token": token} if name == "secure" else {}
            port = secure_port if name == "secure" else plain_port
            result = load.run_python_load(
                port,
                METHOD_PATH,
                request,
                duration_s,
                processes,
                PROCESSES_STREAMS,
                load_cpus,
                **tls,
            )
            ctx.log(f"  {name:6s} {result.requests_per_s:9.0f} calls/s")
            return result.requests_per_s

        for name in ("plain", "secure"):
            one_round(name, 1.5)  # warm-up: connections, TLS handshakes, first-call paths
        for _ in range(rounds):
            for name in ("plain", "secure"):
                measured[name].append(one_round(name, seconds))
    finally:
        for server in started:
            server.stop()
    plain_rate = statistics.median(measured["plain"])
    secure_rate = statistics.median(measured["secure"])
    return Figure(
        round(secure_rate / plain_rate, 3),
        {
            "secure_requests_per_s": round(secure_rate),
            "plain_requests_per_s": round(plain_rate),
            "round_ratios": [
                round(s / p, 3) for s, p in zip(measured["secure"], measured["plain"], strict=True)
            ],
            "load_generator": "python grpc.aio client processes",
            "rounds": rounds,
            "seconds_per_round": seconds,
            "summary_keys": ["secure_requests_per_s", "plain_requests_per_s"],
        },
        f"median calls/s with TLS + bearer token over plaintext without, {rounds} alternating "
        f"rounds of {seconds} s ({processes} client processes x {PROCESSES_STREAMS} streams)",
    )
