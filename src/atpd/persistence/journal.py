"""The write-ahead journal: segment files of framed records, written with group commit.

Threading model. Everything except the disk I/O runs on the asyncio loop thread (the single
writer). `append` only encodes into an in-memory batch. The flusher, a chain of loop callbacks
(no task: a step costs one handle), hands the whole batch to the journal's disk thread
(journal_worker.WorkerThread: one queue put there, one call_soon_threadsafe back), which writes
it (and fsyncs it, by policy); appends that arrive meanwhile form the next batch, so many
records share one fsync, and the callers of a batch are woken together. While a job is in
flight the worker thread owns the open segment (journal_worker.SegmentWriter); the loop thread
touches it only when no job is in flight. Under FsyncPolicy.NONE (no fsync at all) the flusher
writes each batch on the loop itself: cheaper than the hand-off to the thread.

Failure model. Any OSError during write or fsync moves the journal to FAILED: every waiter not
yet acknowledged, and every later `append`/`wait_durable`, raises JournalUnavailable, so the
caller rolls back exactly what was never acknowledged. The failed batch's bytes are cut off the
file at once (best effort) and again by `try_reopen`, so a record whose caller was told "failed"
is never replayed by recovery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from atpd.persistence.dirlock import release_directory_lock
from atpd.persistence.framing import MAX_PAYLOAD_BYTES, Record, encode_record_into, record_bytes
from atpd.persistence.journal_errors import JournalBacklogFull, JournalUnavailable
from atpd.persistence.journal_scan import SEGMENT_COUNT_MAX, read_records_after, segment_path
from atpd.persistence.journal_worker import (
    ActiveSegment,
    SegmentChunk,
    SegmentWriter,
    WorkerThread,
    WriteJob,
    WriteOutcome,
    open_tail,
)

__all__ = ["FsyncPolicy", "Journal"]

logger = logging.getLogger(__name__)

SYNC_INTERVAL_S_DEFAULT = 1.0
MAX_PENDING_BYTES_DEFAULT = 256 * 1024 * 1024
# Group commit: before taking a batch, the flusher lets the loop run whatever else is ready
# (requests that arrived in the same wake-up append their records meanwhile), so they share one
# write and one fsync. It waits at most this many loop iterations (a loop that is never idle
# still flushes) ...
GROUP_COMMIT_MAX_ITERATIONS = 16
# ... and no longer once this much is pending (one big write is as good as it gets).
GROUP_COMMIT_MAX_BYTES = 1 << 20


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # acknowledge after fsync: nothing acknowledged is lost on power failure
    EVERYSEC = "everysec"  # acknowledge after write; fsync at most once a second
    NONE = "none"  # acknowledge after write; the OS decides when to flush


class Journal:
    """Append-only journal with group commit. Create it with `Journal.open`."""

    def __init__(
        self,
        *,
        directory: Path,
        fsync_policy: FsyncPolicy,
        segment_bytes: int,
        max_pending_bytes: int,
        sync_interval_s: float,
        sync_function: Callable[[int], None],
        lock_fd: int,
        segment_first_sequences: list[int],
        next_sequence: int,
        active: ActiveSegment | None,
        recovered_records: list[Record] | None = None,
        recovered_after: int = 0,
    ) -> None:
        assert segment_bytes > 0
        assert max_pending_bytes >= record_bytes(MAX_PAYLOAD_BYTES)
        assert next_sequence >= 1
        assert active is None or active.first_sequence == segment_first_sequences[-1]
        self._directory = directory
        self._fsync_policy = fsync_policy
        self._segment_bytes = segment_bytes
        self._max_pending_bytes = max_pending_bytes
        self._sync_interval_s = sync_interval_s
        self._lock_fd: int | None = lock_fd
        # Batches go to `_worker`, the rare other disk work (reopen, final fsync) here: only with
        # no batch in flight, so one thread at a time owns the writer.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="atpd-journal"
        )
        self._worker = WorkerThread("atpd-journal-writer")
        weakref.finalize(self, self._worker.stop)  # an abandoned journal's thread ends too

        # Owned by the worker thread while a job is in flight.
        self._writer = SegmentWriter(
            directory,
            sync_segments=fsync_policy is not FsyncPolicy.NONE,
            sync_function=sync_function,
            active=active,
        )

        # Owned by the loop thread.
        self._segment_first_sequences = segment_first_sequences
        if segment_first_sequences:
            self._tail_first_sequence = segment_first_sequences[-1]
        else:
            self._tail_first_sequence = next_sequence
        self._tail_bytes = 0 if active is None else active.written_bytes
        self._pending: list[SegmentChunk] = []
        self._pending_bytes = 0
        self._last_sequence = next_sequence - 1
        self._written_sequence = next_sequence - 1
        self._synced_sequence = next_sequence - 1
        self._durable_sequence = next_sequence - 1
        # Callers waiting for records not yet in a job, and for the records of the job in
        # flight: every waiter's record is in one or the other (sequence > durable_sequence).
        self._waiting: list[asyncio.Future[None]] = []
        self._waiting_in_flight: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # The flusher: a scheduled step (waiting for the loop to be idle), or a job in flight.
        self._flush_step_handle: asyncio.Handle | None = None
        self._idle_iterations = 0
        self._in_flight: WriteJob | None = None
        self._flusher_idle: list[asyncio.Future[None]] = []  # aclose waits on these
        self._sync_timer: asyncio.TimerHandle | None = None
        self._sync_due = False
        self._failure: str | None = None
        self._failed_job: WriteOutcome | None = None
        self._closing = False
        self._closed = False

        # Counters for tests and metrics: batches written, records written (fsyncs: see
        # fsync_count). records_count / fsync_count is the group commit's merge factor.
        self.batch_count = 0
        self.records_count = 0

        # The records after `recovered_after` as the opening scan decoded and checked them,
        # handed once to records_after (recovery) so the tail is not read and checked twice.
        self._recovered_records = recovered_records
        self._recovered_after = recovered_after

    # ----------------------------------------------------------------- open and recovery

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        fsync_policy: FsyncPolicy,
        segment_bytes: int,
        repair: bool = False,
        snapshot_sequence: int = 0,
        keep_records: bool = False,
        max_pending_bytes: int = MAX_PENDING_BYTES_DEFAULT,
        sync_interval_s: float = SYNC_INTERVAL_S_DEFAULT,
        sync_function: Callable[[int], None] = os.fdatasync,
    ) -> Journal:
        """Validate the journal in `directory` and open it for appending.

        A torn tail is truncated with a warning. Corruption in the middle raises JournalCorrupt
        unless `repair`, which backs the damage up and cuts the journal there.
        `snapshot_sequence` is the last sequence the loaded snapshot covers: the journal
        continues after it even if its own tail was lost, and a gap between the two raises.
        `keep_records` (recovery): the records after `snapshot_sequence` that the opening scan
        decodes and checks are kept for `records_after`, which then does not read them again.
        """
        assert segment_bytes > 0, segment_bytes
        assert snapshot_sequence >= 0, snapshot_sequence
        assert sync_interval_s > 0, sync_interval_s
        lock_fd, segments, next_sequence, records, active = open_tail(
            directory, repair, snapshot_sequence, keep_records
        )
        return cls(
            directory=directory,
            fsync_policy=fsync_policy,
            segment_bytes=segment_bytes,
            max_pending_bytes=max_pending_bytes,
            sync_interval_s=sync_interval_s,
            sync_function=sync_function,
            lock_fd=lock_fd,
            segment_first_sequences=segments,
            next_sequence=next_sequence,
            active=active,
            recovered_records=records,
            recovered_after=snapshot_sequence,
        )

    def records_after(self, sequence: int) -> Iterator[Record]:
        """Yield the records after `sequence` (a snapshot's last sequence), for recovery.

        Call it before appending. The first call for the snapshot's sequence of a journal
        opened with `keep_records` gets the records the opening scan kept (then released);
        any other reads the segment files again.
        """
        assert sequence >= 0, sequence
        assert not self._flushing and not self._pending, "records_after is for recovery"
        records, self._recovered_records = self._recovered_records, None
        if records is not None and sequence == self._recovered_after:
            return iter(records)
        return read_records_after(
            self._directory, list(self._segment_first_sequences), self._last_sequence, sequence
        )

    # ----------------------------------------------------------------- state

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._fsync_policy

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record appended (acknowledged or not)."""
        return self._last_sequence

    @property
    def durable_sequence(self) -> int:
        """Everything up to here is acknowledged: fsynced under ALWAYS, written otherwise."""
        return self._durable_sequence

    @property
    def synced_sequence(self) -> int:
        """Everything up to here has been fsynced."""
        return self._synced_sequence

    @property
    def pending_bytes(self) -> int:
        """Bytes appended but not yet handed to the disk."""
        return self._pending_bytes

    @property
    def max_pending_bytes(self) -> int:
        """Bound on pending_bytes: an append past it raises JournalBacklogFull."""
        return self._max_pending_bytes

    @property
    def segment_bytes(self) -> int:
        return self._segment_bytes

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def failure_reason(self) -> str | None:
        return self._failure

    @property
    def segment_count(self) -> int:
        return len(self._segment_first_sequences)

    @property
    def fsync_count(self) -> int:
        """Fsyncs of segment data so far, for tests and metrics."""
        return self._writer.fsync_count

    # ----------------------------------------------------------------- writing

    def append(self, payload: bytes, timestamp_ms: int) -> int:
        """Queue one record and return its sequence. Never waits for the disk.

        Must run on the event loop. Raises JournalUnavailable when the journal has failed or
        is closing (the caller rolls back), JournalBacklogFull when too much is pending.
        """
        if self._failure is not None:
            raise JournalUnavailable(self._failure)
        if self._closing:
            raise JournalUnavailable(f"journal {self._directory} is closed")
        assert len(payload) <= MAX_PAYLOAD_BYTES, len(payload)
        size_bytes = record_bytes(len(payload))
        if self._pending_bytes + size_bytes > self._max_pending_bytes:
            raise JournalBacklogFull(
                f"journal backlog full: {self._pending_bytes} bytes pending, "
                f"limit {self._max_pending_bytes}"
            )
        if self._loop is None:
            self._bind_loop()  # bound once; _kick_flusher checks the loop again per batch

        sequence = self._last_sequence + 1
        if self._tail_bytes >= self._segment_bytes:
            # Rotation happens between records, so a segment exceeds segment_bytes by at most
            # one record.
            self._tail_first_sequence = sequence
            self._tail_bytes = 0
            self._segment_first_sequences.append(sequence)
        elif not self._segment_first_sequences:
            self._segment_first_sequences.append(self._tail_first_sequence)
        if not self._pending or (
            self._pending[-1].segment_first_sequence != self._tail_first_sequence
        ):
            self._pending.append(SegmentChunk(self._tail_first_sequence, bytearray(), sequence))
        chunk = self._pending[-1]
        encode_record_into(chunk.data, sequence, timestamp_ms, payload)
        chunk.last_sequence = sequence
        self._tail_bytes += size_bytes
        self._pending_bytes += size_bytes
        self._last_sequence = sequence
        self._kick_flusher()
        assert self._segment_first_sequences[-1] == self._tail_first_sequence
        return sequence

    async def wait_durable(self, sequence: int) -> None:
        """Return once `sequence` is acknowledged under the fsync policy.

        Raises JournalUnavailable if the journal failed before acknowledging it. Call it right
        after `append`, with no await in between: try_reopen hands the sequences of failed
        records out again, so a wait registered only after a failure and a reopen could
        mistake someone else's record for its own.
        """
        assert sequence >= 1, sequence
        if sequence <= self._durable_sequence:
            return
        if self._failure is not None:
            raise JournalUnavailable(self._failure)
        assert sequence <= self._last_sequence, (sequence, self._last_sequence)
        # Bound by the append this waits for (asyncio.get_running_loop costs a system call).
        loop = self._loop if self._loop is not None else self._bind_loop()
        future: asyncio.Future[None] = loop.create_future()
        in_flight = self._in_flight
        if in_flight is not None and sequence <= in_flight.last_sequence:
            self._waiting_in_flight.append(future)
        else:
            self._waiting.append(future)  # pending: the next job takes it (and this waiter)
        await future

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        assert self._loop is loop, "a journal belongs to one event loop"
        return loop

    @property
    def _flushing(self) -> bool:
        return self._flush_step_handle is not None or self._in_flight is not None

    def _kick_flusher(self) -> None:
        if self._flushing or self._failure is not None:
            return
        self._idle_iterations = 0
        self._flush_step_handle = self._bind_loop().call_soon(self._flush_step)

    def _take_job(self) -> WriteJob | None:
        policy_sync = self._fsync_policy is FsyncPolicy.ALWAYS
        if self._pending:
            chunks = self._pending
            self._pending = []
            self._pending_bytes = 0
            sync = policy_sync or self._sync_due
            job = WriteJob(chunks, sync, chunks[-1].last_sequence)
        elif self._sync_due and self._synced_sequence < self._written_sequence:
            job = WriteJob([], True, self._written_sequence)
        else:
            return None
        if job.sync:
            self._sync_due = False
        return job

    def _flush_step(self) -> None:
        """Group commit: while other callbacks are ready (woken requests, which append meanwhile)
        step again, at most GROUP_COMMIT_MAX_ITERATIONS times, so they share one fsync; an idle
        loop flushes at once. asyncio has no public "is anything ready" query: the standard
        loop's queue is read (`_ready`); uvloop's flushes at once."""
        self._flush_step_handle = None
        try:
            loop = self._loop or self._bind_loop()  # bound by the kick: no syscall per step
            if (
                self._pending
                and self._idle_iterations < GROUP_COMMIT_MAX_ITERATIONS
                and getattr(loop, "_ready", None)
                and self._pending_bytes < GROUP_COMMIT_MAX_BYTES
                and not self._closing
            ):
                self._idle_iterations += 1
                self._flush_step_handle = loop.call_soon(self._flush_step)
                return
            job = self._take_job()
            if job is None:
                self._notify_flusher_idle()
                return
            self._waiting_in_flight, self._waiting = self._waiting, []
            if self._fsync_policy is FsyncPolicy.NONE:
                # No fsync anywhere under NONE: a write lands in the page cache in
                # microseconds, less than the thread hand-off per batch costs, so it runs
                # on the loop (as Redis writes its AOF).
                self._job_done(job, self._writer.run_job(job), None)
                return
            self._worker.submit(loop, self._writer.run_job, job, self._job_done)
            self._in_flight = job
        except Exception:
            logger.exception("journal flusher crashed")
            self._fail("journal flusher crashed (see log)", None)
            self._notify_flusher_idle()

    def _job_done(
        self, job: WriteJob, outcome: WriteOutcome | None, error: BaseException | None
    ) -> None:
        """Loop thread: the job came back from the disk thread (or ran on the loop: NONE)."""
        self._in_flight = None
        try:
            if outcome is None:
                raise RuntimeError("the journal's disk thread failed") from error
            self._complete_job(job, outcome)
        except Exception:
            logger.exception("journal flusher crashed")
            self._fail("journal flusher crashed (see log)", None)
        if self._failure is None and (self._pending or self._sync_due):
            self._kick_flusher()
        else:
            self._notify_flusher_idle()

    def _notify_flusher_idle(self) -> None:
        waiting, self._flusher_idle = self._flusher_idle, []
        _wake(waiting)

    def _complete_job(self, job: WriteJob, outcome: WriteOutcome) -> None:
        """Loop thread: publish what the worker made durable, or fail everything pending."""
        if outcome.error is not None:
            self._fail(outcome.error, outcome)
            return
        self.batch_count += 1
        assert job.last_sequence >= self._written_sequence
        self.records_count += job.last_sequence - self._written_sequence
        self._written_sequence = job.last_sequence
        if job.sync:
            self._synced_sequence = job.last_sequence
        if self._fsync_policy is FsyncPolicy.ALWAYS:
            self._durable_sequence = self._synced_sequence
        else:
            self._durable_sequence = self._written_sequence
        assert self._synced_sequence <= self._written_sequence <= self._last_sequence
        waiting, self._waiting_in_flight = self._waiting_in_flight, []
        _wake(waiting)
        if (
            self._fsync_policy is FsyncPolicy.EVERYSEC
            and self._synced_sequence < self._written_sequence
            and self._sync_timer is None
            and not self._sync_due
        ):
            loop = self._bind_loop()
            self._sync_timer = loop.call_later(self._sync_interval_s, self._on_sync_timer)

    def _on_sync_timer(self) -> None:
        self._sync_timer = None
        if self._failure is not None or self._closed:
            return
        self._sync_due = True
        self._kick_flusher()

    def _fail(self, reason: str, outcome: WriteOutcome | None) -> None:
        if self._failure is None:
            logger.error("journal %s failed: %s", self._directory, reason)
            self._failure = reason
            self._failed_job = outcome
        self._pending = []
        self._pending_bytes = 0
        self._sync_due = False
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        waiters = self._waiting_in_flight + self._waiting
        self._waiting_in_flight = []
        self._waiting = []
        for future in waiters:
            if not future.done():
                future.set_exception(JournalUnavailable(reason))

    # ----------------------------------------------------------------- failure

    async def try_reopen(self) -> bool:
        """After a failure: cut back to the last acknowledged record and probe the disk.

        Returns True when the journal accepts appends again, continuing right after
        `durable_sequence`; False when the disk still refuses (call again later).
        """
        if self._failure is None:
            return True
        assert not self._flushing, "a failed journal has no flusher running"
        assert not self._closed
        if self._failed_job is None:
            # The flusher was cancelled or crashed: what reached the disk is unknown, so only
            # a restart (which rescans the files) can continue safely.
            return False
        outcome = self._failed_job
        loop = self._bind_loop()
        reopened = await loop.run_in_executor(self._executor, self._writer.reopen, outcome)
        if not reopened:
            return False
        assert outcome is self._failed_job
        if outcome.start is None:
            self._tail_first_sequence = self._durable_sequence + 1
            self._tail_bytes = 0
            self._segment_first_sequences = []
        else:
            self._tail_first_sequence = outcome.start.segment_first_sequence
            self._tail_bytes = outcome.start.offset
            self._segment_first_sequences = [
                first
                for first in self._segment_first_sequences
                if first <= outcome.start.segment_first_sequence
            ]
        self._last_sequence = self._durable_sequence
        self._written_sequence = self._durable_sequence
        self._synced_sequence = self._durable_sequence
        self._failure = None
        self._failed_job = None
        logger.warning(
            "journal %s writable again after a failure; next sequence %d",
            self._directory,
            self._last_sequence + 1,
        )
        return True

    # ----------------------------------------------------------------- maintenance

    def remove_segments_before(self, sequence: int) -> int:
        """Delete segments whose records are all <= `sequence` (covered by a durable snapshot).

        Only acknowledged records count as covered, and the tail segment is always kept.
        Call it with the oldest snapshot you keep, so falling back to it stays possible.
        """
        assert sequence >= 0, sequence
        limit = min(sequence, self._durable_sequence)
        removed = 0
        for _ in range(len(self._segment_first_sequences)):
            firsts = self._segment_first_sequences
            if len(firsts) < 2 or firsts[1] - 1 > limit:
                break
            segment_path(self._directory, firsts[0]).unlink(missing_ok=True)
            firsts.pop(0)
            removed += 1
        assert removed == 0 or self._segment_first_sequences
        return removed

    async def aclose(self) -> None:
        """Flush what is pending, fsync (unless policy NONE), release the directory."""
        if self._closed:
            return
        self._closing = True
        # Appends are refused now: the flusher ends once the backlog is written.
        for _ in range(SEGMENT_COUNT_MAX):
            if not self._flushing:
                break
            idle: asyncio.Future[None] = self._bind_loop().create_future()
            self._flusher_idle.append(idle)
            await idle
        if self._needs_final_sync():
            loop = self._bind_loop()
            if await loop.run_in_executor(self._executor, self._writer.final_sync):
                self._synced_sequence = self._written_sequence
        self._close_resources()

    def close(self) -> None:
        """Synchronous close, for use when no flush is in flight (else use aclose)."""
        if self._closed:
            return
        assert not self._flushing, "flush in flight: use aclose"
        self._closing = True
        if self._needs_final_sync() and self._writer.final_sync():
            self._synced_sequence = self._written_sequence
        self._close_resources()

    def _needs_final_sync(self) -> bool:
        return (
            self._failure is None
            and self._fsync_policy is not FsyncPolicy.NONE
            and self._synced_sequence < self._written_sequence
        )

    def _close_resources(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._waiting or self._waiting_in_flight:
            self._fail(f"journal {self._directory} closed", None)
        self._worker.join()
        self._executor.shutdown(wait=True)
        self._writer.close()
        if self._lock_fd is not None:
            release_directory_lock(self._lock_fd)
            self._lock_fd = None
        self._closed = True


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a caller that gave up (cancelled) left its future done
            future.set_result(None)
