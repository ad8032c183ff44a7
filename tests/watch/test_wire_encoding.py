"""The change stream's events serialized once (service/watch_wire.py) against the protobuf
library's own encoding, and the framing of WatchBatch messages from those bytes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.protowire import encode_varint
from atpd.service.watch import StallGuard, Subscriber
from atpd.service.watch_outbox import DueTimers
from atpd.service.watch_servicer import write_events
from atpd.service.watch_wire import (
    ChangeEncoder,
    EncodedEvent,
    batch_message,
    int64_field,
    uint_varint,
)
from atpd.v1 import store_pb2, watch_pb2

pytestmark = pytest.mark.core

INT64 = st.integers(-(2**63), 2**63 - 1)
CHANGE_KINDS = st.sampled_from(
    [
        watch_pb2.WATCH_EVENT_KIND_CHANGED,
        watch_pb2.WATCH_EVENT_KIND_LOW_STOCK,
        watch_pb2.WATCH_EVENT_KIND_OUT_OF_STOCK,
        watch_pb2.WATCH_EVENT_KIND_BACK_IN_STOCK,
    ]
)
NAMES = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_uint_varint_is_the_varint_encoding(value: int) -> None:
    """uint_varint gives protowire's varint bytes for every unsigned 64-bit value."""
    assert uint_varint(value) == encode_varint(value)


@settings(max_examples=200, deadline=None)
@given(INT64)
def test_int64_field_is_protobufs_encoding(value: int) -> None:
    """An int64 field (zero left out, negatives as ten bytes) is what protobuf writes."""
    assert int64_field(b"\x28", value) == watch_pb2.WatchEvent(old_atp=value).SerializeToString()


@settings(max_examples=150, deadline=None)
@given(
    epoch=INT64,
    time_ms=INT64,
    changes=st.lists(
        st.tuples(st.integers(0, 2**63 - 1), CHANGE_KINDS, NAMES, NAMES, INT64, INT64),
        min_size=1,
        max_size=6,
    ),
)
def test_change_events_are_byte_for_byte_protobufs_own(
    epoch: int, time_ms: int, changes: list[tuple[int, int, str, str, int, int]]
) -> None:
    """A hand-encoded change event is exactly SerializeToString of the same WatchEvent, and
    its framed form exactly a WatchEvents holding it alone (cached names reused included)."""
    encoder = ChangeEncoder(epoch)
    encoder.at(time_ms)
    for sequence, kind, sku, node_id, old, new in changes * 2:  # twice: the caches serve
        encoded = encoder.change(sequence, kind, sku, node_id, old, new)
        expected = watch_pb2.WatchEvent(
            sequence=sequence,
            kind=kind,  # type: ignore[arg-type]
            sku=sku,
            node_id=node_id,
            old_atp=old,
            new_atp=new,
            time_ms=time_ms,
            epoch=epoch,
        )
        assert encoded.body == expected.SerializeToString()
        assert encoded.framed == watch_pb2.WatchEvents(events=[expected]).SerializeToString()
        assert encoded.sequence == sequence


def rare_event(index: int, kind: int, text: str) -> watch_pb2.WatchEvent:
    """A SYNC, RESYNC_REQUIRED or DISCREPANCY event as the hub builds them."""
    event = watch_pb2.WatchEvent(sequence=index, kind=kind, epoch=7, time_ms=index)  # type: ignore[arg-type]
    if kind == watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED:
        event.reason = text
    elif kind == watch_pb2.WATCH_EVENT_KIND_DISCREPANCY:
        event.sku, event.node_id = text, "paris"
        event.discrepancy.CopyFrom(store_pb2.Discrepancy(sku=text, missing=index))
    return event


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("change"), CHANGE_KINDS, NAMES, INT64),
        st.tuples(
            st.just("rare"),
            st.sampled_from(
                [
                    watch_pb2.WATCH_EVENT_KIND_SYNC,
                    watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED,
                    watch_pb2.WATCH_EVENT_KIND_DISCREPANCY,
                ]
            ),
            NAMES,
            st.just(0),
        ),
    ),
    min_size=1,
    max_size=20,
)


def encode_all(specs: list[tuple[str, int, str, int]]) -> list[EncodedEvent]:
    encoder = ChangeEncoder(7)
    encoder.at(1_700_000_000_000)
    encoded = []
    for index, (form, kind, text, atp) in enumerate(specs, start=1):
        if form == "change":
            encoded.append(encoder.change(index, kind, text, "paris", atp, atp // 2))
        else:
            encoded.append(EncodedEvent.of(rare_event(index, kind, text)))
    return encoded


class Collecting:
    """A servicer context that keeps what is written."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def write(self, message: bytes) -> None:
        self.messages.append(message)


def written(events: list[EncodedEvent], max_events: int | None) -> list[bytes]:
    """The messages the servicer writes for `events`, in order."""

    async def scenario() -> list[bytes]:
        guard = StallGuard(60.0)
        context = Collecting()
        try:
            await write_events(guard, context, events, max_events, None)
        finally:
            guard.close()
        return context.messages

    return asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(specs=EVENTS, max_events=st.integers(1, 8))
def test_batch_messages_carry_exactly_the_events_in_order(
    specs: list[tuple[str, int, str, int]], max_events: int
) -> None:
    """Written as WatchBatch, events come in messages of max_events (the last one shorter),
    each the concatenation of its events' framed bytes, which parse back to the events, in
    order; written as Watch, each message is one event's bytes."""
    events = encode_all(specs)
    expected = [watch_pb2.WatchEvent.FromString(event.body) for event in events]
    messages = written(events, max_events)
    assert [len(watch_pb2.WatchEvents.FromString(m).events) for m in messages] == [
        min(max_events, len(events) - start) for start in range(0, len(events), max_events)
    ]
    parsed = [event for m in messages for event in watch_pb2.WatchEvents.FromString(m).events]
    assert parsed == expected
    assert b"".join(messages) == batch_message(events)
    assert batch_message(events) == watch_pb2.WatchEvents(events=expected).SerializeToString()
    single = written(events, None)
    assert single == [event.body for event in events]
    assert [watch_pb2.WatchEvent.FromString(m) for m in single] == expected


def test_a_cut_off_stream_stops_before_its_next_message() -> None:
    """A subscriber cut off while a message is written gets no further message of what it
    had taken, and the sequence returned (its resume point) is the last event written."""
    events = encode_all(
        [("change", watch_pb2.WATCH_EVENT_KIND_CHANGED, "BAG-1", n) for n in range(7)]
    )
    subscriber = Subscriber(("", ""), None, None, 0, 100, DueTimers(0.005))

    class CuttingOff(Collecting):
        async def write(self, message: bytes) -> None:
            await super().write(message)
            subscriber.overflowed = True  # the hub cut it off meanwhile

    async def scenario() -> tuple[int, list[bytes]]:
        guard = StallGuard(60.0)
        context = CuttingOff()
        try:
            last = await write_events(guard, context, events, 3, subscriber)
        finally:
            guard.close()
        return last, context.messages

    last, messages = asyncio.run(scenario())
    assert len(messages) == 1
    assert messages[0] == batch_message(events[:3])
    assert last == events[2].sequence
