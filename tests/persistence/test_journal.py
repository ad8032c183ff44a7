"""Journal: segments, recovery, torn tails, corruption, group commit and fsync policies."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from pathlib import Path

import pytest

from atpd.persistence import journal_scan
from atpd.persistence.framing import HEADER_BYTES, Record
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalBacklogFull, JournalCorrupt, JournalUnavailable

from .support import append_all, payload_for, read_all, record_offsets, segment_files

SMALL_SEGMENT_BYTES = 1024


def test_round_trip_across_segments(tmp_path: Path) -> None:
    """Many records spread over several segments read back in order with their timestamps."""
    payloads = [payload_for(sequence, 50 + sequence % 30) for sequence in range(1, 301)]
    sequences = append_all(tmp_path, payloads, segment_bytes=SMALL_SEGMENT_BYTES)
    assert sequences == list(range(1, 301))
    files = segment_files(tmp_path)
    assert len(files) > 5
    assert files[0].name == "journal-00000000000000000001.seg"
    records = read_all(tmp_path)
    assert [record.sequence for record in records] == sequences
    assert [record.payload for record in records] == payloads
    assert [record.timestamp_ms for record in records] == [1000 * s for s in sequences]
    # A segment is rotated once it reaches segment_bytes, so it overshoots by under one record.
    assert all(path.stat().st_size < SMALL_SEGMENT_BYTES + HEADER_BYTES + 80 for path in files)


def test_sequence_continues_across_reopen(tmp_path: Path) -> None:
    """Each reopen continues the sequence where the last run stopped, in new or old segments."""
    first = append_all(tmp_path, [payload_for(s) for s in range(1, 41)], segment_bytes=512)
    second = append_all(tmp_path, [payload_for(s) for s in range(41, 81)], segment_bytes=512)
    third = append_all(tmp_path, [payload_for(81)], segment_bytes=1 << 20)
    assert first == list(range(1, 41)) and second == list(range(41, 81)) and third == [81]
    records = read_all(tmp_path)
    assert [record.payload for record in records] == [payload_for(s) for s in range(1, 82)]


def test_records_after_skips_what_a_snapshot_covers(tmp_path: Path) -> None:
    """records_after(n) yields exactly the records with sequence > n, from whichever segment."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 101)], segment_bytes=700)
    for after in (0, 1, 17, 55, 99, 100):
        records = read_all(tmp_path, after_sequence=after)
        assert [record.sequence for record in records] == list(range(after + 1, 101))


def test_truncation_at_every_byte_of_last_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut anywhere inside the last record drops just that record; appends reuse its sequence."""
    payloads = [payload_for(s, 30) for s in range(1, 6)]
    append_all(tmp_path, payloads)
    (segment,) = segment_files(tmp_path)
    pristine = segment.read_bytes()
    last_offset = record_offsets(read_all(tmp_path), HEADER_BYTES)[-1]
    assert len(pristine) == last_offset + HEADER_BYTES + 30
    caplog.set_level(logging.WARNING, logger="atpd.persistence.journal")

    for cut in range(last_offset, len(pristine)):
        segment.write_bytes(pristine[:cut])
        caplog.clear()
        sequences = append_all(tmp_path, [b"after the cut"])
        assert sequences == [5], cut
        if cut > last_offset:
            (message,) = [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]
            assert segment.name in message and f"offset {last_offset}" in message
            assert f"dropping {cut - last_offset} bytes" in message
        records = read_all(tmp_path)
        assert [record.payload for record in records] == [*payloads[:4], b"after the cut"], cut


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_corrupt_middle_record_refuses_to_open(tmp_path: Path) -> None:
    """A damaged record followed by good ones raises JournalCorrupt naming file and offset."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    assert len(files) >= 3
    middle = files[1]
    records_in_middle = len(middle.read_bytes()) // (HEADER_BYTES + 40)
    bad_offset = (records_in_middle // 2) * (HEADER_BYTES + 40)
    flip_byte(middle, bad_offset + HEADER_BYTES + 3)
    before = {path.name: path.read_bytes() for path in files}

    with pytest.raises(JournalCorrupt) as caught:
        Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600)
    assert caught.value.path == middle and caught.value.offset == bad_offset
    assert middle.name in str(caught.value) and f"offset {bad_offset}" in str(caught.value)
    # Refusing to start must not touch the evidence.
    assert {path.name: path.read_bytes() for path in segment_files(tmp_path)} == before


