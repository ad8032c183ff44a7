"""FeedService: bulk loads streamed in chunks and applied atomically; exports of positions.

A BulkLoad stream is assembled here, off the state: each chunk is validated as it arrives
(errors name the chunk and the row) and kept as int32 columns; nothing reaches the core until
the commit message arrives. A stream that merely ends is not enough: grpc.aio reports a client
that cancelled or died as an ordinary end of stream. Then, on the event loop: the columns are put
in canonical form (ids in order of first use), the load file is written off the loop when the
server is durable, and one `BulkLoad` command goes through the engine (the one writer): one
atomic apply, one journal record, the reply once durable. A stream that breaks or carries a
bad chunk ends in an error and leaves the state untouched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from atpd.core import bulk_kernels
from atpd.core.bulk import LoadSummary, find_duplicate
from atpd.core.ids import ID_PATTERN, LOAD_ID_PATTERN
from atpd.core.limits import MAX_QUANTITY, Limits
from atpd.core.load_command import BulkLoad as BulkLoadCommand
from atpd.core.load_command import LoadColumns, LoadMode
from atpd.core.results import AlreadyExists, CommandRejected, LimitExceeded, NotFound
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from atpd.core.text import shown
from atpd.persistence.load_file import collect_unreferenced, new_file_name, write_load_file
from atpd.service import validation
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
from atpd.service.validation import InvalidArgument
from atpd.service.watch import StreamStalled, end_stalled, write_or_stall
from atpd.v1 import feeds_pb2, feeds_pb2_grpc

log = logging.getLogger(__name__)

Response = TypeVar("Response")

# SKUs per availability query when an export computes ATP for a channel / segment.
ATP_BATCH_SKUS = 1000
# New SKU ids of a chunk are checked with one regex over them all (the id alphabet has no
# newline); only when that fails is the first bad one looked for.
_SKU_LINES = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\n)*[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}"
)


@dataclass(frozen=True, slots=True)
class LoadHeader:
    load_id: str
    mode: LoadMode
    source_sequence: int
    node_ids: tuple[str, ...]


def load_header(header: feeds_pb2.BulkLoadHeader, state: AtpState, limits: Limits) -> LoadHeader:
    load_id = header.load_id
    if not load_id:
        raise InvalidArgument("header.load_id", "is empty")
    if not LOAD_ID_PATTERN.fullmatch(load_id):
        raise InvalidArgument(
            "header.load_id", f"{shown(load_id)} is not 1-128 characters of letters, digits, . _ -"
        )
    try:
        mode = LoadMode(header.mode)
    except ValueError:
        raise InvalidArgument("header.mode", "must be LOAD_MODE_FULL or LOAD_MODE_DELTA") from None
    if header.source_sequence < 0:
        raise InvalidArgument(
            "header.source_sequence", f"must be >= 0, got {header.source_sequence}"
        )
    node_ids = tuple(header.node_ids)
    if mode is LoadMode.DELTA and node_ids:
        raise InvalidArgument("header.node_ids", "only a FULL load names the nodes it replaces")
    if mode is LoadMode.FULL and not node_ids:
        raise InvalidArgument("header.node_ids", "a FULL load must name the nodes it replaces")
    seen: set[str] = set()
    for i, node_id in enumerate(node_ids):
        field = f"header.node_ids[{i}]"
        validation.node_id(node_id, field)
        if state.node_ids.get(node_id) < 0:
            raise NotFound(f"{field}: unknown node {node_id!r}")
        if node_id in seen:
            raise InvalidArgument(field, f"{node_id!r} is named twice")
        seen.add(node_id)
    return LoadHeader(load_id, mode, header.source_sequence, node_ids)


def _check_range(values: npt.NDArray[np.int64], low: int, high: int, field: str) -> None:
    if values.size and low <= int(values.min()) and int(values.max()) <= high:
        return
    bad = (values < low) | (values > high)
    row = int(np.argmax(bad))
    raise InvalidArgument(field.format(row=row), f"must be {low}..{high}, got {int(values[row])}")


class LoadAssembler:
    """One load's rows, validated chunk by chunk. SKUs are coded as their state row when the
    state knows them and as -(k + 1) for the k-th SKU new to the state; nodes as their state
    column. Codes are only used to build the canonical columns: the command carries ids."""

    def __init__(self, state: AtpState, limits: Limits, header: LoadHeader) -> None:
        self.state = state
        self.limits = limits
        self.header = header
        self.rows = 0
        self.chunks = 0
        self._starts: list[int] = []
        self._sku: list[npt.NDArray[np.int64]] = []
        self._node: list[npt.NDArray[np.int64]] = []
        self._on_hand: list[npt.NDArray[np.int32]] = []
        self._safety: list[npt.NDArray[np.int32]] = []
        self._new_skus: dict[str, int] = {}
        self._scope: set[int] | None = (
            {state.node_ids.get(node_id) for node_id in header.node_ids}
            if header.mode is LoadMode.FULL
            else None
        )

    def add(self, chunk: feeds_pb2.PositionChunk) -> None:
        where = f"chunks[{self.chunks}]"
        rows = len(chunk.on_hand)
        if rows == 0:
            raise InvalidArgument(where, "has no rows (on_hand is empty)")
        if rows > self.limits.max_load_chunk_rows:
            raise InvalidArgument(
                where, f"has {rows} rows, max_load_chunk_rows is {self.limits.max_load_chunk_rows}"
            )
        if self.rows + rows > self.limits.max_load_rows:
            raise InvalidArgument(
                where, f"takes the load past max_load_rows ({self.limits.max_load_rows} rows)"
            )
        on_hand = np.array(chunk.on_hand, np.int64)
        _check_range(on_hand, 0, MAX_QUANTITY, where + ".rows[{row}].on_hand")
        if not chunk.safety_stock:
            safety = np.full(rows, -1, np.int32)
        elif len(chunk.safety_stock) == rows:
            values = np.array(chunk.safety_stock, np.int64)
            _check_range(values, -1, MAX_QUANTITY, where + ".rows[{row}].safety_stock")
            safety = values.astype(np.int32)
        else:
            raise InvalidArgument(
                f"{where}.safety_stock", f"has {len(chunk.safety_stock)} values for {rows} rows"
            )
        sku = self._skus(chunk, rows, where)
        node = self._nodes(chunk, rows, where)
        self._starts.append(self.rows)
        self._sku.append(sku)
        self._node.append(node)
        self._on_hand.append(on_hand.astype(np.int32))
        self._safety.append(safety)
        self.rows += rows
        self.chunks += 1

    @staticmethod
    def _dictionary(
        values: Any, index: Any, rows: int, where: str, column: str, index_column: str
    ) -> tuple[list[str], npt.NDArray[np.int64] | None]:
        names = list(values)
        if not index:
            if len(names) != rows:
                raise InvalidArgument(
                    f"{where}.{column}",
                    f"has {len(names)} values for {rows} rows (or give {index_column}, one "
                    "index per row)",
                )
            return names, None
        if len(index) != rows:
            raise InvalidArgument(f"{where}.{index_column}", f"has {len(index)} values for {rows}")
        codes = np.array(index, np.int64)
        if not names or int(codes.max()) >= len(names):
            row = int(np.argmax(codes >= len(names)))
            raise InvalidArgument(
                f"{where}.rows[{row}].{index_column}",
                f"{int(codes[row])} is out of range: {column} has {len(names)} entries",
            )
        return names, codes

    @staticmethod
    def _field(where: str, index: npt.NDArray[np.int64] | None, entry: int, column: str) -> str:
        """Where a dictionary entry is used first (or the entry itself when no row uses it)."""
        if index is None:
            return f"{where}.rows[{entry}].{column}"
        used = np.flatnonzero(index == entry)
        if used.size:
            return f"{where}.rows[{int(used[0])}].{column.rstrip('s')}"
        return f"{where}.{column}[{entry}]"

    def _skus(self, chunk: feeds_pb2.PositionChunk, rows: int, where: str) -> Any:
        names, index = self._dictionary(
            chunk.skus, chunk.sku_index, rows, where, "skus", "sku_index"
        )
        codes = self.state.skus.lookup_many(names)
        if -1 in codes:
            new_entries = [entry for entry, code in enumerate(codes) if code < 0]
            new_names = [names[entry] for entry in new_entries]
            joined = "\n".join(new_names)
            # The count matters: "A\nB" as one name would pass the joined pattern as two.
            if joined.count("\n") != len(new_names) - 1 or not _SKU_LINES.fullmatch(joined):
                for entry, name in zip(new_entries, new_names, strict=True):
                    if not ID_PATTERN.fullmatch(name):
                        column = "sku" if index is None else "skus"
                        validation.sku_id(name, self._field(where, index, entry, column))
                raise AssertionError("a new SKU failed the joined check but none alone")
            new_skus = self._new_skus
            for name in new_names:
                if name not in new_skus:
                    new_skus[name] = -(len(new_skus) + 1)
            for entry, name in zip(new_entries, new_names, strict=True):
                codes[entry] = new_skus[name]
        array = np.array(codes, np.int64)
        return array if index is None else array[index]

    def _nodes(self, chunk: feeds_pb2.PositionChunk, rows: int, where: str) -> Any:
        names, index = self._dictionary(
            chunk.node_ids, chunk.node_index, rows, where, "node_ids", "node_index"
        )
        codes = self.state.node_ids.lookup_many(names)
        scope = self._scope
        if -1 in codes or scope is not None:
            column = "node_id" if index is None else "node_ids"
            for entry, code in enumerate(codes):
                if code >= 0 and (scope is None or code in scope):
                    continue
                field = self._field(where, index, entry, column)
                if code < 0:
                    validation.node_id(names[entry], field)
                    raise NotFound(f"{field}: unknown node {shown(names[entry])}")
                raise InvalidArgument(
                    field,
                    f"{shown(names[entry])} is not one of the header's node_ids (a FULL load "
                    "replaces exactly the nodes it names)",
                )
        array = np.array(codes, np.int64)
        return array if index is None else array[index]

    def locate(self, row: int) -> str:
        chunk = int(np.searchsorted(np.array(self._starts), row, side="right")) - 1
        return f"chunks[{chunk}].rows[{row - self._starts[chunk]}]"

    def finish(self) -> LoadColumns:
        """The canonical columns: SKU and node ids in order of first use, one code per row."""
        empty = np.zeros(0, np.int64)
        sku = np.concatenate(self._sku) if self._sku else empty
        node = np.concatenate(self._node) if self._node else empty
        new_names = list(self._new_skus)
        offset = len(new_names)
        sku_code = np.empty(self.rows, np.int32)
        order = bulk_kernels.renumber_by_first_use(
            sku, offset, offset + len(self.state.skus), sku_code
        )
        known = self.state.skus.names
        sku_names = [known[c] if c >= 0 else new_names[-c - 1] for c in order.tolist()]
        node_code = np.empty(self.rows, np.int32)
        node_order = bulk_kernels.renumber_by_first_use(node, 0, len(self.state.nodes), node_code)
        node_names = [self.state.nodes[c].node_id for c in node_order.tolist()]
        self._sku.clear()
        self._node.clear()
        columns = LoadColumns(
            sku_names,
            sku_code,
            node_names,
            node_code,
            np.concatenate(self._on_hand) if self._on_hand else np.zeros(0, np.int32),
            np.concatenate(self._safety) if self._safety else np.zeros(0, np.int32),
        )
        duplicate = find_duplicate(columns)
        if duplicate is not None:
            first, repeat = duplicate
            sku_id = sku_names[sku_code[repeat]]
            node_id = node_names[node_code[repeat]]
            raise InvalidArgument(
                self.locate(repeat),
                f"position ({sku_id!r}, {node_id!r}) is listed twice (first at "
                f"{self.locate(first)})",
            )
        return columns


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
            async for chunk in self._export(request):
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

    async def _export(
        self, request: feeds_pb2.ExportPositionsRequest
    ) -> AsyncIterator[feeds_pb2.PositionChunk]:
        limits = self.limits
        chunk_rows = request.chunk_rows or limits.max_load_chunk_rows
        if chunk_rows > limits.max_load_chunk_rows:
            raise InvalidArgument(
                "chunk_rows", f"must be <= max_load_chunk_rows ({limits.max_load_chunk_rows})"
            )
        channel = validation.name(request.channel, "channel")
        segment = validation.name(request.segment, "segment")
        prefix = validation.geo_prefix(request.geo_prefix)
        for i, node_id in enumerate(request.node_ids):
            validation.node_id(node_id, f"node_ids[{i}]")
        self.engine.catch_up()
        state = self.engine.state
        # --- one consistent copy, taken between two commands
        policy = state.policy(channel, segment) if channel or segment else None
        selected = state.node_ids.lookup_many(list(request.node_ids))
        for i, index in enumerate(selected):
            if index < 0:
                raise NotFound(f"node_ids[{i}]: unknown node {request.node_ids[i]!r}")
        nodes = sorted(set(selected)) if selected else list(range(len(state.nodes)))
        if prefix:
            under = {node.index for node in state.list_nodes(prefix)}
            if not under:
                raise NotFound(f"geo_prefix: no node under {prefix!r}")
            nodes = [n for n in nodes if n in under]
        columns = np.array(nodes, np.int64)
        sku_count = len(state.skus)
        stock = state.stock
        present = stock.present[:sku_count][:, columns]
        rows, cols = np.nonzero(present)
        cells = stock.cells[:sku_count][:, :, columns]
        on_hand = cells[rows, FIELD_ON_HAND, cols].astype(np.int64)
        reserved = cells[rows, FIELD_RESERVED, cols].astype(np.int64)
        safety = cells[rows, FIELD_SAFETY, cols].astype(np.int64)
        sequences = stock.source_seq[:sku_count][:, columns][rows, cols]
        del cells, present
        sku_names = state.skus.names[:sku_count]
        node_names = [state.nodes[n].node_id for n in nodes]
        own_atp = np.maximum(on_hand - reserved - safety, 0)
        # --- then chunk by chunk
        for start in range(0, len(rows), chunk_rows):
            end = start + chunk_rows
            sku_rows, sku_index = np.unique(rows[start:end], return_inverse=True)
            skus = [sku_names[r] for r in sku_rows.tolist()]
            if policy is None:
                atp = own_atp[start:end]
            else:
                atp = self._caller_atp(skus, sku_index, columns[cols[start:end]], channel, segment)
            yield feeds_pb2.PositionChunk(
                skus=skus,
                sku_index=sku_index.tolist(),
                node_ids=node_names,
                node_index=cols[start:end].tolist(),
                on_hand=on_hand[start:end].tolist(),
                safety_stock=safety[start:end].tolist(),
                reserved=reserved[start:end].tolist(),
                atp=atp.tolist(),
                last_source_sequence=sequences[start:end].tolist(),
            )

    def _caller_atp(
        self,
        skus: list[str],
        sku_index: npt.NDArray[np.int64],
        nodes: npt.NDArray[np.int64],
        channel: str,
        segment: str,
    ) -> npt.NDArray[np.int64]:
        """ATP per row as `channel`/`segment` is offered it now, ATP_BATCH_SKUS SKUs at a time
        (each batch is one availability query, computed between two commands)."""
        atp = np.zeros(len(sku_index), np.int64)
        state = self.engine.state
        for first in range(0, len(skus), ATP_BATCH_SKUS):
            view = state.availability(
                skus[first : first + ATP_BATCH_SKUS], (), "", channel, segment
            )
            mine = (sku_index >= first) & (sku_index < first + ATP_BATCH_SKUS)
            atp[mine] = view.matrix[sku_index[mine] - first, nodes[mine]]
        return atp
