"""Hypothesis strategies derived from the protobuf descriptors of atpd's API.

Every message is built field by field from its descriptor: scalars at their type's bounds,
enums in and out of range, strings that end in a newline or carry control characters, huge
lengths, repeated fields, nested messages. Fields whose name says what they hold (SKUs, node
ids, reservation ids, quantities, rule text) also draw from the seeded world, so that many
requests reach the commands instead of stopping at the first validation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# The world the fuzz server is seeded with (see test_fuzz_server.seed_world).
WAREHOUSE = "WH-EU-01"
STORE = "ST-FR-01"
NODES = (WAREHOUSE, STORE)
SKUS = ("FZ-1", "FZ-2", "FZ-BIG")
SEEDED_RESERVATIONS = ("fz-seed-1", "fz-seed-2")
SEEDED_SUPPLY = ("po-seed-1",)
CHANNELS = ("web", "store", "vip")
SEGMENTS = ("standard", "vip")
GEO_PATHS = ("EU", "EU/FR", "EU/FR/PAR", "EU/DE")

# A reservation TTL the fuzzer may send: invalid, or long enough that nothing it holds can
# expire between the digest before a stop and the one after the restart.
LONG_TTL_MS = 3_600_000
MAX_TTL_MS = 7 * 24 * 3600 * 1000

# Limits on generated sizes: enough to cross every documented bound, small enough to keep the
# suite near a minute on two cores.
MAX_LIST = 5
MAX_TEXT = 40
HUGE_LENGTHS = (129, 1_025, 10_000, 70_000)
MAX_DEPTH = 3

INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
INTERESTING_INTS = (
    0,
    1,
    -1,
    2,
    3,
    100,
    999,
    1_000,
    10**9,
    10**9 + 1,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
)
EDGE_STRINGS = (
    "",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\x7f",
    "\u200b",
    "\u2028",
    "é",
    "\U0001f600",
    "../../etc/passwd",
    "a b",
    "%s%n",
    "-",
    ".",
    "[",
    '"',
)
# Appended to a valid id: `$` in a non-anchored pattern matches before a final newline.
ID_SUFFIXES = ("\n", "\r", " ", "\x00", "\t", "\n\n", "/x")

# Rule files: valid, borderline and hostile TOML (bounded so one call stays well under a
# second on the unfixed parser: 40 kB of dotted keys took 14.8 s).
VALID_RULES = (
    'version = "fz-1"\n[defaults]\nchannel = "web"\nsegment = "standard"\n'
    '[policy]\nnodes = { kinds = ["WAREHOUSE", "STORE"] }\n'
    "[channels.web]\nmax_per_line = 3\n[channels.store]\n"
    'nodes = { kinds = ["WAREHOUSE", "STORE", "OUTLET"] }\n'
)


def _rules_with(policy_line: str = "", web_line: str = "") -> str:
    """The valid rule set with one more line in [policy] and one in [channels.web]."""
    text = VALID_RULES.replace(
        "[policy]\n", f"[policy]\n{policy_line}\n" if policy_line else "[policy]\n"
    )
    return text.replace(
        "[channels.web]\n", f"[channels.web]\n{web_line}\n" if web_line else "[channels.web]\n"
    )


HOSTILE_RULES = (
    "",
    "version = 1",
    _rules_with(policy_line="supply = { horizon_hours = inf }"),
    _rules_with(policy_line="supply = { horizon_hours = nan }"),
    _rules_with(policy_line="supply = { horizon_hours = -inf }"),
    _rules_with(policy_line="supply = { horizon_hours = 1e308 }"),
    _rules_with(web_line="buffer = 9223372036854775807"),
    _rules_with(web_line="buffer = -1"),
    _rules_with(web_line='nodes = { kinds = ["WAREHOUSE"], include = ["WH-EU-01\\n"] }'),
    "a = " + "[" * 3000 + "]" * 3000 + "\n",
    "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n",
    "a." + ".".join(f"k{i}" for i in range(400)) + " = 1\n",
    'version = "x\n"\n',
    "[[[[",
)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    special = [value for value in INTERESTING_INTS if low <= value <= high]
    return st.one_of(
        st.sampled_from(sorted({low, high, *special})),
        st.integers(max(low, -3), min(high, 1_000)),
        st.integers(low, high),
    )


def _doubles() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from((0.0, -0.0, 1.5, -1.0, 1e308, float("inf"), float("-inf"), float("nan"))),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def _huge_strings() -> st.SearchStrategy[str]:
    return st.sampled_from(HUGE_LENGTHS).map(lambda length: "x" * length)


def _texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(EDGE_STRINGS),
        st.text(max_size=MAX_TEXT),
        st.text(st.characters(max_codepoint=0x7F), max_size=MAX_TEXT),
    )


def _ids_like(valid: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A known id, a known id with a hostile suffix, or any text."""
    known = st.sampled_from(valid)
    # A final newline first: it once blocked every restart (issue 9 item 1).
    suffixed = st.tuples(known, st.one_of(st.just("\n"), st.sampled_from(ID_SUFFIXES)))
    return st.one_of(
        known,
        known,
        known,
        suffixed.map("".join),
        suffixed.map("".join),
        st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True),
        _texts(),
        _huge_strings(),
    )


