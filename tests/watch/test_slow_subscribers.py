"""Slow subscribers: a client that stops reading is cut off with RESOURCE_EXHAUSTED once its
bounded queue overflows, while writers and other subscribers carry on; it can resume from the
sequence the status names; the server keeps nothing unbounded for it."""

from __future__ import annotations

import re

import grpc
from service.harness import ServerThread, World

from .conftest import StartServer
from .support import Api, StalledWatch, Watcher, reserve, watch_request
from .test_filters import key

QUEUE_EVENTS = 200
LINES = 50  # events per reservation: a fast reader's queue never holds more than this
SKUS = [f"SKU-{i:02d}" for i in range(LINES)]
MAX_RESERVATIONS = 40  # far more than a 200-event queue plus a small window can take


def stock(server: ServerThread, api: Api) -> None:
    world = World(server, api.base)
    for sku in SKUS:
        world.set_stock(sku, "paris", 1_000_000)


def reserve_all(api: Api, reservation_id: str) -> None:
    reserve(api, reservation_id, *[(sku, "paris", 1) for sku in SKUS])


def test_a_stalled_subscriber_is_cut_off_while_writers_and_readers_carry_on(
    start_server: StartServer,
) -> None:
    """A subscriber whose client never reads overflows its queue and leaves the hub; every
    reservation meanwhile succeeds and a reading subscriber gets every event; when the stalled
    client reads at last it gets a gap-free prefix then RESOURCE_EXHAUSTED naming where to
    resume, and resuming there replays the rest."""
    server = start_server(watch_max_queue_events=QUEUE_EVENTS)
    api = Api.on(server)
    stock(server, api)
    stalled = StalledWatch(server, watch_request())
    reader = Watcher(api, watch_request())
    reader.sync()
    hub = server.app.hub
    assert server.call(lambda: list(hub.subscribers))[0] is stalled.subscriber
    writer = Api.on(server)
    seen = []
    for k in range(MAX_RESERVATIONS):
        reserve_all(writer, f"cart-{k}")  # asserts OUTCOME_OK
        seen += reader.take(LINES)
        if stalled.subscriber.overflowed:
            break
    assert stalled.subscriber.overflowed, "the stalled subscriber's queue never overflowed"
    for k in range(3):  # and after the cut-off
        reserve_all(writer, f"after-{k}")
        seen += reader.take(LINES)
    remaining = server.call(lambda: list(hub.subscribers))
    assert len(remaining) == 1 and remaining[0] is not stalled.subscriber
    assert len(stalled.subscriber.pending) <= QUEUE_EVENTS
    assert [e.sequence for e in seen] == list(range(seen[0].sequence, seen[-1].sequence + 1))

    events, error = stalled.read_to_end()
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert events, "nothing reached the client before the cut-off"
    assert [key(e) for e in events] == [key(e) for e in seen[: len(events)]]
    match = re.search(r"from_sequence=(\d+) and epoch=(\d+)", error.details() or "")
    assert match, error.details()
    assert int(match.group(1)) == events[-1].sequence
    assert int(match.group(2)) == stalled.sync.epoch
    stalled.close()

    resumed = Watcher(api, watch_request(from_sequence=events[-1].sequence, epoch=events[-1].epoch))
    resumed.sync()
    rest = resumed.take(len(seen) - len(events))
    assert [key(e) for e in events + rest] == [key(e) for e in seen]
    resumed.cancel()
    reader.cancel()


def test_cut_off_subscribers_hold_no_unbounded_memory(start_server: StartServer) -> None:
    """Streams cut off for overflowing, whose clients never read nor hang up, hold at most
    watch_max_subscribers x watch_max_queue_events events between them: either their queues
    are released at the cut-off, or they still count against watch_max_subscribers."""
    max_subscribers = 2
    server = start_server(
        watch_max_queue_events=QUEUE_EVENTS, watch_max_subscribers=max_subscribers
    )
    api = Api.on(server)
    stock(server, api)
    stalled: list[StalledWatch] = []
    refused = 0
    for wave in range(3):
        for _ in range(max_subscribers):
            try:
                stalled.append(StalledWatch(server, watch_request()))
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                refused += 1
        for k in range(MAX_RESERVATIONS):
            if all(s.subscriber.overflowed for s in stalled):
                break
            reserve_all(api, f"wave-{wave}-{k}")
        assert all(s.subscriber.overflowed for s in stalled)
    held = server.call(lambda: sum(len(s.subscriber.pending) for s in stalled))
    for stream in stalled:
        stream.close()
    assert held <= max_subscribers * QUEUE_EVENTS, (
        f"{len(stalled)} cut-off streams still hold {held} queued events "
        f"({refused} subscriptions refused)"
    )
