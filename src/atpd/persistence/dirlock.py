"""Directory locking: one process at a time owns a journal directory (flock on a lock file).

The journal takes the lock when it opens and releases it when it closes; `atpd verify-journal`
takes it too, so an offline check or repair never touches a journal a live server has open.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from atpd.persistence.journal_errors import JournalUnavailable

__all__ = ["LOCK_FILE_NAME", "acquire_directory_lock", "release_directory_lock"]

LOCK_FILE_NAME = "journal.lock"


def acquire_directory_lock(directory: Path) -> int:
    """Hold an exclusive lock on the directory so two processes never write one journal."""
    fd = os.open(directory / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        message = f"journal directory {directory} is locked by another process"
        raise JournalUnavailable(message) from None
    return fd


def release_directory_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
