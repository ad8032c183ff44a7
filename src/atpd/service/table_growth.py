"""Growth of the stock table off the writer, for one engine: a background resize starts when an
axis passes its high-water mark, and a command needing more room than the table has waits for
it (core/growth.py has the pure parts, core/stock.py `Resize` the copy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from atpd.core.command_base import CommandOf
from atpd.core.state import AtpState
from atpd.core.stock import POSITION_BYTES

if TYPE_CHECKING:
    from atpd.service.engine import Engine

log = logging.getLogger(__name__)

# Background growth of the stock table (core/stock.py `Resize`): the worker thread copies in
# slices of about this size (a cancelled resize stops within one slice) ...
RESIZE_SLICE_BYTES = 8 << 20
# ... and the writer swaps the grown table in once the rows left to copy (written during the
# copy) fit this budget (a few milliseconds of copying); otherwise another round copies them
# in the thread. After RESIZE_MAX_ROUNDS rounds the writer copies whatever is left (only a
# write storm touching that many rows per round gets there; correct, just a longer pause).
RESIZE_FINISH_BYTES = 4 << 20
RESIZE_MAX_ROUNDS = 6
# Times a command needing room waits for a resize that was abandoned under it (the state was
# rebuilt) before it lets the core grow synchronously.
RESIZE_WAITS = 3


class TableGrowth:
    """The stock table's background growth for `engine` (whose state may be replaced)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The background resize of the stock table in progress, if any.
        self.task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def needs_room(self, command: CommandOf[Any]) -> bool:
        """Whether `room_for` has anything to do: checked without a coroutine, as nearly
        every command finds the table large enough."""
        state = self.engine.state
        if self.task is None and state.resize_target() is not None:
            return True
        return state.capacity_needed(command) is not None

    async def room_for(self, command: CommandOf[Any]) -> None:
        """Grow the stock table off the writer, ahead of need: start a background resize when
        an axis passed its high-water mark, and make a command that needs more room than the
        table has wait for it (only that caller waits: every other command goes on being
        applied meanwhile, so it may overtake this one). If the resize was abandoned (the
        state was rebuilt) too often, the core grows synchronously instead."""
        if self.task is None and self.engine.state.resize_target() is not None:
            self.start(None)
        for _ in range(RESIZE_WAITS):
            needed = self.engine.state.capacity_needed(command)
            if needed is None:
                return
            task = self.start(needed)
            if task is None:
                return
            await asyncio.wait((task,))

    def start(self, needed: tuple[int, int] | None) -> asyncio.Task[None] | None:
        """The resize in progress, or a new one sized for `needed` (and the high-water marks);
        None when no growth is possible (a limit) or wanted."""
        if self.task is not None:
            return self.task
        target = self.engine.state.resize_target(needed)
        if target is None:
            return None
        task = asyncio.get_running_loop().create_task(self._resize(self.engine.state, target))
        self.task = task
        task.add_done_callback(self._on_done)
        return task

    async def _resize(self, state: AtpState, target: tuple[int, int]) -> None:
        """Copy the table into one of `target` capacities in a worker thread (numpy copies
        release the GIL and take no lock, so a snapshot fork meanwhile is safe), then swap it
        in on the writer: at most RESIZE_FINISH_BYTES of rows written meanwhile are copied
        there, so no caller waits for more than a few milliseconds."""
        stock = state.stock
        started = time.perf_counter()
        resize = state.begin_resize(*target)
        try:
            while True:
                await asyncio.to_thread(resize.copy_all, RESIZE_SLICE_BYTES)
                if self.engine.state is not state or stock.resize is not resize:
                    return  # the state was rebuilt, or a synchronous growth took over
                max_rows = RESIZE_FINISH_BYTES // (POSITION_BYTES * max(1, len(state.nodes)))
                if resize.rounds >= RESIZE_MAX_ROUNDS:
                    max_rows = len(state.skus)
                if state.finish_resize(max_rows):
                    break
        except BaseException:
            if stock.resize is resize:
                stock.cancel_resize()
            raise
        log.info(
            "stock table grown to %d SKUs x %d nodes in %.2f s (%d copy rounds)",
            stock.sku_capacity,
            stock.node_capacity,
            time.perf_counter() - started,
            resize.rounds,
        )

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self.task is task:
            self.task = None
        if not task.cancelled() and task.exception() is not None:
            # The table keeps its size; a command needing room grows it synchronously.
            log.error("background resize of the stock table failed", exc_info=task.exception())
