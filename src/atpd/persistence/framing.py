"""Journal record framing: a fixed header and a payload, checksummed with CRC32C.

Layout of one record (little endian, 28-byte header then the payload):

    offset  size  field
         0     4  magic            b"ATJ1": finds record starts, and marks the format version
         4     4  payload_bytes    u32, at most MAX_PAYLOAD_BYTES
         8     8  sequence         u64, strictly increasing by one across the whole journal
        16     8  timestamp_ms     i64, the time the core used for this command
        24     4  checksum         CRC32C over bytes 0..24 of the header, then the payload
        28     n  payload

The scanner classifies the end of a buffer:

- CLEAN: every byte belongs to a valid record.
- TORN_TAIL: a record is cut short or fails its checksum, and no valid record follows it. This
  is what a crash in the middle of a write leaves behind, so the caller may truncate it.
- CORRUPT: a bad record with a valid record after it, or a valid record whose sequence is not
  the expected one. Data the journal once acknowledged is damaged: refuse to guess.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import crc32c

MAGIC = b"ATJ1"
HEADER = struct.Struct("<4sIQqI")
HEADER_BYTES = HEADER.size
# The checksum is the last header field: everything before it is covered.
CHECKSUMMED_HEADER_BYTES = HEADER_BYTES - 4
# HEADER in two parts: the checksummed fields, then the checksum.
CHECKSUMMED_HEADER = struct.Struct("<4sIQq")
CHECKSUM = struct.Struct("<I")
# Bounds a length field read from disk, so a flipped bit cannot make us allocate gigabytes.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
SEQUENCE_MAX = 2**64 - 1
TIMESTAMP_MS_MIN = -(2**63)
TIMESTAMP_MS_MAX = 2**63 - 1

assert HEADER_BYTES == 28
assert CHECKSUMMED_HEADER.size + CHECKSUM.size == HEADER_BYTES
assert len(MAGIC) == 4


@dataclass(frozen=True, slots=True)
class Record:
    """One journal entry as the core sees it: opaque payload, its sequence and command time."""

    sequence: int
    timestamp_ms: int
    payload: bytes
    # Where the record starts (for error reports; not part of its identity).
    offset: int = field(default=0, compare=False)
    source_name: str = field(default="", compare=False)


class ScanState(enum.Enum):
    CLEAN = "clean"
    TORN_TAIL = "torn_tail"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What scan_records found in one buffer.

    `valid_bytes` is the offset just past the last good record: where the buffer may be cut.
    `problem_offset` is None when the buffer is CLEAN, else equal to `valid_bytes`.
    """

    source_name: str
    state: ScanState
    records: list[Record]
    record_count: int
    first_sequence: int
    last_sequence: int
    valid_bytes: int
    total_bytes: int
    problem_offset: int | None
    problem_detail: str
    # True when the problem is a valid record carrying an unexpected sequence number.
    problem_is_sequence_gap: bool

    @property
    def dropped_bytes(self) -> int:
        return self.total_bytes - self.valid_bytes


def record_bytes(payload_bytes: int) -> int:
    """Size on disk of a record carrying `payload_bytes`."""
    assert 0 <= payload_bytes <= MAX_PAYLOAD_BYTES
    return HEADER_BYTES + payload_bytes


def encode_record_into(
    buffer: bytearray, sequence: int, timestamp_ms: int, payload: bytes | bytearray | memoryview
) -> int:
    """Append one framed record to `buffer` (the group-commit batch); return its size."""
    payload_bytes = len(payload)
    assert 0 <= payload_bytes <= MAX_PAYLOAD_BYTES, payload_bytes
    assert 1 <= sequence <= SEQUENCE_MAX, sequence
    assert TIMESTAMP_MS_MIN <= timestamp_ms <= TIMESTAMP_MS_MAX, timestamp_ms

    # The checksum covers the header up to its own slot, then the payload: computed before the
    # record is written, so nothing is patched in place (this runs once per journaled command).
    header = CHECKSUMMED_HEADER.pack(MAGIC, payload_bytes, sequence, timestamp_ms)
    buffer += header
    buffer += CHECKSUM.pack(crc32c.crc32c(payload, crc32c.crc32c(header)))
    buffer += payload
    return HEADER_BYTES + payload_bytes


def encode_record(sequence: int, timestamp_ms: int, payload: bytes) -> bytes:
    """One framed record as bytes."""
    buffer = bytearray()
    encode_record_into(buffer, sequence, timestamp_ms, payload)
    return bytes(buffer)


@dataclass(frozen=True, slots=True)
class _Decoded:
    sequence: int
    timestamp_ms: int
    payload_start: int
    end: int


def _decode_at(buffer: bytes | bytearray, offset: int) -> _Decoded | str:
    """Decode the record at `offset`, or say why there is no valid record there."""
    assert 0 <= offset <= len(buffer)
    remaining = len(buffer) - offset
    if remaining < HEADER_BYTES:
        return f"record header cut short ({remaining} of {HEADER_BYTES} bytes)"
    magic, payload_bytes, sequence, timestamp_ms, checksum = HEADER.unpack_from(buffer, offset)
    if magic != MAGIC:
        return f"bad magic {magic!r}"
    if payload_bytes > MAX_PAYLOAD_BYTES:
        return f"payload length {payload_bytes} over the limit {MAX_PAYLOAD_BYTES}"
    end = offset + HEADER_BYTES + payload_bytes
    if end > len(buffer):
        return f"record cut short ({remaining} of {HEADER_BYTES + payload_bytes} bytes)"
    view = memoryview(buffer)
    actual = crc32c.crc32c(view[offset : offset + CHECKSUMMED_HEADER_BYTES])
    actual = crc32c.crc32c(view[offset + HEADER_BYTES : end], actual)
    view.release()
    if actual != checksum:
        return f"checksum mismatch (stored {checksum:#010x}, computed {actual:#010x})"
    return _Decoded(sequence, timestamp_ms, offset + HEADER_BYTES, end)


