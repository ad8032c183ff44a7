"""The engine: the one writer. Applies commands to the core, journals them, and replies only
once the journal says they are durable.

Everything here runs on the asyncio loop grpc.aio serves on, so commands are applied one at a
time in arrival order with no locks: a check-then-act race cannot exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from atpd.core.commands import Command, Tick
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.metrics import Metrics

log = logging.getLogger(__name__)


class CommandLog(Protocol):
    """Where applied commands go (the journal). `append` never blocks; `wait_durable` resolves
    once every record up to `sequence` is durable under the configured fsync policy."""

    @property
    def last_sequence(self) -> int: ...

    def append(self, command: Command, now_ms: int) -> int: ...

    async def wait_durable(self, sequence: int) -> None: ...


class NoJournal:
    """Keeps nothing: for tests of the core behaviour over gRPC and for benchmarks."""

    def __init__(self) -> None:
        self._sequence = 0

    @property
    def last_sequence(self) -> int:
        return self._sequence

    def append(self, command: Command, now_ms: int) -> int:
        self._sequence += 1
        return self._sequence

    async def wait_durable(self, sequence: int) -> None:
        return None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(
        self,
        state: AtpState,
        journal: CommandLog | None = None,
        metrics: Metrics | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.state = state
        self.journal: CommandLog = journal or NoJournal()
        self.metrics = metrics or Metrics()
        self._clock_ms = clock_ms
        self._expiry_handle: asyncio.TimerHandle | None = None
        self._expiry_at_ms: int | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._core_timers: dict[str, Any] = {}
        self.ready = False

    def now_ms(self) -> int:
        """Wall-clock time, never earlier than the last time the core saw (clock steps back)."""
        now = self._clock_ms()
        last = self.state.now_ms
        return now if now > last else last

    async def execute(self, command: Command) -> Any:
        """Apply `command` now, journal it if it changed anything, and return its result once
        everything it may depend on is durable. Raises CommandRejected for caller mistakes."""
        state = self.state
        now = self.now_ms()
        kind = type(command).__name__
        timer = self._core_timers.get(kind)
        if timer is None:
            timer = self._core_timers[kind] = self.metrics.core_latency.labels(kind)
        started = time.perf_counter()
        try:
            result = state.apply(command, now)
        except CommandRejected:
            if state.last_expired:
                # The rejected command still moved the clock past some expiries: log that.
                self.journal.append(Tick(), now)
                self._arm_expiry()
            raise
        finally:
            timer.observe(time.perf_counter() - started)
        journal = self.journal
        if result.changed:
            journal.append(command, now)
            self._arm_expiry()
        elif state.last_expired:
            journal.append(Tick(), now)
            self._arm_expiry()
        # Even an answer that changed nothing (a replayed reservation, a refusal) may rest on
        # records not yet durable: reply only once all of them are.
        await journal.wait_durable(journal.last_sequence)
        return result

    # ------------------------------------------------------------------ expiry timer

    def start(self) -> None:
        """Called on the serving loop once the state is loaded: expire what is due now and arm
        the timer for the next hold."""
        self._spawn(self.execute(Tick()))

    def stop(self) -> None:
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None

    def _arm_expiry(self) -> None:
        next_ms = self.state.next_expiry_ms()
        if next_ms is None or next_ms == self._expiry_at_ms:
            return
        if self._expiry_at_ms is not None and self._expiry_at_ms < next_ms:
            return  # the armed timer fires first and re-arms
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (next_ms - self._clock_ms()) / 1000.0)
        self._expiry_at_ms = next_ms
        self._expiry_handle = loop.call_later(delay_s, self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_handle = None
        self._expiry_at_ms = None
        if self.state.next_expiry_ms() is None:
            return
        if self.state.next_expiry_ms() > self.now_ms():  # type: ignore[operator]
            self._arm_expiry()  # woke early (timer granularity): sleep again
            return
        self._spawn(self.execute(Tick()))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._on_background_done)

    def _on_background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background command failed", exc_info=task.exception())
        self._arm_expiry()
