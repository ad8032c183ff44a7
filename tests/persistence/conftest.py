"""Real disk faults for the journal tests: a tiny tmpfs that fills up, or a file size limit."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

TMPFS_BYTES = 256 * 1024
# Kept free on the tmpfs until `release`, so that after the journal fails there is room for
# try_reopen's probe (64 KiB) and a few more records.
TMPFS_RESERVE_BYTES = 96 * 1024
FILE_SIZE_LIMIT_BYTES = 160 * 1024
FILL_CHUNK_BYTES = 4096


class DiskFault(Protocol):
    """A directory on a disk that runs out of room, then gets room back."""

    directory: Path
    segment_bytes: int  # so that the journal actually hits the fault
    errno_name: str  # what the failed write reports

    def exhaust(self) -> None:
        """Leave no room at all, even for try_reopen's probe."""

    def release(self) -> None:
        """Give room back so writes succeed again."""


class TmpfsFull:
    """A 256 KiB tmpfs: writes fail with ENOSPC once it is full."""

    errno_name = "ENOSPC"

    def __init__(self, mount_point: Path) -> None:
        self.mount_point = mount_point
        self.directory = mount_point / "journal"
        self.segment_bytes = 32 * 1024  # rotation happens while the disk fills
        self._fillers: list[Path] = []

    def mount(self) -> None:
        self.mount_point.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(self.mount_point)],
            check=True,
            capture_output=True,
        )
        self.directory.mkdir()
        self._fillers.append(self._fill(self.mount_point / "reserve", TMPFS_RESERVE_BYTES))

    def unmount(self) -> None:
        result = subprocess.run(["umount", str(self.mount_point)], capture_output=True)
        if result.returncode != 0:
            # A failed test may leave a descriptor open; detach so the run can go on.
            subprocess.run(["umount", "-l", str(self.mount_point)], check=True)

    def _fill(self, path: Path, limit_bytes: int) -> Path:
        chunk = bytes(FILL_CHUNK_BYTES)
        with path.open("wb", buffering=0) as file:
            for _ in range(limit_bytes // FILL_CHUNK_BYTES):
                try:
                    file.write(chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
        return path

    def exhaust(self) -> None:
        self._fillers.append(self._fill(self.mount_point / "filler", TMPFS_BYTES))
        assert os.statvfs(self.mount_point).f_bavail == 0

    def release(self) -> None:
        for path in self._fillers:
            path.unlink()
        self._fillers = []


class FileSizeLimit:
    """RLIMIT_FSIZE with SIGXFSZ ignored: writes past the limit fail with EFBIG."""

    errno_name = "EFBIG"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.segment_bytes = 1 << 20  # larger than the limit, so one segment hits it
        self._saved_limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        self._saved_handler = signal.getsignal(signal.SIGXFSZ)

    def apply(self) -> None:
        self.directory.mkdir()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self._set_soft_limit(FILE_SIZE_LIMIT_BYTES)

    def _set_soft_limit(self, limit_bytes: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, self._saved_limits[1]))

    def exhaust(self) -> None:
        # Below the probe size; shrinking files (the rollback) stays allowed.
        self._set_soft_limit(FILL_CHUNK_BYTES)

    def release(self) -> None:
        self._set_soft_limit(FILE_SIZE_LIMIT_BYTES * 4)

    def restore(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self._saved_limits)
        signal.signal(signal.SIGXFSZ, self._saved_handler)


@pytest.fixture(params=["tmpfs_enospc", "rlimit_efbig"])
def disk_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DiskFault]:
    """A journal directory whose disk runs out of space (ENOSPC) or file size (EFBIG)."""
    if request.param == "tmpfs_enospc":
        tmpfs = TmpfsFull(tmp_path / "disk")
        tmpfs.mount()
        try:
            yield tmpfs
        finally:
            tmpfs.unmount()
    else:
        limit = FileSizeLimit(tmp_path / "journal")
        limit.apply()
        try:
            yield limit
        finally:
            limit.restore()