def _fresh_reservation_ids() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True).map(lambda tail: f"fz-{tail}")


def _rules_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(VALID_RULES),
        st.sampled_from(HOSTILE_RULES),
        st.tuples(st.just(VALID_RULES), _texts()).map("".join),
        _texts(),
    )


def _ttl_ms() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from((0, -1, 1, 999, -(2**63), 2**63 - 1, MAX_TTL_MS + 1)),
        st.integers(LONG_TTL_MS, MAX_TTL_MS),
    )


# Strategies chosen by field name (the API names fields consistently across services).
NAMED_STRINGS: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "sku": lambda: _ids_like(SKUS),
    "skus": lambda: _ids_like(SKUS),
    "node_id": lambda: _ids_like(NODES),
    "node_ids": lambda: _ids_like(NODES),
    "include": lambda: _ids_like(NODES),
    "reservation_id": lambda: st.one_of(_ids_like(SEEDED_RESERVATIONS), _fresh_reservation_ids()),
    "supply_id": lambda: st.one_of(
        _ids_like(SEEDED_SUPPLY),
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True).map(lambda tail: f"po-{tail}"),
    ),
    "load_id": lambda: st.one_of(
        _ids_like(("load-1", "load-2")),
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True).map(lambda tail: f"load-{tail}"),
    ),
    "channel": lambda: _ids_like(CHANNELS),
    "segment": lambda: _ids_like(SEGMENTS),
    "geo_path": lambda: _ids_like(GEO_PATHS),
    "geo_prefix": lambda: _ids_like(GEO_PATHS),
    "text": _rules_text,
}
NAMED_INTS: dict[str, Callable[[], st.SearchStrategy[int]]] = {
    "ttl_ms": _ttl_ms,
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        named = NAMED_STRINGS.get(field.name)
        return named() if named is not None else st.one_of(_texts(), _huge_strings())
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _doubles()
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = sorted(value.number for value in field.enum_type.values)
        # proto3 enums are open: any int32 is a legal wire value.
        return st.one_of(
            st.sampled_from(numbers),
            st.sampled_from((-1, numbers[-1] + 1, 2**31 - 1, -(2**31))),
        )
    named_int = NAMED_INTS.get(field.name)
    if named_int is not None:
        return named_int()
    low, high = INT_RANGES[field.type]
    return _integers(low, high)


def _field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        single: st.SearchStrategy[Any] = message_strategy(field.message_type, depth + 1)
    else:
        single = _scalar(field)
    if field.is_repeated:
        return st.lists(single, max_size=MAX_LIST if depth < MAX_DEPTH else 1)
    return single


def _build(message_class: type[Message], values: dict[str, Any]) -> Message:
    message = message_class()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            target = getattr(message, name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


_CACHE: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any instance of the message `descriptor` describes, every field optional."""
    key = (descriptor.full_name, depth)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    message_class = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        strategy: st.SearchStrategy[Message] = st.just(message_class())
    else:
        fields = {field.name: _field_value(field, depth) for field in descriptor.fields}
        # Mostly every field set (requests that pass the first checks reach the commands),
        # sometimes any subset (missing fields).
        strategy = st.one_of(
            st.fixed_dictionaries(fields),
            st.fixed_dictionaries(fields),
            st.fixed_dictionaries({}, optional=fields),
        ).map(lambda values: _build(message_class, values))
    _CACHE[key] = strategy
    return strategy


# ------------------------------------------------- valid requests with one hostile field

# Plausible values by field name: a request built from these passes validation, so that a
# single hostile field (the mutant) is what the server has to cope with deep inside.
VALID_INTS: dict[str, Callable[[], st.SearchStrategy[int]]] = {
    "ttl_ms": lambda: st.integers(LONG_TTL_MS, MAX_TTL_MS),
    "quantity": lambda: st.integers(1, 5),
    "on_hand": lambda: st.integers(0, 1_000),
    "safety_stock": lambda: st.integers(0, 3),
    "delta": lambda: st.sampled_from((-2, -1, 1, 2, 50)),
    "source_sequence": lambda: st.integers(2, 10**6),
    "eta_ms": lambda: st.integers(4_000_000_000_000, 4_100_000_000_000),
    "received": lambda: st.integers(1, 5),
}
VALID_STRINGS: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "sku": lambda: st.sampled_from(SKUS),
    "skus": lambda: st.sampled_from(SKUS),
    "node_id": lambda: st.sampled_from(NODES),
    "node_ids": lambda: st.sampled_from(NODES),
    "reservation_id": lambda: st.one_of(
        st.sampled_from(SEEDED_RESERVATIONS), _fresh_reservation_ids()
    ),
    "supply_id": lambda: st.from_regex(r"po-[a-z0-9]{1,8}", fullmatch=True),
    "load_id": lambda: st.from_regex(r"load-[a-z0-9]{1,8}", fullmatch=True),
    "channel": lambda: st.just(""),
    "segment": lambda: st.just(""),
    "geo_path": lambda: st.sampled_from(GEO_PATHS),
    "geo_prefix": lambda: st.sampled_from(("", *GEO_PATHS)),
    "text": lambda: st.just(VALID_RULES),
}


def _valid_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    single: st.SearchStrategy[Any]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        single = mutant_strategy(field.message_type, depth + 1, mutate=False)
    elif field.type == FieldDescriptor.TYPE_STRING:
        named = VALID_STRINGS.get(field.name)
        single = named() if named else st.from_regex(r"[a-z]{1,8}", fullmatch=True)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = [value.number for value in field.enum_type.values if value.number]
        single = st.sampled_from(defined or [0])
    elif field.type == FieldDescriptor.TYPE_BOOL:
        single = st.booleans()
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        single = st.floats(0.0, 100.0)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        single = st.binary(max_size=8)
    else:
        named_int = VALID_INTS.get(field.name)
        single = named_int() if named_int else st.integers(0, 10)
    if field.is_repeated:
        return st.lists(single, min_size=1, max_size=3 if depth < MAX_DEPTH else 1)
    return single


def mutant_strategy(
    descriptor: Descriptor, depth: int = 0, *, mutate: bool = True
) -> st.SearchStrategy[Message]:
    """A plausible instance of the message with (when `mutate`) one field, possibly inside a
    nested message, replaced by a hostile value."""
    message_class = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(message_class())
    fields = list(descriptor.fields)
    valid = {field.name: _valid_value(field, depth) for field in fields}
    if not mutate or not fields:
        return st.fixed_dictionaries(valid).map(lambda values: _build(message_class, values))
    hostile = {field.name: _field_value(field, depth) for field in fields}
    for field in fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            # Or a valid nested message with its own hostile field.
            assert field.message_type is not None
            inner = mutant_strategy(field.message_type, depth + 1)
            hostile[field.name] = st.one_of(
                hostile[field.name],
                st.lists(inner, min_size=1, max_size=2) if field.is_repeated else inner,
            )

    def with_mutant(name: str) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({**valid, name: hostile[name]})

    return (
        st.sampled_from([field.name for field in fields])
        .flatmap(with_mutant)
        .map(lambda values: _build(message_class, values))
    )


def strategy_for(
    message_class: type[Message], *, mutant: bool = False
) -> st.SearchStrategy[Message]:
    """Any instance of `message_class` (`mutant`: a plausible one with one hostile field)."""
    # types-protobuf types DESCRIPTOR as a union with the C implementation's class.
    descriptor = cast(Descriptor, message_class.DESCRIPTOR)
    return mutant_strategy(descriptor) if mutant else message_strategy(descriptor)


# ----------------------------------------------------------------------- raw byte payloads


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"SKU-\xfe\n", b"\xf8\x88\x80\x80\x80")


def invalid_utf8_payload(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """A valid message with invalid UTF-8 in one of its string fields (top level or one
    level down), or in an unknown length-delimited field when it has no string field."""
    paths: list[tuple[int, ...]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field.number,))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            paths.extend(
                (field.number, inner.number)
                for inner in field.message_type.fields
                if inner.type == FieldDescriptor.TYPE_STRING
            )
    if not paths:
        paths.append((15,))

    def encode(valid: Message, path: tuple[int, ...], bad: bytes) -> bytes:
        payload = bad
        for number in reversed(path):
            payload = _length_delimited(number, payload)
        # Appended last: for a singular field the last occurrence wins, so the bad bytes are
        # what the server decodes.
        return valid.SerializeToString() + payload

    return st.builds(
        encode,
        message_strategy(descriptor),
        st.sampled_from(paths),
        st.sampled_from(INVALID_UTF8),
    )


def truncated_payload(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """A valid serialization cut short somewhere inside (often mid-field)."""

    def cut(message: Message, fraction: float) -> bytes:
        data = message.SerializeToString()
        if len(data) < 2:
            return b"\x0a\x05ab"  # a length-delimited field promising more than follows
        return data[: max(1, min(len(data) - 1, int(len(data) * fraction)))]

    return st.builds(cut, message_strategy(descriptor), st.floats(0.0, 1.0))


def raw_payload(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that are not (all) a valid message of this type, or valid ones as bytes."""
    return st.one_of(
        st.binary(min_size=1, max_size=200),
        truncated_payload(descriptor),
        invalid_utf8_payload(descriptor),
        message_strategy(descriptor).map(lambda message: message.SerializeToString()),
    )
