"""The change stream's servicer: Watch (one event per message) and WatchBatch (several), the
same events in the same order either way (service/watch.py holds the hub and the framing).

The server registers `wire_watch` and `wire_watch_batch` (`watch_handlers`) with an identity
response serializer: every event is serialized once when it is published (watch_wire.py) and a
message is written as bytes, one event's (Watch) or the events' concatenation (WatchBatch).
`Watch` and `WatchBatch` are the message forms of the same streams (direct calls): each written
message is parsed back into its protobuf type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from atpd.service import validation
from atpd.service.engine import Engine
from atpd.service.errors import abort, is_bug, status_of
from atpd.service.servicers import ServicerBase
from atpd.service.transport import CheckedServer
from atpd.service.watch import (
    StallGuard,
    StreamStalled,
    Subscriber,
    WatchHub,
    end_stalled,
    peer_host,
)
from atpd.service.watch_outbox import Batching
from atpd.service.watch_wire import EncodedEvent, batch_message
from atpd.v1 import watch_pb2, watch_pb2_grpc

SERVICE_NAME = watch_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name


class MessageContext:
    """A servicer context whose written messages (serialized bytes) are parsed back into
    protobuf messages before they reach the real context; everything else is the real one."""

    __slots__ = ("context", "parse")

    def __init__(self, context: Any, parse: Callable[[bytes], Message]) -> None:
        self.context = context
        self.parse = parse

    async def write(self, message: bytes) -> None:
        await self.context.write(self.parse(message))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)


class WatchServicer(ServicerBase, watch_pb2_grpc.WatchServiceServicer):
    def __init__(self, engine: Engine, hub: WatchHub) -> None:
        super().__init__(engine)
        self.hub = hub

    async def Watch(self, request: watch_pb2.WatchRequest, context: Any) -> None:
        """The message form of `wire_watch` (WatchEvent messages)."""
        await self.wire_watch(request, MessageContext(context, watch_pb2.WatchEvent.FromString))

    async def WatchBatch(self, request: watch_pb2.WatchBatchRequest, context: Any) -> None:
        """The message form of `wire_watch_batch` (WatchEvents messages)."""
        parse = watch_pb2.WatchEvents.FromString
        await self.wire_watch_batch(request, MessageContext(context, parse))

    async def wire_watch(self, request: watch_pb2.WatchRequest, context: Any) -> None:
        """Watch, each message written as serialized bytes."""
        await self._stream("Watch", request, context, None)

    async def wire_watch_batch(self, request: watch_pb2.WatchBatchRequest, context: Any) -> None:
        """Watch with several events per message (watch.proto): the same events, in order;
        each message written as serialized bytes."""
        try:
            batching = self.hub.batching(request.max_events, request.max_delay_ms)
        except Exception as error:
            await self._refuse("WatchBatch", context, error)
        await self._stream("WatchBatch", request.watch, context, batching)

    async def _refuse(self, method: str, context: Any, error: Exception) -> NoReturn:
        status = status_of(error)
        if is_bug(error):
            raise error
        self.engine.metrics.rpc_calls.labels(method, status.name).inc()
        await abort(context, status, str(error))

    async def _stream(
        self,
        method: str,
        request: watch_pb2.WatchRequest,
        context: Any,
        batching: Batching | None,
    ) -> None:
        """The SYNC event, the replay after from_sequence, then live events until the client
        goes, one event per message or (`batching`) several."""
        metrics = self.engine.metrics
        try:
            delay_s = 0.0 if batching is None else batching.delay_s
            subscriber = self._subscribe(request, peer_host(context.peer()), delay_s)
        except Exception as error:
            await self._refuse(method, context, error)
        hub = self.hub
        # Bounded: a client that stops reading is ended after stream_stall_timeout_s even when
        # no event comes to overflow its queue.
        guard = StallGuard(hub.stall_timeout_s)
        max_events = None if batching is None else batching.max_events
        try:
            # The head as of subscribing: anything published after it is in the queue. The
            # replay is taken now, before anything else can be published, so it ends at the
            # head and the queue holds only what follows it.
            sync = watch_pb2.WatchEvent(
                sequence=hub.sequence, kind=watch_pb2.WATCH_EVENT_KIND_SYNC, epoch=hub.epoch
            )
            first = [EncodedEvent.of(sync)]
            if request.from_sequence:
                first += hub.replay(subscriber, request.from_sequence, request.epoch)
            last = await write_events(guard, context, first, max_events, None)
            while True:
                if subscriber.overflowed:
                    metrics.rpc_calls.labels(method, "RESOURCE_EXHAUSTED").inc()
                    await abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"subscriber too slow: its queue of {hub.max_queue_events} events "
                        f"overflowed at sequence {subscriber.dropped_at}; reconnect with "
                        f"from_sequence={last} and epoch={hub.epoch}",
                    )
                if not subscriber.ready:
                    await subscriber.wait()  # events due, or cut off: checked above
                    continue
                events = subscriber.take()
                if max_events is not None and 0 < len(events) <= max_events:
                    # The common case, written here: one message, no coroutine of its own.
                    await guard.write(context, batch_message(events))
                    last = max(last, events[-1].sequence)
                elif events:
                    sent = await write_events(guard, context, events, max_events, subscriber)
                    last = max(last, sent)
        except StreamStalled as error:
            metrics.rpc_calls.labels(method, status_of(error).name).inc()
            end_stalled(method, error)
        finally:
            guard.close()
            hub.unsubscribe(subscriber)

    def _subscribe(self, request: watch_pb2.WatchRequest, peer: str, delay_s: float) -> Subscriber:
        if request.from_sequence < 0:
            raise validation.InvalidArgument("from_sequence", "must be >= 0")
        if request.low_stock_threshold < 0:
            raise validation.InvalidArgument("low_stock_threshold", "must be >= 0")
        for i, sku in enumerate(request.skus):
            validation.sku_id(sku, f"skus[{i}]")
        node_ids = tuple(request.node_ids)
        for i, value in enumerate(node_ids):
            validation.node_id(value, f"node_ids[{i}]")
        geo_prefix = validation.geo_prefix(request.geo_prefix)
        validation.name(request.channel, "channel")
        validation.name(request.segment, "segment")
        state = self.engine.state
        policy = state.policy(request.channel, request.segment)
        caller = ("", "") if policy is None else (policy.channel, policy.segment)
        nodes = state.node_mask(node_ids, geo_prefix).copy() if node_ids or geo_prefix else None
        return self.hub.subscribe(
            caller, request.skus, nodes, request.low_stock_threshold, peer, delay_s
        )


async def write_events(
    guard: StallGuard,
    context: Any,
    events: list[EncodedEvent],
    max_events: int | None,
    subscriber: Subscriber | None,
) -> int:
    """Write `events` in order, each its own Watch message (`max_events` None) or up to
    `max_events` per WatchBatch message; stop before a message once `subscriber` is cut off
    (a write may wait on the client meanwhile). Returns the sequence of the last event
    written (0: none)."""
    last = 0
    step = max_events or 1
    for start in range(0, len(events), step):
        if subscriber is not None and subscriber.overflowed:
            break
        if max_events is None:
            event = events[start]
            await guard.write(context, event.body)
        else:
            chunk = events[start : start + step] if len(events) > step else events
            event = chunk[-1]
            await guard.write(context, batch_message(chunk))
        last = max(last, event.sequence)
    return last


def add_watch_service(server: CheckedServer, servicer: WatchServicer) -> None:
    """Register WatchService the way the generated add_WatchServiceServicer_to_server does, but
    with the wire forms, whose messages are already serialized (the response serializer is the
    identity)."""
    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.wire_watch,
            request_deserializer=watch_pb2.WatchRequest.FromString,
            response_serializer=bytes,
        ),
        "WatchBatch": grpc.unary_stream_rpc_method_handler(
            servicer.wire_watch_batch,
            request_deserializer=watch_pb2.WatchBatchRequest.FromString,
            response_serializer=bytes,
        ),
    }
    server.add_service(SERVICE_NAME, handlers)
