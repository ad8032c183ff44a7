"""The journal's worker-thread side: the open tail segment and every disk write on it.

`Journal` (journal.py) runs on the event loop and hands whole batches (`WriteJob`) to its one
worker thread, which calls `SegmentWriter.run_job`: write the chunks, rotating segments as
planned, then fsync. While a job is in flight the worker thread owns `SegmentWriter.active`;
the loop thread touches it only when no job is in flight. A failed job is cut back off the
disk here, and `reopen` probes the disk before the journal accepts appends again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atpd.persistence.dirlock import acquire_directory_lock, release_directory_lock
from atpd.persistence.framing import Record
from atpd.persistence.fsutil import fsync_directory, make_directory_durable
from atpd.persistence.journal_scan import recover_directory, segment_path

__all__ = [
    "PROBE_FILE_NAME",
    "ActiveSegment",
    "SegmentChunk",
    "SegmentPosition",
    "SegmentWriter",
    "WorkerThread",
    "WriteJob",
    "WriteOutcome",
    "open_tail",
]

# Logged under the journal's name, as before the split: log filters and alerts key on it.
logger = logging.getLogger("atpd.persistence.journal")

PROBE_FILE_NAME = "journal.probe"
# reopen writes this much to a scratch file before declaring the disk usable again.
PROBE_BYTES = 64 * 1024


def _describe_os_error(operation: str, path: Path, error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, f"errno {error.errno}")
    return f"journal {operation} failed on {path}: {code} ({error.strerror})"


def _write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    written = 0
    # Every pass writes at least one byte (a zero-byte write raises), which bounds the loop.
    for _ in range(len(data) + 1):
        if written == len(data):
            return
        count = os.pwrite(fd, view[written:], offset + written)
        if count <= 0:
            raise OSError(errno.EIO, "write made no progress")
        written += count
    raise AssertionError("unreachable: every write makes progress")


@dataclass(slots=True)
class ActiveSegment:
    first_sequence: int
    path: Path
    fd: int
    written_bytes: int


@dataclass(slots=True)
class SegmentChunk:
    """Encoded records bound for one segment."""

    segment_first_sequence: int
    data: bytearray
    last_sequence: int


@dataclass(frozen=True, slots=True)
class SegmentPosition:
    segment_first_sequence: int
    offset: int


@dataclass(slots=True)
class WriteJob:
    chunks: list[SegmentChunk]
    sync: bool
    last_sequence: int  # covered once the job succeeds


@dataclass(slots=True)
class WriteOutcome:
    error: str | None = None
    # Where the journal stood before the job: a failed job is cut back to here.
    start: SegmentPosition | None = None
    created: list[Path] = field(default_factory=list)


def open_tail(
    directory: Path, repair: bool, snapshot_sequence: int, keep_records: bool
) -> tuple[int, list[int], int, list[Record] | None, ActiveSegment | None]:
    """Lock the journal directory, validate (and fix up) its segments, open the last one for
    appending: (lock fd, first sequence of each segment, next sequence, the records kept for
    recovery, the open tail). See Journal.open."""
    make_directory_durable(directory)
    lock_fd = acquire_directory_lock(directory)
    try:
        (directory / PROBE_FILE_NAME).unlink(missing_ok=True)
        segments, next_sequence, records = recover_directory(
            directory, repair, snapshot_sequence, keep_records
        )
        active: ActiveSegment | None = None
        if segments:
            last = segments[-1]
            fd = os.open(last.path, os.O_WRONLY)
            active = ActiveSegment(last.first_sequence, last.path, fd, last.valid_bytes)
    except BaseException:
        release_directory_lock(lock_fd)
        raise
    logger.info(
        "journal %s opened: %d segments, next sequence %d", directory, len(segments), next_sequence
    )
    return lock_fd, [info.first_sequence for info in segments], next_sequence, records, active


class SegmentWriter:
    """Writes batches into segment files; every method runs on the journal's worker thread
    (or on the loop thread when no job is in flight)."""

    def __init__(
        self,
        directory: Path,
        *,
        sync_segments: bool,
        sync_function: Callable[[int], None],
        active: ActiveSegment | None,
    ) -> None:
        self._directory = directory
        # False under FsyncPolicy.NONE: no fsync on rotation nor of the directory.
        self._sync_segments = sync_segments
        self._sync_function = sync_function
        self.active = active
        # Fsyncs of segment data, for tests and metrics.
        self.fsync_count = 0

    def run_job(self, job: WriteJob) -> WriteOutcome:
        """Worker thread: write the batch, rotating segments as planned, then fsync."""
        start: SegmentPosition | None = None
        if self.active is not None:
            start = SegmentPosition(self.active.first_sequence, self.active.written_bytes)
        outcome = WriteOutcome(start=start)
        sync_policy = self._sync_segments
        operation = "write"
        path = self._directory
        try:
            for chunk in job.chunks:
                if self.active is None or (
                    self.active.first_sequence != chunk.segment_first_sequence
                ):
                    operation = "segment rotation"
                    if self.active is not None:
                        path = self.active.path
                        if sync_policy:
                            # The next segment must never be on disk while this one is not.
                            self._sync_function(self.active.fd)
                            self.fsync_count += 1
                        os.close(self.active.fd)
                        self.active = None
                    path = segment_path(self._directory, chunk.segment_first_sequence)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                    fd = os.open(path, flags, 0o644)
                    outcome.created.append(path)
                    self.active = ActiveSegment(chunk.segment_first_sequence, path, fd, 0)
                    if sync_policy:
                        fsync_directory(self._directory)
                operation = "write"
                path = self.active.path
                _write_all(self.active.fd, chunk.data, self.active.written_bytes)
                self.active.written_bytes += len(chunk.data)
            if job.sync:
                assert self.active is not None
                operation = "fsync"
                path = self.active.path
                self._sync_function(self.active.fd)
                self.fsync_count += 1
        except OSError as error:
            outcome.error = _describe_os_error(operation, path, error)
            try:
                self.roll_back(outcome)
            except OSError as rollback_error:
                # try_reopen will cut the file again; until then recovery may see the
                # unacknowledged records, which is why this is logged loudly.
                logger.error("journal rollback failed: %s", rollback_error)
        return outcome

    def roll_back(self, outcome: WriteOutcome) -> None:
        """Worker thread: cut the journal back to where it stood before the failed job."""
        if self.active is not None:
            os.close(self.active.fd)
            self.active = None
        start = outcome.start
        for created in outcome.created:
            if start is None or created != segment_path(
                self._directory, start.segment_first_sequence
            ):
                created.unlink(missing_ok=True)
        if start is not None:
            path = segment_path(self._directory, start.segment_first_sequence)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, start.offset)
            finally:
                os.close(fd)
        outcome.created = []

    def reopen(self, outcome: WriteOutcome) -> bool:
        """Worker thread: roll back the failed job, probe the disk, reopen the tail segment."""
        try:
            self.roll_back(outcome)
            probe_path = self._directory / PROBE_FILE_NAME
            fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, bytes(PROBE_BYTES), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
                probe_path.unlink(missing_ok=True)
            start = outcome.start
            if start is not None:
                path = segment_path(self._directory, start.segment_first_sequence)
                fd = os.open(path, os.O_WRONLY)
                self.active = ActiveSegment(start.segment_first_sequence, path, fd, start.offset)
                self._sync_function(fd)
                self.fsync_count += 1
            fsync_directory(self._directory)
        except OSError as error:
            logger.warning("journal %s still unavailable: %s", self._directory, error)
            if self.active is not None:
                os.close(self.active.fd)
                self.active = None
            return False
        return True

    def final_sync(self) -> bool:
        """Fsync the tail segment on close; False (logged) if the disk refuses."""
        assert self.active is not None
        try:
            self._sync_function(self.active.fd)
        except OSError as error:
            logger.error("%s", _describe_os_error("final fsync", self.active.path, error))
            return False
        self.fsync_count += 1
        return True

    def close(self) -> None:
        """Close the tail segment's file (no fsync: see final_sync)."""
        if self.active is not None:
            os.close(self.active.fd)
            self.active = None


