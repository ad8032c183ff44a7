"""Concurrent writes of one client coalesced into batches on one Submit stream.

Each write call adds its command to the pending batch and awaits its own result. The pending
batch is sent:
- at once when it is full (`max_batch_commands`, or `max_batch_bytes` of encoded commands, kept
  under the server's 4 MiB receive limit);
- as soon as the event loop is idle: a `call_soon` callback looks at the batch one loop turn
  later and sends it if nothing was added meanwhile; if something was (callers are still being
  woken, e.g. by the previous batch's answers), it looks again one turn later. So 100 tasks
  woken together go out as one batch, and a lone caller pays one loop turn, not a timer;
- at the latest `max_delay_us` after its first command (200 us by default), however busy the
  loop.
At most `max_inflight_batches` batches are sent and not yet answered; while that many are out,
commands keep collecting in the pending batch, which goes as soon as an answer frees a slot (so
batches grow by themselves when the server or the disk is the bottleneck).

The stream is opened on first use and reopened after it fails. When it fails every command in
flight on it is answered with `StreamLost`; the caller (AsyncClient) decides whether to send it
again: see `atpd.client.aio` for which commands are safe to retry.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any

import grpc

from atpd.v1 import batch_pb2, batch_pb2_grpc

DEFAULT_MAX_BATCH_COMMANDS = 8_192
# Below the server's default max_receive_message_bytes (4 MiB), with room for framing.
DEFAULT_MAX_BATCH_BYTES = 3 * 1024 * 1024
DEFAULT_MAX_DELAY_US = 200
DEFAULT_MAX_INFLIGHT_BATCHES = 16
# Deadlines of coalesced calls are grouped in buckets this wide, one timer per bucket (a timer
# per call costs more than the rest of the call): a deadline fires up to this much late.
DEADLINE_GRANULARITY_S = 0.01


class StreamLost(Exception):
    """The Submit stream failed before the command's batch was answered: it may or may not
    have been applied."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


class DeadlineReached(Exception):
    """The call's deadline passed before its answer came (it may still be applied)."""


