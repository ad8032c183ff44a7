"""Damaged journals and a full disk, end to end through `atpd serve` and `atpd verify-journal`.

A flipped byte in the middle of the journal stops `atpd serve` with the file and offset named;
`--repair` (on serve or on verify-journal) keeps the prefix. A torn tail is cut with a log
line. A journal on a tiny tmpfs that fills up refuses writes with UNAVAILABLE while reads go
on, resumes by itself once there is room, and after SIGKILL and restart holds exactly the
acknowledged reservations.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from atpd.core.commands import Reserve
from atpd.persistence.framing import HEADER_BYTES
from atpd.v1 import availability_pb2, common_pb2, reservations_pb2

from .conftest import TmpfsFull
from .server_support import (
    HELD,
    RPC_TIMEOUT_S,
    Cell,
    Daemon,
    JournalEntry,
    Stubs,
    assert_stock_consistent,
    daemon,
    fetch_positions,
    fetch_reservations,
    held_by_cell,
    journal_entries,
    reserve_request,
    run_cli,
    setup_world,
    status_of,
    wait_until,
)

NODES = {"ST-PAR-01": "EU/FR/Paris", "WH-EU-01": "EU/IT/Florence"}
SKUS = ("BAG-01", "SHOE-02")
CELLS: tuple[Cell, ...] = tuple((sku, node_id) for sku in SKUS for node_id in NODES)
LONG_TTL_MS = 3_600_000
RESERVATIONS = 30


def reserve_in_order(stubs: Stubs, count: int, prefix: str) -> list[str]:
    """`count` one-line reservations, one at a time (one journal record each); all must be OK."""
    ids = []
    for index in range(count):
        reservation_id = f"{prefix}-{index:03d}"
        sku, node_id = CELLS[index % len(CELLS)]
        request = reserve_request(reservation_id, [(sku, node_id, 1 + index % 3)], LONG_TTL_MS)
        response = stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_OK, response
        ids.append(reservation_id)
    return ids


def written_then_killed(server: Daemon) -> list[str]:
    """A world and RESERVATIONS reservations, then SIGKILL (no final snapshot)."""
    stubs = server.start()
    setup_world(stubs, NODES, SKUS, on_hand=1000)
    ids = reserve_in_order(stubs, RESERVATIONS, "r")
    server.kill()
    return ids


def reserve_entries(data_dir: Path) -> list[JournalEntry]:
    return [entry for entry in journal_entries(data_dir) if isinstance(entry.command, Reserve)]


def assert_serves_exactly(stubs: Stubs, present: list[str], absent: list[str]) -> None:
    """`present` are HELD, `absent` are unknown, and every cell's reserved matches."""
    reservations = fetch_reservations(stubs, [*present, *absent])
    for reservation_id in present:
        reservation = reservations[reservation_id]
        assert reservation is not None and reservation.status == HELD, reservation_id
    missing = [reservation_id for reservation_id in absent if reservations[reservation_id]]
    assert not missing, missing
    held = held_by_cell(reservations.values())
    assert_stock_consistent(fetch_positions(stubs, CELLS), held)
    assert status_of(stubs).open_reservations == len(present)


