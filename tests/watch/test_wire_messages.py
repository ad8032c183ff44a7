"""What Watch and WatchBatch put on the wire, read as raw bytes on a real channel: each Watch
message is one event in protobuf's own encoding, each WatchBatch message the same events'
bytes framed as WatchEvents, in the same order."""

from __future__ import annotations

import queue
import threading
from typing import Any

import grpc
from service.harness import ServerThread, World

from atpd.v1 import watch_pb2

from .support import (
    EVENT_WAIT_S,
    STREAM_DEADLINE_S,
    SYNC,
    Api,
    adjust,
    reserve,
    watch_request,
)

WATCH_PATH = "/atpd.v1.WatchService/Watch"
WATCH_BATCH_PATH = "/atpd.v1.WatchService/WatchBatch"


class RawStream:
    """A server stream whose messages are kept as the bytes received, read by a thread."""

    def __init__(self, channel: grpc.Channel, path: str, request: bytes) -> None:
        # No response deserializer: the messages arrive as bytes.
        method = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        self.call: Any = method(request, timeout=STREAM_DEADLINE_S)
        self._messages: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="raw-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self._messages.put(message)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    def next(self) -> bytes:
        try:
            return self._messages.get(timeout=EVENT_WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no message within {EVENT_WAIT_S} s") from None

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(EVENT_WAIT_S)


def framed(event: bytes) -> bytes:
    """One event as an element of WatchEvents.events (field 1, length-delimited)."""
    return watch_pb2.WatchEvents(
        events=[watch_pb2.WatchEvent.FromString(event)]
    ).SerializeToString()


def test_batch_messages_are_the_watch_events_bytes_framed_in_order(
    server: ServerThread, api: Api, world: World
) -> None:
    """Under a multi-line reserve and single changes, WatchBatch messages (max_events 3) are
    byte for byte the concatenation of the framed bytes of Watch's messages, in order; each
    Watch message is the canonical encoding of its event."""
    skus = [f"BAG-{index}" for index in range(5)]
    for sku in skus:
        world.set_stock(sku, "paris", 40)
    channel = server.channel()
    request = watch_request(skus=skus)
    single = RawStream(channel, WATCH_PATH, request.SerializeToString())
    batched = RawStream(
        channel,
        WATCH_BATCH_PATH,
        watch_pb2.WatchBatchRequest(
            watch=request, max_events=3, max_delay_ms=20
        ).SerializeToString(),
    )
    single_sync = watch_pb2.WatchEvent.FromString(single.next())
    batch_sync = watch_pb2.WatchEvents.FromString(batched.next()).events
    assert single_sync.kind == SYNC and [event.kind for event in batch_sync] == [SYNC]
    reserve(api, "five-lines", *[(sku, "paris", 3) for sku in skus])  # five events at once
    for sku in skus[:2]:
        adjust(api, sku, "paris", -1)
    watch_messages = [single.next() for _ in range(7)]
    events = [watch_pb2.WatchEvent.FromString(message) for message in watch_messages]
    assert [(event.sku, event.new_atp) for event in events] == [
        *[(sku, 37) for sku in skus],
        ("BAG-0", 36),
        ("BAG-1", 36),
    ]
    assert all(m == e.SerializeToString() for m, e in zip(watch_messages, events, strict=True))
    batch_messages: list[bytes] = []
    while sum(len(watch_pb2.WatchEvents.FromString(m).events) for m in batch_messages) < 7:
        batch_messages.append(batched.next())
    sizes = [len(watch_pb2.WatchEvents.FromString(m).events) for m in batch_messages]
    assert max(sizes) == 3 and sum(sizes) == 7
    assert b"".join(batch_messages) == b"".join(framed(m) for m in watch_messages)
    for stream in (single, batched):
        stream.cancel()
