"""Loads are durable compactly: one load file plus one small journal record; recovery reads the
file back and reaches the same state; files no replayable record names are collected."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service.harness import FakeClock, Stubs, reserve_request

from atpd.persistence.journal import FsyncPolicy
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.recovery import recover
from atpd.v1 import feeds_pb2_grpc

from .support import (
    DELTA,
    FEED_LIMITS,
    FULL,
    DurableServer,
    Row,
    exported,
    load,
    set_stock,
    upsert_nodes,
)

SERVE_TIMEOUT_S = 90.0
POLL_S = 0.05
SEGMENT_BYTES = 64 * 1024 * 1024

ROWS: list[Row] = [
    (f"SKU-{i:02d}", node, (i * 3 + len(node)) % 20, i % 3 or None)
    for i in range(8)
    for node in ("paris", "lyon", "soho")
]


def recovered_digest(data_dir: Path) -> str:
    recovered = recover(
        data_dir,
        limits=FEED_LIMITS,
        fsync_policy=FsyncPolicy.ALWAYS,
        segment_bytes=SEGMENT_BYTES,
    )
    try:
        recovered.state.check_invariants()
        return recovered.state.digest()
    finally:
        recovered.journal.close()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableServer]:
    server = DurableServer(tmp_path / "data", FakeClock())
    try:
        server.start_durable()
        yield server
    finally:
        if not server.loop.is_closed():
            server.crash()


def _populate(server: DurableServer) -> tuple[Stubs, feeds_pb2_grpc.FeedServiceStub]:
    api = server.stubs()
    feeds = feeds_pb2_grpc.FeedServiceStub(server.channel())
    upsert_nodes(api)
    set_stock(api, "SKU-00", "paris", 30, 1)
    set_stock(api, "OLD", "lyon", 9, 1)
    response = api.reservations.Reserve(reserve_request("cart-1", ("SKU-00", "paris", 2)))
    assert response.outcome == 1
    return api, feeds


def test_recovery_after_a_crash_reaches_the_state_loads_left(
    durable: DurableServer,
) -> None:
    """FULL and DELTA loads, then a crash: snapshot + journal + load files give the same digest."""
    api, feeds = _populate(durable)
    load(feeds, "full-1", FULL, ROWS, sequence=5, nodes=["paris", "lyon", "soho"])
    set_stock(api, "SKU-01", "paris", 99, 6)
    load(feeds, "delta-1", DELTA, ROWS[:7], sequence=6)
    digest = durable.digest()
    data_dir = durable.config.data_dir
    durable.crash()
    assert recovered_digest(data_dir) == digest


def test_a_load_is_one_small_journal_record_and_one_file(durable: DurableServer) -> None:
    """The journal grows by one record of a few dozen bytes per load, whatever its rows; the
    rows are in loads/<id>.<nonce>.load."""
    _, feeds = _populate(durable)
    data_dir = durable.config.data_dir
    journal_before = sum(p.stat().st_size for p in data_dir.glob("journal-*.seg"))
    many: list[Row] = [(f"S{i}", "berlin", i, None) for i in range(40)]
    load(feeds, "big", DELTA, many, chunk_rows=10)
    journal_growth = sum(p.stat().st_size for p in data_dir.glob("journal-*.seg")) - journal_before
    files = list((data_dir / "loads").glob("big.*.load"))
    assert len(files) == 1
    assert 0 < journal_growth < 200
    assert files[0].stat().st_size > 40 * 12


def test_a_replayed_load_id_survives_recovery(durable: DurableServer) -> None:
    """After recovery, the same load id is still answered from its stored summary."""
    _, feeds = _populate(durable)
    first = load(feeds, "once", DELTA, ROWS, sequence=2)
    data_dir = durable.config.data_dir
    durable.crash()
    again_server = DurableServer(data_dir, FakeClock(2_000_000_000_000))
    try:
        again_server.start_durable()
        feeds = feeds_pb2_grpc.FeedServiceStub(again_server.channel())
        digest = again_server.digest()
        again = load(feeds, "once", DELTA, ROWS, sequence=2, chunk_rows=5)
        assert again.replayed and again.positions_written == first.positions_written
        assert again_server.digest() == digest
    finally:
        again_server.crash()


def test_load_files_are_collected_once_a_kept_snapshot_covers_them(
    durable: DurableServer,
) -> None:
    """After two snapshots past a load, the next load deletes its file; recovery still agrees."""
    api, feeds = _populate(durable)
    loads_dir = durable.config.data_dir / "loads"
    load(feeds, "first", DELTA, ROWS[:5], sequence=2)
    durable.snapshot()
    set_stock(api, "X", "soho", 1, 1)
    durable.snapshot()  # the oldest kept snapshot now includes "first"
    assert [p.name.split(".")[0] for p in loads_dir.glob("*.load")] == ["first"]
    load(feeds, "second", DELTA, ROWS[5:9], sequence=3)
    assert [p.name.split(".")[0] for p in loads_dir.glob("*.load")] == ["second"]
    digest = durable.digest()
    data_dir = durable.config.data_dir
    durable.crash()
    assert recovered_digest(data_dir) == digest


def test_a_load_file_still_needed_is_kept(durable: DurableServer) -> None:
    """A file whose record follows the oldest kept snapshot survives the next load (recovery
    may fall back to that snapshot and replay the load)."""
    _, feeds = _populate(durable)
    loads_dir = durable.config.data_dir / "loads"
    durable.snapshot()
    load(feeds, "first", DELTA, ROWS[:5], sequence=2)
    durable.snapshot()  # the newest covers "first", the oldest kept does not
    load(feeds, "second", DELTA, ROWS[5:9], sequence=3)
    names = sorted(p.name.split(".")[0] for p in loads_dir.glob("*.load"))
    assert names == ["first", "second"]


def test_recovery_refuses_a_damaged_load_file_naming_the_load(durable: DurableServer) -> None:
    """A load file that fails its checksum stops recovery with the load and record named."""
    _, feeds = _populate(durable)
    load(feeds, "nightly", FULL, ROWS, sequence=5, nodes=["paris", "lyon", "soho"])
    data_dir = durable.config.data_dir
    durable.crash()
    (path,) = (data_dir / "loads").glob("nightly.*.load")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=r"bulk load 'nightly': its file loads/nightly\."):
        recovered_digest(data_dir)


# ---------------------------------------------------------------------------- a real process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _serve(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    source = Path(__file__).parents[2] / "src"
    environment = dict(os.environ, PYTHONPATH=str(source))
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "atpd.cli", "serve", "--port", str(port)),
                *("--metrics-port", "-1", "--data-dir", str(data_dir), "--fsync", "always"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return process, target
            except grpc.RpcError:
                pass
            time.sleep(POLL_S)
    process.kill()
    process.wait()
    raise AssertionError(f"atpd not serving:\n{log.read_text()}")


def test_sigkill_after_a_load_and_restart_serves_the_same_positions(tmp_path: Path) -> None:
    """`atpd serve` killed with SIGKILL right after a load acknowledged: the restarted server
    exports exactly the same positions."""
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    process, target = _serve(data_dir, log)
    try:
        with grpc.insecure_channel(target) as channel:
            api = Stubs.on(channel)
            feeds = feeds_pb2_grpc.FeedServiceStub(channel)
            upsert_nodes(api)
            set_stock(api, "OLD", "paris", 4, 1)
            load(feeds, "nightly", FULL, ROWS, sequence=5, nodes=["paris", "lyon", "soho"])
            load(feeds, "fix", DELTA, ROWS[:4], sequence=6)
            before = exported(feeds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process, target = _serve(data_dir, log)
        with grpc.insecure_channel(target) as channel:
            after = exported(feeds_pb2_grpc.FeedServiceStub(channel))
        assert after == before
        assert before[("OLD", "paris")][0] == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
