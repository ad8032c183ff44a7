"""The baseline for `unary_reserve_cpu_vs_floor_ratio`: a bare grpc.aio server with one trivial
servicer registered for atpd's `/atpd.v1.ReservationService/Reserve` and `.../Release`, that
decodes each request like any servicer and answers a fixed, pre-built response (atpd's own
answers to a real Reserve and Release, so the same size on the wire), serialized per call.

    python -m bench.echo_reservations PORT RESERVE_RESPONSE_FILE RELEASE_RESPONSE_FILE
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

from atpd.v1 import reservations_pb2

SERVICE = "atpd.v1.ReservationService"


async def serve(port: int, reserve_path: Path, release_path: Path) -> None:
    reserved = reservations_pb2.ReserveResponse.FromString(reserve_path.read_bytes())
    released = reservations_pb2.ReservationResponse.FromString(release_path.read_bytes())

    async def reserve(
        request: reservations_pb2.ReserveRequest, context: Any
    ) -> reservations_pb2.ReserveResponse:
        return reserved

    async def release(
        request: reservations_pb2.ReleaseRequest, context: Any
    ) -> reservations_pb2.ReservationResponse:
        return released

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Reserve": grpc.unary_unary_rpc_method_handler(
                reserve,
                request_deserializer=reservations_pb2.ReserveRequest.FromString,
                response_serializer=reservations_pb2.ReserveResponse.SerializeToString,
            ),
            "Release": grpc.unary_unary_rpc_method_handler(
                release,
                request_deserializer=reservations_pb2.ReleaseRequest.FromString,
                response_serializer=reservations_pb2.ReservationResponse.SerializeToString,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
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
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
