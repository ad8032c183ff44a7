"""WatchBatch: several events per message, and otherwise the Watch stream itself: the same
events in the same order, resumption from any sequence (also one in the middle of a message),
RESYNC_REQUIRED as before, and bad framing refused naming the field."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from service.harness import World

from atpd.v1 import watch_pb2

from .support import (
    CHANGED,
    RESYNC_REQUIRED,
    STREAM_DEADLINE_S,
    Api,
    Ended,
    Watcher,
    adjust,
    release,
    reserve,
    set_rules,
    watch_request,
)
from .test_filters import RULES, key


class BatchWatcher(Watcher):
    """A WatchBatch call read like a Watch: its messages' events, one by one, in order; the
    size of every message is kept in `sizes`."""

    def __init__(
        self, api: Api, request: watch_pb2.WatchRequest, max_events: int = 0, delay_ms: int = 0
    ) -> None:
        self.request = request
        batched = watch_pb2.WatchBatchRequest(
            watch=request, max_events=max_events, max_delay_ms=delay_ms
        )
        self.call = api.watch.WatchBatch(batched, timeout=STREAM_DEADLINE_S)
        self._events: queue.Queue[watch_pb2.WatchEvent | Ended] = queue.Queue()
        self.drained: list[watch_pb2.WatchEvent] = []
        self.sizes: list[int] = []
        self._thread = threading.Thread(target=self._read, name="batch-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.sizes.append(len(message.events))
                for event in message.events:
                    self._events.put(event)
        except grpc.RpcError as error:
            self._events.put(Ended(error))
        else:
            self._events.put(Ended(None))


def test_batched_stream_carries_the_single_event_stream(api: Api, world: World) -> None:
    """Under concurrent multi-line writes, WatchBatch delivers exactly Watch's events in the
    same order (same sequences, kinds, ATPs), several per message."""
    skus = [f"BAG-{index}" for index in range(6)]
    for sku in skus:
        world.set_stock(sku, "paris", 1_000)
    single = Watcher(api, watch_request())
    batched = BatchWatcher(api, watch_request(), delay_ms=5)
    scoped = BatchWatcher(api, watch_request(skus=["BAG-2"]), max_events=3)
    for stream in (single, batched, scoped):
        stream.sync()

    def cart(index: int) -> None:
        lines = [(sku, "paris", 1 + index % 3) for sku in skus]  # six events at once
        reserve(api, f"cart-{index}", *lines)
        if index % 2:
            release(api, f"cart-{index}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(cart, range(12)))
    expected = [key(event) for event in single.take(6 * 18)]
    assert [key(event) for event in batched.take(len(expected))] == expected
    bag2 = [k for k in expected if k[2] == "BAG-2"]
    assert [key(event) for event in scoped.take(len(bag2))] == bag2
    assert max(batched.sizes) > 1  # a six-line reserve publishes six events at once
    assert max(scoped.sizes) <= 3
    for stream in (single, batched, scoped):
        stream.cancel()


def test_resume_from_a_sequence_in_the_middle_of_a_message(api: Api, world: World) -> None:
    """A client that processed only part of a message resumes from the last event it
    processed: the rest of that message and everything after come, no gap, no duplicate."""
    skus = [f"BAG-{index}" for index in range(5)]
    for sku in skus:
        world.set_stock(sku, "paris", 100)
    first = BatchWatcher(api, watch_request())
    sync = first.sync()
    reserve(api, "five-lines", *[(sku, "paris", 2) for sku in skus])
    events = first.take(5)
    assert first.sizes[-1] == 5  # SYNC came alone; the five changes in one message
    first.cancel()
    adjust(api, "BAG-0", "paris", -1)  # missed
    middle = events[1]
    resumed = BatchWatcher(
        api, watch_request(from_sequence=middle.sequence, epoch=sync.epoch), delay_ms=1
    )
    resumed.sync()
    adjust(api, "BAG-1", "paris", -1)  # live
    rest = resumed.take(5)
    assert [key(event) for event in rest[:3]] == [key(event) for event in events[2:]]
    assert [(e.sequence, e.sku, e.new_atp) for e in rest[3:]] == [
        (events[-1].sequence + 1, "BAG-0", 97),
        (events[-1].sequence + 2, "BAG-1", 97),
    ]
    resumed.cancel()


def test_resync_is_unchanged(api: Api, world: World) -> None:
    """A from_sequence ahead of the head, or a rules change, gives one RESYNC_REQUIRED event,
    as on Watch, and the stream carries on after it."""
    world.set_stock("BAG-1", "paris", 10)
    probe = BatchWatcher(api, watch_request())
    sync = probe.sync()
    probe.cancel()
    ahead = BatchWatcher(api, watch_request(from_sequence=sync.sequence + 5, epoch=sync.epoch))
    assert ahead.sync().sequence == sync.sequence
    resync = ahead.next()
    assert (resync.kind, resync.sequence) == (RESYNC_REQUIRED, sync.sequence)
    assert "ahead of the head" in resync.reason
    set_rules(api, RULES)
    after_rules = ahead.next()
    assert after_rules.kind == RESYNC_REQUIRED
    adjust(api, "BAG-1", "paris", -1)
    event = ahead.next()
    assert (event.kind, event.sequence) == (CHANGED, sync.sequence + 1)
    assert event.new_atp == event.old_atp - 1
    ahead.cancel()


@pytest.mark.parametrize(
    ("max_events", "delay_ms", "field"),
    [
        (-1, 0, "max_events"),
        (1_001, 0, "max_events"),
        (0, -1, "max_delay_ms"),
        (0, 1_001, "max_delay_ms"),
    ],
)
def test_bad_framing_is_invalid_argument_naming_the_field(
    api: Api, max_events: int, delay_ms: int, field: str
) -> None:
    """max_events or max_delay_ms outside their configured bounds: INVALID_ARGUMENT naming the
    field and the config value, before any event."""
    stream = BatchWatcher(api, watch_request(), max_events=max_events, delay_ms=delay_ms)
    error = stream.end()
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(error.details())
    assert details.startswith(f"{field}:") and "watch_max_batch" in details
    assert stream.drained == []


def test_bad_scope_is_refused_as_on_watch(api: Api) -> None:
    """The inner WatchRequest is checked as Watch checks it (the field named)."""
    stream = BatchWatcher(api, watch_request(from_sequence=-1))
    error = stream.end()
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from_sequence" in str(error.details())
