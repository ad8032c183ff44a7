"""Helpers for the change-stream tests: a Watch stream drained by a reader thread (so a test
waits for events with a bounded `get`, never a sleep), stub bundles with the Watch and Rules
services, and the ATP of positions read back through GetStock."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from service.harness import RPC_TIMEOUT_S, ServerThread, Stubs

from atpd.v1 import (
    common_pb2,
    inventory_pb2,
    reservations_pb2,
    rules_pb2,
    rules_pb2_grpc,
    watch_pb2,
    watch_pb2_grpc,
)

KIND = watch_pb2.WatchEventKind
SYNC = watch_pb2.WATCH_EVENT_KIND_SYNC
CHANGED = watch_pb2.WATCH_EVENT_KIND_CHANGED
LOW_STOCK = watch_pb2.WATCH_EVENT_KIND_LOW_STOCK
OUT_OF_STOCK = watch_pb2.WATCH_EVENT_KIND_OUT_OF_STOCK
BACK_IN_STOCK = watch_pb2.WATCH_EVENT_KIND_BACK_IN_STOCK
RESYNC_REQUIRED = watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED
OK = common_pb2.OUTCOME_OK

# Every wait for an event is bounded by this (an event that never comes fails the test).
EVENT_WAIT_S = 10.0
# A Watch stream's own deadline: longer than any test, shorter than the pytest timeout.
STREAM_DEADLINE_S = 120.0


@dataclass(frozen=True)
class Api:
    """The harness stubs plus the Watch and Rules services, on one channel."""

    base: Stubs
    watch: watch_pb2_grpc.WatchServiceStub
    rules: rules_pb2_grpc.RulesServiceStub

    @classmethod
    def on(cls, server: ServerThread) -> Api:
        channel = server.channel()
        return cls(
            Stubs.on(channel),
            watch_pb2_grpc.WatchServiceStub(channel),
            rules_pb2_grpc.RulesServiceStub(channel),
        )


class Ended(Exception):
    """The stream ended (with the status in `error`, or OK when it is None)."""

    def __init__(self, error: grpc.RpcError | None) -> None:
        super().__init__(repr(error))
        self.error = error


class Watcher:
    """One Watch call, read by a daemon thread into a queue as events arrive."""

    def __init__(self, api: Api, request: watch_pb2.WatchRequest) -> None:
        self.request = request
        self.call: Any = api.watch.Watch(request, timeout=STREAM_DEADLINE_S)
        self._events: queue.Queue[watch_pb2.WatchEvent | Ended] = queue.Queue()
        # What `end` read before the stream ended.
        self.drained: list[watch_pb2.WatchEvent] = []
        self._thread = threading.Thread(target=self._read, name="watch-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self._events.put(event)
        except grpc.RpcError as error:
            self._events.put(Ended(error))
        else:
            self._events.put(Ended(None))

    def next(self, wait_s: float = EVENT_WAIT_S) -> watch_pb2.WatchEvent:
        """The next event; fails after `wait_s` without one, raises Ended at the stream's end."""
        try:
            item = self._events.get(timeout=wait_s)
        except queue.Empty:
            raise AssertionError(f"no event within {wait_s} s on {self.request}") from None
        if isinstance(item, Ended):
            self._events.put(item)  # stays ended
            raise item
        return item

    def take(self, count: int) -> list[watch_pb2.WatchEvent]:
        return [self.next() for _ in range(count)]

    def sync(self) -> watch_pb2.WatchEvent:
        """The first message: SYNC. Once it arrived the subscriber is registered."""
        event = self.next()
        assert event.kind == SYNC, event
        return event

    def end(self, wait_s: float = EVENT_WAIT_S) -> grpc.RpcError | None:
        """Read until the stream ends; its error (None: ended OK). Events before it are
        kept in `drained`."""
        while True:
            try:
                self.drained.append(self.next(wait_s))
            except Ended as ended:
                return ended.error

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(EVENT_WAIT_S)


