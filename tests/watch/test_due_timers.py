"""The shared clock that ends WatchBatch delays: callbacks due in one tick share one timer, none
is set for later than its delay, and each runs exactly once."""

from __future__ import annotations

import asyncio
import functools

import pytest

from atpd.service.watch_outbox import DueTimers

pytestmark = pytest.mark.core

TICK_S = 0.005


def test_callbacks_in_one_tick_share_a_timer_set_no_later_than_their_delay() -> None:
    """Ten callbacks asked for within a tick land in one slot whose grid point is at or before
    every deadline; a delay several ticks longer gets a slot of its own; all run once, then no
    slot is left."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        timers = DueTimers(TICK_S)
        ran: list[int] = []
        asked_at = loop.time()
        for k in range(10):
            timers.call_after(0.02, functools.partial(ran.append, k))
        timers.call_after(0.05, lambda: ran.append(99))
        assert 1 <= len(timers.slots) <= 3  # the ten share one slot (two if a tick passed)
        for slot in timers.slots:
            assert slot * TICK_S <= loop.time() + 0.05
        first = min(timers.slots)
        assert first * TICK_S <= asked_at + 0.02 + TICK_S
        for _ in range(200):  # bounded wait for liveness
            if len(ran) == 11:
                break
            await asyncio.sleep(0.01)
        assert sorted(ran) == [*range(10), 99]
        assert timers.slots == {}

    asyncio.run(scenario())