@pytest.mark.parametrize("repair_with", ["serve", "verify-journal"])
def test_flipped_byte_mid_journal_refuses_start_until_repaired(
    tmp_path: Path, repair_with: str
) -> None:
    """Mid-journal corruption: serve exits 1 naming file and offset; --repair keeps the prefix."""
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        ids = written_then_killed(server)
        entries = reserve_entries(data_dir)
        assert [e.command.reservation_id for e in entries if isinstance(e.command, Reserve)] == ids
        bad_index = RESERVATIONS // 2
        bad = entries[bad_index]
        data = bytearray(bad.path.read_bytes())
        data[bad.offset + HEADER_BYTES + 3] ^= 0x20
        bad.path.write_bytes(bytes(data))

        server.spawn()
        assert server.wait_exit() == 1
        log = server.log_text()
        assert "refusing to start" in log and "journal corrupt" in log, log
        assert f"{bad.path} at byte offset {bad.offset}" in log, log
        assert "--repair" in log

        report = run_cli("verify-journal", str(data_dir))
        assert report.returncode == 1, report
        assert "corrupt_record" in report.stdout and "CORRUPT" in report.stdout, report.stdout
        assert f"{bad.path} at byte offset {bad.offset}" in report.stdout, report.stdout

        if repair_with == "serve":
            stubs = server.start(["--repair"])
            assert "journal repaired" in server.log_text()
        else:
            repaired = run_cli("verify-journal", str(data_dir), "--repair")
            assert repaired.returncode == 0, repaired
            assert "REPAIRED" in repaired.stdout, repaired.stdout
            clean = run_cli("verify-journal", str(data_dir))
            assert clean.returncode == 0 and "status: OK" in clean.stdout, clean
            stubs = server.start()
        assert list(data_dir.glob(f"{bad.path.name}.bak-*")), "no backup of the damaged segment"
        assert_serves_exactly(stubs, ids[:bad_index], ids[bad_index:])

        # The journal goes on right after the kept prefix, and that survives a crash too.
        later = reserve_in_order(stubs, 3, "after-repair")
        server.kill()
        stubs = server.start()
        assert_serves_exactly(stubs, [*ids[:bad_index], *later], ids[bad_index:])
        server.kill()


@pytest.mark.parametrize("cut_into", ["header", "payload"])
def test_torn_tail_is_truncated_with_a_log_line(tmp_path: Path, cut_into: str) -> None:
    """The last record cut short: serve starts, logs the truncation, keeps all the others."""
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        ids = written_then_killed(server)
        last = journal_entries(data_dir)[-1]
        assert isinstance(last.command, Reserve) and last.command.reservation_id == ids[-1]
        keep = HEADER_BYTES // 2 if cut_into == "header" else HEADER_BYTES + 2
        with last.path.open("r+b") as segment:
            segment.truncate(last.offset + keep)

        stubs = server.start()
        log = server.log_text()
        assert f"journal torn tail: truncating {last.path} at byte offset {last.offset}" in log
        assert_serves_exactly(stubs, ids[:-1], ids[-1:])
        assert last.path.stat().st_size == last.offset

        later = reserve_in_order(stubs, 2, "after-tear")
        server.kill()
        stubs = server.start()
        assert "torn tail" not in server.log_text()
        assert_serves_exactly(stubs, [*ids[:-1], *later], ids[-1:])
        server.kill()


# ---------------------------------------------------------------------------- ENOSPC

FILL_THREADS = 3
FILL_RESERVATIONS_MAX = 20_000
RESUME_TIMEOUT_S = 60.0
REMOUNT_BYTES = 8 * 1024 * 1024
# Room left for the journal by the tests that only need it to fail soon.
SMALL_FREE_BYTES = 12 * 1024
SHORT_TTL_MS = 4_000