def test_repair_keeps_prefix_and_backs_up(tmp_path: Path) -> None:
    """repair=True cuts at the bad record, backs up the damaged and later segments, continues."""
    payloads = [payload_for(s) for s in range(1, 61)]
    append_all(tmp_path, payloads, segment_bytes=600)
    files = segment_files(tmp_path)
    middle = files[1]
    first_in_middle = int(middle.name[len("journal-") : -len(".seg")])
    bad_offset = 2 * (HEADER_BYTES + 40)
    original_middle = middle.read_bytes()
    flip_byte(middle, bad_offset + 5)

    journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600, repair=True)
    try:
        records = list(journal.records_after(0))
        assert journal.last_sequence == first_in_middle + 1
    finally:
        journal.close()
    assert [record.payload for record in records] == payloads[: first_in_middle + 1]
    assert segment_files(tmp_path) == files[:2]
    assert middle.stat().st_size == bad_offset
    backups = sorted(tmp_path.glob("*.bak-*"))
    assert len(backups) == len(files) - 1
    (middle_backup,) = [path for path in backups if path.name.startswith(middle.name)]
    damaged = bytearray(original_middle)
    damaged[bad_offset + 5] ^= 0x40
    assert middle_backup.read_bytes() == bytes(damaged)

    assert append_all(tmp_path, [b"next"], segment_bytes=600) == [first_in_middle + 2]


