"""Small filesystem helpers shared by the journal and the snapshot files."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make creations, renames and deletions of entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Deeper paths than this are refused rather than walked (no loop here is unbounded).
PATH_DEPTH_MAX = 4096


def make_directory_durable(directory: Path) -> None:
    """Create `directory` and its missing parents so that a power cut cannot take them away.

    A new directory's entry lives in its parent, so each parent is fsynced after the mkdir; the
    parent of `directory` is fsynced even when it already existed, since a previous run may
    have created it and died before doing so.
    """
    missing: list[Path] = []
    current = directory
    for _ in range(PATH_DEPTH_MAX):
        if current.is_dir() or current.parent == current:
            break
        missing.append(current)
        current = current.parent
    else:
        raise OSError(f"{directory}: more than {PATH_DEPTH_MAX} levels deep")
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        fsync_directory(path.parent)
    if not missing:
        fsync_directory(directory.parent)
