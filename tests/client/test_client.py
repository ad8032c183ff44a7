"""atpd.client against a real server: coalescing of concurrent writes into batches (counted on
the server), results as dataclasses, statuses as exceptions, deadlines, the blocking wrapper."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from service.harness import ServerThread

from atpd.client import (
    AsyncClient,
    Client,
    ClientOptionError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from atpd.client.results import Line, Reservation, ReserveResult
from atpd.v1 import batch_pb2

from .conftest import ON_HAND, batches_applied

T = TypeVar("T")


def run(server: ServerThread, body: Callable[[AsyncClient], Awaitable[T]], **options: object) -> T:
    """`body(client)` on a fresh asyncio loop with a client of `server`."""

    async def main() -> T:
        async with AsyncClient(server.target, **options) as client:  # type: ignore[arg-type]
            return await body(client)

    return asyncio.run(main())


def test_concurrent_reserves_go_as_one_batch(server: ServerThread) -> None:
    """100 tasks reserving at once are sent as one batch when the loop goes idle (the timer is
    set far away, so only the idle flush can send it)."""

    async def body(client: AsyncClient) -> list[ReserveResult]:
        calls = [client.reserve(f"r{i}", [("sku-1", "paris", 1)]) for i in range(100)]
        return await asyncio.gather(*calls)

    results = run(server, body, max_delay_us=5_000_000)
    assert all(r.ok and r.reservation is not None for r in results)
    assert batches_applied(server) == 1
    assert server.call(lambda: server.app.engine.state.open_reservations) == 100


def test_a_full_batch_goes_at_once(server: ServerThread) -> None:
    """With max_batch_commands 10, 100 concurrent calls make 10 batches of 10."""

    async def body(client: AsyncClient) -> int:
        calls = [client.reserve(f"r{i}", [("sku-1", "paris", 1)]) for i in range(100)]
        await asyncio.gather(*calls)
        return client.coalescer.batches_sent

    assert run(server, body, max_batch_commands=10, max_delay_us=5_000_000) == 10
    assert batches_applied(server) == 10


def test_the_timer_sends_while_the_loop_stays_busy(server: ServerThread) -> None:
    """A producer adding a command every loop turn keeps the loop from going idle: the
    max_delay_us timer still sends the batch, so the first answer comes while it runs."""

    async def body(client: AsyncClient) -> int:
        first = asyncio.ensure_future(client.reserve("first", [("sku-1", "paris", 1)]))
        produced = 0
        while not first.done() and produced < 200_000:
            client.coalescer.submit(batch_pb2.BatchCommand())  # answered with an error
            produced += 1
            await asyncio.sleep(0)
        assert first.done() and first.result().ok
        return produced

    assert run(server, body, max_delay_us=200) < 200_000


def test_lone_calls_and_lifecycle(server: ServerThread) -> None:
    """Sequential calls each go at once (one loop turn) and a checkout goes through:
    availability, reserve, confirm, fulfil, with dataclass results."""

    async def body(client: AsyncClient) -> tuple[int, Reservation, int]:
        before = (await client.availability(["sku-1"])).items[0].total_atp
        reserved = await client.reserve("cart-1", [Line("sku-1", "paris", 2)])
        assert reserved.ok and not reserved.replayed
        confirmed = await client.confirm("cart-1")
        assert confirmed.reservation is not None and confirmed.reservation.status == "CONFIRMED"
        fulfilled = await client.fulfil("cart-1")
        assert fulfilled.ok
        again = await client.reserve("cart-1", [Line("sku-1", "paris", 2)])
        assert again.replayed
        after = (await client.availability(["sku-1"])).items[0].total_atp
        return before, await client.get_reservation("cart-1"), after

    before, reservation, after = run(server, body)
    assert before == ON_HAND and after == ON_HAND - 2
    assert reservation.status == "FULFILLED"
    assert reservation.lines == (Line("sku-1", "paris", 2),)


def test_statuses_raise_their_exceptions(server: ServerThread) -> None:
    """A refused command raises the exception of its status with the server's message, in a
    batch as in a unary call; the other commands of the batch are answered."""

    async def body(client: AsyncClient) -> None:
        outcomes = await asyncio.gather(
            client.reserve("", [("sku-1", "paris", 1)]),
            client.release("no-such-cart"),
            client.reserve("ok-1", [("sku-1", "paris", 1)]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], InvalidArgument) and "reservation_id" in str(outcomes[0])
        assert isinstance(outcomes[1], NotFound)
        assert isinstance(outcomes[2], ReserveResult) and outcomes[2].ok
        with pytest.raises(NotFound):
            await client.get_reservation("no-such-cart")
        with pytest.raises(InvalidArgument, match="delta"):
            await client.adjust_stock("sku-1", "paris", 0)

    run(server, body)
    run(server, body, coalesce=False)


def test_unreachable_server_fails_within_the_deadline() -> None:
    """Nobody listening: writes are retried with backoff, then raise Unavailable (or
    DeadlineExceeded) once the call's deadline is near; never hang."""

    async def body() -> None:
        async with AsyncClient("127.0.0.1:1", timeout_s=0.5) as client:
            with pytest.raises((Unavailable, DeadlineExceeded)):
                await client.reserve("r1", [("sku-1", "paris", 1)])
            with pytest.raises((Unavailable, DeadlineExceeded)):
                await client.status()

    asyncio.run(body())


def test_token_refused_in_clear_text_off_loopback() -> None:
    """As the CLI: a token is never sent without TLS to a host other than loopback."""
    with pytest.raises(ClientOptionError, match="clear text"):
        AsyncClient("db.example:50051", token="secret")


def test_blocking_client_from_threads(server: ServerThread) -> None:
    """The blocking Client works from several threads at once (their calls coalesced on its
    loop) and offers the reads, stock writes and watch."""
    with Client(server.target) as client:
        position = client.set_stock("sku-2", "lyon", 100, 1).position
        assert position is not None and position.on_hand == 100
        results: list[bool] = []

        def worker(number: int) -> None:
            for i in range(10):
                results.append(client.reserve(f"t{number}-{i}", [("sku-2", "lyon", 1)]).ok)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30.0)
        assert results == [True] * 40
        assert client.get_stock("sku-2", "lyon").reserved == 40
        assert client.status().open_reservations == 40
        events = client.watch(["sku-2"])
        assert next(events).kind == "SYNC"
        events.close()  # type: ignore[attr-defined]


def test_coalesced_call_without_answer_hits_its_deadline() -> None:
    """A server that takes the batch and never answers: the call raises DeadlineExceeded at
    its deadline (within the 10 ms deadline granularity and a bounded wait)."""

    async def silent(requests: Any, context: Any) -> None:
        async for _ in requests:
            pass

    async def body() -> float:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            silent,
            request_deserializer=batch_pb2.SubmitRequest.FromString,
            response_serializer=batch_pb2.SubmitResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("atpd.v1.CommandService", {"Submit": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with AsyncClient(f"127.0.0.1:{port}", timeout_s=0.3) as client:
                started = asyncio.get_running_loop().time()
                with pytest.raises(DeadlineExceeded):
                    await client.reserve("r1", [("sku-1", "paris", 1)])
                return asyncio.get_running_loop().time() - started
        finally:
            await server.stop(0)

    waited = asyncio.run(body())
    assert 0.3 <= waited < 10.0
