"""The hand-written GetAvailability encoding against the protobuf library's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from atpd import protowire
from atpd.core.commands import NodeKind, SetRules, SetStock, UpsertNode
from atpd.core.state import AtpState
from atpd.service import convert, wire
from atpd.v1 import availability_pb2

GEOS = ("EU/FR/Paris", "EU/FR/Lyon", "EU/IT/Milan", "AM/US/New York", "APAC", "EU")
RULES = """
version = "wire-test"
[defaults]
channel = "web"
segment = "standard"
[segments.vip]
[channels.web]
nodes = { kinds = ["WAREHOUSE"] }
max_per_line = {cap}
"""


def build(stock: list[tuple[int, int, int]], with_rules: bool, cap: int = 0) -> AtpState:
    state = AtpState()
    for i, geo in enumerate(GEOS):
        kind = NodeKind.WAREHOUSE if i % 2 else NodeKind.STORE
        state.apply(UpsertNode(f"N{i}", kind, tuple(geo.split("/"))), 1)
    for sequence, (sku, node, on_hand) in enumerate(stock, start=1):
        state.apply(SetStock(f"SKU-{sku}", f"N{node}", on_hand, sequence), 1)
    if with_rules:
        state.apply(SetRules(RULES.replace("{cap}", str(cap))), 2)
    return state


@settings(max_examples=60, deadline=None)
@given(
    stock=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, len(GEOS) - 1), st.integers(0, 40_000)),
        max_size=20,
    ),
    skus=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    geo_prefix=st.sampled_from(["", "EU", "EU/FR", "AM/US"]),
    with_rules=st.booleans(),
    now_ms=st.integers(0, 2**45),
    cap=st.sampled_from([0, 3, 200_000]),
)
def test_wire_encoding_equals_protobuf_serialization(
    stock: list[tuple[int, int, int]],
    skus: list[int],
    geo_prefix: str,
    with_rules: bool,
    now_ms: int,
    cap: int,
) -> None:
    """encode_availability gives byte for byte what SerializeToString gives for the message,
    the caller's max_per_line included."""
    state = build(stock, with_rules, cap)
    names = [f"SKU-{k}" for k in skus]
    if geo_prefix and state.geo.lookup_prefix(geo_prefix)[0] < 0:
        geo_prefix = ""
    policy = state.policy("", "")
    view = state.availability(names, (), geo_prefix, policy=policy)
    expected = convert.availability_response(state, view, False, now_ms, policy)
    channel, segment = ("", "") if policy is None else (policy.channel, policy.segment)
    max_per_line = 0 if policy is None else policy.policy.max_per_line
    encoded = wire.encode_availability(
        state, view, now_ms, channel, segment, wire.GeoEncoding(), max_per_line
    )
    assert encoded == expected.SerializeToString()
    assert availability_pb2.GetAvailabilityResponse.FromString(encoded).max_per_line == (
        cap if with_rules else 0
    )
    decoded = availability_pb2.GetAvailabilityResponse.FromString(encoded)
    assert [item.sku for item in decoded.items] == names


def test_varint_matches_protobuf_for_boundaries() -> None:
    """Varints at the 1-, 2- and 3-byte boundaries and large ms timestamps decode exactly."""
    for value in (1, 127, 128, 16383, 16384, 2**21, 2**35, 1_795_600_000_000):
        message = availability_pb2.GetAvailabilityResponse(as_of_ms=value)
        assert b"\x10" + protowire.varint(value) == message.SerializeToString()