def test_missing_middle_segment_is_corrupt(tmp_path: Path) -> None:
    """A deleted segment leaves a sequence gap between files: open refuses to start."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(JournalCorrupt) as caught:
        Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600)
    assert caught.value.path == files[2] and caught.value.offset == 0


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """Concurrent append+wait_durable under ALWAYS all become durable with fewer fsyncs."""
    record_count = 200

    async def run() -> tuple[int, int]:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=1 << 20)

        async def commit(index: int) -> int:
            sequence = journal.append(payload_for(index + 1), timestamp_ms=index)
            await journal.wait_durable(sequence)
            assert journal.durable_sequence >= sequence
            return sequence

        sequences = await asyncio.gather(*(commit(index) for index in range(record_count)))
        assert sorted(sequences) == list(range(1, record_count + 1))
        assert journal.synced_sequence == record_count
        fsync_count = journal.fsync_count
        await journal.aclose()
        return fsync_count, journal.batch_count

    fsync_count, batch_count = asyncio.run(run())
    assert 1 <= fsync_count < record_count
    assert batch_count < record_count
    assert len(read_all(tmp_path)) == record_count


def test_always_acknowledges_only_after_fsync(tmp_path: Path) -> None:
    """Under ALWAYS a waiter stays pending while the fsync covering its record has not returned."""
    sync_entered = threading.Event()
    sync_release = threading.Event()

    def blocking_sync(fd: int) -> None:
        sync_entered.set()
        assert sync_release.wait(timeout=30)

    async def run() -> None:
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.ALWAYS,
            segment_bytes=1 << 20,
            sync_function=blocking_sync,
        )
        sequence = journal.append(b"one", timestamp_ms=1)
        waiter = asyncio.ensure_future(journal.wait_durable(sequence))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, sync_entered.wait, 30)
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiter.done()
        assert journal.durable_sequence == 0
        sync_release.set()
        await waiter
        assert journal.durable_sequence == sequence
        await journal.aclose()

    asyncio.run(run())


def test_none_policy_never_fsyncs(tmp_path: Path) -> None:
    """Policy NONE acknowledges after write() and leaves flushing to the OS."""

    async def run() -> int:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=256)
        for index in range(50):
            await journal.wait_durable(journal.append(payload_for(index + 1), timestamp_ms=0))
        assert journal.synced_sequence == 0 and journal.durable_sequence == 50
        await journal.aclose()
        return journal.fsync_count

    assert asyncio.run(run()) == 0
    assert len(read_all(tmp_path)) == 50


def test_everysec_acknowledges_after_write_and_syncs_later(tmp_path: Path) -> None:
    """EVERYSEC acknowledges once written; its timer fsyncs afterwards without a new append."""

    async def run() -> None:
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.EVERYSEC,
            segment_bytes=1 << 20,
            sync_interval_s=0.01,
        )
        sequence = journal.append(b"one", timestamp_ms=1)
        await journal.wait_durable(sequence)
        assert journal.durable_sequence == sequence
        # Poll (bounded) for the timer's fsync; nothing is asserted about how long it takes.
        for _ in range(3000):
            if journal.synced_sequence == sequence:
                break
            await asyncio.sleep(0.01)
        assert journal.synced_sequence == sequence
        assert journal.fsync_count == 1
        await journal.aclose()

    asyncio.run(run())


def test_everysec_does_not_fsync_on_the_latency_path(tmp_path: Path) -> None:
    """With a long interval, EVERYSEC acknowledges many batches with no fsync at all."""

    async def run() -> None:
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.EVERYSEC,
            segment_bytes=1 << 20,
            sync_interval_s=3600,
        )
        for index in range(20):
            await journal.wait_durable(journal.append(payload_for(index + 1), timestamp_ms=0))
        assert journal.fsync_count == 0 and journal.batch_count == 20
        await journal.aclose()
        assert journal.fsync_count == 1  # the final fsync on close

    asyncio.run(run())


class FailingSync:
    """An fsync that fails with EIO on chosen calls (the disk reporting a lost write)."""

    def __init__(self, failing_calls: set[int]) -> None:
        self.failing_calls = failing_calls
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls in self.failing_calls:
            raise OSError(errno.EIO, "Input/output error")


def test_fsync_failure_fails_batch_and_recovery_drops_it(tmp_path: Path) -> None:
    """An EIO from fsync fails the whole batch and later appends; the bytes never reappear."""
    sync = FailingSync({3})

    async def run() -> None:
        journal = Journal.open(
            tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=1 << 20, sync_function=sync
        )
        for sequence in (1, 2):
            await journal.wait_durable(journal.append(payload_for(sequence), timestamp_ms=0))
        batch = [journal.append(payload_for(sequence), timestamp_ms=0) for sequence in (3, 4, 5)]
        outcomes = await asyncio.gather(
            *(journal.wait_durable(sequence) for sequence in batch), return_exceptions=True
        )
        assert all(isinstance(outcome, JournalUnavailable) for outcome in outcomes)
        message = str(outcomes[0])
        assert "EIO" in message and "fsync" in message and "journal-" in message
        assert journal.failed and journal.durable_sequence == 2
        with pytest.raises(JournalUnavailable, match="EIO"):
            journal.append(b"late", timestamp_ms=0)
        with pytest.raises(JournalUnavailable):
            await journal.wait_durable(batch[-1])
        journal.close()

    asyncio.run(run())
    assert [record.payload for record in read_all(tmp_path)] == [payload_for(1), payload_for(2)]


def test_try_reopen_resumes_after_the_last_acknowledged_record(tmp_path: Path) -> None:
    """After a failed fsync, try_reopen cuts back to the acknowledged prefix and appends resume."""
    sync = FailingSync({2})

    async def run() -> None:
        journal = Journal.open(
            tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=1 << 20, sync_function=sync
        )
        await journal.wait_durable(journal.append(b"kept", timestamp_ms=1))
        lost = journal.append(b"lost", timestamp_ms=2)
        with pytest.raises(JournalUnavailable):
            await journal.wait_durable(lost)
        assert await journal.try_reopen()
        assert not journal.failed and journal.last_sequence == 1
        sequence = journal.append(b"after", timestamp_ms=3)
        assert sequence == 2
        await journal.wait_durable(sequence)
        await journal.aclose()

    asyncio.run(run())
    assert read_all(tmp_path) == [Record(1, 1, b"kept"), Record(2, 3, b"after")]


def test_failure_in_new_segment_removes_it(tmp_path: Path) -> None:
    """A batch that failed after rotating leaves no new segment behind once reopened."""
    sync = FailingSync({7})

    async def run() -> None:
        journal = Journal.open(
            tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=100, sync_function=sync
        )
        for index in range(3):
            await journal.wait_durable(journal.append(payload_for(index + 1, 100), 0))
        # Every record fills a segment, so each batch fsyncs the old segment, creates a new
        # one, writes and fsyncs it. Batch 4 makes calls 6 and 7: the new segment's fsync fails.
        files_before = segment_files(tmp_path)
        assert len(files_before) == 3 and sync.calls == 5
        with pytest.raises(JournalUnavailable):
            await journal.wait_durable(journal.append(payload_for(4, 100), timestamp_ms=0))
        assert sync.calls == 7
        assert segment_files(tmp_path) == files_before
        assert await journal.try_reopen()
        assert journal.segment_count == len(segment_files(tmp_path))
        await journal.wait_durable(journal.append(b"after", timestamp_ms=0))
        await journal.aclose()

    asyncio.run(run())
    payloads = [record.payload for record in read_all(tmp_path, segment_bytes=100)]
    assert payloads == [payload_for(1, 100), payload_for(2, 100), payload_for(3, 100), b"after"]


def test_remove_segments_before_keeps_what_a_snapshot_does_not_cover(tmp_path: Path) -> None:
    """Only segments wholly at or below the snapshot sequence are deleted; the tail stays."""

    async def run() -> None:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=300)
        for index in range(40):
            await journal.wait_durable(journal.append(payload_for(index + 1), timestamp_ms=0))
        count_before = journal.segment_count
        removed = journal.remove_segments_before(20)
        assert removed > 0 and journal.segment_count == count_before - removed
        assert journal.remove_segments_before(10_000) == count_before - removed - 1
        assert journal.segment_count == 1
        await journal.aclose()

    asyncio.run(run())
    (remaining,) = segment_files(tmp_path)
    first_remaining = int(remaining.name[len("journal-") : -len(".seg")])
    assert first_remaining <= 40
    records = read_all(tmp_path, after_sequence=first_remaining - 1, segment_bytes=300)
    assert [record.sequence for record in records] == list(range(first_remaining, 41))


def test_snapshot_ahead_of_journal_restarts_after_the_snapshot(tmp_path: Path) -> None:
    """If the journal lost records a snapshot has, appends continue after the snapshot."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 11)])
    sequences = append_all(tmp_path, [b"after snapshot"], snapshot_sequence=25)
    assert sequences == [26]
    records = read_all(tmp_path, after_sequence=25)
    assert records == [Record(26, 26_000, b"after snapshot")]


