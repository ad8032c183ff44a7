"""Protobuf wire-format primitives for the hand-written encoders: the journal's group records
(persistence/codec.py), the hottest responses (service/wire.py) and change events
(service/watch_wire.py). Each writes bytes that protobuf's own parser reads back; tests pin
each against SerializeToString, and `check_field_numbers` pins their field numbers and wire
types against the generated descriptors at import.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

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


# The wire type protobuf uses for each field type a hand-written encoder here writes.
_WIRETYPE_OF_FIELD_TYPE = {
    FieldDescriptor.TYPE_BOOL: WIRETYPE_VARINT,
    FieldDescriptor.TYPE_INT32: WIRETYPE_VARINT,
    FieldDescriptor.TYPE_INT64: WIRETYPE_VARINT,
    FieldDescriptor.TYPE_ENUM: WIRETYPE_VARINT,
    FieldDescriptor.TYPE_STRING: WIRETYPE_LEN,
    FieldDescriptor.TYPE_MESSAGE: WIRETYPE_LEN,
}


def check_field_numbers(writer: str, fields: Iterable[tuple[type[Message], str, int, int]]) -> None:
    """Raise AssertionError unless every (message, field name, number, wire type) that the
    encoder `writer` (a module name, for the message) writes has, in the generated
    descriptors, that number and wire type. Encoders call it at import."""
    for message_class, name, number, wire_type in fields:
        message = message_class.DESCRIPTOR
        field = message.fields_by_name.get(name)
        if field is None:
            raise AssertionError(f"{writer} writes {message.name}.{name}, which the proto lacks")
        actual = (field.number, _WIRETYPE_OF_FIELD_TYPE.get(field.type))
        if actual != (number, wire_type):
            raise AssertionError(
                f"{writer} writes {message.name}.{name} as field {number} wire type "
                f"{wire_type}; the proto says field {actual[0]} wire type {actual[1]}"
            )
