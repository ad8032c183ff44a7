"""Record framing: encoding, and how the scanner classifies clean, torn and corrupt buffers."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.persistence.framing import (
    HEADER_BYTES,
    MAGIC,
    MAX_PAYLOAD_BYTES,
    Record,
    ScanState,
    encode_record,
    encode_record_into,
    scan_records,
)

timestamps_ms = st.integers(min_value=-(2**63), max_value=2**63 - 1)
payloads = st.binary(max_size=100)
record_lists = st.lists(st.tuples(payloads, timestamps_ms), max_size=8)
first_sequences = st.integers(min_value=1, max_value=2**40)


def encode_all(first_sequence: int, items: list[tuple[bytes, int]]) -> tuple[bytes, list[int]]:
    """Encode `items` back to back; return the buffer and each record's start offset."""
    buffer = bytearray()
    offsets: list[int] = []
    for index, (payload, timestamp_ms) in enumerate(items):
        offsets.append(len(buffer))
        buffer += encode_record(first_sequence + index, timestamp_ms, payload)
    return bytes(buffer), offsets


def expected_records(first_sequence: int, items: list[tuple[bytes, int]]) -> list[Record]:
    return [
        Record(first_sequence + index, timestamp_ms, payload)
        for index, (payload, timestamp_ms) in enumerate(items)
    ]


def test_header_layout_is_fixed() -> None:
    """The header is magic, u32 length, u64 sequence, i64 timestamp_ms, u32 CRC32C: 28 bytes."""
    encoded = encode_record(7, -5, b"abc")
    magic, length, sequence, timestamp_ms, _ = struct.unpack_from("<4sIQqI", encoded)
    assert (magic, length, sequence, timestamp_ms) == (MAGIC, 3, 7, -5)
    assert len(encoded) == HEADER_BYTES + 3 == 31


@settings(max_examples=50, deadline=None)
@given(
    prefix=st.binary(max_size=40),
    sequence=st.integers(min_value=1, max_value=2**64 - 1),
    timestamp_ms=timestamps_ms,
    payload=payloads,
)
def test_property_checksum_covers_header_then_payload(
    prefix: bytes, sequence: int, timestamp_ms: int, payload: bytes
) -> None:
    """The CRC32C is over the 24 header bytes before it, then the payload; appending into a
    batch leaves the bytes already in it alone."""
    buffer = bytearray(prefix)
    size = encode_record_into(buffer, sequence, timestamp_ms, payload)
    assert bytes(buffer[: len(prefix)]) == prefix and len(buffer) == len(prefix) + size
    record = bytes(buffer[len(prefix) :])
    header = struct.pack("<4sIQq", MAGIC, len(payload), sequence, timestamp_ms)
    checksum = crc32c.crc32c(header + payload)
    assert record == header + struct.pack("<I", checksum) + payload


def test_empty_buffer_is_clean() -> None:
    """A buffer with no bytes is a clean, empty journal."""
    result = scan_records(b"", first_sequence=5, source_name="empty")
    assert result.state is ScanState.CLEAN
    assert result.records == [] and result.last_sequence == 4 and result.problem_offset is None


def test_sequence_gap_is_corrupt_even_at_the_tail() -> None:
    """A valid record with the wrong sequence is corruption, never a torn tail."""
    buffer = encode_record(1, 0, b"a") + encode_record(3, 0, b"b")
    result = scan_records(buffer, first_sequence=1, source_name="gap")
    assert result.state is ScanState.CORRUPT
    assert result.problem_is_sequence_gap
    assert result.problem_offset == HEADER_BYTES + 1
    assert [record.sequence for record in result.records] == [1]


def test_zero_filled_tail_is_torn() -> None:
    """Zeros after the last record (a file extended but never written) count as a torn tail."""
    buffer = encode_record(1, 0, b"a") + bytes(4096)
    result = scan_records(buffer, first_sequence=1, source_name="zeros")
    assert result.state is ScanState.TORN_TAIL
    assert result.valid_bytes == HEADER_BYTES + 1 and result.dropped_bytes == 4096