def test_gap_between_snapshot_and_journal_is_corrupt(tmp_path: Path) -> None:
    """A journal that starts after snapshot+1 has lost records: open raises JournalCorrupt."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    files[0].unlink()
    with pytest.raises(JournalCorrupt, match="records are missing"):
        Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600)
    later_first = int(files[1].name[len("journal-") : -len(".seg")])
    records = read_all(tmp_path, after_sequence=later_first - 1, segment_bytes=600)
    assert records[0].sequence == later_first and records[-1].sequence == 60


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    """Only one journal instance may own a directory; the lock is released on close."""
    journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=1024)
    with pytest.raises(JournalUnavailable, match="locked"):
        Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=1024)
    journal.close()
    Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=1024).close()


def test_backlog_bound_refuses_appends_without_failing(tmp_path: Path) -> None:
    """Over max_pending_bytes an append raises JournalBacklogFull; the journal stays healthy."""

    async def run() -> None:
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.NONE,
            segment_bytes=1 << 20,
            max_pending_bytes=16 * 1024 * 1024 + 1024,
        )
        big = bytes(8 * 1024 * 1024)
        journal.append(big, timestamp_ms=0)
        journal.append(big, timestamp_ms=0)
        with pytest.raises(JournalBacklogFull):
            journal.append(big, timestamp_ms=0)
        assert not journal.failed
        await journal.wait_durable(2)
        assert journal.append(b"fits again", timestamp_ms=0) == 3
        await journal.aclose()

    asyncio.run(run())


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    """A closed journal raises JournalUnavailable so a late request rolls back cleanly."""

    async def run() -> None:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=1024)
        await journal.aclose()
        with pytest.raises(JournalUnavailable, match="closed"):
            journal.append(b"late", timestamp_ms=0)

    asyncio.run(run())


def test_damage_in_segments_covered_by_the_snapshot_is_ignored(tmp_path: Path) -> None:
    """Segments wholly inside the snapshot are not read at open, so their damage cannot block."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    flip_byte(files[0], HEADER_BYTES + 1)
    second_first = int(files[1].name[len("journal-") : -len(".seg")])
    with pytest.raises(JournalCorrupt):
        Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600)
    records = read_all(tmp_path, after_sequence=second_first - 1, segment_bytes=600)
    assert [record.sequence for record in records] == list(range(second_first, 61))


