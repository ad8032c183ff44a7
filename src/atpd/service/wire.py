"""Hand-written protobuf encoding of the hottest response: GetAvailabilityResponse without
per-node entries (the storefront's question). Building that message through the protobuf API
costs about a microsecond per geo entry; here each geo prefix's constant part is encoded once
and only the ATP varint is appended per answer. The bytes are exactly what SerializeToString
gives for the message `convert.availability_response` builds (a test pins that), so clients
see no difference.

Every field is written through a named tag (`TAG_*`), computed at import from a named field
number and wire type; `check_field_numbers` compares those numbers and types with the
generated descriptors at import, so the proto and this encoder cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from atpd.core.state import AtpState, AvailabilityView
from atpd.protowire import WIRETYPE_LEN, WIRETYPE_VARINT, check_field_numbers, tag, varint
from atpd.v1 import availability_pb2

ENTRY_CACHE_MAX_ATP = 4096

# Field numbers, as in proto/atpd/v1/availability.proto.
# GetAvailabilityResponse
FIELD_RESPONSE_ITEMS = 1  # repeated SkuAvailability
FIELD_RESPONSE_AS_OF_MS = 2  # int64
FIELD_RESPONSE_CHANNEL = 3  # string
FIELD_RESPONSE_SEGMENT = 4  # string
FIELD_RESPONSE_RULES_VERSION = 5  # string
FIELD_RESPONSE_MAX_PER_LINE = 6  # int64
# SkuAvailability
FIELD_SKU_SKU = 1  # string
FIELD_SKU_KNOWN = 2  # bool
FIELD_SKU_TOTAL_ATP = 3  # int64
FIELD_SKU_GEO = 4  # repeated GeoAvailability
# GeoAvailability
FIELD_GEO_GEO = 1  # string
FIELD_GEO_LEVEL = 2  # int32
FIELD_GEO_ATP = 3  # int64

# (message, field name, field number, wire type) for every field this module writes.
_RESPONSE = availability_pb2.GetAvailabilityResponse
_SKU = availability_pb2.SkuAvailability
_GEO = availability_pb2.GeoAvailability
ENCODED_FIELDS: tuple[tuple[type[Message], str, int, int], ...] = (
    (_RESPONSE, "items", FIELD_RESPONSE_ITEMS, WIRETYPE_LEN),
    (_RESPONSE, "as_of_ms", FIELD_RESPONSE_AS_OF_MS, WIRETYPE_VARINT),
    (_RESPONSE, "channel", FIELD_RESPONSE_CHANNEL, WIRETYPE_LEN),
    (_RESPONSE, "segment", FIELD_RESPONSE_SEGMENT, WIRETYPE_LEN),
    (_RESPONSE, "rules_version", FIELD_RESPONSE_RULES_VERSION, WIRETYPE_LEN),
    (_RESPONSE, "max_per_line", FIELD_RESPONSE_MAX_PER_LINE, WIRETYPE_VARINT),
    (_SKU, "sku", FIELD_SKU_SKU, WIRETYPE_LEN),
    (_SKU, "known", FIELD_SKU_KNOWN, WIRETYPE_VARINT),
    (_SKU, "total_atp", FIELD_SKU_TOTAL_ATP, WIRETYPE_VARINT),
    (_SKU, "geo", FIELD_SKU_GEO, WIRETYPE_LEN),
    (_GEO, "geo", FIELD_GEO_GEO, WIRETYPE_LEN),
    (_GEO, "level", FIELD_GEO_LEVEL, WIRETYPE_VARINT),
    (_GEO, "atp", FIELD_GEO_ATP, WIRETYPE_VARINT),
)

check_field_numbers("wire.py", ENCODED_FIELDS)


TAG_RESPONSE_ITEMS = tag(FIELD_RESPONSE_ITEMS, WIRETYPE_LEN)
TAG_RESPONSE_AS_OF_MS = tag(FIELD_RESPONSE_AS_OF_MS, WIRETYPE_VARINT)
TAG_RESPONSE_CHANNEL = tag(FIELD_RESPONSE_CHANNEL, WIRETYPE_LEN)
TAG_RESPONSE_SEGMENT = tag(FIELD_RESPONSE_SEGMENT, WIRETYPE_LEN)
TAG_RESPONSE_RULES_VERSION = tag(FIELD_RESPONSE_RULES_VERSION, WIRETYPE_LEN)
TAG_RESPONSE_MAX_PER_LINE = tag(FIELD_RESPONSE_MAX_PER_LINE, WIRETYPE_VARINT)
TAG_SKU_SKU = tag(FIELD_SKU_SKU, WIRETYPE_LEN)
TAG_SKU_GEO = tag(FIELD_SKU_GEO, WIRETYPE_LEN)
TAG_GEO_GEO = tag(FIELD_GEO_GEO, WIRETYPE_LEN)
TAG_GEO_LEVEL = tag(FIELD_GEO_LEVEL, WIRETYPE_VARINT)
TAG_GEO_ATP = tag(FIELD_GEO_ATP, WIRETYPE_VARINT)
# known = true, whole: tag and the varint 1.
KNOWN_TRUE = tag(FIELD_SKU_KNOWN, WIRETYPE_VARINT) + b"\x01"
TAG_SKU_TOTAL_ATP = tag(FIELD_SKU_TOTAL_ATP, WIRETYPE_VARINT)


def _string_field(field_tag: bytes, text: str) -> bytes:
    data = text.encode()
    return field_tag + varint(len(data)) + data


class GeoEncoding:
    """Per geo id: the encoded `geo` and `level` fields and the `atp` tag, plus tree ranks."""

    __slots__ = ("count", "entries", "order", "prefixes", "tails")

    def __init__(self) -> None:
        self.count = -1
        self.prefixes: list[bytes] = []
        self.order: npt.NDArray[np.intp] = np.zeros(0, np.intp)  # geo ids in tree order
        # Encoded channel / segment / rules version fields, per (channel, segment, version).
        self.tails: dict[tuple[str, str, str], bytes] = {}
        # Whole encoded entries (tag, length, fields) per geo id and small ATP value.
        self.entries: list[dict[int, bytes]] = []

    def entry(self, geo: int, atp: int) -> bytes:
        cached = self.entries[geo].get(atp)
        if cached is None:
            body = self.prefixes[geo] + varint(atp)
            cached = TAG_SKU_GEO + varint(len(body)) + body
            if atp < ENTRY_CACHE_MAX_ATP:
                self.entries[geo][atp] = cached
        return cached

    def refresh(self, state: AtpState) -> None:
        geo = state.geo
        if self.count == len(geo):
            return
        names = geo.geo_ids.names
        self.prefixes = [
            _string_field(TAG_GEO_GEO, name) + TAG_GEO_LEVEL + varint(level + 1) + TAG_GEO_ATP
            for name, level in zip(names, geo.geo_level, strict=True)
        ]
        self.entries = [{} for _ in names]
        self.order = np.array(geo.ordered(), np.intp)
        self.count = len(names)

    def tail(self, channel: str, segment: str, version: str) -> bytes:
        key = (channel, segment, version)
        cached = self.tails.get(key)
        if cached is None:
            cached = b"".join(
                _string_field(field_tag, text)
                for field_tag, text in (
                    (TAG_RESPONSE_CHANNEL, channel),
                    (TAG_RESPONSE_SEGMENT, segment),
                    (TAG_RESPONSE_RULES_VERSION, version),
                )
                if text
            )
            if len(self.tails) > 1024:
                self.tails.clear()
            self.tails[key] = cached
        return cached


def encode_availability(
    state: AtpState,
    view: AvailabilityView,
    now_ms: int,
    channel: str,
    segment: str,
    geo_encoding: GeoEncoding,
    max_per_line: int = 0,
) -> bytes:
    geo_encoding.refresh(state)
    order, entry = geo_encoding.order, geo_encoding.entry
    node_count, geo_count = view.node_count, view.geo_count
    parts: list[bytes] = []
    for k, sku in enumerate(view.skus):
        body = [_string_field(TAG_SKU_SKU, sku)]
        if view.sku_rows[k] >= 0:
            row = view.matrix[k]
            body.append(KNOWN_TRUE)
            total = int(row[-1])
            if total:
                body.append(TAG_SKU_TOTAL_ATP + varint(total))
            # Geo ATP in tree order; only prefixes with ATP > 0 are listed.
            ordered = row[node_count : node_count + geo_count][order]
            present = np.flatnonzero(ordered)
            if len(present):
                geos = order[present].tolist()
                body.extend(map(entry, geos, ordered[present].tolist()))
        item = b"".join(body)
        parts.append(TAG_RESPONSE_ITEMS + varint(len(item)) + item)
    if now_ms:  # proto3 leaves zero scalars out
        parts.append(TAG_RESPONSE_AS_OF_MS + varint(now_ms))
    parts.append(geo_encoding.tail(channel, segment, state.rules.version))
    if max_per_line:  # after rules_version (protobuf writes fields in number order)
        parts.append(TAG_RESPONSE_MAX_PER_LINE + varint(max_per_line))
    return b"".join(parts)