def _valid_record_after(
    buffer: bytes | bytearray, offset: int, minimum_sequence: int
) -> int | None:
    """Offset of the first valid record strictly after `offset`, if any.

    This is what separates a torn tail (garbage to the end) from corruption (good data follows).
    Only records at or beyond the expected sequence count: a stale record cannot follow a
    real one in a well-formed journal.
    """
    position = offset + 1
    # Each pass moves `position` forward by at least one byte.
    for _ in range(len(buffer) + 1):
        position = buffer.find(MAGIC, position)
        if position < 0:
            return None
        decoded = _decode_at(buffer, position)
        if isinstance(decoded, _Decoded) and decoded.sequence >= minimum_sequence:
            return position
        position += 1
    raise AssertionError("unreachable: the search advances every pass")


def _scan_valid_prefix(
    buffer: bytes | bytearray,
    first_sequence: int,
    source_name: str,
    records: list[Record] | None,
) -> tuple[int, int]:
    """Walk the valid, in-sequence records from the start of `buffer` (appending them to
    `records` unless None); return the offset where that stopped and the next sequence.

    The same checks as `_decode_at`, inlined without building a result per record: recovery
    scans every record of the journal tail, and this loop is most of what that costs. It
    says nothing about why it stopped; the caller's `_decode_at` does.
    """
    total_bytes = len(buffer)
    unpack_from = HEADER.unpack_from
    checksum_of = crc32c.crc32c
    append = None if records is None else records.append
    view = memoryview(buffer)
    offset = 0
    expected_sequence = first_sequence
    try:
        # Every record consumes at least HEADER_BYTES, which bounds the loop.
        for _ in range(total_bytes // HEADER_BYTES + 1):
            payload_start = offset + HEADER_BYTES
            if payload_start > total_bytes:
                break
            magic, payload_bytes, sequence, timestamp_ms, checksum = unpack_from(buffer, offset)
            end = payload_start + payload_bytes
            if (
                magic != MAGIC
                or payload_bytes > MAX_PAYLOAD_BYTES
                or end > total_bytes
                or sequence != expected_sequence
            ):
                break
            actual = checksum_of(view[offset : offset + CHECKSUMMED_HEADER_BYTES])
            if checksum_of(view[payload_start:end], actual) != checksum:
                break
            if append is not None:
                payload = bytes(buffer[payload_start:end])
                append(Record(sequence, timestamp_ms, payload, offset, source_name))
            expected_sequence += 1
            offset = end
    finally:
        view.release()
    return offset, expected_sequence


def scan_records(
    buffer: bytes | bytearray,
    *,
    first_sequence: int,
    source_name: str,
    keep_payloads: bool = True,
) -> ScanResult:
    """Decode the records of `buffer`, which must start at `first_sequence`.

    With keep_payloads=False only counts and offsets are kept (used to validate big journals
    without holding them in memory).
    """
    assert first_sequence >= 1, first_sequence
    total_bytes = len(buffer)
    records: list[Record] = []
    state = ScanState.CLEAN
    detail = ""
    sequence_gap = False
    offset, expected_sequence = _scan_valid_prefix(
        buffer, first_sequence, source_name, records if keep_payloads else None
    )
    record_count = expected_sequence - first_sequence
    # The fast pass stopped at the end or at the first record that is not valid and in
    # sequence; this loop (run at most twice then) classifies it. Every record consumes at
    # least HEADER_BYTES, which bounds the loop.
    for _ in range(total_bytes // HEADER_BYTES + 2):
        if offset == total_bytes:
            break
        decoded = _decode_at(buffer, offset)
        if isinstance(decoded, str):
            if _valid_record_after(buffer, offset, expected_sequence) is None:
                state = ScanState.TORN_TAIL
            else:
                state = ScanState.CORRUPT
            detail = decoded
            break
        if decoded.sequence != expected_sequence:
            state = ScanState.CORRUPT
            sequence_gap = True
            detail = f"sequence gap: expected {expected_sequence}, found {decoded.sequence}"
            break
        if keep_payloads:
            payload = bytes(buffer[decoded.payload_start : decoded.end])
            records.append(
                Record(decoded.sequence, decoded.timestamp_ms, payload, offset, source_name)
            )
        record_count += 1
        expected_sequence += 1
        offset = decoded.end
    else:
        raise AssertionError("unreachable: every record consumes at least a header")

    assert offset <= total_bytes
    assert not keep_payloads or len(records) == record_count
    return ScanResult(
        source_name=source_name,
        state=state,
        records=records,
        record_count=record_count,
        first_sequence=first_sequence,
        last_sequence=expected_sequence - 1,
        valid_bytes=offset,
        total_bytes=total_bytes,
        problem_offset=None if state is ScanState.CLEAN else offset,
        problem_detail=detail,
        problem_is_sequence_gap=sequence_gap,
    )
