"""Recovery refuses what it cannot load with file, offset and reason (issue 9, item 1).

A journal or snapshot holding a bad id (written by the codec directly, bypassing validation, as
a faulty build would) makes `atpd serve` exit non-zero with one line naming the file, the byte
offset and the reason, never a traceback; `verify-journal` / `verify-snapshot` report the same.
A server that took writes restarts from its data dir with the same state.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from atpd.core.commands import Command, NodeKind, SetStock, UpsertNode
from atpd.core.limits import Limits
from atpd.core.state import AtpState
from atpd.persistence.codec import encode_command
from atpd.persistence.framing import encode_record
from atpd.persistence.journal import FsyncPolicy
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.journal_scan import segment_path
from atpd.persistence.recovery import recover
from atpd.persistence.snapshot_file import write_snapshot
from atpd.persistence.state_snapshot import export_state
from atpd.v1 import inventory_pb2

from .server_support import RPC_TIMEOUT_S, daemon, reserve_request, run_cli, setup_world

NOW_MS = 1_700_000_000_000
GOOD_NODE = UpsertNode("WH-EU-01", NodeKind.WAREHOUSE, ("EU", "FR", "Paris"))


def write_journal(data_dir: Path, commands: list[Command]) -> list[int]:
    """One segment holding `commands` as records 1..n; returns each record's byte offset."""
    data_dir.mkdir(parents=True, exist_ok=True)
    offsets, data = [], b""
    for sequence, command in enumerate(commands, start=1):
        offsets.append(len(data))
        data += encode_record(sequence, NOW_MS, encode_command(command))
    segment_path(data_dir, 1).write_bytes(data)
    return offsets


def digest_of(data_dir: Path) -> str:
    recovered = recover(
        data_dir, limits=Limits(), fsync_policy=FsyncPolicy.NONE, segment_bytes=1 << 20
    )
    recovered.journal.close()
    return recovered.state.digest()


def serve_refusal(data_dir: Path, *extra: str) -> str:
    """Run `atpd serve` on a data dir it must refuse; return its stderr."""
    result = run_cli(
        "serve", "--port", "0", "--metrics-port", "-1", "--data-dir", str(data_dir), *extra
    )
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "AssertionError" not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("bad_sku", ["EVIL\n", "EV IL", "S" * 65])
def test_journal_record_with_a_bad_id_is_refused_with_file_offset_and_reason(
    tmp_path: Path, bad_sku: str
) -> None:
    """serve exits with one line naming segment, offset and field; verify-journal agrees."""
    data_dir = tmp_path / "data"
    offsets = write_journal(data_dir, [GOOD_NODE, SetStock(bad_sku, "WH-EU-01", 1, 1)])
    segment = segment_path(data_dir, 1)
    stderr = serve_refusal(data_dir)
    message = [line for line in stderr.splitlines() if line.startswith("atpd:")]
    assert len(message) == 1, stderr
    assert str(segment) in message[0], stderr
    assert f"byte offset {offsets[1]}" in message[0], stderr
    assert "sku" in message[0], stderr
    verify = run_cli("verify-journal", str(data_dir))
    assert verify.returncode == 1, verify.stdout
    assert str(segment) in verify.stdout and f"byte offset {offsets[1]}" in verify.stdout
    assert "invalid_record" in verify.stdout and "sku" in verify.stdout, verify.stdout


