"""Load generators for unary gRPC calls with one pre-encoded request: h2load when installed,
else a multi-process Python grpc.aio client. Both report completed calls per second."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests_per_s: float
    succeeded: int
    failed: int
    data_bytes: int  # response DATA bytes received (gRPC frames: 5-byte prefix + message)
    mean_latency_ms: float
    raw: str

    def data_bytes_per_request(self) -> float:
        return self.data_bytes / self.succeeded if self.succeeded else 0.0


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


_FINISHED = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")
_LATENCY = re.compile(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)")


def run_h2load(
    port: int,
    path: str,
    body_file: Path,
    requests: int,
    clients: int,
    streams: int,
    cpus: set[int],
) -> LoadResult:
    command = [
        "h2load",
        "-t",
        "1",
        "-c",
        str(clients),
        "-m",
        str(streams),
        "-n",
        str(requests),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-d",
        str(body_file),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    text = out.stdout + out.stderr
    finished, counts, traffic = (p.search(text) for p in (_FINISHED, _REQUESTS, _TRAFFIC))
    if out.returncode != 0 or not (finished and counts and traffic):
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{text[-3000:]}")
    latency = _LATENCY.search(text)
    mean_ms = 0.0
    if latency:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
        mean_ms = float(latency.group(1)) * scale
    return LoadResult(
        requests_per_s=float(finished.group(1)),
        succeeded=int(counts.group(1)),
        failed=int(counts.group(2)),
        data_bytes=int(traffic.group(3)),
        mean_latency_ms=round(mean_ms, 3),
        raw=text,
    )


# ---------------------------------------------------------------------------- Python fallback


async def _client_loop(
    target: str,
    path: str,
    request: bytes,
    seconds: float,
    streams: int,
    root_pem: bytes | None = None,
    token: str | None = None,
) -> int:
    """Calls for `seconds`; over TLS trusting `root_pem` (to `localhost`) when given, with
    `authorization: Bearer <token>` on every call when given."""
    import grpc

    if root_pem is None:
        opened = grpc.aio.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(root_pem)
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        opened = grpc.aio.secure_channel(target.replace("127.0.0.1", "localhost"), credentials)
    async with opened as channel:
        # No serializers: bytes in, bytes out.
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        deadline = time.monotonic() + seconds
        done = 0

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await call(request, timeout=10)
                done += 1

        await asyncio.gather(*(worker() for _ in range(streams)))
        return done


def _client_process(
    args: tuple[str, str, bytes, float, int, set[int], bytes | None, str | None],
) -> int:
    target, path, request, seconds, streams, cpus, root_pem, token = args
    os.sched_setaffinity(0, cpus)
    return asyncio.run(_client_loop(target, path, request, seconds, streams, root_pem, token))


def run_python_load(
    port: int,
    path: str,
    request: bytes,
    seconds: float,
    processes: int,
    streams: int,
    cpus: set[int],
    root_pem: bytes | None = None,
    token: str | None = None,
) -> LoadResult:
    """`processes` client processes with `streams` concurrent calls each, for `seconds`
    (over TLS with a bearer token when `root_pem` / `token` are given)."""
    context = multiprocessing.get_context("spawn")
    args = (f"127.0.0.1:{port}", path, request, seconds, streams, cpus, root_pem, token)
    with context.Pool(processes) as pool:
        counts = pool.map(_client_process, [args] * processes)
    total = sum(counts)
    return LoadResult(total / seconds, total, 0, 0, 0.0, f"calls per process: {counts}")
