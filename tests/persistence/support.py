"""Helpers shared by the persistence tests: write and read journals in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from atpd.persistence.framing import Record
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_scan import segment_path


def payload_for(sequence: int, size_bytes: int = 40) -> bytes:
    """A payload that names its sequence, padded to `size_bytes`."""
    text = f"record-{sequence}:".encode()
    assert len(text) <= size_bytes
    filler = b"0123456789abcdef" * (size_bytes // 16 + 1)
    return text + filler[: size_bytes - len(text)]


def append_all(
    directory: Path,
    payloads: Sequence[bytes],
    *,
    segment_bytes: int = 1 << 20,
    fsync_policy: FsyncPolicy = FsyncPolicy.NONE,
    snapshot_sequence: int = 0,
) -> list[int]:
    """Open the journal, append `payloads` (timestamp = 1000 x sequence), wait, close."""

    async def run() -> list[int]:
        journal = Journal.open(
            directory,
            fsync_policy=fsync_policy,
            segment_bytes=segment_bytes,
            snapshot_sequence=snapshot_sequence,
        )
        sequences = [
            journal.append(payload, timestamp_ms=1000 * (journal.last_sequence + 1))
            for payload in payloads
        ]
        if sequences:
            await journal.wait_durable(sequences[-1])
        await journal.aclose()
        return sequences

    return asyncio.run(run())


def read_all(
    directory: Path, *, after_sequence: int = 0, segment_bytes: int = 1 << 20
) -> list[Record]:
    """Open the journal (which repairs a torn tail), read every record after one, close."""
    journal = Journal.open(
        directory,
        fsync_policy=FsyncPolicy.NONE,
        segment_bytes=segment_bytes,
        snapshot_sequence=after_sequence,
    )
    try:
        return list(journal.records_after(after_sequence))
    finally:
        journal.close()


def segment_files(directory: Path) -> list[Path]:
    """The journal's segment files, oldest first."""
    return sorted(directory.glob("journal-*.seg"))


def record_offsets(records: Sequence[Record], header_bytes: int) -> list[int]:
    """Byte offset of each record inside one segment holding exactly `records`."""
    offsets: list[int] = []
    offset = 0
    for record in records:
        offsets.append(offset)
        offset += header_bytes + len(record.payload)
    return offsets


__all__ = [
    "append_all",
    "payload_for",
    "read_all",
    "record_offsets",
    "segment_files",
    "segment_path",
]
