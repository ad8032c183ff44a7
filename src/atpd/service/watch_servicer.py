"""The change stream's servicer: Watch (one event per message) and WatchBatch (several), the
same events in the same order either way (service/watch.py holds the hub and the framing)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from atpd.service import validation
from atpd.service.engine import Engine
from atpd.service.errors import abort, is_bug, status_of
from atpd.service.servicers import ServicerBase
from atpd.service.watch import (
    StallGuard,
    StreamStalled,
    Subscriber,
    WatchHub,
    end_stalled,
    peer_host,
)
from atpd.service.watch_outbox import Batching, EventOutbox
from atpd.v1 import watch_pb2, watch_pb2_grpc


class WatchServicer(ServicerBase, watch_pb2_grpc.WatchServiceServicer):
    def __init__(self, engine: Engine, hub: WatchHub) -> None:
        super().__init__(engine)
        self.hub = hub

    async def Watch(self, request: watch_pb2.WatchRequest, context: Any) -> None:
        await self._stream("Watch", request, context, None)

    async def WatchBatch(self, request: watch_pb2.WatchBatchRequest, context: Any) -> None:
        """Watch with several events per message (watch.proto): the same events, in order."""
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

        async def send(message: watch_pb2.WatchEvent | watch_pb2.WatchEvents) -> None:
            await guard.write(context, message)

        outbox = EventOutbox(send, batching)
        try:
            # The head as of subscribing: anything published after it is in the queue.
            last = hub.sequence
            await outbox.put(
                watch_pb2.WatchEvent(
                    sequence=last, kind=watch_pb2.WATCH_EVENT_KIND_SYNC, epoch=hub.epoch
                )
            )
            if request.from_sequence:
                # Registered before replaying, so nothing published meanwhile is missed.
                for event in hub.replay(subscriber, request.from_sequence, request.epoch):
                    last = max(last, event.sequence)
                    await outbox.put(event)
            await outbox.flush()
            while True:
                if subscriber.overflowed:
                    await outbox.flush()  # what was queued before the cut-off, in order
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
                for event in subscriber.take():
                    if subscriber.overflowed:
                        break  # cut off while a full message was written
                    if (
                        event.sequence <= last
                        and event.kind != watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED
                    ):
                        continue  # already sent by the replay
                    last = max(last, event.sequence)
                    await outbox.put(event)
                await outbox.flush()
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