class Filler:
    """Client threads reserving until the server answers UNAVAILABLE."""

    def __init__(self, stubs: Stubs) -> None:
        self.stubs = stubs
        self.acknowledged: dict[str, Cell] = {}
        self.refused: dict[str, str] = {}  # id -> the UNAVAILABLE message
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(self, thread_index: int) -> None:
        for index in range(FILL_RESERVATIONS_MAX):
            reservation_id = f"fill-{thread_index}-{index:05d}"
            cell = CELLS[index % len(CELLS)]
            request = reserve_request(reservation_id, [(*cell, 1)], LONG_TTL_MS)
            try:
                response = self.stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as error:
                with self._lock:
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        self.refused[reservation_id] = error.details() or ""
                    else:
                        self.errors.append(f"{reservation_id}: {error!r}")
                return
            with self._lock:
                if response.outcome != common_pb2.OUTCOME_OK:
                    self.errors.append(f"{reservation_id}: {response}")
                    return
                self.acknowledged[reservation_id] = cell
        with self._lock:
            self.errors.append("the disk never filled up")

    def fill(self) -> None:
        threads = [
            threading.Thread(target=self.run, args=(index,), name=f"filler-{index}")
            for index in range(FILL_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RESUME_TIMEOUT_S * 2)
        assert not any(thread.is_alive() for thread in threads), "a filler thread hung"


def try_reserve(stubs: Stubs, reservation_id: str) -> str | None:
    """Reserve one unit; None when acknowledged, else the UNAVAILABLE message."""
    request = reserve_request(reservation_id, [(*CELLS[0], 1)], LONG_TTL_MS)
    try:
        response = stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        return error.details() or ""
    assert response.outcome == common_pb2.OUTCOME_OK, response
    return None


def test_full_disk_refuses_writes_serves_reads_and_resumes(tmp_path: Path) -> None:
    """ENOSPC: writes UNAVAILABLE, reads served, writes resume on growth, restart keeps acked."""
    disk = TmpfsFull(tmp_path / "disk")
    disk.mount()
    try:
        with daemon(disk.directory, tmp_path) as server:
            stubs = server.start()
            setup_world(stubs, NODES, SKUS, on_hand=1_000_000)
            filler = Filler(stubs)
            filler.fill()
            assert not filler.errors, filler.errors[:5]
            assert filler.acknowledged and filler.refused
            acknowledged = dict(filler.acknowledged)
            refused = dict(filler.refused)
            assert all("journal" in message for message in refused.values()), refused
            assert any("ENOSPC" in message for message in refused.values()), refused

            # While the disk is full: writes refused, reads served, nothing refused visible.
            assert try_reserve(stubs, "while-full") is not None
            refused["while-full"] = "UNAVAILABLE"
            assert "ENOSPC" in status_of(stubs).journal_failure
            request = availability_pb2.GetAvailabilityRequest(skus=list(SKUS))
            assert len(stubs.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S).items)

            def refused_invisible() -> bool:
                seen = fetch_reservations(stubs, refused)
                return all(reservation is None for reservation in seen.values())

            # The state is rebuilt from what is durable in the background: wait for it, then
            # the view must be exactly the acknowledged reservations.
            wait_until(refused_invisible, RESUME_TIMEOUT_S, "the durable state to be restored")
            assert_serves_exactly(stubs, list(acknowledged), list(refused))
            assert "ENOSPC" in status_of(stubs).journal_failure

            subprocess.run(
                ["mount", "-o", f"remount,size={REMOUNT_BYTES}", str(disk.mount_point)],
                check=True,
                capture_output=True,
            )
            attempts = iter(range(1_000_000))

            def writes_resumed() -> bool:
                reservation_id = f"resume-{next(attempts):04d}"
                message = try_reserve(stubs, reservation_id)
                if message is None:
                    acknowledged[reservation_id] = CELLS[0]
                    return True
                assert "journal" in message, message
                refused[reservation_id] = message
                return False

            wait_until(writes_resumed, RESUME_TIMEOUT_S, "writes to resume after the remount")
            assert status_of(stubs).journal_failure == ""
            for index in range(5):
                assert try_reserve(stubs, f"after-{index}") is None
                acknowledged[f"after-{index}"] = CELLS[0]
            assert_serves_exactly(stubs, list(acknowledged), list(refused))

            server.kill()
            stubs = server.start()
            assert_serves_exactly(stubs, list(acknowledged), list(refused))
            release_all(stubs, list(acknowledged)[:3])
            server.kill()
    finally:
        disk.unmount()


def leave_free(mount_point: Path, free_bytes: int) -> None:
    """Take all the tmpfs's room but about `free_bytes` with a ballast file."""
    stat = os.statvfs(mount_point)
    ballast_bytes = stat.f_bavail * stat.f_frsize - free_bytes
    assert ballast_bytes > 0, ballast_bytes
    (mount_point / "ballast").write_bytes(bytes(ballast_bytes))


def reserve_until_refused(stubs: Stubs, prefix: str) -> tuple[int, str, str]:
    """One-unit reservations one at a time until one is refused: (acknowledged count, the
    refused id, its UNAVAILABLE message)."""
    for index in range(FILL_RESERVATIONS_MAX):
        reservation_id = f"{prefix}-{index:05d}"
        message = try_reserve(stubs, reservation_id)
        if message is not None:
            return index, reservation_id, message
    raise AssertionError("the disk never filled up")


