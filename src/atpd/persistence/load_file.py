"""Stored bulk loads: the rows of a load in one checksummed file, referenced by one journal record.

A load of millions of rows is made durable compactly: its columns are written once to
`<data_dir>/loads/<load_id>.<nonce>.load` in the snapshot file format (named numpy arrays and
blobs, CRC32C over the content), and the journal gets one small `BulkLoadRecord` naming the
file and its checksum. Replay reads the file back and applies the same command.

The nonce makes every stored file name unique, so a file that a journal record may still
reference is never overwritten (not even by a retry with the same load id after a crash).

Lifetime: a load file is needed while a journal record that a recovery may replay names it,
that is a record after the oldest kept snapshot (recovery falls back to that one when the
newest is damaged). `collect_unreferenced` (run before each new load is stored) deletes every
other load file, and leftovers of crashed writes. Files of loads still being written or
journaled are passed in `keep`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import numpy as np

from atpd.core.commands import Command
from atpd.core.load_command import BulkLoad, LoadColumns, LoadMode
from atpd.persistence.framing import scan_records
from atpd.persistence.fsutil import fsync_directory, make_directory_durable
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.journal_scan import SEGMENT_NAME
from atpd.persistence.snapshot_file import (
    FILE_HEADER,
    FILE_HEADER_BYTES,
    SnapshotCorrupt,
    list_snapshots,
    load_snapshot,
    write_snapshot,
)

log = logging.getLogger(__name__)

LOADS_DIRECTORY = "loads"
LOAD_FORMAT = 1
LOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.[0-9a-f]{12}\.load$")
STAGING_PREFIX = ".staging-"
LOADS_MARKER = f"{LOADS_DIRECTORY}/".encode()


def loads_directory(data_dir: Path) -> Path:
    return data_dir / LOADS_DIRECTORY


def new_file_name(load_id: str) -> str:
    """`loads/<load_id>.<12 hex>.load`, relative to the data directory."""
    name = f"{load_id}.{secrets.token_hex(6)}.load"
    assert LOAD_NAME.fullmatch(name), name
    return f"{LOADS_DIRECTORY}/{name}"


def write_load_file(data_dir: Path, command: BulkLoad, relative: str) -> BulkLoad:
    """Write the load's columns durably to `data_dir / relative`; return the command with the
    stored file and its checksum filled in. Runs off the event loop (large writes, fsync)."""
    columns = command.columns
    assert columns is not None
    directory = loads_directory(data_dir)
    final = data_dir / relative
    assert final.parent == directory, relative
    staging = directory / f"{STAGING_PREFIX}{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    # The file is published into loads/ and that directory fsynced; loads/ itself must be in
    # the data directory durably too, or a power cut takes every load file with it.
    make_directory_durable(directory)
    meta = {
        "format": LOAD_FORMAT,
        "load_id": command.load_id,
        "mode": int(command.mode),
        "source_sequence": command.source_sequence,
        "node_ids": list(command.node_ids),
        "rows": columns.rows,
        "fingerprint": command.fingerprint,
    }
    arrays = {
        "sku": columns.sku,
        "node": columns.node,
        "on_hand": columns.on_hand,
        "safety": columns.safety,
    }
    blobs = {
        "meta": json.dumps(meta).encode(),
        # No SKU or node id may contain a newline (ids.ID_PATTERN), so newline-joined is exact.
        "sku_names": "\n".join(columns.sku_names).encode(),
        "node_names": "\n".join(columns.node_names).encode(),
    }
    try:
        written = write_snapshot(staging, 0, arrays, blobs)
        with written.open("rb") as file:
            header = file.read(FILE_HEADER_BYTES)
        checksum = int(FILE_HEADER.unpack(header)[5])
        os.replace(written, final)
        fsync_directory(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return replace(command, stored_file=relative, stored_checksum=checksum)


def _split(blob: bytes) -> list[str]:
    return blob.decode().split("\n") if blob else []


def read_load_file(data_dir: Path, command: BulkLoad) -> BulkLoad:
    """The journaled command with its columns read back from its file, which must be the one
    the record names (checksum, id, mode and sequence). Raises SnapshotCorrupt or OSError."""
    path = data_dir / command.stored_file
    loaded = load_snapshot(path)
    with path.open("rb") as file:
        header = file.read(FILE_HEADER_BYTES)
    checksum = int(FILE_HEADER.unpack(header)[5])
    if checksum != command.stored_checksum:
        raise SnapshotCorrupt(
            path, f"checksum {checksum:08x}, the journal record says {command.stored_checksum:08x}"
        )
    meta = json.loads(loaded.blobs["meta"])
    if meta.get("format") != LOAD_FORMAT:
        raise SnapshotCorrupt(path, f"load format {meta.get('format')}, expected {LOAD_FORMAT}")
    expected = (command.load_id, int(command.mode), command.source_sequence)
    if (meta["load_id"], meta["mode"], meta["source_sequence"]) != expected:
        raise SnapshotCorrupt(path, f"holds load {meta['load_id']!r}, not {command.load_id!r}")
    arrays = loaded.arrays
    columns = LoadColumns(
        _split(loaded.blobs["sku_names"]),
        np.asarray(arrays["sku"], np.int32),
        _split(loaded.blobs["node_names"]),
        np.asarray(arrays["node"], np.int32),
        np.asarray(arrays["on_hand"], np.int32),
        np.asarray(arrays["safety"], np.int32),
    )
    if columns.rows != meta["rows"]:
        raise SnapshotCorrupt(path, f"{columns.rows} rows, its header says {meta['rows']}")
    resolved = BulkLoad.create(
        command.load_id,
        LoadMode(meta["mode"]),
        command.source_sequence,
        tuple(meta["node_ids"]),
        columns,
    )
    if resolved.fingerprint != meta["fingerprint"]:
        raise SnapshotCorrupt(path, "content does not match the fingerprint it was written with")
    return replace(resolved, stored_file=command.stored_file, stored_checksum=checksum)


def resolve_stored(command: Command, data_dir: Path, sequence: int) -> Command:
    """For replay: a journaled BulkLoad gets its rows from its file; other commands pass."""
    if not isinstance(command, BulkLoad) or command.columns is not None:
        return command
    try:
        return read_load_file(data_dir, command)
    except (SnapshotCorrupt, OSError, KeyError, ValueError) as error:
        raise JournalCorrupt(
            Path(f"<record {sequence}>"),
            0,
            f"bulk load {command.load_id!r}: its file {command.stored_file} is unusable: {error}",
        ) from error


def collect_unreferenced(data_dir: Path, keep: Collection[str] = ()) -> list[str]:
    """Delete load files (and leftover staging directories) that no journal segment in
    `data_dir` mentions, except the relative names in `keep`; return what was deleted."""
    directory = loads_directory(data_dir)
    if not directory.is_dir():
        return []
    candidates: list[str] = []
    for entry in os.scandir(directory):
        relative = f"{LOADS_DIRECTORY}/{entry.name}"
        if entry.name.startswith(STAGING_PREFIX):
            staged = f"{LOADS_DIRECTORY}/{entry.name.removeprefix(STAGING_PREFIX)}"
            if staged not in keep:
                shutil.rmtree(entry.path, ignore_errors=True)
            continue
        if LOAD_NAME.fullmatch(entry.name) and relative not in keep:
            candidates.append(relative)
    if not candidates:
        return []
    referenced = _referenced_after_snapshot(data_dir, candidates)
    removed = [relative for relative in candidates if relative not in referenced]
    for relative in removed:
        (data_dir / relative).unlink(missing_ok=True)
    if removed:
        fsync_directory(directory)
        log.info("removed %d load files no journal segment references", len(removed))
    return removed


def _referenced_after_snapshot(data_dir: Path, candidates: list[str]) -> set[str]:
    """The candidates named by a journal record that a replay may still apply: one after the
    oldest kept snapshot (recovery falls back to it if the newest one is damaged)."""
    snapshots = list_snapshots(data_dir)
    covered = snapshots[0][0] if snapshots else 0
    segments = sorted(
        (int(match.group(1)), Path(entry.path))
        for entry in os.scandir(data_dir)
        if (match := SEGMENT_NAME.fullmatch(entry.name)) and entry.is_file(follow_symlinks=False)
    )
    names = [(relative, relative.encode()) for relative in candidates]
    referenced: set[str] = set()
    for i, (first_sequence, path) in enumerate(segments):
        if i + 1 < len(segments) and segments[i + 1][0] - 1 <= covered:
            continue  # every record of this segment is in the oldest kept snapshot
        scan = scan_records(path.read_bytes(), first_sequence=first_sequence, source_name=str(path))
        for record in scan.records:
            if record.sequence <= covered or LOADS_MARKER not in record.payload:
                continue
            for relative, encoded in names:
                if encoded in record.payload:
                    referenced.add(relative)
    return referenced
