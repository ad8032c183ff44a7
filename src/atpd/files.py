"""Reading files named by an operator (config, rules, load input): regular files only, bounded.

`Path.read_text()` on `/dev/zero` grows a string until MemoryError, on a FIFO it waits for a
writer forever, and on a directory it raises IsADirectoryError with a traceback. Every file the
server or the CLI reads by name goes through here instead: it is opened without blocking
(O_NONBLOCK, so opening a FIFO with no writer returns at once), checked with fstat to be a
regular file (after the open, so the check and the read see the same file), and read with a
size bound. Failures are one `FileRefused` naming the file, what it was for and the problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Bounds for the files atpd reads whole; each is far above any real file of its kind.
MAX_CONFIG_FILE_BYTES = 1 << 20
MAX_RULES_FILE_BYTES = 1 << 20  # the same bound SetRules puts on rule text


class FileRefused(ValueError):
    """A named file cannot be used; the message is one line naming the file and the problem."""


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular(path: Path, what: str) -> tuple[int, int]:
    """An fd open for reading on `path`, checked to be a regular file, and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused(f"{path}: {what}: no such file") from None
    except IsADirectoryError:
        raise FileRefused(f"{path}: {what}: is a directory, not a file") from None
    except OSError as error:
        raise FileRefused(f"{path}: {what}: cannot open: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path}: {what}: is {_kind_of(info.st_mode)}, not a regular file")
        # Regular files never block; clear the flag so reads behave as usual.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def check_regular_file(path: Path, what: str, max_bytes: int | None = None) -> None:
    """Refuse (FileRefused) anything but an existing, readable regular file (of at most
    `max_bytes` when given)."""
    fd, size = _open_regular(path, what)
    os.close(fd)
    if max_bytes is not None and size > max_bytes:
        raise FileRefused(f"{path}: {what}: is {size} bytes, more than the {max_bytes} allowed")


def read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The whole content of the regular file `path`, refused when larger than `max_bytes`."""
    assert max_bytes > 0
    fd, size = _open_regular(path, what)
    with os.fdopen(fd, "rb") as file:
        if size > max_bytes:
            raise FileRefused(f"{path}: {what}: is {size} bytes, more than the {max_bytes} allowed")
        try:
            # One byte more than allowed tells a file that grew since fstat from one that fits.
            data = file.read(max_bytes + 1)
        except OSError as error:
            raise FileRefused(f"{path}: {what}: cannot read: {error.strerror}") from None
    if len(data) > max_bytes:
        raise FileRefused(f"{path}: {what}: is more than the {max_bytes} bytes allowed")
    return data


def read_regular_text(path: Path, max_bytes: int, what: str) -> str:
    """`read_regular_file` decoded as UTF-8, with a clear error when it is not."""
    data = read_regular_file(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefused(
            f"{path}: {what}: is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
