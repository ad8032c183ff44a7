"""A first `atpd serve --demo` turns SERVING only once the demo rules are in force."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atpd.v1 import rules_pb2, rules_pb2_grpc

# Tier (tests/conftest.py): starts atpd in a subprocess.
pytestmark = pytest.mark.durable

SOURCE_ROOT = Path(__file__).parents[2] / "src"
SERVING_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 1.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_demo_start_is_serving_only_with_the_demo_rules(tmp_path: Path) -> None:
    """Polling health as fast as possible on a fresh `--demo` start: at the first SERVING
    answer, GetRules already returns the demo rules."""
    port = _free_port()
    environment = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT))
    command = [
        sys.executable,
        "-m",
        "atpd.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        "--metrics-port",
        "-1",
        "--data-dir",
        str(tmp_path / "data"),
        # fsync=always makes the start-up SetRules wait for a disk flush: a wider window for a
        # SERVING answer that comes too early.
        "--fsync",
        "always",
    ]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            rules = rules_pb2_grpc.RulesServiceStub(channel)
            deadline = time.monotonic() + SERVING_TIMEOUT_S
            while True:
                assert time.monotonic() < deadline, log_path.read_text()
                assert process.poll() is None, log_path.read_text()
                try:
                    status = health.Check(
                        health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S
                    ).status
                except grpc.RpcError:
                    continue  # not listening yet
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            answer = rules.GetRules(rules_pb2.GetRulesRequest(), timeout=10)
        assert answer.version
        assert answer.text
        assert answer.channels
    finally:
        process.kill()
        process.wait(30)


DRIVER = """
import asyncio, os, signal
from atpd.config import Config
from atpd.service import server

original = server.App.set_serving

async def recording(self, serving):
    # What a client asking right after this call would see.
    if serving:
        print("SERVING with rules:", repr(self.engine.state.rules.version), flush=True)
    await original(self, serving)
    if serving:
        os.kill(os.getpid(), signal.SIGTERM)

server.App.set_serving = recording
config = Config(port=0, metrics_port=-1)
asyncio.run(server.serve(config, server.ServeOptions(demo=True, in_memory=True)))
"""


def test_serving_is_set_only_after_the_start_up_rules_are_applied() -> None:
    """`serve --demo` flips health to SERVING with the demo rules already in the state (checked
    at the very call that sets SERVING, so no timing is involved)."""
    result = subprocess.run(
        [sys.executable, "-c", DRIVER],
        capture_output=True,
        text=True,
        timeout=SERVING_TIMEOUT_S,
        env=dict(os.environ, PYTHONPATH=str(SOURCE_ROOT)),
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("SERVING")]
    assert lines, result.stdout + result.stderr
    assert lines[0] == "SERVING with rules: 'demo-2026-11'", result.stdout + result.stderr
