"""`Client`: the AsyncClient for code without an event loop (scripts, threads, the CLI).

It runs its own loop in a daemon thread; each method runs the AsyncClient's on it and waits.
Calls from several threads at once are coalesced into batches exactly as concurrent tasks are.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from atpd.client.aio import AsyncClient
from atpd.client.results import WatchEvent

P = ParamSpec("P")
R = TypeVar("R")
CLOSE_TIMEOUT_S = 10.0


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(method(self.async_client, *args, **kwargs))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class Client:
    """Same arguments and methods as AsyncClient, blocking. Use as a context manager or call
    `close()` (the loop thread stops)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="atpd-client", daemon=True
        )
        self._thread.start()

        async def create() -> AsyncClient:
            return AsyncClient(*args, **kwargs)

        try:
            self.async_client = self.run(create())
        except BaseException:
            self._stop_loop()
            raise

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine on the client's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.async_client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    reserve = _blocking(AsyncClient.reserve)
    confirm = _blocking(AsyncClient.confirm)
    release = _blocking(AsyncClient.release)
    fulfil = _blocking(AsyncClient.fulfil)
    get_reservation = _blocking(AsyncClient.get_reservation)
    get_reservation_result = _blocking(AsyncClient.get_reservation_result)
    set_stock = _blocking(AsyncClient.set_stock)
    adjust_stock = _blocking(AsyncClient.adjust_stock)
    get_stock = _blocking(AsyncClient.get_stock)
    upsert_node = _blocking(AsyncClient.upsert_node)
    list_nodes = _blocking(AsyncClient.list_nodes)
    availability = _blocking(AsyncClient.availability)
    promise = _blocking(AsyncClient.promise)
    promise_batch = _blocking(AsyncClient.promise_batch)
    add_supply = _blocking(AsyncClient.add_supply)
    receive_supply = _blocking(AsyncClient.receive_supply)
    cancel_supply = _blocking(AsyncClient.cancel_supply)
    list_supply = _blocking(AsyncClient.list_supply)
    set_rules = _blocking(AsyncClient.set_rules)
    get_rules = _blocking(AsyncClient.get_rules)
    status = _blocking(AsyncClient.status)
    snapshot = _blocking(AsyncClient.snapshot)

    def watch(self, *args: Any, **kwargs: Any) -> Iterator[WatchEvent]:
        """AsyncClient.watch as a blocking iterator (close it, or stop iterating, to end)."""
        events: AsyncIterator[WatchEvent] = self.async_client.watch(*args, **kwargs)
        try:
            while True:
                try:
                    yield self.run(anext(events))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self.run(events.aclose())  # type: ignore[attr-defined]
