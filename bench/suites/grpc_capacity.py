"""gRPC round-trip figures: atpd against a bare grpc.aio server, same load generator, same run."""

from __future__ import annotations

import statistics
import sys
from typing import Any

import grpc

from atpd.v1 import availability_pb2, availability_pb2_grpc
from bench import load, servers
from bench.registry import Context, Figure, Target, benchmark

METHOD_PATH = "/atpd.v1.AvailabilityService/GetAvailability"
CLIENTS = 4
STREAMS_PER_CLIENT = 16


def query_sku() -> str:
    """A SKU real traffic asks for: the first popularity-weighted demo reservation line's."""
    from atpd.demo.dataset import demo_reservation_lines

    return demo_reservation_lines(1, seed=23)[0].sku


def _round(
    ctx: Context,
    server: servers.ServerProcess,
    body_file: Any,
    request: bytes,
    seconds: float,
    load_cpus: set[int],
    rate_guess: float,
) -> dict[str, Any]:
    """One load round of about `seconds` (h2load runs a fixed request count sized from
    `rate_guess`, so every request it sends is counted and checked)."""
    cpu_before = server.cpu_seconds()
    if load.h2load_available():
        result = load.run_h2load(
            server.port,
            METHOD_PATH,
            body_file,
            max(1000, round(rate_guess * seconds)),
            CLIENTS,
            STREAMS_PER_CLIENT,
            load_cpus,
        )
    else:
        result = load.run_python_load(
            server.port, METHOD_PATH, request, seconds, max(1, len(load_cpus)), 64, load_cpus
        )
    cpu_used = server.cpu_seconds() - cpu_before
    if result.failed or result.succeeded == 0:
        raise RuntimeError(f"{server.name}: {result.failed} failed calls\n{result.raw[-2000:]}")
    ctx.log(
        f"  {server.name:5s} {result.requests_per_s:9.0f} calls/s  mean latency "
        f"{result.mean_latency_ms} ms  server CPU {cpu_used:.1f} s"
    )
    return {
        "rate": result.requests_per_s,
        "calls": result.succeeded,
        "data_bytes_per_request": result.data_bytes_per_request(),
        "latency_ms": result.mean_latency_ms,
        "server_cpu_s": cpu_used,
    }


@benchmark("grpc_unary_capacity_ratio", "ratio", Target(">=", 0.9))
def grpc_unary_capacity_ratio(ctx: Context) -> Figure:
    """GetAvailability calls per second (one SKU per request) against `atpd serve --demo`
    divided by the same load against a bare grpc.aio server answering a fixed pre-built
    response for the same method; servers on one core, load generator on the other; the
    median of alternating rounds."""
    rounds = ctx.size(3, 1)
    seconds = ctx.size(5, 3)
    server_cpus, load_cpus = servers.cpu_split()
    sku = query_sku()
    request = availability_pb2.GetAvailabilityRequest(skus=[sku])
    body_file = ctx.scratch / "get_availability.body"
    body_file.write_bytes(load.grpc_frame(request.SerializeToString()))
    generator = "h2load" if load.h2load_available() else "python grpc.aio client processes"
    ctx.log(f"capacity: {generator}; servers on CPUs {server_cpus}, load on {load_cpus}")

    started: list[servers.ServerProcess] = []
    try:
        atpd_port = servers.free_port()
        atpd = servers.start(
            "atpd",
            servers.atpd_command(atpd_port, ctx.scratch / "atpd-data"),
            atpd_port,
            server_cpus,
            ctx.scratch,
        )
        started.append(atpd)
        ready_s = atpd.wait_serving(180)
        ctx.log(f"  atpd SERVING after {ready_s:.1f} s (demo data set loaded)")
        with grpc.insecure_channel(atpd.target) as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            reply = stub.GetAvailability(request, timeout=10)
        assert reply.items[0].known and reply.items[0].total_atp > 0, reply
        response_file = ctx.scratch / "get_availability.response"
        response_file.write_bytes(reply.SerializeToString())
        response_bytes = len(reply.SerializeToString())

        echo_port = servers.free_port()
        echo = servers.start(
            "echo",
            [sys.executable, "-m", "bench.echo_server", str(echo_port), str(response_file)],
            echo_port,
            server_cpus,
            ctx.scratch,
        )
        started.append(echo)
        echo.wait_serving(60)
        with grpc.insecure_channel(echo.target) as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            echoed = stub.GetAvailability(request, timeout=10)
        assert echoed.items[0].total_atp == reply.items[0].total_atp

        # Warm both (channel set-up, first-call paths) and size the rounds, then alternate.
        body = request.SerializeToString()
        rate = {}
        for server in (echo, atpd):
            rate[server.name] = _round(ctx, server, body_file, body, 1.5, load_cpus, 1000)["rate"]
        measured: dict[str, list[dict[str, Any]]] = {"echo": [], "atpd": []}
        for _ in range(rounds):
            for server in (echo, atpd):
                result = _round(ctx, server, body_file, body, seconds, load_cpus, rate[server.name])
                rate[server.name] = result["rate"]
                measured[server.name].append(result)
        # Every call must have carried a whole response: a gRPC error is a trailers-only
        # answer with no DATA, which h2load would still count as a 200.
        expected = response_bytes + 5
        for name, results in measured.items():
            for result in results:
                per_request = result["data_bytes_per_request"]
                if per_request and abs(per_request - expected) > 0.02 * expected:
                    raise RuntimeError(
                        f"{name}: {per_request:.1f} DATA bytes per call, expected {expected}"
                    )
        with grpc.insecure_channel(atpd.target) as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            after = stub.GetAvailability(request, timeout=10)
        assert after.items[0].total_atp == reply.items[0].total_atp
    finally:
        for server in started:
            server.stop()

    atpd_rate = statistics.median(r["rate"] for r in measured["atpd"])
    echo_rate = statistics.median(r["rate"] for r in measured["echo"])
    ratios = [
        a["rate"] / e["rate"] for a, e in zip(measured["atpd"], measured["echo"], strict=True)
    ]
    per_call_us = {
        name: round(statistics.median(r["server_cpu_s"] / r["calls"] for r in results) * 1e6, 1)
        for name, results in measured.items()
    }
    details: dict[str, Any] = {
        "atpd_requests_per_s": round(atpd_rate),
        "echo_requests_per_s": round(echo_rate),
        "round_ratios": [round(r, 3) for r in ratios],
        "atpd_server_cpu_us_per_call": per_call_us["atpd"],
        "echo_server_cpu_us_per_call": per_call_us["echo"],
        "atpd_mean_latency_ms": statistics.median(r["latency_ms"] for r in measured["atpd"]),
        "echo_mean_latency_ms": statistics.median(r["latency_ms"] for r in measured["echo"]),
        "load_generator": generator,
        "concurrency": f"{CLIENTS} connections x {STREAMS_PER_CLIENT} streams",
        "rounds": rounds,
        "seconds_per_round": seconds,
        "sku": sku,
        "response_bytes": response_bytes,
        "summary_keys": [
            "atpd_requests_per_s",
            "echo_requests_per_s",
            "atpd_server_cpu_us_per_call",
            "echo_server_cpu_us_per_call",
        ],
    }
    return Figure(
        round(atpd_rate / echo_rate, 3),
        details,
        f"median atpd calls/s over median echo calls/s, {rounds} alternating rounds of "
        f"{seconds} s each ({generator}, {CLIENTS}x{STREAMS_PER_CLIENT} streams)",
    )
