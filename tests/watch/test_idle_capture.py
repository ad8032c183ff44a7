"""Change capture when nobody watches: it goes on while a resume could still replay from the
log, stops once the log has rolled over since the last subscriber left (no command records
changes any more), and starts again, safely, with the next subscriber."""

from __future__ import annotations

from service.harness import ServerThread, World

from atpd.v1 import watch_pb2

from .conftest import StartServer
from .support import RESYNC_REQUIRED, Api, Watcher, adjust, wait_until, watch_request

LOG_EVENTS = 8


def capture(server: ServerThread) -> tuple[int, int, tuple[tuple[str, str], ...]]:
    """(head sequence, events in the log, watched callers) as the server sees them."""
    hub = server.app.hub
    return server.call(lambda: (hub.sequence, len(hub.buffer), hub.state.watched))


def leave(server: ServerThread, watcher: Watcher) -> None:
    watcher.cancel()
    wait_until(lambda: server.call(lambda: not server.app.hub.subscribers))


def first_event(api: Api, world: World) -> tuple[Watcher, watch_pb2.WatchEvent]:
    world.set_stock("BAG-1", "paris", 100)
    watcher = Watcher(api, watch_request())
    watcher.sync()
    adjust(api, "BAG-1", "paris", -1)
    return watcher, watcher.next()


def test_a_resume_within_the_log_replays_after_everyone_left(start_server: StartServer) -> None:
    """The only subscriber leaves, exactly a log's worth of changes follow: capture is still
    on, and resuming from its last event replays all of them."""
    server = start_server(watch_buffer_events=LOG_EVENTS)
    api = Api.on(server)
    watcher, seen = first_event(api, World(server, api.base))
    leave(server, watcher)
    for _ in range(LOG_EVENTS):
        adjust(api, "BAG-1", "paris", -1)
    assert capture(server) == (seen.sequence + LOG_EVENTS, LOG_EVENTS, (("", ""),))
    resumed = Watcher(api, watch_request(from_sequence=seen.sequence, epoch=seen.epoch))
    assert resumed.sync().sequence == seen.sequence + LOG_EVENTS
    replayed = resumed.take(LOG_EVENTS)
    assert [e.sequence for e in replayed] == [seen.sequence + 1 + k for k in range(LOG_EVENTS)]
    assert [(e.old_atp, e.new_atp) for e in replayed] == [(99 - k, 98 - k) for k in range(8)]
    resumed.cancel()


def test_capture_stops_once_the_log_rolled_over_and_restarts_safely(
    start_server: StartServer,
) -> None:
    """After the log rolled over with nobody subscribed, commands record nothing (no watched
    caller, an empty log, the head stays); the next subscriber gets SYNC past a skipped number,
    an old from_sequence gets RESYNC_REQUIRED, and live events carry the true ATP again."""
    server = start_server(watch_buffer_events=LOG_EVENTS)
    api = Api.on(server)
    watcher, seen = first_event(api, World(server, api.base))
    leave(server, watcher)
    for _ in range(LOG_EVENTS + 1):
        adjust(api, "BAG-1", "paris", -1)
    head = seen.sequence + LOG_EVENTS + 1
    assert capture(server) == (head, 0, ())
    for _ in range(5):
        adjust(api, "BAG-1", "paris", -1)  # ATP 100 - 15 = 85
    assert capture(server) == (head, 0, ())
    assert server.call(lambda: dict(server.app.engine.state.changes)) == {}

    resumed = Watcher(api, watch_request(from_sequence=seen.sequence, epoch=seen.epoch))
    assert resumed.sync().sequence == head + 1
    resync = resumed.next()
    assert (resync.kind, resync.sequence) == (RESYNC_REQUIRED, head + 1)
    fresh = Watcher(api, watch_request())
    assert fresh.sync().sequence == head + 1
    stale = Watcher(api, watch_request(from_sequence=head, epoch=seen.epoch))
    assert stale.sync().sequence == head + 1
    assert stale.next().kind == RESYNC_REQUIRED  # the head before the gap is not resumable
    adjust(api, "BAG-1", "paris", -1)
    for stream in (resumed, fresh, stale):
        event = stream.next()
        assert (event.sequence, event.old_atp, event.new_atp) == (head + 2, 85, 84)
    # Resuming from the first number after the gap replays normally.
    fresh.cancel()
    adjust(api, "BAG-1", "paris", -1)
    again = Watcher(api, watch_request(from_sequence=head + 1, epoch=seen.epoch))
    again.sync()
    assert [(e.sequence, e.new_atp) for e in again.take(2)] == [(head + 2, 84), (head + 3, 83)]
    for stream in (resumed, stale, again):
        stream.cancel()
