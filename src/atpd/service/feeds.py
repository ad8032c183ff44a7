"""FeedService: bulk loads streamed in chunks and applied atomically; exports of positions.

A BulkLoad stream is assembled off the state (load_assembly.py): each chunk is validated as it
arrives and kept as int32 columns; nothing reaches the core until the commit message arrives.
A stream that merely ends is not enough: grpc.aio reports a client that cancelled or died as
an ordinary end of stream. Then, on the event loop: the columns are put in canonical form, the
load file is written off the loop when the server is durable, and one `BulkLoad` command goes
through the engine (the one writer): one atomic apply, one journal record, the reply once
durable. A stream that breaks or carries a bad chunk ends in an error and leaves the state
untouched. Loads are bounded (max_concurrent_loads) and a stream idle for
load_idle_timeout_s is ended. ExportPositions streams what export.py reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from atpd.core.bulk import LoadSummary
from atpd.core.load_command import BulkLoad as BulkLoadCommand
from atpd.core.results import AlreadyExists, CommandRejected, LimitExceeded
from atpd.core.state import AtpState
from atpd.persistence.load_file import collect_unreferenced, new_file_name, write_load_file
from atpd.service.durability import Durability
from atpd.service.engine import Engine, InternalFailure, WritesUnavailable
from atpd.service.errors import (
    LoadInProgress,
    NotReady,
    StateReplaced,
    StreamIdle,
    abort,
    is_bug,
    status_of,
)
from atpd.service.export import export_chunks
from atpd.service.load_assembly import LoadAssembler, LoadHeader, load_header
from atpd.service.validation import InvalidArgument
from atpd.service.watch import StreamStalled, end_stalled, write_or_stall
from atpd.v1 import feeds_pb2, feeds_pb2_grpc

log = logging.getLogger(__name__)

Response = TypeVar("Response")


def summary_response(
    summary: LoadSummary, chunks: int, seconds: float, apply_seconds: float, replayed: bool
) -> feeds_pb2.BulkLoadResponse:
    return feeds_pb2.BulkLoadResponse(
        load_id=summary.load_id,
        mode=int(summary.mode),  # type: ignore[arg-type]
        source_sequence=summary.source_sequence,
        chunks=chunks,
        rows=summary.rows,
        positions_written=summary.positions_written,
        positions_changed=summary.positions_changed,
        positions_zeroed=summary.positions_zeroed,
        positions_stale=summary.positions_stale,
        skus_created=summary.skus_created,
        seconds=seconds,
        apply_seconds=apply_seconds,
        replayed=replayed,
    )


class FeedServicer(feeds_pb2_grpc.FeedServiceServicer):
    def __init__(
        self,
        engine: Engine,
        load_idle_timeout_s: float = 30.0,
        stream_stall_timeout_s: float = 60.0,
    ) -> None:
        assert load_idle_timeout_s > 0 and stream_stall_timeout_s > 0
        self.engine = engine
        self.limits = engine.state.limits
        self.load_idle_timeout_s = load_idle_timeout_s
        self.stream_stall_timeout_s = stream_stall_timeout_s
        # Set by create_server: the durability layer appears once recovery is done.
        self.durability_of: Callable[[], Durability | None] = lambda: None
        self._streaming: set[str] = set()
        # Streams between their header and their reply (max_concurrent_loads): a stream that
        # has sent nothing yet holds no slot, and every stream times out when idle.
        self._active = 0
        # Load files written or being written whose journal record is not durable yet.
        self._files_in_flight: set[str] = set()

    # ------------------------------------------------------------------ errors and metrics

    def _observe(self, method: str, started: float, code: grpc.StatusCode) -> None:
        metrics = self.engine.metrics
        metrics.rpc_latency.labels(method).observe(time.perf_counter() - started)
        metrics.rpc_calls.labels(method, code.name).inc()

    async def _guard(
        self, method: str, context: Any, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await handler()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away: nothing was applied
            raise
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            await abort(context, code, str(error))
        finally:
            self._observe(method, started, code)

    # ------------------------------------------------------------------ BulkLoad

    async def BulkLoad(
        self, request_iterator: AsyncIterator[feeds_pb2.BulkLoadRequest], context: Any
    ) -> feeds_pb2.BulkLoadResponse:
        return await self._guard("BulkLoad", context, lambda: self._load(request_iterator))

    async def _load(
        self, requests: AsyncIterator[feeds_pb2.BulkLoadRequest]
    ) -> feeds_pb2.BulkLoadResponse:
        started = time.perf_counter()
        engine = self.engine
        if not engine.ready:
            raise NotReady("the server is starting up (recovery in progress); retry shortly")
        engine.check_leader()  # a follower refuses before reading (or storing) any row
        stream = aiter(requests)
        first = await self._next(stream, "its header")
        if first is None:
            raise InvalidArgument("header", "the stream ended before its header")
        if first.WhichOneof("part") != "header":
            raise InvalidArgument("header", "the first message of a load must be its header")
        if self._active >= self.limits.max_concurrent_loads:
            raise LimitExceeded(
                f"max_concurrent_loads: {self._active} loads are streaming; retry later"
            )
        self._active += 1  # counted from its header on, until its reply
        try:
            return await self._header_then_rows(stream, first, started)
        finally:
            self._active -= 1

    async def _next(
        self, stream: AsyncIterator[feeds_pb2.BulkLoadRequest], awaited: str
    ) -> feeds_pb2.BulkLoadRequest | None:
        """The next message of a load (None at the end), or StreamIdle when none comes within
        load_idle_timeout_s: a client that opens a stream and stops must not hold it open."""
        try:
            return await asyncio.wait_for(anext(stream), self.load_idle_timeout_s)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise StreamIdle(
                f"load_idle_timeout_s: no message for {self.load_idle_timeout_s:g} s while "
                f"waiting for {awaited}; the load was ended and nothing was applied"
            ) from None

    async def _header_then_rows(
        self,
        stream: AsyncIterator[feeds_pb2.BulkLoadRequest],
        first: feeds_pb2.BulkLoadRequest,
        started: float,
    ) -> feeds_pb2.BulkLoadResponse:
        engine = self.engine
        state = engine.state
        header = load_header(first.header, state, self.limits)
        if header.load_id in self._streaming:
            raise LoadInProgress(
                f"load_id: {header.load_id!r} is streaming now; retry once it has finished "
                "to get its summary"
            )
        done = state.loads.get(header.load_id)
        if done is not None and not done.same_header(
            header.mode, header.source_sequence, header.node_ids
        ):
            raise AlreadyExists(
                f"load_id: {header.load_id!r} was applied with a different mode, sequence or "
                "node list"
            )
        self._streaming.add(header.load_id)
        try:
            return await self._stream_and_apply(stream, state, header, started)
        finally:
            self._streaming.discard(header.load_id)

    async def _stream_and_apply(
        self,
        stream: AsyncIterator[feeds_pb2.BulkLoadRequest],
        state: AtpState,
        header: LoadHeader,
        started: float,
    ) -> feeds_pb2.BulkLoadResponse:
        assembler = LoadAssembler(state, self.limits, header)
        commit: feeds_pb2.BulkLoadCommit | None = None
        while True:
            awaited = "the end of the stream" if commit is not None else "a chunk or the commit"
            message = await self._next(stream, f"{awaited} after {assembler.chunks} chunks")
            if message is None:
                break
            part = message.WhichOneof("part")
            if commit is not None or part == "header":
                what = "after the commit" if commit is not None else "a second header"
                raise InvalidArgument(
                    f"chunks[{assembler.chunks}]",
                    f"{what}: a load is one header, chunks, then one commit",
                )
            if part == "commit":
                commit = message.commit
            else:
                assembler.add(message.chunk)
        if commit is None:
            raise InvalidArgument(
                "commit",
                f"the stream ended after {assembler.chunks} chunks ({assembler.rows} rows) "
                "without its commit message: the client stopped early; nothing was applied",
            )
        if (commit.rows, commit.chunks) != (assembler.rows, assembler.chunks):
            raise InvalidArgument(
                "commit",
                f"says {commit.rows} rows in {commit.chunks} chunks, {assembler.rows} rows in "
                f"{assembler.chunks} chunks arrived: nothing was applied",
            )
        engine = self.engine
        if engine.state is not state:
            raise StateReplaced("the state was rebuilt while the load streamed; send it again")
        columns = assembler.finish()
        command = BulkLoadCommand.create(
            header.load_id, header.mode, header.source_sequence, header.node_ids, columns
        )
        done = state.loads.get(header.load_id)
        if done is not None:
            if done.fingerprint != command.fingerprint:
                raise AlreadyExists(
                    f"load_id: {header.load_id!r} was applied with different content"
                )
            elapsed = time.perf_counter() - started
            return summary_response(done, assembler.chunks, elapsed, 0.0, replayed=True)
        durability = self.durability_of()
        data_dir = durability.data_dir if durability is not None else None
        relative = ""
        if data_dir is not None:
            relative = new_file_name(header.load_id)
            self._files_in_flight.add(relative)
        try:
            if data_dir is not None:
                command = await self._store(data_dir, command, relative)
            if engine.state is not state:
                raise StateReplaced(
                    "the state was rebuilt while the load was stored; send it again"
                )
            apply_started = time.perf_counter()
            try:
                result = await engine.execute(command)
            except (CommandRejected, InternalFailure):
                if data_dir is not None:  # never journaled: the file is nobody's
                    (data_dir / relative).unlink(missing_ok=True)
                raise
            apply_seconds = time.perf_counter() - apply_started
        finally:
            self._files_in_flight.discard(relative)
        seconds = time.perf_counter() - started
        summary = result.summary
        log.info(
            "load %s (%s, sequence %d): %d rows in %d chunks, %d written, %d changed, %d zeroed, "
            "%d stale, %d new SKUs in %.2f s (%.0f rows/s)",
            summary.load_id,
            summary.mode.name,
            summary.source_sequence,
            summary.rows,
            assembler.chunks,
            summary.positions_written,
            summary.positions_changed,
            summary.positions_zeroed,
            summary.positions_stale,
            summary.skus_created,
            seconds,
            summary.rows / seconds if seconds > 0 else 0.0,
        )
        return summary_response(
            summary, assembler.chunks, seconds, apply_seconds, replayed=result.replayed
        )

    async def _store(
        self, data_dir: Path, command: BulkLoadCommand, relative: str
    ) -> BulkLoadCommand:
        loop = asyncio.get_running_loop()
        keep = set(self._files_in_flight)
        try:
            await loop.run_in_executor(None, collect_unreferenced, data_dir, keep)
        except OSError as error:  # housekeeping only: never fails a load
            log.warning("could not clean old load files: %s", error)
        try:
            return await loop.run_in_executor(None, write_load_file, data_dir, command, relative)
        except OSError as error:
            raise WritesUnavailable(f"cannot store load file {relative}: {error}") from error

    # ------------------------------------------------------------------ ExportPositions

    async def ExportPositions(
        self, request: feeds_pb2.ExportPositionsRequest, context: Any
    ) -> None:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            sent = 0
            async for chunk in export_chunks(self.engine, self.limits, request):
                await write_or_stall(context, chunk, self.stream_stall_timeout_s, sent)
                sent += 1
        except StreamStalled as error:
            code = status_of(error)
            end_stalled("ExportPositions", error)
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            await abort(context, code, str(error))
        finally:
            self._observe("ExportPositions", started, code)
