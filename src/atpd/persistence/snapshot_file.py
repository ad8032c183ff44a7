"""Snapshot files: the whole state as named numpy arrays and byte blobs, checksummed.

Layout (little endian):

    file header (40 bytes)
        magic              8s   b"ATPSNAP\\0"
        format_version     u32
        entry_count        u32
        last_sequence      u64  the last journal record the state includes
        content_bytes      u64  bytes after the header
        content_checksum   u32  CRC32C of those bytes
        header_checksum    u32  CRC32C of the 36 header bytes before it
    entries, each:
        entry header (16 bytes): kind u8, ndim u8, name_bytes u16, dtype_bytes u16,
                                 reserved u16, data_bytes u64
        name (utf-8), dtype (numpy dtype.str, ascii), shape (ndim x i64),
        zero padding up to a 64-byte file offset, data

Arrays are written straight from their buffers (no pickle) and loaded as views into one
uninitialised numpy buffer filled with readinto, so a load of hundreds of MB costs one read
and one checksum pass (a bytearray would first spend as long zero-filling itself). Data is
64-byte aligned so those views are aligned for SIMD kernels.

A snapshot is written to a temp file in the same directory, fsynced, renamed into place and
the directory fsynced: a crash leaves either the old set of snapshots or the new one, plus
maybe a temp file that the next load or prune removes.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import numpy as np
import numpy.typing as npt

from atpd.persistence.fsutil import fsync_directory

__all__ = [
    "LoadedSnapshot",
    "SnapshotCorrupt",
    "list_snapshots",
    "load_latest_snapshot",
    "load_snapshot",
    "prune_snapshots",
    "snapshot_path",
    "write_snapshot",
]

logger = logging.getLogger(__name__)

MAGIC = b"ATPSNAP\x00"
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<8sIIQQII")
FILE_HEADER_BYTES = FILE_HEADER.size
ENTRY_HEADER = struct.Struct("<BBHHHQ")
ENTRY_HEADER_BYTES = ENTRY_HEADER.size
DATA_ALIGNMENT_BYTES = 64
ENTRY_COUNT_MAX = 65_536
NAME_BYTES_MAX = 1024
NDIM_MAX = 32
SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{20})\.snap$")
TEMP_NAME = re.compile(r"^snapshot-\d{20}\..*\.tmp$")
# Small pieces (headers, names) are gathered and written together; data goes out directly.
SMALL_WRITE_BYTES = 64 * 1024
READ_PASSES_MAX = 1_000_000

assert FILE_HEADER_BYTES == 40
assert ENTRY_HEADER_BYTES == 16


class EntryKind(enum.IntEnum):
    ARRAY = 1
    BLOB = 2


class SnapshotCorrupt(Exception):
    """A snapshot file failed validation (`offset`: where in the file, when known)."""

    def __init__(self, path: Path, detail: str, offset: int | None = None) -> None:
        where = "" if offset is None else f" at byte offset {offset}"
        super().__init__(f"snapshot {path} is damaged{where}: {detail}")
        self.path = path
        self.detail = detail
        self.offset = offset


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    path: Path
    last_sequence: int
    # Writable views into one buffer read from the file: no copy was made.
    arrays: dict[str, npt.NDArray[np.generic]]
    blobs: dict[str, bytes]
    # The file offset of each entry's header, to say where a bad entry is.
    offsets: dict[str, int] = field(default_factory=dict)


def snapshot_path(directory: Path, last_sequence: int) -> Path:
    assert last_sequence >= 0, last_sequence
    return directory / f"snapshot-{last_sequence:020d}.snap"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """Snapshot files in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        match = SNAPSHOT_NAME.fullmatch(entry.name)
        if match is not None and entry.is_file(follow_symlinks=False):
            found.append((int(match.group(1)), Path(entry.path)))
    found.sort()
    return found


def _remove_temp_files(directory: Path) -> int:
    """Delete temp files left by a crash in the middle of write_snapshot."""
    removed = 0
    for entry in os.scandir(directory):
        if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            logger.warning("removing leftover snapshot temp file %s", entry.path)
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def _padding_bytes(offset: int) -> int:
    return -offset % DATA_ALIGNMENT_BYTES


