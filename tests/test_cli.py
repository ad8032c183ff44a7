"""The `atpd` command line: help for every command, argument errors, client commands against
an in-process server, and `atpd serve` started and stopped with SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from atpd import __version__
from atpd.cli.entry import build_parser
from atpd.config import Config
from atpd.core.commands import NodeKind, UpsertNode
from atpd.service.server import App, create_server, start, stop
from atpd.service.validation import set_stock
from atpd.v1 import inventory_pb2

COMMAND_TIMEOUT_S = 60.0
# The commands the CLI docstring promises; the parser may offer more (all are checked).
DOCUMENTED = frozenset(
    ("serve", "availability", "reserve", "confirm", "release", "get", "fulfil", "nodes", "status")
)


def subcommands() -> list[str]:
    parser = build_parser()
    [group] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(group.choices)


SUBCOMMANDS = subcommands()
NODES = {"paris": ("EU", "FR", "Paris"), "lyon": ("EU", "FR", "Lyon"), "soho": ("NA", "US", "NYC")}


def atpd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


class InProcessServer:
    """An atpd server on port 0 on an event loop thread, seeded with NODES and some stock."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.app: App = self._run(self._boot())
        self.target = f"127.0.0.1:{self.app.port}"

    def _run(self, coroutine: Coroutine[Any, Any, App]) -> App:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(COMMAND_TIMEOUT_S)

    async def _boot(self) -> App:
        app = create_server(Config(port=0, metrics_port=-1))
        await start(app)
        engine = app.engine
        for node_id, geo_path in NODES.items():
            engine.state.apply(UpsertNode(node_id, NodeKind.STORE, geo_path), engine.now_ms())
        for node_id, on_hand in (("paris", 5), ("lyon", 3), ("soho", 2)):
            request = inventory_pb2.SetStockRequest(
                sku="BAG-1", node_id=node_id, on_hand=on_hand, source_sequence=1
            )
            await engine.execute(set_stock(request))
        return app

    def close(self) -> None:
        async def shutdown() -> None:
            await stop(self.app, grace_s=1.0)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(COMMAND_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(COMMAND_TIMEOUT_S)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    running = InProcessServer()
    try:
        yield running
    finally:
        running.close()


# ---------------------------------------------------------------------------- help and usage


@pytest.mark.durable
def test_top_level_help_lists_every_command() -> None:
    """`atpd --help` (the installed console script) exits 0 and lists every subcommand."""
    script = Path(sys.executable).with_name("atpd")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    assert set(SUBCOMMANDS) >= DOCUMENTED
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


@pytest.mark.durable
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_exits_zero(command: str) -> None:
    """`atpd <command> --help` exits 0 and prints that command's usage."""
    result = atpd(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: atpd {command}")


@pytest.mark.durable
def test_version() -> None:
    """`atpd --version` prints the package version."""
    result = atpd("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"atpd {__version__}")


@pytest.mark.durable
def test_no_command_is_a_usage_error() -> None:
    """`atpd` with no command is a usage error (exit 2) naming what is missing."""
    result = atpd()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


@pytest.mark.durable
def test_reserve_with_a_malformed_line_is_a_usage_error() -> None:
    """`atpd reserve` with a line not shaped SKU@NODE=QTY exits 2 naming the line and shape."""
    for bad in ("BAG-1@paris", "BAG-1@paris=-1"):
        result = atpd("reserve", "cart-1", bad, "--target", "127.0.0.1:1")
        assert result.returncode == 2, bad
        assert f"{bad!r} is not a line like SKU@NODE=QTY" in result.stderr
        assert result.stdout == ""


@pytest.mark.durable
def test_reserve_with_a_malformed_ttl_is_a_usage_error() -> None:
    """`atpd reserve --ttl` with something that is not a duration exits 2 saying so."""
    result = atpd("reserve", "cart-1", "BAG-1@paris=1", "--ttl", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration" in result.stderr


def test_serve_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    """`atpd serve --config` naming a missing file exits 2 with a config error."""
    result = atpd("serve", "--config", str(tmp_path / "nope.toml"), "--port", "0")
    assert result.returncode == 2
    assert "config error" in result.stderr
    assert "nope.toml" in result.stderr


# ---------------------------------------------------------------------------- against a server


def test_availability_reserve_release_end_to_end(server: InProcessServer) -> None:
    """`availability`, `reserve`, `release` against a live server print the expected tables."""
    target = ("--target", server.target)
    shown = atpd("availability", "BAG-1", "NOPE", *target)
    assert shown.returncode == 0, shown.stderr
    assert "BAG-1: 10 available" in shown.stdout
    assert "NOPE: 0 available (unknown SKU)" in shown.stdout
    lines = shown.stdout.splitlines()
    assert re.search(r"^geo\s+atp$", lines[1])
    assert any(re.fullmatch(r"EU\s+8", x) for x in lines)
    assert any(re.fullmatch(r"\s+EU/FR\s+8", x) for x in lines)
    assert any(re.fullmatch(r"NA\s+2", x) for x in lines)

    reserved = atpd("reserve", "cart-1", "BAG-1@paris=2", "BAG-1@soho=1", "--ttl", "15m", *target)
    assert reserved.returncode == 0, reserved.stderr
    assert re.match(r"outcome: OK\nreservation cart-1: HELD \S.*\d", reserved.stdout)
    assert re.search(r"^BAG-1\s+paris\s+2\s+0$", reserved.stdout, re.MULTILINE)
    assert re.search(r"^BAG-1\s+soho\s+1\s+0$", reserved.stdout, re.MULTILINE)

    nodes = atpd("availability", "BAG-1", "--geo", "EU/FR", "--nodes", *target)
    assert nodes.returncode == 0, nodes.stderr
    assert "BAG-1: 6 available" in nodes.stdout
    assert re.search(r"^paris\s+5\s+2\s+0\s+3$", nodes.stdout, re.MULTILINE)

    released = atpd("release", "cart-1", *target)
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith("outcome: OK\nreservation cart-1: RELEASED")
    assert re.search(r"^BAG-1\s+paris\s+2\s+0$", released.stdout, re.MULTILINE)
    assert "BAG-1: 10 available" in atpd("availability", "BAG-1", *target).stdout


def test_only_a_held_reservation_is_shown_with_an_expiry(server: InProcessServer) -> None:
    """`atpd get` prints an expiry time for a HELD reservation only, not for a RELEASED one."""
    target = ("--target", server.target)
    held = atpd("reserve", "cart-2", "BAG-1@lyon=1", *target)
    assert held.returncode == 0, held.stderr
    assert re.search(r"^reservation cart-2: HELD \S.*\d", held.stdout, re.MULTILINE)
    assert atpd("release", "cart-2", *target).returncode == 0
    shown = atpd("get", "cart-2", *target)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1] == "reservation cart-2: RELEASED"


def test_client_exit_codes_for_refusals_and_errors(server: InProcessServer) -> None:
    """A refused reserve exits 3 with its shortages; a gRPC error exits 1 with CODE: details."""
    target = ("--target", server.target)
    short = atpd("reserve", "cart-9", "BAG-1@lyon=4", *target)
    assert short.returncode == 3
    assert short.stdout.startswith("outcome: INSUFFICIENT_STOCK\n")
    assert re.search(r"^BAG-1\s+lyon\s+4\s+3\s+STOCK$", short.stdout, re.MULTILINE)
    missing = atpd("get", "no-such-cart", *target)
    assert missing.returncode == 1
    assert missing.stderr.startswith("atpd: NOT_FOUND: reservation_id:")
    unknown_node = atpd("reserve", "cart-9", "BAG-1@madrid=1", *target)
    assert unknown_node.returncode == 1
    assert "NOT_FOUND" in unknown_node.stderr


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    """`atpd serve --port 0` logs its port, answers `atpd status`, and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atpd.cli",
            "serve",
            "--port",
            "0",
            "--metrics-port",
            "-1",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stderr() -> None:
        assert process.stderr is not None
        for text in process.stderr:
            lines.put(text)
        lines.put(None)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    log: list[str] = []
    try:
        port = None
        while port is None:
            text = lines.get(timeout=COMMAND_TIMEOUT_S)
            assert text is not None, "".join(log)
            log.append(text)
            match = re.search(r"ready in [\d.]+ s on port (\d+)", text)
            if match:
                port = int(match.group(1))
        status = atpd("status", "--target", f"127.0.0.1:{port}")
        assert status.returncode == 0, status.stderr
        assert re.search(rf"^version\s+{re.escape(__version__)}$", status.stdout, re.MULTILINE)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=COMMAND_TIMEOUT_S)
        reader.join(COMMAND_TIMEOUT_S)
        assert process.stderr is not None
        process.stderr.close()
    while (text := lines.get(timeout=COMMAND_TIMEOUT_S)) is not None:
        log.append(text)
    assert returncode == 0, "".join(log)
    assert "stopped" in log[-1], "".join(log)


# ---------------------------------------------------------------------------- files named by flags

NOT_REGULAR_FILE_TIMEOUT_S = 30.0


def _unusable_file(kind: str, tmp_path: Path) -> Path:
    """A path that is not a readable regular file of a sane size."""
    if kind == "device":
        return Path("/dev/zero")
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
        return path
    if kind == "fifo":
        path = tmp_path / "a-fifo"
        os.mkfifo(path)
        return path
    assert kind == "huge"
    path = tmp_path / "huge.toml"
    with path.open("wb") as file:
        file.truncate(64 << 20)  # sparse: 64 MiB of zeros without writing them
    return path


EXPECTED_PROBLEM = {
    "device": "character device",
    "directory": "directory",
    "fifo": "FIFO",
    "huge": "bytes",
}


def _run_quickly(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=NOT_REGULAR_FILE_TIMEOUT_S,
        check=False,
    )


def _assert_one_line_refusal(
    result: subprocess.CompletedProcess[str], path: Path, kind: str
) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert EXPECTED_PROBLEM[kind] in lines[0]


@pytest.mark.parametrize("kind", sorted(EXPECTED_PROBLEM))
@pytest.mark.parametrize("flag", ["--config", "--rules"])
def test_serve_refuses_a_config_or_rules_file_that_is_not_a_regular_file(
    flag: str, kind: str, tmp_path: Path
) -> None:
    """`atpd serve --config/--rules` naming /dev/zero, a directory, a FIFO or a huge file exits
    non-zero at once with one line naming the file and the problem."""
    path = _unusable_file(kind, tmp_path)
    result = _run_quickly(
        "serve", flag, str(path), "--in-memory", "--port", "0", "--metrics-port", "-1"
    )
    _assert_one_line_refusal(result, path, kind)


@pytest.mark.parametrize("kind", sorted(EXPECTED_PROBLEM))
def test_rules_apply_refuses_a_file_that_is_not_a_regular_file(kind: str, tmp_path: Path) -> None:
    """`atpd rules apply` refuses a device, directory, FIFO or huge file before any call."""
    path = _unusable_file(kind, tmp_path)
    result = _run_quickly("rules", "apply", "--target", "127.0.0.1:1", str(path))
    _assert_one_line_refusal(result, path, kind)


@pytest.mark.parametrize("kind", ["device", "directory", "fifo"])
def test_load_refuses_an_input_that_is_not_a_regular_file(kind: str, tmp_path: Path) -> None:
    """`atpd load` refuses a device, directory or FIFO as its input, naming the problem."""
    path = _unusable_file(kind, tmp_path)
    result = _run_quickly("load", "--target", "127.0.0.1:1", "--mode", "delta", str(path))
    _assert_one_line_refusal(result, path, kind)