def test_oversized_length_field_is_rejected_without_allocating() -> None:
    """A length above MAX_PAYLOAD_BYTES is a bad record, not a request for gigabytes."""
    header = struct.pack("<4sIQqI", MAGIC, MAX_PAYLOAD_BYTES + 1, 1, 0, 0)
    result = scan_records(header + encode_record(1, 0, b"x"), first_sequence=1, source_name="big")
    assert result.state is ScanState.CORRUPT
    assert "over the limit" in result.problem_detail


def test_keep_payloads_false_counts_without_keeping() -> None:
    """Validation mode reports counts and offsets but holds no payloads."""
    buffer, _ = encode_all(10, [(b"a", 1), (b"b", 2)])
    result = scan_records(buffer, first_sequence=10, source_name="count", keep_payloads=False)
    assert result.state is ScanState.CLEAN
    assert result.records == [] and result.record_count == 2 and result.last_sequence == 11


def test_encode_refuses_sequence_zero() -> None:
    """Sequences start at 1: zero is a caller bug and trips an assertion."""
    with pytest.raises(AssertionError):
        encode_record(0, 0, b"")


@settings(max_examples=100, deadline=None)
@given(first_sequence=first_sequences, items=record_lists)
def test_property_round_trip_is_clean(first_sequence: int, items: list[tuple[bytes, int]]) -> None:
    """Any list of records encoded back to back scans CLEAN and decodes to the same records."""
    buffer, _ = encode_all(first_sequence, items)
    result = scan_records(buffer, first_sequence=first_sequence, source_name="property")
    assert result.state is ScanState.CLEAN
    assert result.records == expected_records(first_sequence, items)
    assert result.valid_bytes == len(buffer)


@settings(max_examples=100, deadline=None)
@given(
    first_sequence=first_sequences,
    items=record_lists.filter(bool),
    data=st.data(),
)
def test_property_any_cut_keeps_exactly_the_whole_records(
    first_sequence: int, items: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    """Cutting the buffer anywhere keeps the records wholly before the cut; the rest is torn."""
    buffer, offsets = encode_all(first_sequence, items)
    cut = data.draw(st.integers(min_value=0, max_value=len(buffer)), label="cut")
    result = scan_records(buffer[:cut], first_sequence=first_sequence, source_name="cut")
    whole = [index for index, offset in enumerate(offsets) if offset < cut]
    boundaries = [*offsets, len(buffer)]
    kept = sum(1 for index in whole if boundaries[index + 1] <= cut)
    assert result.records == expected_records(first_sequence, items)[:kept]
    if cut in boundaries:
        assert result.state is ScanState.CLEAN
    else:
        assert result.state is ScanState.TORN_TAIL
        assert result.problem_offset == offsets[kept]


@settings(max_examples=150, deadline=None)
@given(
    first_sequence=first_sequences,
    items=record_lists.filter(bool),
    data=st.data(),
)
def test_property_any_flipped_byte_is_detected(
    first_sequence: int, items: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    """A damaged byte is caught: in the last record it is a torn tail, earlier it is corrupt."""
    buffer, offsets = encode_all(first_sequence, items)
    position = data.draw(st.integers(min_value=0, max_value=len(buffer) - 1), label="position")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    damaged = bytearray(buffer)
    damaged[position] ^= mask
    result = scan_records(damaged, first_sequence=first_sequence, source_name="flip")
    index = max(i for i, offset in enumerate(offsets) if offset <= position)
    assert result.records == expected_records(first_sequence, items)[:index]
    assert result.problem_offset == offsets[index]
    if index == len(items) - 1:
        assert result.state is ScanState.TORN_TAIL
    else:
        assert result.state is ScanState.CORRUPT
        assert not result.problem_is_sequence_gap