def test_records_after_refuses_records_no_longer_present(tmp_path: Path) -> None:
    """Asking for records older than the first segment raises instead of silently skipping."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    second_first = int(files[1].name[len("journal-") : -len(".seg")])
    files[0].unlink()
    journal = Journal.open(
        tmp_path,
        fsync_policy=FsyncPolicy.NONE,
        segment_bytes=600,
        snapshot_sequence=second_first - 1,
    )
    try:
        with pytest.raises(JournalCorrupt, match="not in the journal"):
            list(journal.records_after(0))
    finally:
        journal.close()


def _record_fields(records: list[Record]) -> list[tuple[int, int, bytes, int, str]]:
    return [(r.sequence, r.timestamp_ms, r.payload, r.offset, r.source_name) for r in records]


def test_records_kept_at_open_equal_a_second_read(tmp_path: Path) -> None:
    """Records the opening scan keeps are those a reread yields (offsets and files too), torn
    tail excluded, whatever the snapshot covers."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 101)], segment_bytes=700)
    with segment_files(tmp_path)[-1].open("ab") as last:
        last.write(b"ATJ1 torn")
    for after in (0, 17, 55, 99, 100):
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.NONE,
            segment_bytes=700,
            snapshot_sequence=after,
            keep_records=True,
        )
        try:
            kept = list(journal.records_after(after))
            reread = list(journal.records_after(after))  # the kept ones are handed out once
        finally:
            journal.close()
        assert [record.sequence for record in kept] == list(range(after + 1, 101))
        assert _record_fields(kept) == _record_fields(reread)


def test_records_over_the_keep_budget_are_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail bigger than KEPT_RECORD_BYTES_MAX is not kept at open, and replays all the same."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    monkeypatch.setattr(journal_scan, "KEPT_RECORD_BYTES_MAX", 1000)
    assert journal_scan.scan_journal(tmp_path, keep_records=True).records is None
    assert journal_scan.scan_journal(tmp_path).records is None
    journal = Journal.open(
        tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=600, keep_records=True
    )
    try:
        records = list(journal.records_after(0))
    finally:
        journal.close()
    assert [record.payload for record in records] == [payload_for(s) for s in range(1, 61)]
