"""The baseline for `unary_reserve_cpu_vs_floor_ratio`: a bare grpc.aio server with one trivial
servicer registered for atpd's `/atpd.v1.ReservationService/Reserve` and `.../Release`, that
decodes each request like any servicer and answers a fixed, pre-built response (atpd's own
answers to a real Reserve and Release, so the same size on the wire), serialized per call.

    python -m bench.echo_reservations PORT RESERVE_RESPONSE_FILE RELEASE_RESPONSE_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

from atpd.v1 import reservations_pb2
from bench.echo_server import serve_methods

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

    await serve_methods(
        port,
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


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