class BatchRefusedError(Exception):
    """The server refused the whole batch (SubmitResponse.error): nothing of it was applied."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# A command, its caller's future and its encoded size in the batch.
_Pending = tuple[batch_pb2.BatchCommand, "asyncio.Future[batch_pb2.BatchResult]", int]


class _Stream:
    """One open Submit call and its batches awaiting answers (in order)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.inflight: dict[str, list[asyncio.Future[batch_pb2.BatchResult]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.broken = False
        self.detached = False  # no longer the stream new batches go to (the leader moved)


class Coalescer:
    def __init__(
        self,
        stub_of: Callable[[], batch_pb2_grpc.CommandServiceStub],
        metadata: tuple[tuple[str, str], ...] = (),
        *,
        max_batch_commands: int = DEFAULT_MAX_BATCH_COMMANDS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_delay_us: int = DEFAULT_MAX_DELAY_US,
        max_inflight_batches: int = DEFAULT_MAX_INFLIGHT_BATCHES,
    ) -> None:
        if max_batch_commands < 1 or max_batch_bytes < 1 or max_inflight_batches < 1:
            raise ValueError("max_batch_commands, max_batch_bytes, max_inflight_batches: > 0")
        if max_delay_us < 0:
            raise ValueError("max_delay_us: must be >= 0")
        self._stub_of = stub_of
        self._metadata = metadata
        self.max_batch_commands = max_batch_commands
        self.max_batch_bytes = max_batch_bytes
        self.max_delay_s = max_delay_us / 1e6
        self.max_inflight_batches = max_inflight_batches
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max_inflight_batches)
        self._stream: _Stream | None = None
        self._sender: asyncio.Task[None] | None = None
        self._numbers = itertools.count()
        self._closed = False
        # Deadline bucket -> the futures expiring in it.
        self._deadlines: dict[int, set[asyncio.Future[batch_pb2.BatchResult]]] = {}
        # Batches sent since the start (tests and benchmarks look at how well calls coalesce).
        self.batches_sent = 0
        self.commands_sent = 0

    # ------------------------------------------------------------------ the callers' side

    def submit(
        self, command: batch_pb2.BatchCommand, deadline: float | None = None
    ) -> asyncio.Future[batch_pb2.BatchResult]:
        """Queue `command`; the future resolves to its BatchResult (or StreamLost /
        BatchRefusedError, or DeadlineReached once the loop's clock passes `deadline`)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[batch_pb2.BatchResult] = loop.create_future()
        if deadline is not None:
            key = math.ceil(deadline / DEADLINE_GRANULARITY_S)
            waiting = self._deadlines.get(key)
            if waiting is None:
                waiting = self._deadlines[key] = set()
                loop.call_at(key * DEADLINE_GRANULARITY_S, self._expire, key)
            waiting.add(future)
            future.add_done_callback(waiting.discard)
        size = command.ByteSize() + 4  # the tag and length of its entry in the batch
        if self._pending and self._pending_bytes + size > self.max_batch_bytes:
            self._flush()  # this command starts the next batch
        self._pending.append((command, future, size))
        self._pending_bytes += size
        if self._sender is None:
            self._sender = loop.create_task(self._send_loop())
        if len(self._pending) >= self.max_batch_commands:
            self._flush()
        elif not self._armed:
            self._armed = True
            loop.call_soon(self._when_idle, len(self._pending))
            self._timer = loop.call_later(self.max_delay_s, self._flush)
        return future

    def _expire(self, key: int) -> None:
        for future in list(self._deadlines.pop(key, ())):
            if not future.done():
                future.set_exception(DeadlineReached())

    def _when_idle(self, seen: int) -> None:
        if not self._armed:
            return  # sent meanwhile (full, or the timer)
        if len(self._pending) > seen:
            # Commands came in during the last loop turn: more may be on their way.
            asyncio.get_running_loop().call_soon(self._when_idle, len(self._pending))
            return
        self._flush()

    def _flush(self) -> None:
        self._armed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake.set()

    # ------------------------------------------------------------------ the stream's side

    async def _send_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._slots.acquire()
                if not self._pending:
                    self._slots.release()
                    break
                batch = self._take()
                await self._send(batch)

    def _take(self) -> list[_Pending]:
        """The pending commands (up to the limits) whose callers still wait, oldest first."""
        pending = self._pending
        taken: list[_Pending] = []
        size = 0
        index = 0
        while index < len(pending) and len(taken) < self.max_batch_commands:
            entry = pending[index]
            if taken and size + entry[2] > self.max_batch_bytes:
                break
            index += 1
            if not entry[1].done():  # a caller that gave up (its deadline) is not sent
                taken.append(entry)
                size += entry[2]
        self._pending = pending[index:]
        self._pending_bytes -= sum(entry[2] for entry in pending[:index])
        if self._pending:
            self._wake.set()
        return taken

    async def _send(self, batch: list[_Pending]) -> None:
        if not batch:
            self._slots.release()
            return
        try:
            stream = self._open()
        except Exception as error:  # the channel is closed, or cannot be built
            self._slots.release()
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(StreamLost(f"cannot open the Submit stream: {error}"))
            return
        tag = str(next(self._numbers))
        stream.inflight[tag] = [future for _, future, _ in batch]
        request = batch_pb2.SubmitRequest(correlation_id=tag, commands=[c for c, _, _ in batch])
        self.batches_sent += 1
        self.commands_sent += len(batch)
        try:
            await stream.call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as error:
            self._broken(stream, f"the Submit stream failed: {_describe(error)}")

    def detach(self) -> None:
        """The leader moved (atpd.client.leader): the next batch opens a stream to it, while
        the batches in flight on the old stream are still answered there."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.detached = True
            if not stream.inflight:
                self._broken(stream, "the leader moved")

    def _open(self) -> _Stream:
        stream = self._stream
        if stream is not None and not stream.broken:
            return stream
        call = self._stub_of().Submit(metadata=self._metadata)
        stream = self._stream = _Stream(call)
        stream.reader = asyncio.get_running_loop().create_task(self._read_loop(stream))
        return stream

    async def _read_loop(self, stream: _Stream) -> None:
        try:
            async for response in stream.call:
                futures = stream.inflight.pop(response.correlation_id, None)
                if futures is None:
                    continue  # not ours (cannot happen with this server): ignore
                self._slots.release()
                if response.HasField("error"):
                    refusal = BatchRefusedError(response.error.code, response.error.message)
                    for future in futures:
                        if not future.done():
                            future.set_exception(refusal)
                    continue
                for future, result in zip(futures, response.results, strict=False):
                    if not future.done():
                        future.set_result(result)
                if stream.detached and not stream.inflight:
                    self._broken(stream, "the leader moved")
                    return
            self._broken(stream, "the server ended the Submit stream")
        except grpc.RpcError as error:
            self._broken(stream, f"the Submit stream failed: {_describe(error)}", _code(error))
        except asyncio.CancelledError:
            self._broken(stream, "the client was closed", grpc.StatusCode.CANCELLED)
            raise

    def _broken(
        self,
        stream: _Stream,
        reason: str,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        """Answer everything in flight on `stream` with StreamLost; the next batch reopens."""
        if stream.broken:
            return
        stream.broken = True
        if self._stream is stream:
            self._stream = None
        lost = StreamLost(reason, code)
        for futures in stream.inflight.values():
            self._slots.release()
            for future in futures:
                if not future.done():
                    future.set_exception(lost)
        stream.inflight.clear()
        stream.call.cancel()

    async def close(self) -> None:
        """Fail what is pending, end the stream and the sender."""
        self._closed = True
        for _, future, _ in self._pending:
            if not future.done():
                future.set_exception(StreamLost("the client was closed", grpc.StatusCode.CANCELLED))
        self._pending.clear()
        if self._stream is not None:
            stream = self._stream
            self._broken(stream, "the client was closed", grpc.StatusCode.CANCELLED)
            if stream.reader is not None:
                stream.reader.cancel()
                await asyncio.gather(stream.reader, return_exceptions=True)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    code = error.code() if hasattr(error, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNAVAILABLE


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{_code(error).name}: {error.details()}"
    return f"{type(error).__name__}: {error}"
