"""Reading a journal directory back: segment names, the scan that validates every segment
(torn tails, corrupt records, sequence and segment gaps), the repair that cuts the damage off,
the fix-ups done when a journal opens, and reading records back for recovery.

Nothing here writes records: that is the writer's job (journal.py, journal_worker.py).
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from atpd.persistence.framing import Record, ScanState, scan_records
from atpd.persistence.fsutil import fsync_directory
from atpd.persistence.journal_errors import JournalCorrupt

__all__ = [
    "SEGMENT_COUNT_MAX",
    "JournalProblem",
    "JournalScan",
    "ProblemKind",
    "SegmentInfo",
    "read_records_after",
    "recover_directory",
    "repair_journal",
    "scan_journal",
    "segment_path",
]

# Logged under the journal's name, as before the split: log filters and alerts key on it.
logger = logging.getLogger("atpd.persistence.journal")

SEGMENT_NAME = re.compile(r"^journal-(\d{20})\.seg$")
# Bounds directory listings and the segment loops that walk them.
SEGMENT_COUNT_MAX = 1_000_000
# Recovery keeps the records its opening scan decoded (so the tail is read and checked once,
# not twice) while they take at most this much memory (payloads plus ~128 bytes of object per
# record); a longer tail is read again, segment by segment, when it is replayed.
KEPT_RECORD_BYTES_MAX = 256 * 1024 * 1024
KEPT_RECORD_OVERHEAD_BYTES = 128


class ProblemKind(enum.Enum):
    TORN_TAIL = "torn_tail"  # end of the last segment cut short: safe to truncate
    CORRUPT_RECORD = "corrupt_record"  # a bad record with more data after it
    SEQUENCE_GAP = "sequence_gap"  # a valid record with an unexpected sequence number
    SEGMENT_GAP = "segment_gap"  # a segment whose name does not continue the previous one
    # A well-framed record whose content cannot be replayed (found by verify, not by the scan).
    INVALID_RECORD = "invalid_record"


@dataclass(frozen=True, slots=True)
class JournalProblem:
    kind: ProblemKind
    path: Path
    offset: int
    detail: str
    dropped_bytes: int  # bytes from `offset` to the end of `path`


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    path: Path
    first_sequence: int
    last_sequence: int  # first_sequence - 1 when the segment holds no valid record
    valid_bytes: int


@dataclass(frozen=True, slots=True)
class JournalScan:
    """The result of validating every segment of a journal directory.

    `usable_segments` are the segments that survive a repair: all before the problem, plus the
    damaged one cut at the problem offset (unless its very name is wrong). `later_segments`
    follow the problem and would be dropped by a repair.
    """

    directory: Path
    segment_count: int
    covered_segment_count: int  # listed but not read: wholly covered by the snapshot
    usable_segments: list[SegmentInfo]
    later_segments: list[Path]
    problem: JournalProblem | None
    record_count: int  # in the segments read
    first_record_sequence: int | None  # first record read
    last_record_sequence: int | None
    # With keep_records: the usable records after covered_sequence, in order; None when not
    # asked for or over KEPT_RECORD_BYTES_MAX.
    records: list[Record] | None = None

    @property
    def next_sequence(self) -> int:
        if not self.usable_segments:
            return 1
        return self.usable_segments[-1].last_sequence + 1


def segment_path(directory: Path, first_sequence: int) -> Path:
    assert first_sequence >= 1, first_sequence
    return directory / f"journal-{first_sequence:020d}.seg"


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    segments: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        match = SEGMENT_NAME.fullmatch(entry.name)
        if match is not None and entry.is_file(follow_symlinks=False):
            segments.append((int(match.group(1)), Path(entry.path)))
        assert len(segments) <= SEGMENT_COUNT_MAX, "journal directory has too many segments"
    segments.sort()
    return segments


def scan_journal(
    directory: Path, *, covered_sequence: int = 0, keep_records: bool = False
) -> JournalScan:
    """Validate the segments in `directory`; stop at the first problem.

    Segments whose records are all <= `covered_sequence` (already in the snapshot being
    loaded) are listed but not read: damage there cannot matter, and must not make a repair
    cut away the records after it that recovery does need. With `keep_records` the records
    after `covered_sequence` are kept (`JournalScan.records`) within KEPT_RECORD_BYTES_MAX.
    """
    assert covered_sequence >= 0, covered_sequence
    segments = _list_segments(directory)
    kept: list[Record] | None = [] if keep_records else None
    kept_bytes = 0
    usable: list[SegmentInfo] = []
    later: list[Path] = []
    problem: JournalProblem | None = None
    record_count = 0
    first_record: int | None = None
    covered_count = 0
    expected_sequence: int | None = None
    for index, (first_sequence, path) in enumerate(segments):
        is_last = index == len(segments) - 1
        if not is_last and segments[index + 1][0] - 1 <= covered_sequence:
            next_first_sequence = segments[index + 1][0]
            info = SegmentInfo(path, first_sequence, next_first_sequence - 1, path.stat().st_size)
            usable.append(info)
            covered_count += 1
            expected_sequence = next_first_sequence
            continue
        if expected_sequence is not None and first_sequence != expected_sequence:
            problem = JournalProblem(
                kind=ProblemKind.SEGMENT_GAP,
                path=path,
                offset=0,
                detail=f"segment starts at sequence {first_sequence}, expected {expected_sequence}",
                dropped_bytes=path.stat().st_size,
            )
            later = [later_path for _, later_path in segments[index + 1 :]]
            break
        result = scan_records(
            path.read_bytes(),
            first_sequence=first_sequence,
            # The full path: a replay error names the file the record came from.
            source_name=path.name if kept is None else str(path),
            keep_payloads=kept is not None,
        )
        if kept is not None:
            kept_bytes += result.valid_bytes + KEPT_RECORD_OVERHEAD_BYTES * result.record_count
            if kept_bytes <= KEPT_RECORD_BYTES_MAX:
                # Records are in sequence from first_sequence: skip those the snapshot covers.
                kept.extend(result.records[max(0, covered_sequence + 1 - first_sequence) :])
            else:
                kept = None
        record_count += result.record_count
        if first_record is None and result.record_count > 0:
            first_record = first_sequence
        usable.append(SegmentInfo(path, first_sequence, result.last_sequence, result.valid_bytes))
        expected_sequence = result.last_sequence + 1
        if result.state is ScanState.CLEAN:
            continue
        assert result.problem_offset is not None
        if result.state is ScanState.TORN_TAIL and is_last:
            kind = ProblemKind.TORN_TAIL
            detail = result.problem_detail
        elif result.problem_is_sequence_gap:
            kind = ProblemKind.SEQUENCE_GAP
            detail = result.problem_detail
        else:
            kind = ProblemKind.CORRUPT_RECORD
            detail = result.problem_detail
            if result.state is ScanState.TORN_TAIL:
                detail += " (at the end of a segment that is not the last)"
        problem = JournalProblem(kind, path, result.problem_offset, detail, result.dropped_bytes)
        later = [later_path for _, later_path in segments[index + 1 :]]
        break

    last_record: int | None = None
    if record_count > 0:
        last_record = usable[-1].last_sequence
    if problem is None:
        assert len(usable) == len(segments)
    elif problem.kind is ProblemKind.SEGMENT_GAP:
        assert len(usable) + len(later) + 1 == len(segments)
    else:
        assert len(usable) + len(later) == len(segments)
    return JournalScan(
        directory=directory,
        segment_count=len(segments),
        covered_segment_count=covered_count,
        usable_segments=usable,
        later_segments=later,
        problem=problem,
        record_count=record_count,
        first_record_sequence=first_record,
        last_record_sequence=last_record,
        records=kept,
    )


def _backup_path(path: Path, timestamp_ms: int) -> Path:
    # Bounded: a clash needs another backup of the same file in the same millisecond.
    for attempt in range(1000):
        candidate = path.with_name(f"{path.name}.bak-{timestamp_ms + attempt}")
        if not candidate.exists():
            return candidate
    raise AssertionError(f"no free backup name for {path}")


def _truncate_file(path: Path, size_bytes: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_journal(scan: JournalScan, *, backup: bool = True) -> list[Path]:
    """Cut the journal at `scan.problem`; return the backup files written.

    The damaged segment is copied to `<name>.bak-<timestamp_ms>` then truncated at the bad
    record; every later segment is renamed to a backup, which takes it out of the journal.
    """
    problem = scan.problem
    assert problem is not None, "nothing to repair"
    timestamp_ms = time.time_ns() // 1_000_000
    backups: list[Path] = []
    if problem.kind is ProblemKind.SEGMENT_GAP:
        # Its name breaks the sequence, so even an empty file there would still be a gap.
        target = _backup_path(problem.path, timestamp_ms)
        problem.path.rename(target)
        backups.append(target)
    else:
        if backup:
            target = _backup_path(problem.path, timestamp_ms)
            shutil.copyfile(problem.path, target)
            _truncate_file(target, target.stat().st_size)  # fsync the copy before cutting
            backups.append(target)
        _truncate_file(problem.path, problem.offset)
    for later_path in scan.later_segments:
        target = _backup_path(later_path, timestamp_ms)
        later_path.rename(target)
        backups.append(target)
    fsync_directory(scan.directory)
    assert len(backups) >= len(scan.later_segments)
    return backups


def recover_directory(
    directory: Path, repair: bool, snapshot_sequence: int, keep_records: bool = False
) -> tuple[list[SegmentInfo], int, list[Record] | None]:
    """Validate and fix up the directory; return its segments, the next sequence and (with
    `keep_records`) the records after `snapshot_sequence` as the scan decoded them (None if
    not asked for or too many to keep).

    A torn tail is truncated; other damage raises JournalCorrupt unless `repair`. Segments
    wholly covered by the snapshot at `snapshot_sequence` are removed if nothing follows them.
    """
    scan = scan_journal(directory, covered_sequence=snapshot_sequence, keep_records=keep_records)
    problem = scan.problem
    if problem is not None:
        if problem.kind is ProblemKind.TORN_TAIL:
            logger.warning(
                "journal torn tail: truncating %s at byte offset %d, dropping %d bytes (%s)",
                problem.path,
                problem.offset,
                problem.dropped_bytes,
                problem.detail,
            )
            repair_journal(scan, backup=False)
        elif repair:
            backups = repair_journal(scan, backup=True)
            logger.warning(
                "journal repaired: cut %s at byte offset %d (%s); %d later segments dropped; "
                "backups: %s",
                problem.path,
                problem.offset,
                problem.detail,
                len(scan.later_segments),
                ", ".join(str(backup) for backup in backups),
            )
        else:
            raise JournalCorrupt(problem.path, problem.offset, problem.detail)

    segments = list(scan.usable_segments)
    next_sequence = scan.next_sequence
    # Only records of usable segments were kept, and a repair cuts after them.
    records = scan.records
    if segments and next_sequence - 1 < snapshot_sequence:
        # Every record here is already in the snapshot (the journal lost a tail the snapshot
        # had seen); keeping these segments would leave a gap before the next one.
        logger.warning(
            "journal %s ends at %d, before snapshot %d: removing %d covered segments",
            directory,
            next_sequence - 1,
            snapshot_sequence,
            len(segments),
        )
        for info in segments:
            info.path.unlink()
        fsync_directory(directory)
        segments = []
        records = None if records is None else []
    if segments and segments[0].first_sequence > snapshot_sequence + 1:
        raise JournalCorrupt(
            segments[0].path,
            0,
            f"journal starts at sequence {segments[0].first_sequence} but the snapshot covers "
            f"only up to {snapshot_sequence}: records are missing",
        )
    if not segments:
        next_sequence = snapshot_sequence + 1
    assert next_sequence >= snapshot_sequence + 1
    assert records is None or len(records) == next_sequence - 1 - snapshot_sequence
    assert not records or records[0].sequence == snapshot_sequence + 1
    return segments, next_sequence, records


def read_records_after(
    directory: Path, segment_first_sequences: list[int], last_sequence: int, sequence: int
) -> Iterator[Record]:
    """Yield the records after `sequence` from the segments starting at
    `segment_first_sequences` (the journal ends at `last_sequence`), rereading the files.

    The segments were validated when the journal opened; a file that changed since raises
    JournalCorrupt, as does asking for records the journal no longer (or never) had.
    """
    assert sequence >= 0, sequence
    firsts = segment_first_sequences
    if sequence >= last_sequence:
        return
    first_available = firsts[0] if firsts else last_sequence + 1
    if sequence + 1 < first_available:
        # Asked for records the journal no longer (or never) had: recovery would be wrong.
        raise JournalCorrupt(
            segment_path(directory, first_available),
            0,
            f"records {sequence + 1}..{first_available - 1} are not in the journal",
        )
    for index, first_sequence in enumerate(firsts):
        segment_last_sequence = firsts[index + 1] - 1 if index + 1 < len(firsts) else last_sequence
        if segment_last_sequence <= sequence:
            continue
        path = segment_path(directory, first_sequence)
        result = scan_records(
            path.read_bytes(), first_sequence=first_sequence, source_name=str(path)
        )
        if result.state is not ScanState.CLEAN or result.last_sequence != segment_last_sequence:
            offset = result.valid_bytes
            detail = result.problem_detail or f"segment ends at {result.last_sequence}"
            raise JournalCorrupt(path, offset, f"changed since open: {detail}")
        for record in result.records:
            if record.sequence > sequence:
                yield record
