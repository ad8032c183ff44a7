"""Server processes for the gRPC benchmarks: start pinned to a CPU, wait for health SERVING,
stop with SIGTERM (then SIGKILL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_split() -> tuple[set[int], set[int]]:
    """(server CPUs, load generator CPUs): one core for the single-process server, the rest
    for the load generator. On a single core both share it."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


def atpd_command(port: int, data_dir: Path, demo: bool = True) -> list[str]:
    script = Path(sys.executable).with_name("atpd")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "atpd.cli"]
    command = [*base, "serve", "--port", str(port), "--metrics-port", "-1"]
    command += ["--data-dir", str(data_dir)]
    return [*command, "--demo"] if demo else command


@dataclass
class ServerProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def wait_serving(self, timeout_s: float) -> float:
        """Poll grpc.health.v1 until SERVING; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - started
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} not SERVING after {timeout_s} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process (all its threads) used so far."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start(
    name: str, command: Sequence[str], port: int, cpus: set[int], log_dir: Path
) -> ServerProcess:
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
    finally:
        log_file.close()
    return ServerProcess(name, port, process, log_path)