@pytest.mark.parametrize("bad_payload", [b"\xff\xff\xff", None])
def test_repair_cuts_the_journal_at_a_record_that_cannot_be_replayed(
    tmp_path: Path, bad_payload: bytes | None
) -> None:
    """Recovery with repair (`atpd serve --repair`) backs the journal up, cuts it at the record
    that cannot be replayed (undecodable, or a bad id), keeps every record before it, and the
    next plain start recovers the same state."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good: list[Command] = [GOOD_NODE, SetStock("SKU-1", "WH-EU-01", 5, 1)]
    data = b"".join(
        encode_record(sequence, NOW_MS, encode_command(command))
        for sequence, command in enumerate(good, start=1)
    )
    payload = bad_payload or encode_command(SetStock("EVIL\n", "WH-EU-01", 1, 1))
    data += encode_record(3, NOW_MS, payload)
    data += encode_record(4, NOW_MS, encode_command(SetStock("SKU-2", "WH-EU-01", 7, 1)))
    segment_path(data_dir, 1).write_bytes(data)
    with pytest.raises(JournalCorrupt):
        digest_of(data_dir)
    recovered = recover(
        data_dir, limits=Limits(), fsync_policy=FsyncPolicy.NONE, segment_bytes=1 << 20, repair=True
    )
    recovered.journal.close()
    expected = AtpState()
    for command in good:
        expected.apply(command, NOW_MS)
    assert recovered.state.digest() == expected.digest()
    assert recovered.state.position("SKU-1", "WH-EU-01").on_hand == 5
    assert "SKU-2" not in recovered.state.skus
    assert [p for p in data_dir.iterdir() if "bak" in p.name or "backup" in p.name], list(
        data_dir.iterdir()
    )
    assert digest_of(data_dir) == expected.digest()


def test_undecodable_journal_record_is_refused_with_file_offset_and_reason(
    tmp_path: Path,
) -> None:
    """A well-framed record whose payload is not a command: one line with file and offset."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = encode_record(1, NOW_MS, encode_command(GOOD_NODE))
    segment_path(data_dir, 1).write_bytes(first + encode_record(2, NOW_MS, b"\xff\xff\xff"))
    stderr = serve_refusal(data_dir)
    assert f"byte offset {len(first)}" in stderr and "cannot be replayed" in stderr, stderr
    verify = run_cli("verify-journal", str(data_dir))
    assert verify.returncode == 1 and f"byte offset {len(first)}" in verify.stdout


@pytest.mark.parametrize("bad_sku", ["EVIL\n", "EV IL"])
def test_snapshot_with_a_bad_id_is_refused_with_file_offset_and_reason(
    tmp_path: Path, bad_sku: str
) -> None:
    """serve exits naming the snapshot, the entry's offset and why; verify-snapshot agrees."""
    data_dir = tmp_path / "data"
    state = AtpState()
    state.apply(GOOD_NODE, NOW_MS)
    state.apply(SetStock(bad_sku, "WH-EU-01", 1, 1), NOW_MS)  # the core trusts its caller
    arrays, blobs = export_state(state)
    path = write_snapshot(data_dir, 0, arrays, blobs)
    stderr = serve_refusal(data_dir)
    assert str(path) in stderr and "byte offset" in stderr and "'skus'" in stderr, stderr
    verify = run_cli("verify-snapshot", str(data_dir))
    assert verify.returncode == 1, verify.stdout
    assert "DAMAGED" in verify.stdout and "'skus'" in verify.stdout, verify.stdout


def test_server_that_took_writes_restarts_with_the_same_state(tmp_path: Path) -> None:
    """Writes (and refused bad ids) then a graceful stop: the restart serves the same digest."""
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        stubs = server.start()
        setup_world(stubs, {"WH-EU-01": "EU/FR/Paris"}, ["SKU-1", "SKU-2"], on_hand=10)
        for sku in ("EVIL\n", "EV\nIL", "EVIL\r"):
            with pytest.raises(grpc.RpcError) as refused:
                stubs.inventory.SetStock(
                    inventory_pb2.SetStockRequest(
                        sku=sku, node_id="WH-EU-01", on_hand=1, source_sequence=1
                    ),
                    timeout=RPC_TIMEOUT_S,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stubs.reservations.Reserve(
            reserve_request("cart-1", [("SKU-1", "WH-EU-01", 2)], 600_000), timeout=RPC_TIMEOUT_S
        )
        assert server.terminate() == 0
        before = digest_of(data_dir)
        server.start()
        assert server.terminate() == 0
    assert digest_of(data_dir) == before
