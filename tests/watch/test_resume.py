"""Resuming a Watch with from_sequence: missed events replayed from the bounded log, then live,
no gap and no duplicate; RESYNC_REQUIRED when the log cannot answer (too old, another epoch,
ahead of the head, a rules change, a caller never watched back then)."""

from __future__ import annotations

import asyncio
import threading

from service.harness import RPC_TIMEOUT_S, ServerThread, World

from atpd.core.commands import SetStock
from atpd.service.watch_servicer import WatchServicer
from atpd.v1 import watch_pb2

from .conftest import StartServer
from .support import (
    CHANGED,
    RESYNC_REQUIRED,
    SYNC,
    Api,
    Watcher,
    adjust,
    reserve,
    set_rules,
    watch_request,
)
from .test_filters import RULES, key


def subscribers(server: ServerThread) -> int:
    return server.call(lambda: len(server.app.hub.subscribers))


def test_reconnect_replays_what_was_missed_then_goes_live(api: Api, world: World) -> None:
    """A subscriber that drops and comes back with from_sequence = its last event (and its
    epoch) gets exactly the events it missed, then live ones: together, the same stream as a
    subscriber that never left, and the same for a SKU-filtered one."""
    for sku in ("BAG-1", "BAG-2"):
        world.set_stock(sku, "paris", 50)
    stayed = Watcher(api, watch_request())
    stayed.sync()
    scopes = [watch_request(), watch_request(skus=["BAG-2"])]
    first = [Watcher(api, request) for request in scopes]
    received: list[list[watch_pb2.WatchEvent]] = []
    for watcher in first:
        watcher.sync()
    for k in range(4):
        adjust(api, ("BAG-1", "BAG-2")[k % 2], "paris", -1)
    for watcher in first:
        received.append(watcher.take(4 if not watcher.request.skus else 2))
        watcher.cancel()
    for k in range(6):  # missed
        adjust(api, ("BAG-1", "BAG-2")[k % 2], "paris", -1)
    resumed = []
    for request, events in zip(scopes, received, strict=True):
        again = watch_pb2.WatchRequest()
        again.CopyFrom(request)
        again.from_sequence, again.epoch = events[-1].sequence, events[-1].epoch
        watcher = Watcher(api, again)
        sync = watcher.sync()
        assert sync.sequence == events[-1].sequence + 6  # the head now
        resumed.append(watcher)
    for k in range(4):  # live again
        adjust(api, ("BAG-1", "BAG-2")[k % 2], "paris", -1)
    reference = [key(e) for e in stayed.take(14)]
    for watcher, events in zip(resumed, received, strict=True):
        bag2_only = bool(watcher.request.skus)
        expected = [k for k in reference if not bag2_only or k[2] == "BAG-2"]
        events += watcher.take(len(expected) - len(events))
        assert [key(e) for e in events] == expected
        watcher.cancel()
    stayed.cancel()


def test_reconnect_while_writes_flow_has_no_gap_and_no_duplicate(api: Api, world: World) -> None:
    """Reservations keep coming from another client while a subscriber resumes: the replayed
    and the live events join up exactly, whatever the interleaving."""
    world.set_stock("BAG-1", "paris", 10_000)
    stayed = Watcher(api, watch_request())
    first = Watcher(api, watch_request())
    stayed.sync()
    first.sync()
    adjust(api, "BAG-1", "paris", -1)
    seen = first.take(1)
    first.cancel()
    writer_api = Api.on(world.server)
    reservations = 150
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for k in range(reservations):
                reserve(writer_api, f"flow-{k}", ("BAG-1", "paris", 1))
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    request = watch_request(from_sequence=seen[0].sequence, epoch=seen[0].epoch)
    resumed = Watcher(api, request)
    resumed.sync()
    writer.join(RPC_TIMEOUT_S)
    assert not writer.is_alive() and errors == []
    reference = [key(e) for e in stayed.take(1 + reservations)]
    seen += resumed.take(reservations)
    assert [key(e) for e in seen] == reference
    adjust(api, "BAG-1", "paris", 1)  # and nothing extra was queued before this one
    assert key(resumed.next()) == key(stayed.next())
    for watcher in (stayed, resumed):
        watcher.cancel()


def test_from_sequence_older_than_the_log_gets_one_resync(start_server: StartServer) -> None:
    """With an 8-event log: resuming from just before its oldest event replays all 8; one
    further back gets a single RESYNC_REQUIRED at the head, then live events carry on."""
    server = start_server(watch_buffer_events=8)
    api = Api.on(server)
    world = World(server, api.base)
    world.set_stock("BAG-1", "paris", 100)
    watcher = Watcher(api, watch_request())
    start = watcher.sync().sequence
    for _ in range(15):
        adjust(api, "BAG-1", "paris", -1)
    events = watcher.take(15)
    watcher.cancel()
    head = events[-1].sequence
    assert head == start + 15
    oldest = head - 7  # the log keeps the last 8
    replay = Watcher(api, watch_request(from_sequence=oldest - 1))
    assert replay.sync().sequence == head
    assert [key(e) for e in replay.take(8)] == [key(e) for e in events[-8:]]
    late = Watcher(api, watch_request(from_sequence=oldest - 2, epoch=events[0].epoch))
    assert late.sync().sequence == head
    resync = late.next()
    assert (resync.kind, resync.sequence, resync.epoch) == (RESYNC_REQUIRED, head, events[0].epoch)
    assert "no longer in the change log" in resync.reason
    adjust(api, "BAG-1", "paris", -1)
    for stream in (replay, late):
        event = stream.next()  # nothing else came before the live event
        assert (event.sequence, event.old_atp, event.new_atp) == (head + 1, 85, 84)
        stream.cancel()


