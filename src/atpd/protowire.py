"""Protobuf wire-format primitives for the hand-written encoders: the journal's group records
(persistence/codec.py) and the hottest responses (service/wire.py). Both write bytes that
protobuf's own parser reads back; tests pin each against SerializeToString.
"""

from __future__ import annotations

# Wire types (https://protobuf.dev/programming-guides/encoding/#structure).
WIRETYPE_VARINT = 0  # bool, int32, int64
WIRETYPE_LEN = 2  # string, bytes, embedded message


def encode_varint(value: int) -> bytes:
    assert value >= 0, value
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [encode_varint(i) for i in range(1 << 14)]


def varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else encode_varint(value)


def tag(field_number: int, wire_type: int) -> bytes:
    """The encoded key of a field: varint(field_number << 3 | wire_type)."""
    assert field_number >= 1 and wire_type in (WIRETYPE_VARINT, WIRETYPE_LEN)
    return encode_varint(field_number << 3 | wire_type)
