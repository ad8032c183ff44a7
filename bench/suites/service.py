"""In-process cost of the gRPC servicer methods (decode done, no transport): what atpd adds on
top of a bare grpc.aio server per call, to explain `grpc_unary_capacity_ratio`."""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from atpd.core.state import AtpState
from bench import fixtures
from bench.registry import Context, Figure, benchmark
from bench.timing import perf_counter_ns, trial_p50s_us

DEMO_NOW_MS = 1_000_000


def _batch_mean_us(call: Any, rounds: int, size: int = 20) -> float:
    means = []
    for _ in range(rounds):
        t0 = perf_counter_ns()
        for _ in range(size):
            call()
        means.append((perf_counter_ns() - t0) / size)
    return round(statistics.median(means) / 1000, 3)


@benchmark("service_availability_us_p50", "us")
def service_availability(ctx: Context) -> Figure:
    """`AvailabilityServicer.GetAvailability(request)` awaited in-process on the demo data set,
    one popular SKU per request (the gRPC capacity query): validation, core, response building
    and metrics, without transport or (de)serialization."""
    from atpd.service import convert, validation
    from atpd.service.engine import Engine
    from atpd.service.servicers import AvailabilityServicer
    from atpd.v1 import availability_pb2
    from bench.suites.grpc_capacity import query_sku

    state: AtpState = ctx.fixture("demo_state", lambda: fixtures.demo_state(DEMO_NOW_MS))
    engine = Engine(state)
    servicer = AvailabilityServicer(engine)
    request = availability_pb2.GetAvailabilityRequest(skus=[query_sku()])
    rounds = ctx.size(3000, 600)

    async def measure() -> list[float]:
        singles: list[float] = []
        for _ in range(rounds // 10):  # warm-up
            await servicer.GetAvailability(request, None)
        for _ in range(rounds):
            t0 = perf_counter_ns()
            await servicer.GetAvailability(request, None)
            singles.append(perf_counter_ns() - t0)
        return singles

    singles = asyncio.run(measure())
    skus, node_ids, geo_prefix = validation.availability_query(request, state.limits)
    view = state.availability(skus, node_ids, geo_prefix)
    response = convert.availability_response(state, view, False, DEMO_NOW_MS)
    raw_request = request.SerializeToString()
    metrics = engine.metrics
    latency = metrics.rpc_latency.labels("GetAvailability")
    part_rounds = ctx.size(500, 100)

    def record_metrics() -> None:
        latency.observe(1e-4)
        metrics.rpc_calls.labels("GetAvailability", "OK").inc()

    parts = {
        "validation.availability_query": _batch_mean_us(
            lambda: validation.availability_query(request, state.limits), part_rounds
        ),
        "state.availability (core)": _batch_mean_us(
            lambda: state.availability(skus, node_ids, geo_prefix), part_rounds
        ),
        "convert.availability_response": _batch_mean_us(
            lambda: convert.availability_response(state, view, False, DEMO_NOW_MS), part_rounds
        ),
        "metrics (histogram observe + counter labels/inc)": _batch_mean_us(
            record_metrics, part_rounds
        ),
    }
    framework = {
        "request FromString (also in the echo server)": _batch_mean_us(
            lambda: availability_pb2.GetAvailabilityRequest.FromString(raw_request), part_rounds
        ),
        "response SerializeToString (also in the echo server)": _batch_mean_us(
            response.SerializeToString, part_rounds
        ),
    }
    p50_us = round(statistics.median(singles) / 1000, 3)
    details: dict[str, Any] = {
        "single_us_p50": p50_us,
        "single_us_p99": round(sorted(singles)[int(len(singles) * 0.99) - 1] / 1000, 3),
        "trial_single_us_p50": trial_p50s_us(singles),
        "breakdown_us": parts,
        "framework_us": framework,
        "geo_entries_in_response": len(response.items[0].geo),
        "response_bytes": len(response.SerializeToString()),
        "summary_keys": ["single_us_p99", "trial_single_us_p50", "geo_entries_in_response"],
    }
    return Figure(
        p50_us,
        details,
        "p50 of single awaited servicer calls (perf_counter_ns); breakdown from batch means",
    )