JobDone = Callable[[WriteJob, WriteOutcome | None, BaseException | None], None]
_Item = tuple[asyncio.AbstractEventLoop, Callable[[WriteJob], WriteOutcome], WriteJob, JobDone]


class WorkerThread:
    """The journal's disk thread: runs the jobs handed to it one at a time, in order, and
    reports each back on the loop with one `call_soon_threadsafe` (no executor futures, no
    extra loop callbacks: the hand-off is what every batch pays). Started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._items: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[WriteJob], WriteOutcome],
        job: WriteJob,
        done: JobDone,
    ) -> None:
        """Run `run(job)` on the thread, then `done(job, outcome, None)` on `loop` (or
        `done(job, None, error)` if `run` raised)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=_serve, args=(self._items,), name=self._name, daemon=True
            )
            self._thread.start()
        self._items.put((loop, run, job, done))

    def stop(self) -> None:
        """Let the thread finish the jobs handed to it, then end (no wait)."""
        self._items.put(None)

    def join(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _serve(items: queue.SimpleQueue[_Item | None]) -> None:
    # Bounded by the items handed over: each get either ends the thread or runs one job.
    while (item := items.get()) is not None:
        loop, run, job, done = item
        outcome: WriteOutcome | None = None
        error: BaseException | None = None
        try:
            outcome = run(job)
        except BaseException as failure:  # a bug: the journal fails and logs it, on the loop
            error = failure
        try:
            loop.call_soon_threadsafe(done, job, outcome, error)
        except RuntimeError:
            return  # the loop is closed: nobody is left to tell
        del item, loop, run, job, done, outcome, error
