"""The baseline for `grpc_unary_capacity_ratio`: a bare grpc.aio server with one trivial
servicer registered for atpd's method name, `/atpd.v1.AvailabilityService/GetAvailability`,
that decodes the request like any servicer and answers a fixed, pre-built response (atpd's own
answer to the same query, so the same size on the wire), serialized per call by protobuf.

    python -m bench.echo_server PORT RESPONSE_FILE
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from atpd.v1 import availability_pb2

SERVICE = "atpd.v1.AvailabilityService"


async def serve(port: int, response_path: Path) -> None:
    response = availability_pb2.GetAvailabilityResponse.FromString(response_path.read_bytes())

    async def get_availability(
        request: availability_pb2.GetAvailabilityRequest, context: Any
    ) -> availability_pb2.GetAvailabilityResponse:
        return response

    await serve_methods(
        port,
        SERVICE,
        {
            "GetAvailability": grpc.unary_unary_rpc_method_handler(
                get_availability,
                request_deserializer=availability_pb2.GetAvailabilityRequest.FromString,
                response_serializer=availability_pb2.GetAvailabilityResponse.SerializeToString,
            )
        },
    )


async def serve_methods(port: int, service: str, methods: dict[str, Any]) -> None:
    """A bare grpc.aio server on 127.0.0.1:port answering `methods` of `service` (and health),
    until SIGTERM or SIGINT: the floor atpd's per-call cost is measured against."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
