"""Offline journal check, like redis-check-aof: report what is there, optionally cut the damage.

Run it on a stopped server: it takes the journal's directory lock, so it refuses to touch a
journal that a live process has open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atpd.persistence.journal import (
    JournalProblem,
    ProblemKind,
    acquire_directory_lock,
    release_directory_lock,
    repair_journal,
    scan_journal,
)

__all__ = ["VerifyReport", "format_report", "verify_journal"]


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


def verify_journal(directory: Path, repair: bool) -> VerifyReport:
    """Scan every segment of the journal in `directory`; with `repair`, back up and cut."""
    assert directory.is_dir(), f"no journal directory {directory}"
    lock_fd = acquire_directory_lock(directory)
    try:
        scan = scan_journal(directory)
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
        record_count=scan.record_count,
        first_sequence=scan.first_record_sequence,
        last_sequence=scan.last_record_sequence,
        problem=scan.problem,
        repaired=repaired,
        backups=tuple(backups),
    )


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
