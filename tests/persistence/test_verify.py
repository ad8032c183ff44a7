"""Offline journal verification and repair (the `atpd verify-journal` command), at the framing
level: these journals hold opaque payloads, so content checks are off (test_bad_records.py
covers them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atpd.persistence.framing import HEADER_BYTES
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalUnavailable
from atpd.persistence.journal_scan import ProblemKind
from atpd.persistence.verify import format_report, verify_journal

from .support import append_all, payload_for, read_all, segment_files

RECORD_BYTES = HEADER_BYTES + 40


def test_clean_journal_report(tmp_path: Path) -> None:
    """A healthy journal reports its segments, record count and sequence range, and OK."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 51)], segment_bytes=500)
    report = verify_journal(tmp_path, repair=False, check_content=False)
    assert report.ok and report.problem is None and not report.repaired
    assert report.segment_count == len(segment_files(tmp_path)) > 1
    assert (report.record_count, report.first_sequence, report.last_sequence) == (50, 1, 50)
    assert "status: OK" in format_report(report)


def test_empty_directory_report(tmp_path: Path) -> None:
    """A directory with no segments is a valid, empty journal."""
    report = verify_journal(tmp_path, repair=False, check_content=False)
    assert report.ok and report.segment_count == 0 and report.record_count == 0
    assert report.first_sequence is None and report.last_sequence is None


def test_torn_tail_reported_then_repaired(tmp_path: Path) -> None:
    """A torn tail is reported (file, offset) without change, and cut with a backup on repair."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 11)])
    (segment,) = segment_files(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-7])
    size_before = segment.stat().st_size

    report = verify_journal(tmp_path, repair=False, check_content=False)
    assert report.problem is not None and report.problem.kind is ProblemKind.TORN_TAIL
    assert report.problem.path == segment and report.problem.offset == 9 * RECORD_BYTES
    assert report.starts_unaided and not report.ok
    assert report.record_count == 9 and segment.stat().st_size == size_before
    assert "TORN TAIL" in format_report(report)

    repaired = verify_journal(tmp_path, repair=True, check_content=False)
    assert repaired.repaired and repaired.ok and len(repaired.backups) == 1
    assert segment.stat().st_size == 9 * RECORD_BYTES
    assert repaired.backups[0].stat().st_size == size_before
    assert verify_journal(tmp_path, repair=False, check_content=False).problem is None


def test_corrupt_record_reported_then_repaired(tmp_path: Path) -> None:
    """Corruption names file, offset and kind; repair keeps the prefix and backs up the rest."""
    payloads = [payload_for(s) for s in range(1, 61)]
    append_all(tmp_path, payloads, segment_bytes=600)
    files = segment_files(tmp_path)
    data = bytearray(files[0].read_bytes())
    data[3 * RECORD_BYTES + HEADER_BYTES] ^= 0xFF
    files[0].write_bytes(bytes(data))

    report = verify_journal(tmp_path, repair=False, check_content=False)
    assert report.problem is not None and report.problem.kind is ProblemKind.CORRUPT_RECORD
    assert report.problem.path == files[0] and report.problem.offset == 3 * RECORD_BYTES
    assert not report.starts_unaided
    text = format_report(report)
    assert "CORRUPT" in text and files[0].name in text and f"offset {3 * RECORD_BYTES}" in text
    assert segment_files(tmp_path) == files  # verify without repair changes nothing

    repaired = verify_journal(tmp_path, repair=True, check_content=False)
    assert repaired.repaired and len(repaired.backups) == len(files)
    assert segment_files(tmp_path) == files[:1]
    assert [record.payload for record in read_all(tmp_path)] == payloads[:3]


def test_segment_gap_repair_drops_the_stray_segments(tmp_path: Path) -> None:
    """A missing segment is a SEGMENT_GAP; repair moves every later segment aside."""
    append_all(tmp_path, [payload_for(s) for s in range(1, 61)], segment_bytes=600)
    files = segment_files(tmp_path)
    files[1].unlink()
    report = verify_journal(tmp_path, repair=True, check_content=False)
    assert report.problem is not None and report.problem.kind is ProblemKind.SEGMENT_GAP
    assert report.problem.path == files[2]
    assert segment_files(tmp_path) == files[:1]
    assert report.last_sequence is not None
    assert append_all(tmp_path, [b"next"], segment_bytes=600) == [report.last_sequence + 1]


def test_verify_refuses_a_journal_in_use(tmp_path: Path) -> None:
    """verify takes the journal's lock, so it never repairs under a live server."""
    journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.NONE, segment_bytes=1024)
    try:
        with pytest.raises(JournalUnavailable, match="locked"):
            verify_journal(tmp_path, repair=True, check_content=False)
    finally:
        journal.close()
