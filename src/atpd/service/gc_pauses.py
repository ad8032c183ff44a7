"""Keep the cyclic garbage collector's full passes short however big the state grows.

CPython's full (generation 2) collection walks every tracked container object. Reservations
are rows of arrays (core/reservation_table.py), not objects, but the rest of the state (nodes,
supply, rules, load registry), gRPC and asyncio still make many; measured on this project's
machine when each retained reservation was a handful of objects, a full collection with 300,000
of them took about 340 ms, and every caller waits for it — it runs on the one writer's thread
whenever enough new objects have survived.

Freezing (`gc.freeze`) moves objects into a permanent generation the collector never walks; the
start-up state is frozen once loaded (server.start). `FreezeSurvivors` does it again every
`gc_freeze_interval_s`: a young collection first (generations 0 and 1, well under a millisecond)
frees the short-lived cycles calls leave behind, then the survivors — the state's new objects —
are frozen. Full passes then walk only what was created since the last freeze.

The price, accepted: a reference cycle that becomes garbage after being frozen is never
collected (reference counting still frees everything that is not a cycle, frozen or not). The
state holds no cycles; grpc and asyncio objects of long-lived streams may. The frozen count is
exported (`atpd_gc_frozen_objects`) so a slow leak would show.
"""

from __future__ import annotations

import asyncio
import gc


def freeze_survivors() -> int:
    """Collect the young generations, then freeze everything that survived; returns the number
    of objects frozen in all."""
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()


class FreezeSurvivors:
    """Calls `freeze_survivors` every `interval_s` on the running loop until stopped."""

    def __init__(self, interval_s: float) -> None:
        assert interval_s > 0, interval_s
        self.interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        assert self._handle is None, "already started"
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        freeze_survivors()
        self._schedule()