def test_resync_for_another_epoch_or_a_sequence_ahead_of_the_head(api: Api, world: World) -> None:
    """An epoch other than this server's (a restart) or a from_sequence beyond the head gets one
    RESYNC_REQUIRED naming why; from_sequence at the head replays nothing and goes live."""
    world.set_stock("BAG-1", "paris", 10)
    watcher = Watcher(api, watch_request())
    sync = watcher.sync()
    adjust(api, "BAG-1", "paris", -1)
    head = watcher.next().sequence
    watcher.cancel()
    other_epoch = Watcher(api, watch_request(from_sequence=head, epoch=sync.epoch - 1))
    ahead = Watcher(api, watch_request(from_sequence=head + 1, epoch=sync.epoch))
    at_head = Watcher(api, watch_request(from_sequence=head, epoch=sync.epoch))
    for stream in (other_epoch, ahead, at_head):
        assert stream.sync().sequence == head
    restart, beyond = other_epoch.next(), ahead.next()
    assert (restart.kind, restart.sequence) == (RESYNC_REQUIRED, head)
    assert "restarted" in restart.reason
    assert (beyond.kind, beyond.sequence) == (RESYNC_REQUIRED, head)
    assert "ahead of the head" in beyond.reason
    adjust(api, "BAG-1", "paris", -1)
    for stream in (other_epoch, ahead, at_head):
        event = stream.next()
        assert (event.kind, event.sequence, event.new_atp) == (CHANGED, head + 1, 8)
        stream.cancel()


def test_set_rules_sends_resync_to_live_subscribers_and_to_older_resumes(
    api: Api, world: World
) -> None:
    """SetRules changes every caller's ATP at once: each live subscriber gets RESYNC_REQUIRED at
    the head, a resume from before it also gets RESYNC_REQUIRED, one from after it replays."""
    world.set_stock("BAG-1", "paris", 10)
    live = Watcher(api, watch_request())
    live.sync()
    adjust(api, "BAG-1", "paris", -1)
    adjust(api, "BAG-1", "paris", -1)
    earlier, before = live.take(2)
    set_rules(api, RULES)
    resync = live.next()
    assert (resync.kind, resync.sequence) == (RESYNC_REQUIRED, before.sequence)
    # The log keeps ATP per resolved caller: have web/standard (the defaults now) watched
    # before the next change, so that a resume after the rules change can replay it.
    standard = Watcher(api, watch_request())
    standard.sync()
    adjust(api, "BAG-1", "paris", -1)  # web/standard at paris: 7 - 1 store safety
    after = live.next()
    assert (after.sequence, after.old_atp, after.new_atp) == (before.sequence + 1, 7, 6)
    older = Watcher(api, watch_request(from_sequence=earlier.sequence, epoch=before.epoch))
    newer = Watcher(api, watch_request(from_sequence=before.sequence, epoch=before.epoch))
    older.sync()
    newer.sync()
    assert older.next().kind == RESYNC_REQUIRED
    assert key(newer.next()) == key(after)
    assert key(standard.next()) == key(after)
    for stream in (live, standard, older, newer):
        stream.cancel()


def test_a_caller_first_watched_now_cannot_replay_from_before(api: Api, world: World) -> None:
    """The log records only the ATP of callers being watched: a VIP subscriber resuming from a
    sequence before VIP was ever watched gets RESYNC_REQUIRED, not a partial replay."""
    set_rules(api, RULES)
    world.set_stock("BAG-1", "lyon", 5)
    standard = Watcher(api, watch_request(channel="store"))
    standard.sync()
    adjust(api, "BAG-1", "lyon", -1)
    adjust(api, "BAG-1", "lyon", -1)
    first = standard.take(2)[0]
    vip = Watcher(api, watch_request(segment="vip", from_sequence=first.sequence))
    vip.sync()
    event = vip.next()
    assert event.kind == RESYNC_REQUIRED, event
    for stream in (standard, vip):
        stream.cancel()


def test_events_published_while_sync_is_sent_are_not_lost(server: ServerThread) -> None:
    """A position change applied after the SYNC message was built but before the stream resumed
    is delivered (the servicer driven directly on the server loop, so the interleaving is
    exact): the first live event follows SYNC's sequence."""
    engine, hub = server.app.engine, server.app.hub

    class HeldContext:
        """Takes each written event; the first write stays in flight until released."""

        def __init__(self) -> None:
            self.written: asyncio.Queue[watch_pb2.WatchEvent] = asyncio.Queue()
            self.released = asyncio.Event()

        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

        async def write(self, event: watch_pb2.WatchEvent) -> None:
            first = self.written.empty() and not self.released.is_set()
            self.written.put_nowait(event)
            if first:
                await self.released.wait()

    async def scenario() -> tuple[watch_pb2.WatchEvent, watch_pb2.WatchEvent | None]:
        context = HeldContext()
        task = asyncio.create_task(WatchServicer(engine, hub).Watch(watch_request(), context))
        sync = await context.written.get()
        # The servicer is suspended in the write of SYNC; a write lands now.
        await engine.execute(SetStock("BAG-1", "paris", 5, 1))
        context.released.set()
        try:
            event: watch_pb2.WatchEvent | None = await asyncio.wait_for(context.written.get(), 2.0)
        except TimeoutError:
            event = None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sync, event

    sync, event = server.run(scenario())
    assert sync.kind == SYNC
    assert event is not None, "the change applied while SYNC was in flight was never sent"
    assert (event.sequence, event.new_atp) == (sync.sequence + 1, 5)
