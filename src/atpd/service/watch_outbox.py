"""How a Watch stream frames its events: one per message (Watch) or several (WatchBatch)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from atpd.v1 import watch_pb2


@dataclass(frozen=True, slots=True)
class Batching:
    """How a WatchBatch stream frames its events (validated by WatchHub.batching)."""

    max_events: int
    delay_s: float


class EventOutbox:
    """Events on their way to one stream: each sent as its own message (Watch, `batching`
    None), or gathered and sent as WatchEvents of up to `batching.max_events` (WatchBatch);
    `flush` sends what is gathered. Order is kept either way."""

    __slots__ = ("batching", "events", "send")

    def __init__(
        self,
        send: Callable[[watch_pb2.WatchEvent | watch_pb2.WatchEvents], Awaitable[None]],
        batching: Batching | None,
    ) -> None:
        self.send = send
        self.batching = batching
        self.events: list[watch_pb2.WatchEvent] = []

    async def put(self, event: watch_pb2.WatchEvent) -> None:
        if self.batching is None:
            await self.send(event)
            return
        self.events.append(event)
        if len(self.events) >= self.batching.max_events:
            await self.flush()

    async def flush(self) -> None:
        if self.events:
            events, self.events = self.events, []
            await self.send(watch_pb2.WatchEvents(events=events))
