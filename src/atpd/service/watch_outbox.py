"""How a WatchBatch stream frames its events (Batching) and when its messages fall due
(DueTimers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Batching:
    """How a WatchBatch stream frames its events (validated by WatchHub.batching)."""

    max_events: int
    delay_s: float


class DueTimers:
    """Calls back after a delay, on a grid of `tick_s`: the callbacks due in one tick share
    one timer, so a hundred batched streams cost one event-loop wake-up per tick instead of
    one each. A callback runs at most `delay_s` after it was asked for, and at most `tick_s`
    sooner."""

    __slots__ = ("slots", "tick_s")

    def __init__(self, tick_s: float) -> None:
        assert tick_s > 0
        self.tick_s = tick_s
        self.slots: dict[int, list[Callable[[], None]]] = {}

    def call_after(self, delay_s: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        slot = int((loop.time() + delay_s) / self.tick_s)  # the grid point at or before
        waiting = self.slots.get(slot)
        if waiting is None:
            self.slots[slot] = [callback]
            loop.call_at(slot * self.tick_s, self._fire, slot)
        else:
            waiting.append(callback)

    def _fire(self, slot: int) -> None:
        for callback in self.slots.pop(slot):
            callback()
