"""Offline journal and snapshot checks, like redis-check-aof: report what is there, optionally
cut the damage.

Beyond checksums, verification decodes every record and checks its content with the same rules
recovery applies (codec.decode_command), and loads snapshots into a state (ids, counts, shapes):
whatever would stop `atpd serve` is reported here first, with the file, offset and reason.

Run it on a stopped server: it takes the journal's directory lock, so it refuses to touch a
journal that a live process has open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atpd.persistence.codec import UndecodableRecord, decode_command
from atpd.persistence.dirlock import acquire_directory_lock, release_directory_lock
from atpd.persistence.framing import scan_records
from atpd.persistence.journal_scan import (
    JournalProblem,
    JournalScan,
    ProblemKind,
    repair_journal,
    scan_journal,
)
from atpd.persistence.snapshot_file import SnapshotCorrupt, list_snapshots, load_snapshot
from atpd.persistence.state_snapshot import SnapshotContentError, import_state

__all__ = ["VerifyReport", "format_report", "verify_journal", "verify_snapshots"]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    directory: Path
    segment_count: int
    record_count: int  # valid records, up to the first problem
    first_sequence: int | None
    last_sequence: int | None
    problem: JournalProblem | None
    repaired: bool
    backups: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was wrong, or the repair cut the damage away."""
        return self.problem is None or self.repaired

    @property
    def starts_unaided(self) -> bool:
        """True when Journal.open accepts the journal as it is now (it truncates torn tails)."""
        return self.ok or (self.problem is not None and self.problem.kind is ProblemKind.TORN_TAIL)


def verify_journal(directory: Path, repair: bool, *, check_content: bool = True) -> VerifyReport:
    """Scan every segment of the journal in `directory`; with `repair`, back up and cut.

    With `check_content` (the default, and the CLI's) every record is also decoded and checked
    as recovery would; without it only the framing is (for journals of opaque payloads)."""
    assert directory.is_dir(), f"no journal directory {directory}"
    lock_fd = acquire_directory_lock(directory)
    try:
        scan = scan_journal(directory)
        content_problem, record_count = None, scan.record_count
        if check_content and scan.problem is None:
            content_problem, record_count = _check_contents(scan)
        if content_problem is not None:
            scan = _cut_at(scan, content_problem)
        backups: list[Path] = []
        repaired = False
        if scan.problem is not None and repair:
            backups = repair_journal(scan, backup=True)
            repaired = True
    finally:
        release_directory_lock(lock_fd)
    assert repaired or not backups
    return VerifyReport(
        directory=directory,
        segment_count=scan.segment_count,
        record_count=record_count,
        first_sequence=scan.first_record_sequence,
        last_sequence=scan.last_record_sequence if content_problem is None else None,
        problem=scan.problem,
        repaired=repaired,
        backups=tuple(backups),
    )


def cut_journal_at(directory: Path, path: Path, offset: int, detail: str) -> list[Path]:
    """Back up and cut the journal at the record at `offset` of segment `path` (one that cannot
    be replayed, as recovery found it): that record and everything after it are dropped.
    Returns the backups written."""
    lock_fd = acquire_directory_lock(directory)
    try:
        scan = scan_journal(directory)
        dropped = path.stat().st_size - offset
        problem = JournalProblem(ProblemKind.INVALID_RECORD, path, offset, detail, dropped)
        return repair_journal(_cut_at(scan, problem), backup=True)
    finally:
        release_directory_lock(lock_fd)


def _check_contents(scan: JournalScan) -> tuple[JournalProblem | None, int]:
    """Decode every well-framed record; the first one whose content is bad, and how many
    records are good before it."""
    count = 0
    for segment in scan.usable_segments:
        data = segment.path.read_bytes()[: segment.valid_bytes]
        result = scan_records(
            data, first_sequence=segment.first_sequence, source_name=str(segment.path)
        )
        for record in result.records:
            try:
                decode_command(record.payload)
            except UndecodableRecord as error:
                detail = f"record {record.sequence} cannot be replayed: {error}"
                dropped = segment.path.stat().st_size - record.offset
                problem = JournalProblem(
                    ProblemKind.INVALID_RECORD, segment.path, record.offset, detail, dropped
                )
                return problem, count
            count += 1
    return None, count


def _cut_at(scan: JournalScan, problem: JournalProblem) -> JournalScan:
    """The scan as if the journal ended at `problem` (what a repair keeps)."""
    usable = []
    later: list[Path] = []
    for index, segment in enumerate(scan.usable_segments):
        if segment.path == problem.path:
            kept = type(segment)(
                segment.path, segment.first_sequence, segment.first_sequence - 1, problem.offset
            )
            usable.append(kept)
            later = [x.path for x in scan.usable_segments[index + 1 :]] + scan.later_segments
            break
        usable.append(segment)
    return JournalScan(
        directory=scan.directory,
        segment_count=scan.segment_count,
        covered_segment_count=scan.covered_segment_count,
        usable_segments=usable,
        later_segments=later,
        problem=problem,
        record_count=scan.record_count,
        first_record_sequence=scan.first_record_sequence,
        last_record_sequence=scan.last_record_sequence,
    )


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    path: Path
    last_sequence: int
    problem: str | None  # one line: the offset and the reason


def verify_snapshots(directory: Path) -> list[SnapshotReport]:
    """Load every snapshot in `directory` (checksums, then content into a state)."""
    reports = []
    for last_sequence, path in list_snapshots(directory):
        problem = None
        try:
            loaded = load_snapshot(path)
            import_state(loaded.arrays, loaded.blobs)
        except SnapshotContentError as error:
            offset = loaded.offsets.get(error.entry)
            problem = str(SnapshotCorrupt(path, f"content is invalid: {error}", offset))
        except (SnapshotCorrupt, OSError) as error:
            problem = str(error)
        reports.append(SnapshotReport(path, last_sequence, problem))
    return reports


def format_snapshot_reports(directory: Path, reports: list[SnapshotReport]) -> str:
    """Human-readable lines for the `atpd verify-snapshot` command."""
    lines = [f"snapshots: {directory}", f"count: {len(reports)}"]
    for report in reports:
        status = "OK" if report.problem is None else f"DAMAGED: {report.problem}"
        lines.append(f"{report.path.name} (sequence {report.last_sequence}): {status}")
    return "\n".join(lines)


def format_report(report: VerifyReport) -> str:
    """Human-readable lines for the `atpd verify-journal` command."""
    lines = [
        f"journal: {report.directory}",
        f"segments: {report.segment_count}",
        f"records: {report.record_count}",
        f"first sequence: {report.first_sequence if report.first_sequence is not None else '-'}",
        f"last sequence: {report.last_sequence if report.last_sequence is not None else '-'}",
    ]
    problem = report.problem
    if problem is None:
        lines.append("status: OK")
        return "\n".join(lines)
    lines.append(
        f"problem: {problem.kind.value} in {problem.path} at byte offset {problem.offset}: "
        f"{problem.detail} ({problem.dropped_bytes} bytes from there to the end of the file)"
    )
    if report.repaired:
        lines.append("status: REPAIRED (journal cut at the problem)")
        lines.extend(f"backup: {backup}" for backup in report.backups)
    elif problem.kind is ProblemKind.TORN_TAIL:
        lines.append("status: TORN TAIL (truncated automatically at the next start)")
    else:
        lines.append("status: CORRUPT (the server refuses to start; rerun with --repair)")
    return "\n".join(lines)