def watch_request(
    skus: Sequence[str] = (),
    node_ids: Sequence[str] = (),
    geo_prefix: str = "",
    channel: str = "",
    segment: str = "",
    from_sequence: int = 0,
    epoch: int = 0,
    low_stock_threshold: int = 0,
) -> watch_pb2.WatchRequest:
    return watch_pb2.WatchRequest(
        skus=list(skus),
        node_ids=list(node_ids),
        geo_prefix=geo_prefix,
        channel=channel,
        segment=segment,
        from_sequence=from_sequence,
        epoch=epoch,
        low_stock_threshold=low_stock_threshold,
    )


def atp_of(api: Api, positions: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """GetStock's ATP of each (sku, node_id) (0 for a position never stocked)."""
    result = {}
    for sku, node_id in positions:
        request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
        try:
            reply = api.base.inventory.GetStock(request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            result[(sku, node_id)] = 0
            continue
        result[(sku, node_id)] = reply.position.atp
    return result


def set_rules(api: Api, text: str) -> rules_pb2.SetRulesResponse:
    reply: rules_pb2.SetRulesResponse = api.rules.SetRules(
        rules_pb2.SetRulesRequest(text=text, source="watch-test.toml"), timeout=RPC_TIMEOUT_S
    )
    assert reply.outcome == OK, reply
    return reply


def reserve(
    api: Api,
    reservation_id: str,
    *lines: tuple[str, str, int],
    ttl_ms: int = 60_000,
    channel: str = "",
    segment: str = "",
) -> reservations_pb2.ReserveResponse:
    request = reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[reservations_pb2.ReservationLine(sku=s, node_id=n, quantity=q) for s, n, q in lines],
        ttl_ms=ttl_ms,
        kind=common_pb2.RESERVATION_KIND_CART,
        channel=channel,
        segment=segment,
    )
    reply: reservations_pb2.ReserveResponse = api.base.reservations.Reserve(
        request, timeout=RPC_TIMEOUT_S
    )
    assert reply.outcome == OK, reply
    return reply


def release(api: Api, reservation_id: str) -> None:
    request = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
    api.base.reservations.Release(request, timeout=RPC_TIMEOUT_S)


def adjust(api: Api, sku: str, node_id: str, delta: int) -> None:
    request = inventory_pb2.AdjustStockRequest(sku=sku, node_id=node_id, delta=delta)
    assert api.base.inventory.AdjustStock(request, timeout=RPC_TIMEOUT_S).outcome == OK


# A client that reads nothing: a small HTTP/2 window (no BDP growth), so the transport holds
# only a few events and the rest back up into the server's queue for this subscriber.
STALLED_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


class StalledWatch:
    """A Watch call whose client reads SYNC and then nothing until `read_to_end`."""

    def __init__(self, server: ServerThread, request: watch_pb2.WatchRequest) -> None:
        self.channel = grpc.insecure_channel(server.target, options=STALLED_CHANNEL_OPTIONS)
        stub = watch_pb2_grpc.WatchServiceStub(self.channel)
        self.call: Any = stub.Watch(request, timeout=STREAM_DEADLINE_S)
        self.sync = next(self.call)
        assert self.sync.kind == SYNC, self.sync
        # Registered before SYNC was sent, and nobody else subscribes meanwhile in these tests.
        self.subscriber = server.call(lambda: server.app.hub.subscribers[-1])

    def read_to_end(self) -> tuple[list[watch_pb2.WatchEvent], grpc.RpcError | None]:
        """Start reading at last: the events still in flight, then how the stream ended."""
        events = []
        try:
            for event in self.call:
                events.append(event)
        except grpc.RpcError as error:
            return events, error
        return events, None

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def wait_until(condition: Callable[[], bool], polls: int = 500, interval_s: float = 0.01) -> None:
    """Poll `condition` a bounded number of times; fail if it never holds."""
    for _ in range(polls):
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met after {polls} polls of {interval_s} s")
