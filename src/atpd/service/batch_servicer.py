"""CommandService: batches of writes in one call (CommandBatch) or on a stream (Submit).

The commands themselves are applied by `batch_commands.BatchRunner`; this module is the gRPC
edge: readiness, batch-level refusals, the correlation ids and the flow of a Submit stream.

Submit answers in the order the batches came. Batch i+1 is applied while batch i waits for the
disk, up to `max_submit_inflight_batches` batches per stream; then the stream is not read until
the oldest is answered, so a client that sends faster than the disk holds nothing more on the
server than those batches (HTTP/2 flow control holds the rest on the client).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc

from atpd.core.text import bounded
from atpd.service.auth import AccessControl
from atpd.service.batch_commands import Applied, BatchRefused, BatchRunner
from atpd.service.engine import Engine
from atpd.service.errors import NotReady, abort, status_of
from atpd.service.principals import current_principal
from atpd.service.validation import InvalidArgument
from atpd.service.watch import StreamStalled, end_stalled, write_or_stall
from atpd.v1 import batch_pb2, batch_pb2_grpc

CORRELATION_ID_PATTERN = re.compile(r"[\x20-\x7e]{1,64}")
NOT_READY_MESSAGE = "the server is starting up (recovery in progress); retry shortly"


def correlation_id(value: str) -> str:
    if not CORRELATION_ID_PATTERN.fullmatch(value):
        shown = value[:80] + ("..." if len(value) > 80 else "")
        raise InvalidArgument(
            "correlation_id", f"{shown!r} is not 1 to 64 printable ASCII characters"
        )
    return value


class CommandServicer(batch_pb2_grpc.CommandServiceServicer):
    def __init__(
        self,
        engine: Engine,
        access: AccessControl | None,
        max_batch_commands: int,
        max_submit_inflight_batches: int,
        stall_timeout_s: float,
    ) -> None:
        self.engine = engine
        self.runner = BatchRunner(engine, access, max_batch_commands)
        self.max_inflight = max_submit_inflight_batches
        self.stall_timeout_s = stall_timeout_s
        metrics = engine.metrics
        self._latency = {
            name: metrics.rpc_latency.labels(name) for name in ("CommandBatch", "Submit")
        }

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        self.engine.metrics.rpc_calls.labels(method, code.name).inc()

    async def CommandBatch(
        self, request: batch_pb2.CommandBatchRequest, context: Any
    ) -> batch_pb2.CommandBatchResponse:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        message = ""
        try:
            if not self.engine.ready:
                code, message = grpc.StatusCode.UNAVAILABLE, NOT_READY_MESSAGE
            else:
                self.runner.check_size(len(request.commands), "commands")
                runner = self.runner
                applied = await runner.apply(request.commands, current_principal())
                answer = await runner.finish(applied, context)
                assert isinstance(answer, batch_pb2.CommandBatchResponse)
                return answer
        except BatchRefused as refusal:
            code, message = refusal.code, str(refusal)
        finally:
            self._latency["CommandBatch"].observe(time.perf_counter() - started)
            self._count("CommandBatch", code)
        await abort(context, code, message)

    async def Submit(self, requests: AsyncIterator[batch_pb2.SubmitRequest], context: Any) -> None:
        principal = current_principal()
        slots = asyncio.Semaphore(self.max_inflight)
        # Answers in the order of the requests: each entry is the answer being made.
        answers: asyncio.Queue[asyncio.Future[batch_pb2.SubmitResponse] | None] = asyncio.Queue()
        writer = asyncio.ensure_future(self._write_answers(answers, slots, context))
        reader = asyncio.current_task()
        reading = True

        def on_writer_done(task: asyncio.Future[None]) -> None:
            # The client stopped taking answers (or went away): stop reading its batches.
            if reading and reader is not None and not task.cancelled() and task.exception():
                reader.cancel()

        writer.add_done_callback(on_writer_done)
        code = grpc.StatusCode.OK
        try:
            async for request in requests:
                if not self.engine.ready:
                    raise NotReady(NOT_READY_MESSAGE)
                tag = correlation_id(request.correlation_id)
                await slots.acquire()
                answers.put_nowait(await self._start(tag, request, principal, context))
            reading = False
            answers.put_nowait(None)
            await asyncio.wait((writer,))
            if writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        except StreamStalled as error:
            code = status_of(error)
            end_stalled("Submit", error)
        except asyncio.CancelledError:
            reading = False
            failure = _failure(writer)
            await self._end(writer, answers)
            if isinstance(failure, StreamStalled):
                code = status_of(failure)
                end_stalled("Submit", failure)
            if failure is not None:
                code = grpc.StatusCode.INTERNAL
                raise failure from None  # a bug: the transport answers INTERNAL and logs it
            code = grpc.StatusCode.CANCELLED
            raise
        except (InvalidArgument, NotReady) as error:
            # The batches before the bad one are answered first (a status ends the stream, and
            # none may be sent while a write is in flight).
            reading = False
            code = status_of(error)
            answers.put_nowait(None)
            await asyncio.wait((writer,))
            if isinstance(_failure(writer), StreamStalled):
                end_stalled("Submit", cast(StreamStalled, writer.exception()))
            await abort(context, code, str(error))
        finally:
            self._count("Submit", code)

    async def _start(
        self, tag: str, request: batch_pb2.SubmitRequest, principal: Any, context: Any
    ) -> asyncio.Future[batch_pb2.SubmitResponse]:
        """Apply the batch now (in stream order) and return its answer to come: a refusal of
        the whole batch at once, or the results once durable."""
        try:
            self.runner.check_size(len(request.commands), "commands")
        except BatchRefused as refusal:
            future: asyncio.Future[batch_pb2.SubmitResponse] = (
                asyncio.get_running_loop().create_future()
            )
            future.set_result(
                batch_pb2.SubmitResponse(
                    correlation_id=tag,
                    error=batch_pb2.CommandStatus(
                        code=refusal.code.value[0], message=bounded(str(refusal))
                    ),
                )
            )
            return future
        started = time.perf_counter()
        applied = await self.runner.apply(
            request.commands, principal, batch_pb2.SubmitResponse(correlation_id=tag)
        )
        return asyncio.ensure_future(self._finish(tag, applied, started, context))

    async def _finish(
        self, tag: str, applied: Applied, started: float, context: Any
    ) -> batch_pb2.SubmitResponse:
        answer = await self.runner.finish(applied, context)
        self._latency["Submit"].observe(time.perf_counter() - started)
        assert isinstance(answer, batch_pb2.SubmitResponse)
        return answer

    async def _write_answers(
        self,
        answers: asyncio.Queue[asyncio.Future[batch_pb2.SubmitResponse] | None],
        slots: asyncio.Semaphore,
        context: Any,
    ) -> None:
        sent = 0
        while True:
            answer = await answers.get()
            if answer is None:
                return
            response = await answer
            await write_or_stall(context, response, self.stall_timeout_s, sent)
            sent += 1
            slots.release()

    @staticmethod
    async def _end(
        writer: asyncio.Future[None],
        answers: asyncio.Queue[asyncio.Future[batch_pb2.SubmitResponse] | None],
    ) -> None:
        """Stop the writer. Batches already applied still finish (their records are in the
        journal, a retry with the same ids gets the same answers) but are answered no more."""
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        while not answers.empty():
            answer = answers.get_nowait()
            if answer is not None:
                await asyncio.gather(answer, return_exceptions=True)


def _failure(task: asyncio.Future[None]) -> BaseException | None:
    if not task.done() or task.cancelled():
        return None
    return task.exception()