def test_write_refused_by_a_full_disk_is_never_visible_to_reads(tmp_path: Path) -> None:
    """A Reserve answered UNAVAILABLE is invisible to the very next reads (no dirty read)."""
    disk = TmpfsFull(tmp_path / "disk")
    disk.mount()
    try:
        with daemon(disk.directory, tmp_path) as server:
            stubs = server.start()
            setup_world(stubs, NODES, SKUS, on_hand=1_000_000)
            leave_free(disk.mount_point, SMALL_FREE_BYTES)
            acknowledged, refused_id, message = reserve_until_refused(stubs, "one-by-one")
            assert "ENOSPC" in message, message
            # No wait: the very next reads must not show the refused hold.
            seen = fetch_reservations(stubs, [refused_id])[refused_id]
            position = fetch_positions(stubs, CELLS[:1])[CELLS[0]]
            assert seen is None, f"refused reservation visible: {seen}"
            assert position.reserved == acknowledged, position
            server.kill()
    finally:
        disk.unmount()


def test_restart_on_a_still_full_disk_serves_reads_and_refuses_writes(tmp_path: Path) -> None:
    """Restart on a disk that is still full: starts, serves the acknowledged, refuses writes."""
    disk = TmpfsFull(tmp_path / "disk")
    disk.mount()
    try:
        with daemon(disk.directory, tmp_path) as server:
            stubs = server.start()
            setup_world(stubs, NODES, SKUS, on_hand=1_000_000)
            leave_free(disk.mount_point, SMALL_FREE_BYTES)
            acknowledged, refused_id, _ = reserve_until_refused(stubs, "before")
            server.kill()

            stubs = server.start()
            present = [f"before-{index:05d}" for index in range(acknowledged)]
            assert_serves_exactly(stubs, present, [refused_id])
            message = try_reserve(stubs, "after-restart")
            assert message is not None and "ENOSPC" in message, message
            assert_serves_exactly(stubs, present, [refused_id, "after-restart"])
            server.kill()
    finally:
        disk.unmount()


def test_hold_past_its_expiry_never_reads_as_held_while_the_journal_is_down(
    tmp_path: Path,
) -> None:
    """While writes fail (ENOSPC), a read after a hold's expiry time does not show it HELD."""
    disk = TmpfsFull(tmp_path / "disk")
    disk.mount()
    try:
        with daemon(disk.directory, tmp_path) as server:
            stubs = server.start()
            setup_world(stubs, NODES, SKUS, on_hand=1_000_000)
            leave_free(disk.mount_point, SMALL_FREE_BYTES)
            request = reserve_request("short-hold", [(*CELLS[1], 4)], SHORT_TTL_MS)
            hold = stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S).reservation
            assert hold.status == HELD
            _, _, message = reserve_until_refused(stubs, "filler")
            assert "ENOSPC" in message, message
            # The premise: the journal failed before the hold was due.
            assert time.time_ns() // 1_000_000 < hold.expires_at_ms, "disk filled too slowly"

            def past_expiry() -> bool:
                result: bool = time.time_ns() // 1_000_000 > hold.expires_at_ms
                return result

            wait_until(past_expiry, SHORT_TTL_MS / 1000 * 2, "the hold's expiry time")
            assert status_of(stubs).journal_failure != "", "the journal recovered by itself"
            seen = fetch_reservations(stubs, ["short-hold"])["short-hold"]
            assert seen is not None and seen.status != HELD, seen
            assert fetch_positions(stubs, CELLS[1:2])[CELLS[1]].reserved == 0
            server.kill()
    finally:
        disk.unmount()


def release_all(stubs: Stubs, reservation_ids: list[str]) -> None:
    """Release works again after the restart (the journal takes records)."""
    for reservation_id in reservation_ids:
        request = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
        response = stubs.reservations.Release(request, timeout=RPC_TIMEOUT_S)
        assert response.reservation.status == common_pb2.RESERVATION_STATUS_RELEASED
