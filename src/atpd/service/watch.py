"""The change stream behind WatchService: a bounded in-memory log of position changes and the
subscribers reading it.

The core captures, for every position a command touches, the ATP of each watched caller
(channel, segment) before and after. The hub numbers each position change with a global,
gap-free sequence, keeps the last `buffer_events` of them for reconnecting subscribers, and
hands each live subscriber the events in its scope through a bounded queue. Publishing never
waits: a subscriber whose queue is full is cut off (RESOURCE_EXHAUSTED) and resumes with
`from_sequence`, so a slow reader can slow neither writers nor memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from atpd.core.results import InvalidCommand, LimitExceeded
from atpd.core.state import AtpState
from atpd.core.store_book import Discrepancy
from atpd.service.validation import InvalidArgument
from atpd.service.watch_outbox import Batching, DueTimers
from atpd.service.watch_wire import ChangeEncoder, EncodedEvent
from atpd.v1 import store_pb2, watch_pb2

log = logging.getLogger(__name__)

MAX_WATCHED_CALLERS = 64
KIND = watch_pb2.WatchEventKind
# The kinds of a position change, as plain ints: reading them through KIND costs a Python-level
# __getattr__ each time (about as much as the rest of an event's routing).
CHANGED = watch_pb2.WATCH_EVENT_KIND_CHANGED
LOW_STOCK = watch_pb2.WATCH_EVENT_KIND_LOW_STOCK
OUT_OF_STOCK = watch_pb2.WATCH_EVENT_KIND_OUT_OF_STOCK
BACK_IN_STOCK = watch_pb2.WATCH_EVENT_KIND_BACK_IN_STOCK
# WatchBatch: events per message when the request leaves max_events at 0.
DEFAULT_BATCH_EVENTS = 256
# WatchBatch delays end on a grid of this step: a message waits max_delay_ms less up to 5 ms.
DELAY_TICK_S = 0.005


@dataclass(slots=True)  # not frozen: a frozen one's __init__ costs ~0.8 us more per change
class ChangeRecord:
    sequence: int
    row: int
    node: int
    callers: tuple[tuple[str, str], ...]  # the watched callers, in the order of before/after
    before: list[int]
    after: list[int]
    time_ms: int
    # A forced sale's discrepancy at this position (a DISCREPANCY event, for every caller).
    discrepancy: Discrepancy | None = None


@dataclass(eq=False)
class Subscriber:
    """One stream's scope and its queue of events not yet taken by its handler. The queue is
    a plain list the hub appends to (`offer`); the handler sleeps until the events are due
    (`wait`): at once for Watch, `delay_s` after the first of them for WatchBatch (on the
    hub's shared clock, DueTimers), so a message costs one wake-up of the handler, not one per
    event."""

    caller: tuple[str, str]
    skus: frozenset[str] | None
    nodes: frozenset[int] | None  # the node indexes in scope (None: every node)
    low_stock_threshold: int
    max_events: int  # the queue's bound (watch_max_queue_events): past it, cut off
    timers: DueTimers  # the hub's, shared by every stream
    peer: str = ""
    delay_s: float = 0.0
    overflowed: bool = False
    dropped_at: int = 0
    pending: list[EncodedEvent] = field(default_factory=list)
    # The queued events may be sent now (their delay is over); the handler's wake-up, if it
    # waits. A stale call of `_due` (after a cut-off) only wakes a handler that is ending.
    ready: bool = False
    waiter: asyncio.Future[None] | None = None

    def offer(self, event: EncodedEvent) -> bool:
        """Queue one event; False when the queue is full (the hub then cuts it off)."""
        pending = self.pending
        if len(pending) >= self.max_events:
            return False
        pending.append(event)
        if len(pending) == 1 and not self.ready:  # the first of the next message
            if self.delay_s:
                self.timers.call_after(self.delay_s, self._due)
            else:
                self._due()
        return True

    def _due(self) -> None:
        self.ready = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until queued events are due, or the subscriber is cut off."""
        while not self.ready and not self.overflowed:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def take(self) -> list[EncodedEvent]:
        """The queued events, oldest first; the queue starts afresh."""
        events, self.pending = self.pending, []
        self.ready = False
        return events

    def drop(self) -> None:
        """Cut off: free the queue at once and wake the handler."""
        self.pending = []
        self._due()

    def in_scope(self, record: ChangeRecord, sku_names: list[str]) -> bool:
        if self.skus is not None and sku_names[record.row] not in self.skus:
            return False
        return self.nodes is None or record.node in self.nodes

    def kind_of(self, old: int, new: int) -> int:
        if new == 0:
            return OUT_OF_STOCK
        if old == 0:
            return BACK_IN_STOCK
        if 0 < new < self.low_stock_threshold <= old:
            return LOW_STOCK
        return CHANGED

    def event_for(
        self, record: ChangeRecord, epoch: int, sku_names: list[str], node_names: list[str]
    ) -> watch_pb2.WatchEvent | None:
        """This subscriber's event for a change (None: out of scope or no ATP change)."""
        if not self.in_scope(record, sku_names):
            return None
        if record.discrepancy is not None:
            return discrepancy_event(record, record.discrepancy, epoch)
        try:
            index = record.callers.index(self.caller)
        except ValueError:
            return None
        old, new = record.before[index], record.after[index]
        if old == new:
            return None
        return make_event(record, self.kind_of(old, new), old, new, epoch, sku_names, node_names)


def make_event(
    record: ChangeRecord,
    kind: int,
    old: int,
    new: int,
    epoch: int,
    sku_names: list[str],
    node_names: list[str],
) -> watch_pb2.WatchEvent:
    return watch_pb2.WatchEvent(
        sequence=record.sequence,
        kind=kind,  # type: ignore[arg-type]
        sku=sku_names[record.row],
        node_id=node_names[record.node],
        old_atp=old,
        new_atp=new,
        time_ms=record.time_ms,
        epoch=epoch,
    )


def discrepancy_event(record: ChangeRecord, found: Discrepancy, epoch: int) -> watch_pb2.WatchEvent:
    event = watch_pb2.WatchEvent(
        sequence=record.sequence,
        kind=KIND.WATCH_EVENT_KIND_DISCREPANCY,
        sku=found.sku,
        node_id=found.node_id,
        time_ms=record.time_ms,
        epoch=epoch,
    )
    discrepancy_message(found, event.discrepancy)
    return event


def discrepancy_message(found: Discrepancy, message: store_pb2.Discrepancy) -> None:
    message.sequence = found.sequence
    message.receipt_id = found.receipt_id
    message.sku = found.sku
    message.node_id = found.node_id
    message.expected = found.expected
    message.sold = found.sold
    message.missing = found.missing
    message.sold_at_ms = found.sold_at_ms
    message.recorded_at_ms = found.recorded_at_ms
    message.terminal_id = found.terminal_id


class StreamStalled(Exception):
    """A server stream's client took nothing for stream_stall_timeout_s (DEADLINE_EXCEEDED)."""


async def write_or_stall(context: Any, message: Any, stall_timeout_s: float, sent: int) -> None:
    """Write one message of a server stream, or raise StreamStalled when the client has not
    taken it within stall_timeout_s (flow control holds the write while the client does not
    read): a stream nobody reads must not hold its memory or its slot forever."""
    try:
        await asyncio.wait_for(context.write(message), stall_timeout_s)
    except TimeoutError:
        raise StreamStalled(
            f"stream_stall_timeout_s: the client took no message for {stall_timeout_s:g} s "
            f"after {sent} messages; the stream was ended"
        ) from None


class StallGuard:
    """write_or_stall for a long-lived stream, with one timer per stream instead of a timeout
    per message (asyncio.wait_for creates a task per write: ~13 us a message). The timer checks
    how long the write in progress, if any, has waited; past stall_timeout_s it cancels the
    stream's task, and the write raises StreamStalled with the same message. Create it in the
    handler's task; `close` when the stream ends."""

    __slots__ = ("handle", "loop", "pending_since", "sent", "stalled", "task", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        assert timeout_s > 0
        task = asyncio.current_task()
        assert task is not None, "a StallGuard belongs to the stream's task"
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self.pending_since: float | None = None
        self.stalled = False
        self.sent = 0
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(timeout_s, self._check)

    def _check(self) -> None:
        self.handle = None
        delay = self.timeout_s
        if self.pending_since is not None:
            waited = self.loop.time() - self.pending_since
            if waited >= self.timeout_s:
                self.stalled = True
                self.task.cancel()
                return
            delay -= waited
        self.handle = self.loop.call_later(delay, self._check)

    async def write(self, context: Any, message: Any) -> None:
        self.pending_since = self.loop.time()
        try:
            await context.write(message)
        except asyncio.CancelledError:
            if self.stalled:
                raise StreamStalled(
                    f"stream_stall_timeout_s: the client took no message for "
                    f"{self.timeout_s:g} s after {self.sent} messages; the stream was ended"
                ) from None
            raise
        self.pending_since = None
        self.sent += 1

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def end_stalled(method: str, error: StreamStalled) -> NoReturn:
    """End a stalled server stream's handler, freeing what it holds. No status can follow a
    message the client has not taken (the write was abandoned mid-flight), so the client learns
    of it from its own deadline or a closed connection; the reason is logged here, one line."""
    log.warning("%s: %s", method, error)
    raise asyncio.CancelledError(str(error))


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string without its port ("ipv4:10.0.0.1:5123" -> "ipv4:10.0.0.1",
    "ipv6:[::1]:5123" -> "ipv6:[::1]"), so that one host's connections count together."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in address:
        return f"{kind}:{address.rsplit(':', 1)[0]}"
    return peer  # unix sockets and anything unknown: the peer string as given


class WatchHub:
    def __init__(
        self,
        state_of: object,
        buffer_events: int = 100_000,
        max_queue_events: int = 10_000,
        max_subscribers: int = 1_000,
        max_subscribers_per_peer: int = 16,
        stall_timeout_s: float = 60.0,
        max_batch_events: int = 1_000,
        max_batch_delay_ms: int = 1_000,
    ) -> None:
        assert buffer_events > 0 and max_queue_events > 0
        assert max_batch_events > 0 and max_batch_delay_ms >= 0
        self.max_batch_events = max_batch_events
        self.max_batch_delay_ms = max_batch_delay_ms
        assert max_subscribers_per_peer > 0 and stall_timeout_s > 0
        self.max_subscribers_per_peer = max_subscribers_per_peer
        self.stall_timeout_s = stall_timeout_s
        # Live subscribers per peer host (see peer_host), for max_watch_subscribers_per_peer.
        self.by_peer: dict[str, int] = {}
        self._state_of = state_of
        self.epoch = time.time_ns() // 1_000_000
        self.encoder = ChangeEncoder(self.epoch)
        # state.watched as of the last publish, and each caller's index in it.
        self.indexed_callers: tuple[tuple[str, str], ...] = ()
        self.caller_index: dict[tuple[str, str], int] = {}
        self.sequence = 0
        self.buffer: deque[ChangeRecord] = deque(maxlen=buffer_events)
        self.max_queue_events = max_queue_events
        self.max_subscribers = max_subscribers
        self.subscribers: list[Subscriber] = []
        # Subscribers by the SKUs they filter on, and those with no SKU filter: a change is
        # only offered to the subscribers that can want it.
        self.by_sku: dict[str, list[Subscriber]] = {}
        self.unfiltered: list[Subscriber] = []
        # Replays from before this sequence need a resync (rules or nodes changed there).
        self.resync_floor = 0
        # The first sequence from which each watched caller's ATP is in the log.
        self.caller_since: dict[tuple[str, str], int] = {}
        self.node_names: list[str] = []
        self.cut_off = 0
        # The head when the last subscriber left, and whether capture has stopped since then
        # (see `_idle_capture`).
        self.idle_since = 0
        self.capture_stopped = False
        # The delays of WatchBatch streams end on this shared clock (see DueTimers).
        self.due_timers = DueTimers(DELAY_TICK_S)

    def batching(self, max_events: int, max_delay_ms: int) -> Batching:
        """A WatchBatch request's framing, checked against watch_max_batch_events and
        watch_max_batch_delay_ms."""
        if max_events < 0 or max_events > self.max_batch_events:
            raise InvalidArgument(
                "max_events", f"must be 0..{self.max_batch_events} (watch_max_batch_events)"
            )
        if max_delay_ms < 0 or max_delay_ms > self.max_batch_delay_ms:
            raise InvalidArgument(
                "max_delay_ms",
                f"must be 0..{self.max_batch_delay_ms} (watch_max_batch_delay_ms)",
            )
        events = max_events or min(DEFAULT_BATCH_EVENTS, self.max_batch_events)
        return Batching(events, max_delay_ms / 1000)

    @property
    def state(self) -> AtpState:
        state = self._state_of()  # type: ignore[operator]
        assert isinstance(state, AtpState)
        return state

    def subscribe(
        self,
        caller: tuple[str, str],
        skus: Sequence[str],
        nodes: npt.NDArray[np.bool_] | None,
        low_stock_threshold: int,
        peer: str = "",
        delay_s: float = 0.0,
    ) -> Subscriber:
        if len(self.subscribers) >= self.max_subscribers:
            raise LimitExceeded(f"watch_max_subscribers: {len(self.subscribers)} are watching")
        if self.by_peer.get(peer, 0) >= self.max_subscribers_per_peer:
            raise LimitExceeded(
                f"max_watch_subscribers_per_peer: this host ({peer}) already holds "
                f"{self.max_subscribers_per_peer} Watch streams; close one or share it"
            )
        state = self.state
        if self.capture_stopped:
            # Changes went unrecorded meanwhile: skip one number so that no from_sequence a
            # client may hold (all at or before the head) can replay across the gap.
            self.capture_stopped = False
            self.sequence += 1
            self.resync_floor = self.sequence
        if caller not in state.watched:
            if len(state.watched) >= MAX_WATCHED_CALLERS:
                raise LimitExceeded(
                    f"at most {MAX_WATCHED_CALLERS} distinct channel/segment pairs can be watched"
                )
            state.set_watched((*state.watched, caller))
            self.caller_since[caller] = self.sequence + 1
        subscriber = Subscriber(
            caller,
            frozenset(skus) if skus else None,
            None if nodes is None else frozenset(np.flatnonzero(nodes).tolist()),
            low_stock_threshold,
            self.max_queue_events,
            self.due_timers,
            peer,
            delay_s,
        )
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        self.subscribers.append(subscriber)
        if subscriber.skus is None:
            self.unfiltered.append(subscriber)
        else:
            for sku in subscriber.skus:
                self.by_sku.setdefault(sku, []).append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        # Watched callers are kept (bounded by MAX_WATCHED_CALLERS) so that a reconnecting
        # subscriber of the same caller can replay from the log.
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
            if not self.subscribers:
                self.idle_since = self.sequence
            held = self.by_peer[subscriber.peer] - 1
            if held:
                self.by_peer[subscriber.peer] = held
            else:
                del self.by_peer[subscriber.peer]
        if subscriber.skus is None:
            if subscriber in self.unfiltered:
                self.unfiltered.remove(subscriber)
            return
        for sku in subscriber.skus:
            listeners = self.by_sku.get(sku)
            if listeners is not None and subscriber in listeners:
                listeners.remove(subscriber)
                if not listeners:
                    del self.by_sku[sku]

    def _cut_off(self, subscriber: Subscriber, sequence: int) -> None:
        """Queue full: the subscriber is dropped and its queued events freed at once (its RPC
        may sit blocked on a stalled client for a long time); its handler is woken."""
        subscriber.overflowed = True
        subscriber.dropped_at = sequence
        self.cut_off += 1
        subscriber.drop()
        self.unsubscribe(subscriber)

    def replay(self, subscriber: Subscriber, from_sequence: int, epoch: int) -> list[EncodedEvent]:
        """Events after from_sequence from the log, or one RESYNC_REQUIRED event."""
        oldest = self.buffer[0].sequence if self.buffer else self.sequence + 1
        floor = max(self.resync_floor, self.caller_since.get(subscriber.caller, 0) - 1, oldest - 1)
        if (
            (epoch and epoch != self.epoch)
            or from_sequence < floor
            or from_sequence > self.sequence
        ):
            if epoch and epoch != self.epoch:
                reason = "the server restarted: its change log starts afresh"
            elif from_sequence > self.sequence:
                reason = f"from_sequence {from_sequence} is ahead of the head {self.sequence}"
            else:
                reason = f"events after {from_sequence} are no longer in the change log"
            return [EncodedEvent.of(self._resync(reason))]
        events = []
        start = from_sequence - oldest + 1
        sku_names, node_names = self.state.skus.names, self.state.node_ids.names
        for index in range(max(start, 0), len(self.buffer)):
            event = subscriber.event_for(self.buffer[index], self.epoch, sku_names, node_names)
            if event is not None:
                events.append(EncodedEvent.of(event))
        return events

    def _resync(self, reason: str) -> watch_pb2.WatchEvent:
        return watch_pb2.WatchEvent(
            sequence=self.sequence,
            kind=KIND.WATCH_EVENT_KIND_RESYNC_REQUIRED,
            epoch=self.epoch,
            time_ms=time.time_ns() // 1_000_000,
            reason=reason,
        )

    def publish(self, changes: list[tuple[int, int, list[int], list[int]]], now_ms: int) -> None:
        state = self.state
        callers = state.watched
        if not self.subscribers:
            # Recorded for resumption only (a Watch that reconnects with a sequence).
            append, sequence = self.buffer.append, self.sequence
            for row, node, before, after in changes:
                sequence += 1
                append(ChangeRecord(sequence, row, node, callers, before, after, now_ms))
            self.sequence = sequence
            self._idle_capture()
            return
        sku_names, node_names = state.skus.names, state.node_ids.names
        if callers is not self.indexed_callers:
            self.indexed_callers = callers
            self.caller_index = {caller: i for i, caller in enumerate(callers)}
        caller_index = self.caller_index
        encoder = self.encoder
        encoder.at(now_ms)
        by_sku, unfiltered = self.by_sku, self.unfiltered
        cut: list[tuple[Subscriber, int]] = []
        for row, node, before, after in changes:
            sequence = self.sequence = self.sequence + 1
            self.buffer.append(ChangeRecord(sequence, row, node, callers, before, after, now_ms))
            sku = sku_names[row]
            listeners = by_sku.get(sku)
            if listeners is None and not unfiltered:
                continue
            # One encoded event per (caller, kind), shared by every subscriber it goes to.
            built: dict[tuple[int, int], EncodedEvent] = {}
            for group in (listeners or (), unfiltered):
                # by_sku holds only subscribers of this SKU, unfiltered those of every SKU:
                # only the node filter is left to check.
                for subscriber in group:
                    nodes = subscriber.nodes
                    if subscriber.overflowed or (nodes is not None and node not in nodes):
                        continue
                    index = caller_index.get(subscriber.caller)
                    if index is None:
                        continue
                    old, new = before[index], after[index]
                    if old == new:
                        continue
                    kind = subscriber.kind_of(old, new)
                    event = built.get((index, kind))
                    if event is None:
                        event = built[(index, kind)] = encoder.change(
                            sequence, kind, sku, node_names[node], old, new
                        )
                    if not subscriber.offer(event):
                        cut.append((subscriber, sequence))
                        subscriber.overflowed = True
        for subscriber, sequence in cut:
            self._cut_off(subscriber, sequence)

    def _idle_capture(self) -> None:
        """Nobody subscribed: once the log has rolled over since the last subscriber left,
        every from_sequence a client may resume from is gone from it (RESYNC_REQUIRED anyway),
        so recording more serves nobody. Capture stops and the log is freed until the next
        subscriber, which starts it again (`subscribe`)."""
        maxlen = self.buffer.maxlen
        assert maxlen is not None
        if self.sequence - self.idle_since <= maxlen or self.subscribers:
            return
        self.state.set_watched(())
        self.caller_since.clear()
        self.buffer.clear()
        self.capture_stopped = True

    def publish_discrepancies(self, found: Sequence[Discrepancy], now_ms: int) -> None:
        """DISCREPANCY events of a forced sale, numbered in the same sequence as changes."""
        state = self.state
        cut: list[tuple[Subscriber, int]] = []
        for discrepancy in found:
            row = state.skus.get(discrepancy.sku)
            node = state.node_ids.get(discrepancy.node_id)
            assert row >= 0 and node >= 0, discrepancy
            self.sequence += 1
            record = ChangeRecord(self.sequence, row, node, (), [], [], now_ms, discrepancy)
            self.buffer.append(record)
            event = EncodedEvent.of(discrepancy_event(record, discrepancy, self.epoch))
            sku_names = state.skus.names
            for group in (self.by_sku.get(discrepancy.sku, ()), self.unfiltered):
                for subscriber in group:
                    if subscriber.overflowed or not subscriber.in_scope(record, sku_names):
                        continue
                    if not subscriber.offer(event):
                        cut.append((subscriber, record.sequence))
                        subscriber.overflowed = True
        for subscriber, sequence in cut:
            self._cut_off(subscriber, sequence)

    def resync_all(self, reason: str) -> None:
        """Something changed ATP everywhere (rules, nodes, a bulk load): tell every subscriber."""
        self.resync_floor = self.sequence
        state = self.state
        # Callers the new rules no longer define stop being captured (capture would fail).
        valid = []
        for caller in state.watched:
            try:
                state.policy(*caller)
            except InvalidCommand:
                self.caller_since.pop(caller, None)
                continue
            valid.append(caller)
        state.set_watched(tuple(valid))
        event = EncodedEvent.of(self._resync(reason))
        for subscriber in list(self.subscribers):
            if subscriber.caller not in state.watched:
                self._cut_off(subscriber, self.sequence)
                continue
            if not subscriber.offer(event):
                self._cut_off(subscriber, self.sequence)
