"""The journal's errors, shared by the writer, the scan and the directory lock.

JournalUnavailable (and its JournalBacklogFull) means "not written, roll back"; JournalCorrupt
means acknowledged data on disk is damaged and start-up must not guess around it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["JournalBacklogFull", "JournalCorrupt", "JournalUnavailable"]


class JournalUnavailable(Exception):
    """A write or fsync failed (or the journal is closed): nothing unacknowledged is durable."""


class JournalBacklogFull(JournalUnavailable):
    """The pending batch is over its bound. The journal is healthy: retry later."""


class JournalCorrupt(Exception):
    """Acknowledged data is damaged in the middle of the journal; start-up must not guess."""

    def __init__(self, path: Path, offset: int, detail: str) -> None:
        super().__init__(f"journal corrupt in {path} at byte offset {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail
