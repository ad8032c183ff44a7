"""Hand-written protobuf encoding of the hottest response: GetAvailabilityResponse without
per-node entries (the storefront's question). Building that message through the protobuf API
costs about a microsecond per geo entry; here each geo prefix's constant part is encoded once
and only the ATP varint is appended per answer. The bytes are exactly what SerializeToString
gives for the message `convert.availability_response` builds (a test pins that), so clients
see no difference.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from atpd.core.state import AtpState, AvailabilityView


def _encode_varint(value: int) -> bytes:
    assert value >= 0, value
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(i) for i in range(1 << 14)]
ENTRY_CACHE_MAX_ATP = 4096


def varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _encode_varint(value)


def _string_field(tag: bytes, text: str) -> bytes:
    data = text.encode()
    return tag + varint(len(data)) + data


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
            cached = b"\x22" + varint(len(body)) + body
            if atp < ENTRY_CACHE_MAX_ATP:
                self.entries[geo][atp] = cached
        return cached

    def refresh(self, state: AtpState) -> None:
        geo = state.geo
        if self.count == len(geo):
            return
        names = geo.geo_ids.names
        self.prefixes = [
            _string_field(b"\x0a", name) + b"\x10" + varint(level + 1) + b"\x18"
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
                _string_field(tag, text)
                for tag, text in ((b"\x1a", channel), (b"\x22", segment), (b"\x2a", version))
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
        body = [_string_field(b"\x0a", sku)]
        if view.sku_rows[k] >= 0:
            row = view.matrix[k]
            body.append(b"\x10\x01")
            total = int(row[-1])
            if total:
                body.append(b"\x18" + varint(total))
            # Geo ATP in tree order; only prefixes with ATP > 0 are listed.
            ordered = row[node_count : node_count + geo_count][order]
            present = np.flatnonzero(ordered)
            if len(present):
                geos = order[present].tolist()
                body.extend(map(entry, geos, ordered[present].tolist()))
        item = b"".join(body)
        parts.append(b"\x0a" + varint(len(item)) + item)
    if now_ms:  # proto3 leaves zero scalars out
        parts.append(b"\x10" + varint(now_ms))
    parts.append(geo_encoding.tail(channel, segment, state.rules.version))
    if max_per_line:  # field 6, after rules_version (protobuf writes fields in number order)
        parts.append(b"\x30" + varint(max_per_line))
    return b"".join(parts)
