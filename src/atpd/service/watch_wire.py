"""The change stream's events as bytes: each event is serialized once, when it is published,
and shared by every stream it goes to. A Watch message is one event's bytes; a WatchBatch
message (WatchEvents) is the concatenation of its events, each framed as field 1 (tag, length,
bytes), which is what protobuf writes for a repeated message field. So a message costs a join,
not a copy of every event into a new message and a second serialization.

A position change's event (CHANGED, LOW_STOCK, OUT_OF_STOCK, BACK_IN_STOCK: the hot path) is
encoded here by hand, field by field in field-number order, leaving zero values out as proto3
does: the bytes are exactly what SerializeToString gives for the same WatchEvent (tests pin
it). The rare events (SYNC, RESYNC_REQUIRED, DISCREPANCY, the replay after from_sequence) go
through the protobuf API and SerializeToString. The field numbers written are checked against
the generated descriptors at import, so the proto and this encoder cannot drift apart.
"""

from __future__ import annotations

from google.protobuf.message import Message

from atpd.protowire import (
    WIRETYPE_LEN,
    WIRETYPE_VARINT,
    check_field_numbers,
    encode_varint,
    tag,
    varint,
)
from atpd.v1 import watch_pb2

# Field numbers, as in proto/atpd/v1/watch.proto.
FIELD_EVENTS_EVENTS = 1  # WatchEvents.events: repeated WatchEvent
FIELD_EVENT_SEQUENCE = 1  # int64
FIELD_EVENT_KIND = 2  # WatchEventKind
FIELD_EVENT_SKU = 3  # string
FIELD_EVENT_NODE_ID = 4  # string
FIELD_EVENT_OLD_ATP = 5  # int64
FIELD_EVENT_NEW_ATP = 6  # int64
FIELD_EVENT_TIME_MS = 7  # int64
FIELD_EVENT_EPOCH = 8  # int64

_EVENT_FIELDS = (
    ("sequence", FIELD_EVENT_SEQUENCE, WIRETYPE_VARINT),
    ("kind", FIELD_EVENT_KIND, WIRETYPE_VARINT),
    ("sku", FIELD_EVENT_SKU, WIRETYPE_LEN),
    ("node_id", FIELD_EVENT_NODE_ID, WIRETYPE_LEN),
    ("old_atp", FIELD_EVENT_OLD_ATP, WIRETYPE_VARINT),
    ("new_atp", FIELD_EVENT_NEW_ATP, WIRETYPE_VARINT),
    ("time_ms", FIELD_EVENT_TIME_MS, WIRETYPE_VARINT),
    ("epoch", FIELD_EVENT_EPOCH, WIRETYPE_VARINT),
)
ENCODED_FIELDS: tuple[tuple[type[Message], str, int, int], ...] = (
    (watch_pb2.WatchEvents, "events", FIELD_EVENTS_EVENTS, WIRETYPE_LEN),
    *((watch_pb2.WatchEvent, *field) for field in _EVENT_FIELDS),
)
check_field_numbers("watch_wire.py", ENCODED_FIELDS)

TAG_EVENTS = tag(FIELD_EVENTS_EVENTS, WIRETYPE_LEN)
TAG_SEQUENCE = tag(FIELD_EVENT_SEQUENCE, WIRETYPE_VARINT)
TAG_SKU = tag(FIELD_EVENT_SKU, WIRETYPE_LEN)
TAG_NODE_ID = tag(FIELD_EVENT_NODE_ID, WIRETYPE_LEN)
TAG_OLD_ATP = tag(FIELD_EVENT_OLD_ATP, WIRETYPE_VARINT)
TAG_NEW_ATP = tag(FIELD_EVENT_NEW_ATP, WIRETYPE_VARINT)
TAG_TIME_MS = tag(FIELD_EVENT_TIME_MS, WIRETYPE_VARINT)
TAG_EPOCH = tag(FIELD_EVENT_EPOCH, WIRETYPE_VARINT)
# The kind field whole (tag and value), per kind; UNSPECIFIED (0) is left out, as proto3 does.
KIND_FIELDS = {
    kind: tag(FIELD_EVENT_KIND, WIRETYPE_VARINT) + varint(kind) if kind else b""
    for kind in watch_pb2.WatchEventKind.values()
}
# The SKU and node id fields of events are cached by name, up to this many of each (then the
# cache starts afresh): the SKUs that change are mostly the same few thousand.
NAME_FIELD_CACHE_SIZE = 16_384
_INT64_SPAN = 1 << 64
# The low 7 bits of a varint with the continuation bit set, per value.
_CONTINUED = [bytes((low | 0x80,)) for low in range(128)]


