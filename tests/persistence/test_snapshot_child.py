"""Snapshot children die with a SIGKILLed server and never publish once it is gone (issue 9.15).

A real `atpd serve` subprocess; the test hook ATPD_TEST_SNAPSHOT_CHILD_PAUSE holds the forked
child at a chosen point so the kill lands exactly there.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import grpc
import pytest

from atpd.service.durability import CHILD_PAUSE_ENVIRONMENT, STAGING
from atpd.v1 import admin_pb2, inventory_pb2

from .server_support import (
    RPC_TIMEOUT_S,
    Daemon,
    child_pids,
    daemon,
    process_gone,
    setup_world,
    wait_until,
)

CHILD_SEEN_TIMEOUT_S = 30.0
# Far shorter than the pause the child is held in: it must die with the parent, not after.
CHILD_DEATH_TIMEOUT_S = 10.0
LONG_PAUSE_MS = 120_000
SHORT_PAUSE_MS = 2_000


def snapshot_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {path.name for path in directory.iterdir() if path.name.startswith("snapshot-")}


def kill_during_snapshot(server: Daemon, data_dir: Path) -> tuple[set[str], int]:
    """Take writes, ask for a snapshot, SIGKILL the server once its child exists; return the
    snapshot files from before and the child's pid."""
    stubs = server.start()
    setup_world(stubs, {"WH-1": "EU/FR/Paris"}, ["SKU-1", "SKU-2"], on_hand=10)
    stubs.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku="SKU-3", node_id="WH-1", on_hand=5, source_sequence=1),
        timeout=RPC_TIMEOUT_S,
    )
    published_before = snapshot_files(data_dir)
    pid = server.pid
    before = child_pids(pid)
    pending = stubs.admin.Snapshot.future(admin_pb2.SnapshotRequest(), timeout=60.0)
    children: set[int] = set()

    def child_started() -> bool:
        children.update(child_pids(pid) - before)
        return bool(children)

    wait_until(child_started, CHILD_SEEN_TIMEOUT_S, "the snapshot child")
    assert len(children) == 1, children
    server.kill()
    with pytest.raises(grpc.RpcError):
        pending.result()
    return published_before, children.pop()


@pytest.mark.parametrize("pause_ms", [LONG_PAUSE_MS])
def test_snapshot_child_dies_with_a_killed_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause_ms: int
) -> None:
    """A snapshot child about to publish is killed with its server (PR_SET_PDEATHSIG)."""
    monkeypatch.setenv(CHILD_PAUSE_ENVIRONMENT, f"publish:{pause_ms}")
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        published_before, child = kill_during_snapshot(server, data_dir)
        wait_until(partial(process_gone, child), CHILD_DEATH_TIMEOUT_S, f"child {child} to die")
    assert snapshot_files(data_dir) == published_before
    published = {name for name in snapshot_files(data_dir / STAGING) if name.endswith(".snap")}
    assert not published, "the child published after its server died"


def test_snapshot_child_orphaned_before_prctl_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed between fork and prctl: the child sees it is orphaned and writes nothing."""
    monkeypatch.setenv(CHILD_PAUSE_ENVIRONMENT, f"fork:{SHORT_PAUSE_MS}")
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        published_before, child = kill_during_snapshot(server, data_dir)
        wait_until(
            partial(process_gone, child),
            SHORT_PAUSE_MS / 1000 + CHILD_DEATH_TIMEOUT_S,
            f"child {child} to exit",
        )
    assert snapshot_files(data_dir) == published_before
    staging = data_dir / STAGING
    leftovers = list(staging.iterdir()) if staging.is_dir() else []
    assert not leftovers, f"an orphaned child wrote {leftovers}"


def test_snapshot_without_the_pause_hook_is_published(tmp_path: Path) -> None:
    """Without the test hook a snapshot completes and is published (the hook is inert)."""
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        stubs = server.start()
        setup_world(stubs, {"WH-1": "EU/FR/Paris"}, ["SKU-1"], on_hand=10)
        response = stubs.admin.Snapshot(admin_pb2.SnapshotRequest(), timeout=60.0)
        assert Path(response.path).name in snapshot_files(data_dir)