class _ChecksummedWriter:
    """Writes to a raw file, keeping the offset and a running CRC32C of everything written."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self.offset = offset
        self.checksum = 0
        self._small = bytearray()

    def small(self, data: bytes) -> None:
        self._small += data
        self.checksum = crc32c.crc32c(data, self.checksum)
        self.offset += len(data)
        if len(self._small) >= SMALL_WRITE_BYTES:
            self.flush()

    def large(self, data: memoryview) -> None:
        assert data.format == "B" and data.ndim == 1 and data.contiguous
        self.flush()
        self.checksum = crc32c.crc32c(data, self.checksum)
        self._write_all(data)
        self.offset += len(data)

    def flush(self) -> None:
        if self._small:
            self._write_all(memoryview(self._small))
            self._small = bytearray()

    def _write_all(self, data: memoryview) -> None:
        written = 0
        # Every pass writes at least one byte, which bounds the loop.
        for _ in range(len(data) + 1):
            if written == len(data):
                return
            count = os.write(self._fd, data[written:])
            if count <= 0:
                raise OSError("snapshot write made no progress")
            written += count
        raise AssertionError("unreachable: every write makes progress")


def _entry_prefix(kind: EntryKind, name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    name_encoded = name.encode("utf-8")
    dtype_encoded = dtype.encode("ascii")
    assert 0 < len(name_encoded) <= NAME_BYTES_MAX, name
    assert len(shape) <= NDIM_MAX, shape
    return name_encoded + dtype_encoded + struct.pack(f"<{len(shape)}q", *shape)


def write_snapshot(
    directory: Path,
    last_sequence: int,
    arrays: Mapping[str, npt.NDArray[np.generic]],
    blobs: Mapping[str, bytes],
    *,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Write a snapshot durably and return its path, `snapshot-<last_sequence:020d>.snap`.

    `before_publish` runs right before the rename that makes the file visible (a snapshot
    child checks there that its server is still alive, and exits if not).
    Not safe to call concurrently for one directory (one writer, as everywhere in atpd).
    """
    assert last_sequence >= 0, last_sequence
    assert len(arrays) + len(blobs) <= ENTRY_COUNT_MAX
    directory.mkdir(parents=True, exist_ok=True)
    _remove_temp_files(directory)
    final_path = snapshot_path(directory, last_sequence)
    fd, temp_name = tempfile.mkstemp(
        prefix=f"snapshot-{last_sequence:020d}.", suffix=".tmp", dir=directory
    )
    temp_path = Path(temp_name)
    assert TEMP_NAME.fullmatch(temp_path.name), temp_path
    try:
        try:
            os.write(fd, bytes(FILE_HEADER_BYTES))  # placeholder until the checksum is known
            writer = _ChecksummedWriter(fd, FILE_HEADER_BYTES)
            for name, array in arrays.items():
                _write_array(writer, name, array)
            for name, blob in blobs.items():
                _write_blob(writer, name, blob)
            writer.flush()
            content_bytes = writer.offset - FILE_HEADER_BYTES
            header = _pack_file_header(
                len(arrays) + len(blobs), last_sequence, content_bytes, writer.checksum
            )
            os.pwrite(fd, header, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_publish is not None:
            before_publish()
        os.replace(temp_path, final_path)
        fsync_directory(directory)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    logger.info("snapshot %s written (%d bytes)", final_path, FILE_HEADER_BYTES + content_bytes)
    return final_path


def _pack_file_header(
    entry_count: int, last_sequence: int, content_bytes: int, content_checksum: int
) -> bytes:
    without_checksum = FILE_HEADER.pack(
        MAGIC, FORMAT_VERSION, entry_count, last_sequence, content_bytes, content_checksum, 0
    )[:-4]
    return without_checksum + struct.pack("<I", crc32c.crc32c(without_checksum))


def _write_array(writer: _ChecksummedWriter, name: str, array: npt.NDArray[np.generic]) -> None:
    dtype = array.dtype
    # dtype.str round-trips plain dtypes only; objects would need pickle, fields a descr.
    assert not dtype.hasobject and dtype.fields is None, (name, dtype)
    assert dtype.itemsize > 0, (name, dtype)
    # Not np.ascontiguousarray: it turns a 0-d array into a 1-d one.
    contiguous = array if array.flags.c_contiguous else array.copy(order="C")
    data = contiguous.reshape(-1).view(np.uint8)
    prefix = _entry_prefix(EntryKind.ARRAY, name, dtype.str, contiguous.shape)
    name_bytes = len(name.encode("utf-8"))
    entry_header = ENTRY_HEADER.pack(
        EntryKind.ARRAY, contiguous.ndim, name_bytes, len(dtype.str), 0, data.nbytes
    )
    writer.small(entry_header + prefix)
    writer.small(bytes(_padding_bytes(writer.offset)))
    assert writer.offset % DATA_ALIGNMENT_BYTES == 0
    writer.large(data.data)


def _write_blob(writer: _ChecksummedWriter, name: str, blob: bytes) -> None:
    prefix = _entry_prefix(EntryKind.BLOB, name, "", ())
    name_bytes = len(name.encode("utf-8"))
    writer.small(ENTRY_HEADER.pack(EntryKind.BLOB, 0, name_bytes, 0, 0, len(blob)) + prefix)
    writer.small(bytes(_padding_bytes(writer.offset)))
    writer.large(memoryview(blob).cast("B"))


def _read_file(path: Path) -> npt.NDArray[np.uint8]:
    with path.open("rb", buffering=0) as file:
        size_bytes = os.fstat(file.fileno()).st_size
        buffer = np.empty(size_bytes, dtype=np.uint8)
        view = buffer.data
        done = 0
        for _ in range(READ_PASSES_MAX):
            if done == size_bytes:
                break
            count = file.readinto(view[done:])
            if not count:
                raise SnapshotCorrupt(path, f"file shrank while reading ({done} of {size_bytes})")
            done += count
        else:
            raise SnapshotCorrupt(path, "read made too little progress")
        view.release()
    return buffer


def load_snapshot(path: Path) -> LoadedSnapshot:
    """Read and verify one snapshot; raise SnapshotCorrupt if anything is off."""
    buffer = _read_file(path)
    if len(buffer) < FILE_HEADER_BYTES:
        raise SnapshotCorrupt(path, f"file is {len(buffer)} bytes, shorter than its header")
    magic, version, entry_count, last_sequence, content_bytes, content_checksum, header_checksum = (
        FILE_HEADER.unpack_from(buffer.data, 0)
    )
    if magic != MAGIC:
        raise SnapshotCorrupt(path, f"bad magic {magic!r}")
    view = buffer.data
    if crc32c.crc32c(view[: FILE_HEADER_BYTES - 4]) != header_checksum:
        raise SnapshotCorrupt(path, "header checksum mismatch")
    if version != FORMAT_VERSION:
        raise SnapshotCorrupt(path, f"format version {version}, this build reads {FORMAT_VERSION}")
    if content_bytes != len(buffer) - FILE_HEADER_BYTES:
        raise SnapshotCorrupt(
            path, f"content is {len(buffer) - FILE_HEADER_BYTES} bytes, header says {content_bytes}"
        )
    if crc32c.crc32c(view[FILE_HEADER_BYTES:]) != content_checksum:
        raise SnapshotCorrupt(path, "content checksum mismatch")
    view.release()
    if entry_count > ENTRY_COUNT_MAX:
        raise SnapshotCorrupt(path, f"{entry_count} entries, limit {ENTRY_COUNT_MAX}")

    arrays: dict[str, npt.NDArray[np.generic]] = {}
    blobs: dict[str, bytes] = {}
    offsets: dict[str, int] = {}
    offset = FILE_HEADER_BYTES
    for _ in range(entry_count):
        entry_offset = offset
        offset, name = _read_entry(path, buffer, offset, arrays, blobs)
        offsets[name] = entry_offset
    if offset != len(buffer):
        raise SnapshotCorrupt(path, f"{len(buffer) - offset} bytes after the last entry", offset)
    assert len(arrays) + len(blobs) <= entry_count
    return LoadedSnapshot(path, last_sequence, arrays, blobs, offsets)


def _read_entry(
    path: Path,
    buffer: npt.NDArray[np.uint8],
    offset: int,
    arrays: dict[str, npt.NDArray[np.generic]],
    blobs: dict[str, bytes],
) -> tuple[int, str]:
    """Decode the entry at `offset` into `arrays` or `blobs`; return the next offset and the
    entry's name.

    The checksum already matched, so a failure here means a writer bug: still, every length
    is checked before use rather than trusted.
    """
    if offset + ENTRY_HEADER_BYTES > len(buffer):
        raise SnapshotCorrupt(path, f"entry header at {offset} runs past the end")
    kind, ndim, name_bytes, dtype_bytes, _, data_bytes = ENTRY_HEADER.unpack_from(
        buffer.data, offset
    )
    offset += ENTRY_HEADER_BYTES
    prefix_bytes = name_bytes + dtype_bytes + 8 * ndim
    if ndim > NDIM_MAX or name_bytes > NAME_BYTES_MAX or offset + prefix_bytes > len(buffer):
        raise SnapshotCorrupt(path, f"entry at {offset} has a bad header")
    try:
        name = buffer[offset : offset + name_bytes].tobytes().decode("utf-8")
        offset += name_bytes
        dtype_text = buffer[offset : offset + dtype_bytes].tobytes().decode("ascii")
        offset += dtype_bytes
    except UnicodeDecodeError as error:
        raise SnapshotCorrupt(path, f"entry at {offset}: {error}") from None
    shape = struct.unpack_from(f"<{ndim}q", buffer.data, offset)
    offset += 8 * ndim
    offset += _padding_bytes(offset)
    if offset + data_bytes > len(buffer):
        raise SnapshotCorrupt(path, f"entry {name!r} data runs past the end")

    if kind == EntryKind.BLOB:
        blobs[name] = buffer[offset : offset + data_bytes].tobytes()
    elif kind == EntryKind.ARRAY:
        try:
            dtype = np.dtype(dtype_text)
        except TypeError:
            raise SnapshotCorrupt(
                path, f"entry {name!r} has unknown dtype {dtype_text!r}"
            ) from None
        count = 1
        for extent in shape:
            count *= extent
        if min(shape, default=0) < 0 or count * dtype.itemsize != data_bytes:
            raise SnapshotCorrupt(path, f"entry {name!r}: shape {shape} does not fit the data")
        arrays[name] = buffer[offset : offset + data_bytes].view(dtype).reshape(shape)
    else:
        raise SnapshotCorrupt(path, f"entry {name!r} has unknown kind {kind}")
    next_offset: int = offset + data_bytes
    return next_offset, name


def load_latest_snapshot(directory: Path) -> LoadedSnapshot | None:
    """Load the newest valid snapshot, falling back past damaged ones; None if none is valid."""
    if not directory.is_dir():
        return None
    _remove_temp_files(directory)
    candidates = list_snapshots(directory)
    for last_sequence, path in reversed(candidates):
        try:
            loaded = load_snapshot(path)
        except (SnapshotCorrupt, OSError) as error:
            logger.warning("snapshot %s unusable, falling back to an older one: %s", path, error)
            continue
        if loaded.last_sequence != last_sequence:
            logger.warning(
                "snapshot %s holds sequence %d, not the one in its name: skipping it",
                path,
                loaded.last_sequence,
            )
            continue
        return loaded
    return None


def prune_snapshots(directory: Path, keep: int = 2) -> list[Path]:
    """Delete all but the newest `keep` snapshots (and leftover temp files); return them."""
    assert keep >= 1, keep
    if not directory.is_dir():
        return []
    _remove_temp_files(directory)
    candidates = list_snapshots(directory)
    removed = [path for _, path in candidates[: max(0, len(candidates) - keep)]]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        fsync_directory(directory)
    assert len(candidates) - len(removed) == min(keep, len(candidates))
    return removed