def uint_varint(value: int) -> bytes:
    """varint(value) for any value >= 0: table lookups, not a loop per byte (sequence numbers
    soon pass protowire's table of small values)."""
    if value < 16384:
        return varint(value)
    return _CONTINUED[value & 0x7F] + uint_varint(value >> 7)


def int64_field(field_tag: bytes, value: int) -> bytes:
    """An int64 field whole, empty for 0 (proto3 leaves it out); a negative value is ten
    bytes of two's complement, as protobuf writes it."""
    if value > 0:
        return field_tag + uint_varint(value)
    if not value:
        return b""
    return field_tag + encode_varint(value + _INT64_SPAN)


def string_field(field_tag: bytes, text: str) -> bytes:
    """A string field whole, empty for "" (proto3 leaves it out)."""
    if not text:
        return b""
    data = text.encode()
    return field_tag + varint(len(data)) + data


class EncodedEvent:
    """One WatchEvent, serialized once: `body` is a Watch message, `framed` the same event as
    an element of a WatchBatch message (field 1 of WatchEvents); `sequence` is its sequence."""

    __slots__ = ("body", "framed", "sequence")

    def __init__(self, sequence: int, body: bytes) -> None:
        self.sequence = sequence
        self.body = body
        self.framed = TAG_EVENTS + varint(len(body)) + body

    @classmethod
    def of(cls, event: watch_pb2.WatchEvent) -> EncodedEvent:
        """A rare event built through the protobuf API (SYNC, RESYNC_REQUIRED, DISCREPANCY,
        the replay)."""
        return cls(event.sequence, event.SerializeToString())


def batch_message(events: list[EncodedEvent]) -> bytes:
    """A serialized WatchEvents carrying `events` in order."""
    return b"".join([event.framed for event in events])


class ChangeEncoder:
    """Encodes the events of position changes for one hub (one epoch): the epoch field is
    encoded once, SKU and node id fields once per name, the time field once per publish
    (`at`)."""

    __slots__ = ("epoch_field", "node_fields", "sku_fields", "time_field", "time_ms")

    def __init__(self, epoch: int) -> None:
        self.epoch_field = int64_field(TAG_EPOCH, epoch)
        self.sku_fields: dict[str, bytes] = {}
        self.node_fields: dict[str, bytes] = {}
        self.time_ms = 0
        self.time_field = b""

    def at(self, time_ms: int) -> None:
        """The time of the changes encoded next."""
        if time_ms != self.time_ms:
            self.time_ms = time_ms
            self.time_field = int64_field(TAG_TIME_MS, time_ms)

    def change(
        self, sequence: int, kind: int, sku: str, node_id: str, old: int, new: int
    ) -> EncodedEvent:
        """The event of one position change, at the time set by `at`."""
        sku_field = self.sku_fields.get(sku)
        if sku_field is None:
            sku_field = _cached(self.sku_fields, sku, TAG_SKU)
        node_field = self.node_fields.get(node_id)
        if node_field is None:
            node_field = _cached(self.node_fields, node_id, TAG_NODE_ID)
        body = (
            int64_field(TAG_SEQUENCE, sequence)
            + KIND_FIELDS[kind]
            + sku_field
            + node_field
            + int64_field(TAG_OLD_ATP, old)
            + int64_field(TAG_NEW_ATP, new)
            + self.time_field
            + self.epoch_field
        )
        return EncodedEvent(sequence, body)


def _cached(fields: dict[str, bytes], name: str, field_tag: bytes) -> bytes:
    if len(fields) >= NAME_FIELD_CACHE_SIZE:
        fields.clear()
    encoded = fields[name] = string_field(field_tag, name)
    return encoded
