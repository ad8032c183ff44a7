"""The primary's side of replication: what each follower is sent, and sync replication.

Every record the engine journals passes through `appended` (JournalLog's replication hook) into
a bounded in-memory buffer of recent records. A Follow stream sends a follower the records
after its sequence once they are durable here: from the buffer when it still holds them, else
read back from the journal segments, else (the segments are gone: snapshots replaced them) the
newest snapshot file first. The bytes sent are the journal's own framing, so the follower checks
each record's CRC32C and journals the very same bytes.

Sync replication: `replicated(sequence)` (awaited by JournalLog.wait_durable after the local
fsync) returns once one follower acknowledged the sequence as durable. When none does within
sync_timeout_ms, `sync_fallback` decides: "degrade" goes on as async (logged as an error, metric
`atpd_replication_degraded` = 1) until a follower has caught up with everything durable here;
"refuse" answers the caller UNAVAILABLE, and refuses new writes while no follower is connected.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from atpd.config import Config
from atpd.core.load_command import BulkLoad
from atpd.persistence.codec import UndecodableRecord, decode_command
from atpd.persistence.framing import Record, encode_record_into, record_bytes
from atpd.persistence.journal_errors import JournalUnavailable
from atpd.persistence.load_file import LOADS_MARKER
from atpd.persistence.recovery import durable_records
from atpd.persistence.snapshot_file import list_snapshots
from atpd.service.engine import Engine, ReplicationUnconfirmed, WritesUnavailable
from atpd.v1 import replication_pb2

if TYPE_CHECKING:
    from atpd.service.durability import Durability

log = logging.getLogger(__name__)

# Bytes of a snapshot or load file per stream message.
FILE_CHUNK_BYTES = 1 << 20
# Sync waiters whose timeout passed are dropped from the heap once it holds this many.
WAITERS_COMPACT_AT = 1024


class ReplicationRefused(Exception):
    """A Follow request this primary cannot serve (FAILED_PRECONDITION, with the reason)."""


@dataclass(slots=True)
class FollowerLink:
    """One connected follower, as the primary sees it."""

    follower_id: str
    durable_sequence: int
    sent_sequence: int


class ReplicationSource:
    """Buffer of recent records, the connected followers, and the sync replication wait."""

    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.sync = config.replication == "sync"
        self.sync_timeout_s = config.sync_timeout_ms / 1000
        self.refuse_when_unsynced = config.sync_fallback == "refuse"
        self.heartbeat_s = config.replication_heartbeat_ms / 1000
        self.batch_bytes = config.replication_batch_bytes
        self.buffer_limit_bytes = config.replication_buffer_bytes
        self.durability: Durability | None = None
        self.followers: dict[int, FollowerLink] = {}
        self.degraded = False
        self._buffer: deque[Record] = deque()
        self._buffer_bytes = 0
        self._appended = asyncio.Event()
        self._durable_signal: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._link_ids = itertools.count()
        engine.metrics.replication_degraded.set_function(lambda: int(self.degraded))
        engine.metrics.replication_followers.set_function(lambda: len(self.followers))

    # ------------------------------------------------------------------ the journal's hooks

    def attach(self, durability: Durability) -> None:
        """Hook into `durability`'s journal (again after it was replaced); on the loop."""
        self.durability = durability
        durability.log.replication = self
        self._buffer.clear()
        self._buffer_bytes = 0
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_durable())

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for _, _, future in self._waiters:
            if not future.done():
                future.cancel()
        self._waiters.clear()

    def check_writable(self) -> None:
        if self.sync and self.refuse_when_unsynced and not self.followers:
            raise WritesUnavailable(
                "sync replication: no follower is connected, and sync_fallback = 'refuse' "
                "refuses writes that only this server would hold; retry shortly"
            )

    def appended(self, sequence: int, timestamp_ms: int, payload: bytes) -> None:
        buffer = self._buffer
        # After a journal failure the journal cut its unacknowledged tail and reuses those
        # sequence numbers: the records buffered for them were never durable.
        while buffer and buffer[-1].sequence >= sequence:
            self._buffer_bytes -= record_bytes(len(buffer.pop().payload))
        buffer.append(Record(sequence, timestamp_ms, payload))
        self._buffer_bytes += record_bytes(len(payload))
        while self._buffer_bytes > self.buffer_limit_bytes and len(buffer) > 1:
            self._buffer_bytes -= record_bytes(len(buffer.popleft().payload))
        self._appended.set()

    async def replicated(self, sequence: int) -> None:
        if not self.sync or self.degraded or self.best_acknowledged() >= sequence:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (sequence, next(self._waiter_ids), future))
        await asyncio.wait((future,), timeout=self.sync_timeout_s)
        if future.done():
            return
        future.cancel()
        if len(self._waiters) >= WAITERS_COMPACT_AT:
            self._waiters = [waiter for waiter in self._waiters if not waiter[2].done()]
            heapq.heapify(self._waiters)
        reason = (
            f"no follower acknowledged journal sequence {sequence} within "
            f"{self.sync_timeout_s * 1000:.0f} ms ({len(self.followers)} connected)"
        )
        if self.refuse_when_unsynced:
            raise ReplicationUnconfirmed(
                f"sync replication: {reason}; the write is durable on this server but not "
                "confirmed on a follower: retry it with the same ids"
            )
        if not self.degraded:
            self.degraded = True
            log.error(
                "SYNC REPLICATION DEGRADED TO ASYNC: %s; writes are acknowledged once durable "
                "here only (a failover now may lose them) until a follower catches up",
                reason,
            )

    def best_acknowledged(self) -> int:
        return max((link.durable_sequence for link in self.followers.values()), default=0)

    def _acknowledged(self, link: FollowerLink, durable_sequence: int) -> None:
        if durable_sequence <= link.durable_sequence:
            return
        link.durable_sequence = durable_sequence
        waiters = self._waiters
        while waiters and waiters[0][0] <= durable_sequence:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
        durability = self.durability
        if (
            self.degraded
            and durability is not None
            and durable_sequence >= durability.journal.durable_sequence
        ):
            self.degraded = False
            log.warning(
                "sync replication restored: follower %s holds every durable record (%d)",
                link.follower_id,
                durable_sequence,
            )

    async def _watch_durable(self) -> None:
        """Wakes the streams each time more records are durable (one waiter for them all)."""
        while True:
            await self._appended.wait()
            self._appended.clear()
            durability = self.durability
            assert durability is not None
            journal = durability.journal
            try:
                await journal.wait_durable(journal.last_sequence)
            except JournalUnavailable:
                await asyncio.sleep(self.heartbeat_s)  # the writer restores the journal
            signal = self._durable_signal
            self._durable_signal = None
            if signal is not None and not signal.done():
                signal.set_result(None)

    async def _more_durable(self) -> None:
        """Wait until more records are durable, or one heartbeat interval."""
        if self._durable_signal is None:
            self._durable_signal = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._durable_signal,), timeout=self.heartbeat_s)

    # ------------------------------------------------------------------ one follower's stream

    def open_link(self, follower_id: str, from_sequence: int) -> FollowerLink:
        """Register a follower starting after `from_sequence`; ReplicationRefused if it holds
        records this primary does not (its history diverged)."""
        self.engine.check_leader()
        durability = self.durability
        if durability is None:
            raise ReplicationRefused("this server keeps no journal (in memory): nothing to follow")
        last = durability.journal.last_sequence
        if from_sequence > last:
            raise ReplicationRefused(
                f"follower {follower_id!r} holds records up to sequence {from_sequence} but this "
                f"primary's journal ends at {last}: its history diverged; start it on an empty "
                "data directory"
            )
        link = FollowerLink(follower_id, from_sequence, from_sequence)
        self.followers[next(self._link_ids)] = link
        log.info("follower %s connected from sequence %d", follower_id, from_sequence)
        return link

    def close_link(self, link: FollowerLink) -> None:
        for key, value in list(self.followers.items()):
            if value is link:
                del self.followers[key]
        log.info("follower %s disconnected at sequence %d", link.follower_id, link.durable_sequence)

    def acknowledge(self, link: FollowerLink, durable_sequence: int) -> None:
        if durable_sequence > link.sent_sequence:
            raise ReplicationRefused(
                f"ack of sequence {durable_sequence} beyond what was sent ({link.sent_sequence})"
            )
        self._acknowledged(link, durable_sequence)

    async def messages(self, link: FollowerLink) -> AsyncIterator[replication_pb2.FollowMessage]:
        """Everything the follower needs, in order, until the stream is cancelled or this
        server stops being the leader (NotLeader)."""
        disk: Iterator[Record] | None = None
        durability = self.durability
        assert durability is not None
        if link.sent_sequence == 0 and list_snapshots(durability.data_dir):
            # An empty follower starts from the newest snapshot: faster than the whole journal,
            # and the only way to the state a snapshot holds that no record made (the demo).
            async for message in self._snapshot_after(link, 1):
                yield message
        while True:
            self.engine.check_leader()
            durability = self.durability
            assert durability is not None
            durable = durability.journal.durable_sequence
            wanted = link.sent_sequence + 1
            if wanted > durable:
                disk = None
                before = durable
                await self._more_durable()
                if durability.journal.durable_sequence == before:
                    yield self._message(heartbeat=replication_pb2.Heartbeat())
                continue
            records = self._from_buffer(wanted, durable)
            if records is None:
                if disk is None:
                    disk = durable_records(durability.data_dir, wanted - 1, durable)
                records, more = await asyncio.to_thread(self._take, disk)
                if not more:
                    disk = None
                if not records or records[0].sequence != wanted:
                    # The segments holding `wanted` were removed: a snapshot replaced them.
                    disk = None
                    async for message in self._snapshot_after(link, wanted + 1):
                        yield message
                    continue
            batch = self._until_load(records)
            if len(batch) != len(records):
                disk = None  # the read went past the cut: the next one starts at the cut
            records = batch
            if LOADS_MARKER in records[0].payload:
                sent_any = False
                try:
                    async for message in self._load_file_of(records[0]):
                        sent_any = True
                        yield message
                except FileNotFoundError:
                    if sent_any:
                        raise
                    # A load file is kept only while a record after the oldest snapshot names
                    # it: this older record is only available inside a snapshot now.
                    disk = None
                    async for message in self._snapshot_after(link, wanted + 1):
                        yield message
                    continue
            data = bytearray()
            for record in records:
                encode_record_into(data, record.sequence, record.timestamp_ms, record.payload)
            last = records[-1].sequence
            assert records[0].sequence == wanted and last == wanted + len(records) - 1
            link.sent_sequence = last
            yield self._message(
                records=replication_pb2.JournalRecords(
                    first_sequence=wanted, last_sequence=last, data=bytes(data)
                )
            )

    def _message(self, **kind: object) -> replication_pb2.FollowMessage:
        durability = self.durability
        assert durability is not None
        return replication_pb2.FollowMessage(
            primary_sequence=durability.journal.durable_sequence,
            primary_time_ms=self.engine.now_ms(),
            **kind,  # type: ignore[arg-type]
        )

    def _from_buffer(self, first: int, last: int) -> list[Record] | None:
        """Records first..last (at most batch_bytes of them, at least one) from the buffer;
        None when it no longer holds `first`."""
        buffer = self._buffer
        if not buffer or not buffer[0].sequence <= first <= buffer[-1].sequence:
            return None
        index = first - buffer[0].sequence
        records: list[Record] = []
        size = 0
        while index < len(buffer) and buffer[index].sequence <= last:
            record = buffer[index]
            size += record_bytes(len(record.payload))
            if records and size > self.batch_bytes:
                break
            records.append(record)
            index += 1
        return records

    def _take(self, disk: Iterator[Record]) -> tuple[list[Record], bool]:
        """The next batch_bytes of records from a journal read (in a worker thread), and
        whether the read may hold more."""
        records: list[Record] = []
        size = 0
        for record in disk:
            records.append(record)
            size += record_bytes(len(record.payload))
            if size >= self.batch_bytes:
                return records, True
        return records, False

    @staticmethod
    def _until_load(records: list[Record]) -> list[Record]:
        """A record naming a load file starts its own message, preceded by the file."""
        for index, record in enumerate(records):
            if index > 0 and LOADS_MARKER in record.payload:
                return records[:index]
        if len(records) > 1 and LOADS_MARKER in records[0].payload:
            return records[:1]
        return records

    async def _load_file_of(self, record: Record) -> AsyncIterator[replication_pb2.FollowMessage]:
        try:
            command = decode_command(record.payload)
        except UndecodableRecord:
            return  # not ours to judge here: the follower reports it
        if not isinstance(command, BulkLoad) or not command.stored_file:
            return
        durability = self.durability
        assert durability is not None
        path = durability.data_dir / command.stored_file
        async for offset, data, last in _file_chunks(path):
            yield self._message(
                load_file=replication_pb2.LoadFileChunk(
                    relative_path=command.stored_file, offset=offset, data=data, last=last
                )
            )

    async def _snapshot_after(
        self, link: FollowerLink, wanted: int
    ) -> AsyncIterator[replication_pb2.FollowMessage]:
        """The newest snapshot, for a follower whose record `wanted - 1` the journal (or the
        load files) no longer has: the snapshot must cover it."""
        durability = self.durability
        assert durability is not None
        snapshots = list_snapshots(durability.data_dir)
        if not snapshots or snapshots[-1][0] < wanted - 1:
            raise ReplicationRefused(
                f"record {wanted - 1} is neither in the journal nor covered by a snapshot"
            )
        sequence, path = snapshots[-1]
        log.info(
            "follower %s needs record %d, which the journal no longer holds: sending %s",
            link.follower_id,
            wanted,
            path.name,
        )
        total = path.stat().st_size
        async for offset, data, last in _file_chunks(path):
            yield self._message(
                snapshot=replication_pb2.SnapshotChunk(
                    last_sequence=sequence, offset=offset, data=data, last=last, total_bytes=total
                )
            )
        link.sent_sequence = sequence


async def _file_chunks(path: Path) -> AsyncIterator[tuple[int, bytes, bool]]:
    """(offset, bytes, is_last) pieces of a file, read off the loop. The file stays open
    throughout, so a snapshot pruned meanwhile is still read whole."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        total = os.fstat(fd).st_size
        offset = 0
        while True:
            data = await asyncio.to_thread(os.pread, fd, FILE_CHUNK_BYTES, offset)
            last = offset + len(data) >= total or not data
            yield offset, data, last
            offset += len(data)
            if last:
                return
    finally:
        os.close(fd)
