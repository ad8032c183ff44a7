"""The write-ahead journal: segment files of framed records, written with group commit.

Threading model. Everything except the disk I/O runs on the asyncio loop thread (the single
writer). `append` only encodes into an in-memory batch. One flusher task at a time hands the
whole batch to a dedicated one-thread executor, which writes it (and fsyncs it, by policy);
appends that arrive meanwhile form the next batch, so many records share one fsync. While a
job is in flight the worker thread owns `_active` (the open segment); the loop thread touches
it only when no job is in flight.

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
import errno
import fcntl
import heapq
import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from atpd.persistence.framing import (
    MAX_PAYLOAD_BYTES,
    Record,
    ScanState,
    encode_record_into,
    record_bytes,
    scan_records,
)
from atpd.persistence.fsutil import fsync_directory, make_directory_durable

__all__ = [
    "FsyncPolicy",
    "Journal",
    "JournalBacklogFull",
    "JournalCorrupt",
    "JournalProblem",
    "JournalScan",
    "JournalUnavailable",
    "ProblemKind",
    "Record",
    "SegmentInfo",
    "acquire_directory_lock",
    "release_directory_lock",
    "repair_journal",
    "scan_journal",
    "segment_path",
]

logger = logging.getLogger(__name__)

SEGMENT_NAME = re.compile(r"^journal-(\d{20})\.seg$")
LOCK_FILE_NAME = "journal.lock"
PROBE_FILE_NAME = "journal.probe"
# try_reopen writes this much to a scratch file before declaring the disk usable again.
PROBE_BYTES = 64 * 1024
SYNC_INTERVAL_S_DEFAULT = 1.0
MAX_PENDING_BYTES_DEFAULT = 256 * 1024 * 1024
# A flusher task writes at most this many batches, then hands over to a fresh task, so no
# loop in the flusher is unbounded.
BATCHES_PER_FLUSH_TASK = 1024
# Bounds directory listings and the segment loops that walk them.
SEGMENT_COUNT_MAX = 1_000_000


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"  # acknowledge after fsync: nothing acknowledged is lost on power failure
    EVERYSEC = "everysec"  # acknowledge after write; fsync at most once a second
    NONE = "none"  # acknowledge after write; the OS decides when to flush


class JournalUnavailable(Exception):
    """A write or fsync failed (or the journal is closed): nothing unacknowledged is durable."""


class JournalBacklogFull(JournalUnavailable):
    """The pending batch is over its bound. The journal is healthy: retry later."""


class JournalCorrupt(Exception):
    """Acknowledged data is damaged in the middle of the journal; start-up must not guess."""

    def __init__(self, path: Path, offset: int, detail: str) -> None:
        super().__init__(f"journal corrupt in {path} at byte offset {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail


class ProblemKind(enum.Enum):
    TORN_TAIL = "torn_tail"  # end of the last segment cut short: safe to truncate
    CORRUPT_RECORD = "corrupt_record"  # a bad record with more data after it
    SEQUENCE_GAP = "sequence_gap"  # a valid record with an unexpected sequence number
    SEGMENT_GAP = "segment_gap"  # a segment whose name does not continue the previous one
    # A well-framed record whose content cannot be replayed (found by verify, not by the scan).
    INVALID_RECORD = "invalid_record"


@dataclass(frozen=True, slots=True)
class JournalProblem:
    kind: ProblemKind
    path: Path
    offset: int
    detail: str
    dropped_bytes: int  # bytes from `offset` to the end of `path`


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    path: Path
    first_sequence: int
    last_sequence: int  # first_sequence - 1 when the segment holds no valid record
    valid_bytes: int


@dataclass(frozen=True, slots=True)
class JournalScan:
    """The result of validating every segment of a journal directory.

    `usable_segments` are the segments that survive a repair: all before the problem, plus the
    damaged one cut at the problem offset (unless its very name is wrong). `later_segments`
    follow the problem and would be dropped by a repair.
    """

    directory: Path
    segment_count: int
    covered_segment_count: int  # listed but not read: wholly covered by the snapshot
    usable_segments: list[SegmentInfo]
    later_segments: list[Path]
    problem: JournalProblem | None
    record_count: int  # in the segments read
    first_record_sequence: int | None  # first record read
    last_record_sequence: int | None

    @property
    def next_sequence(self) -> int:
        if not self.usable_segments:
            return 1
        return self.usable_segments[-1].last_sequence + 1


def segment_path(directory: Path, first_sequence: int) -> Path:
    assert first_sequence >= 1, first_sequence
    return directory / f"journal-{first_sequence:020d}.seg"


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    segments: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        match = SEGMENT_NAME.fullmatch(entry.name)
        if match is not None and entry.is_file(follow_symlinks=False):
            segments.append((int(match.group(1)), Path(entry.path)))
        assert len(segments) <= SEGMENT_COUNT_MAX, "journal directory has too many segments"
    segments.sort()
    return segments


def scan_journal(directory: Path, *, covered_sequence: int = 0) -> JournalScan:
    """Validate the segments in `directory`; stop at the first problem.

    Segments whose records are all <= `covered_sequence` (already in the snapshot being
    loaded) are listed but not read: damage there cannot matter, and must not make a repair
    cut away the records after it that recovery does need.
    """
    assert covered_sequence >= 0, covered_sequence
    segments = _list_segments(directory)
    usable: list[SegmentInfo] = []
    later: list[Path] = []
    problem: JournalProblem | None = None
    record_count = 0
    first_record: int | None = None
    covered_count = 0
    expected_sequence: int | None = None
    for index, (first_sequence, path) in enumerate(segments):
        is_last = index == len(segments) - 1
        if not is_last and segments[index + 1][0] - 1 <= covered_sequence:
            next_first_sequence = segments[index + 1][0]
            info = SegmentInfo(path, first_sequence, next_first_sequence - 1, path.stat().st_size)
            usable.append(info)
            covered_count += 1
            expected_sequence = next_first_sequence
            continue
        if expected_sequence is not None and first_sequence != expected_sequence:
            problem = JournalProblem(
                kind=ProblemKind.SEGMENT_GAP,
                path=path,
                offset=0,
                detail=f"segment starts at sequence {first_sequence}, expected {expected_sequence}",
                dropped_bytes=path.stat().st_size,
            )
            later = [later_path for _, later_path in segments[index + 1 :]]
            break
        result = scan_records(
            path.read_bytes(),
            first_sequence=first_sequence,
            source_name=path.name,
            keep_payloads=False,
        )
        record_count += result.record_count
        if first_record is None and result.record_count > 0:
            first_record = first_sequence
        usable.append(SegmentInfo(path, first_sequence, result.last_sequence, result.valid_bytes))
        expected_sequence = result.last_sequence + 1
        if result.state is ScanState.CLEAN:
            continue
        assert result.problem_offset is not None
        if result.state is ScanState.TORN_TAIL and is_last:
            kind = ProblemKind.TORN_TAIL
            detail = result.problem_detail
        elif result.problem_is_sequence_gap:
            kind = ProblemKind.SEQUENCE_GAP
            detail = result.problem_detail
        else:
            kind = ProblemKind.CORRUPT_RECORD
            detail = result.problem_detail
            if result.state is ScanState.TORN_TAIL:
                detail += " (at the end of a segment that is not the last)"
        problem = JournalProblem(kind, path, result.problem_offset, detail, result.dropped_bytes)
        later = [later_path for _, later_path in segments[index + 1 :]]
        break

    last_record: int | None = None
    if record_count > 0:
        last_record = usable[-1].last_sequence
    if problem is None:
        assert len(usable) == len(segments)
    elif problem.kind is ProblemKind.SEGMENT_GAP:
        assert len(usable) + len(later) + 1 == len(segments)
    else:
        assert len(usable) + len(later) == len(segments)
    return JournalScan(
        directory=directory,
        segment_count=len(segments),
        covered_segment_count=covered_count,
        usable_segments=usable,
        later_segments=later,
        problem=problem,
        record_count=record_count,
        first_record_sequence=first_record,
        last_record_sequence=last_record,
    )


def _backup_path(path: Path, timestamp_ms: int) -> Path:
    # Bounded: a clash needs another backup of the same file in the same millisecond.
    for attempt in range(1000):
        candidate = path.with_name(f"{path.name}.bak-{timestamp_ms + attempt}")
        if not candidate.exists():
            return candidate
    raise AssertionError(f"no free backup name for {path}")


def _truncate_file(path: Path, size_bytes: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_journal(scan: JournalScan, *, backup: bool = True) -> list[Path]:
    """Cut the journal at `scan.problem`; return the backup files written.

    The damaged segment is copied to `<name>.bak-<timestamp_ms>` then truncated at the bad
    record; every later segment is renamed to a backup, which takes it out of the journal.
    """
    problem = scan.problem
    assert problem is not None, "nothing to repair"
    timestamp_ms = time.time_ns() // 1_000_000
    backups: list[Path] = []
    if problem.kind is ProblemKind.SEGMENT_GAP:
        # Its name breaks the sequence, so even an empty file there would still be a gap.
        target = _backup_path(problem.path, timestamp_ms)
        problem.path.rename(target)
        backups.append(target)
    else:
        if backup:
            target = _backup_path(problem.path, timestamp_ms)
            shutil.copyfile(problem.path, target)
            _truncate_file(target, target.stat().st_size)  # fsync the copy before cutting
            backups.append(target)
        _truncate_file(problem.path, problem.offset)
    for later_path in scan.later_segments:
        target = _backup_path(later_path, timestamp_ms)
        later_path.rename(target)
        backups.append(target)
    fsync_directory(scan.directory)
    assert len(backups) >= len(scan.later_segments)
    return backups


def acquire_directory_lock(directory: Path) -> int:
    """Hold an exclusive lock on the directory so two processes never write one journal."""
    fd = os.open(directory / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        message = f"journal directory {directory} is locked by another process"
        raise JournalUnavailable(message) from None
    return fd


def release_directory_lock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


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
class _ActiveSegment:
    first_sequence: int
    path: Path
    fd: int
    written_bytes: int


@dataclass(slots=True)
class _Chunk:
    """Encoded records bound for one segment."""

    segment_first_sequence: int
    data: bytearray
    last_sequence: int


@dataclass(frozen=True, slots=True)
class _Position:
    segment_first_sequence: int
    offset: int


@dataclass(slots=True)
class _Job:
    chunks: list[_Chunk]
    sync: bool
    last_sequence: int  # covered once the job succeeds


@dataclass(slots=True)
class _JobOutcome:
    error: str | None = None
    # Where the journal stood before the job: a failed job is cut back to here.
    start: _Position | None = None
    created: list[Path] = field(default_factory=list)


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
        active: _ActiveSegment | None,
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
        self._sync_function = sync_function
        self._lock_fd: int | None = lock_fd
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="atpd-journal"
        )

        # Owned by the worker thread while a job is in flight.
        self._active = active

        # Owned by the loop thread.
        self._segment_first_sequences = segment_first_sequences
        if segment_first_sequences:
            self._tail_first_sequence = segment_first_sequences[-1]
        else:
            self._tail_first_sequence = next_sequence
        self._tail_bytes = 0 if active is None else active.written_bytes
        self._pending: list[_Chunk] = []
        self._pending_bytes = 0
        self._last_sequence = next_sequence - 1
        self._written_sequence = next_sequence - 1
        self._synced_sequence = next_sequence - 1
        self._durable_sequence = next_sequence - 1
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        self._sync_due = False
        self._failure: str | None = None
        self._failed_job: _JobOutcome | None = None
        self._closing = False
        self._closed = False

        # Counters for tests and metrics: fsyncs of segment data, and batches written.
        self.fsync_count = 0
        self.batch_count = 0

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
        max_pending_bytes: int = MAX_PENDING_BYTES_DEFAULT,
        sync_interval_s: float = SYNC_INTERVAL_S_DEFAULT,
        sync_function: Callable[[int], None] = os.fdatasync,
    ) -> Journal:
        """Validate the journal in `directory` and open it for appending.

        A torn tail is truncated with a warning. Corruption in the middle raises JournalCorrupt
        unless `repair`, which backs the damage up and cuts the journal there.
        `snapshot_sequence` is the last sequence the loaded snapshot covers: the journal
        continues after it even if its own tail was lost, and a gap between the two raises.
        """
        assert segment_bytes > 0, segment_bytes
        assert snapshot_sequence >= 0, snapshot_sequence
        assert sync_interval_s > 0, sync_interval_s
        make_directory_durable(directory)
        lock_fd = acquire_directory_lock(directory)
        try:
            segments, next_sequence = _recover_directory(directory, repair, snapshot_sequence)
            active: _ActiveSegment | None = None
            if segments:
                last = segments[-1]
                fd = os.open(last.path, os.O_WRONLY)
                active = _ActiveSegment(last.first_sequence, last.path, fd, last.valid_bytes)
        except BaseException:
            release_directory_lock(lock_fd)
            raise
        logger.info(
            "journal %s opened: %d segments, next sequence %d",
            directory,
            len(segments),
            next_sequence,
        )
        return cls(
            directory=directory,
            fsync_policy=fsync_policy,
            segment_bytes=segment_bytes,
            max_pending_bytes=max_pending_bytes,
            sync_interval_s=sync_interval_s,
            sync_function=sync_function,
            lock_fd=lock_fd,
            segment_first_sequences=[info.first_sequence for info in segments],
            next_sequence=next_sequence,
            active=active,
        )

    def records_after(self, sequence: int) -> Iterator[Record]:
        """Yield the records after `sequence` (a snapshot's last sequence), for recovery.

        Reads the segment files; call it before appending.
        """
        assert sequence >= 0, sequence
        assert self._flush_task is None and not self._pending, "records_after is for recovery"
        firsts = list(self._segment_first_sequences)
        if sequence >= self._last_sequence:
            return
        first_available = firsts[0] if firsts else self._last_sequence + 1
        if sequence + 1 < first_available:
            # Asked for records the journal no longer (or never) had: recovery would be wrong.
            raise JournalCorrupt(
                segment_path(self._directory, first_available),
                0,
                f"records {sequence + 1}..{first_available - 1} are not in the journal",
            )
        for index, first_sequence in enumerate(firsts):
            if index + 1 < len(firsts):
                last_sequence = firsts[index + 1] - 1
            else:
                last_sequence = self._last_sequence
            if last_sequence <= sequence:
                continue
            path = segment_path(self._directory, first_sequence)
            result = scan_records(
                path.read_bytes(), first_sequence=first_sequence, source_name=str(path)
            )
            if result.state is not ScanState.CLEAN or result.last_sequence != last_sequence:
                offset = result.valid_bytes
                detail = result.problem_detail or f"segment ends at {result.last_sequence}"
                raise JournalCorrupt(path, offset, f"changed since open: {detail}")
            for record in result.records:
                if record.sequence > sequence:
                    yield record

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
        self._bind_loop()

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
            self._pending.append(_Chunk(self._tail_first_sequence, bytearray(), sequence))
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
        loop = self._bind_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (sequence, next(self._waiter_ids), future))
        await future

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        assert self._loop is loop, "a journal belongs to one event loop"
        return loop

    def _kick_flusher(self) -> None:
        if self._flush_task is not None or self._failure is not None:
            return
        loop = self._bind_loop()
        self._flush_task = loop.create_task(self._flush(), name="atpd-journal-flush")

    def _take_job(self) -> _Job | None:
        policy_sync = self._fsync_policy is FsyncPolicy.ALWAYS
        if self._pending:
            chunks = self._pending
            self._pending = []
            self._pending_bytes = 0
            sync = policy_sync or self._sync_due
            job = _Job(chunks, sync, chunks[-1].last_sequence)
        elif self._sync_due and self._synced_sequence < self._written_sequence:
            job = _Job([], True, self._written_sequence)
        else:
            return None
        if job.sync:
            self._sync_due = False
        return job

    async def _flush(self) -> None:
        loop = self._bind_loop()
        try:
            for _ in range(BATCHES_PER_FLUSH_TASK):
                job = self._take_job()
                if job is None:
                    break
                outcome = await loop.run_in_executor(self._executor, self._run_job, job)
                self._complete_job(job, outcome)
                if self._failure is not None:
                    break
        except asyncio.CancelledError:
            self._fail("journal flusher cancelled; write outcome unknown", None)
            raise
        except Exception:
            logger.exception("journal flusher crashed")
            self._fail("journal flusher crashed (see log)", None)
        finally:
            self._flush_task = None
        if self._pending or self._sync_due:
            self._kick_flusher()

    def _complete_job(self, job: _Job, outcome: _JobOutcome) -> None:
        """Loop thread: publish what the worker made durable, or fail everything pending."""
        if outcome.error is not None:
            self._fail(outcome.error, outcome)
            return
        self.batch_count += 1
        assert job.last_sequence >= self._written_sequence
        self._written_sequence = job.last_sequence
        if job.sync:
            self._synced_sequence = job.last_sequence
        if self._fsync_policy is FsyncPolicy.ALWAYS:
            self._durable_sequence = self._synced_sequence
        else:
            self._durable_sequence = self._written_sequence
        assert self._synced_sequence <= self._written_sequence <= self._last_sequence
        self._resolve_waiters()
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

    def _resolve_waiters(self) -> None:
        # Bounded by the number of waiters.
        for _ in range(len(self._waiters)):
            if self._waiters[0][0] > self._durable_sequence:
                break
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
            if not self._waiters:
                break

    def _fail(self, reason: str, outcome: _JobOutcome | None) -> None:
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
        waiters = self._waiters
        self._waiters = []
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(JournalUnavailable(reason))

    # ----------------------------------------------------------------- worker thread

    def _run_job(self, job: _Job) -> _JobOutcome:
        """Worker thread: write the batch, rotating segments as planned, then fsync."""
        start: _Position | None = None
        if self._active is not None:
            start = _Position(self._active.first_sequence, self._active.written_bytes)
        outcome = _JobOutcome(start=start)
        sync_policy = self._fsync_policy is not FsyncPolicy.NONE
        operation = "write"
        path = self._directory
        try:
            for chunk in job.chunks:
                if self._active is None or (
                    self._active.first_sequence != chunk.segment_first_sequence
                ):
                    operation = "segment rotation"
                    if self._active is not None:
                        path = self._active.path
                        if sync_policy:
                            # The next segment must never be on disk while this one is not.
                            self._sync_function(self._active.fd)
                            self.fsync_count += 1
                        os.close(self._active.fd)
                        self._active = None
                    path = segment_path(self._directory, chunk.segment_first_sequence)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                    fd = os.open(path, flags, 0o644)
                    outcome.created.append(path)
                    self._active = _ActiveSegment(chunk.segment_first_sequence, path, fd, 0)
                    if sync_policy:
                        fsync_directory(self._directory)
                operation = "write"
                path = self._active.path
                _write_all(self._active.fd, chunk.data, self._active.written_bytes)
                self._active.written_bytes += len(chunk.data)
            if job.sync:
                assert self._active is not None
                operation = "fsync"
                path = self._active.path
                self._sync_function(self._active.fd)
                self.fsync_count += 1
        except OSError as error:
            outcome.error = _describe_os_error(operation, path, error)
            try:
                self._roll_back(outcome)
            except OSError as rollback_error:
                # try_reopen will cut the file again; until then recovery may see the
                # unacknowledged records, which is why this is logged loudly.
                logger.error("journal rollback failed: %s", rollback_error)
        return outcome

    def _roll_back(self, outcome: _JobOutcome) -> None:
        """Worker thread: cut the journal back to where it stood before the failed job."""
        if self._active is not None:
            os.close(self._active.fd)
            self._active = None
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

    def _reopen_blocking(self) -> bool:
        """Worker thread: roll back the failed job, probe the disk, reopen the tail segment."""
        assert self._failed_job is not None
        outcome = self._failed_job
        try:
            self._roll_back(outcome)
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
                self._active = _ActiveSegment(start.segment_first_sequence, path, fd, start.offset)
                self._sync_function(fd)
                self.fsync_count += 1
            fsync_directory(self._directory)
        except OSError as error:
            logger.warning("journal %s still unavailable: %s", self._directory, error)
            if self._active is not None:
                os.close(self._active.fd)
                self._active = None
            return False
        return True

    async def try_reopen(self) -> bool:
        """After a failure: cut back to the last acknowledged record and probe the disk.

        Returns True when the journal accepts appends again, continuing right after
        `durable_sequence`; False when the disk still refuses (call again later).
        """
        if self._failure is None:
            return True
        assert self._flush_task is None, "a failed journal has no flusher running"
        assert not self._closed
        if self._failed_job is None:
            # The flusher was cancelled or crashed: what reached the disk is unknown, so only
            # a restart (which rescans the files) can continue safely.
            return False
        loop = self._bind_loop()
        reopened = await loop.run_in_executor(self._executor, self._reopen_blocking)
        if not reopened:
            return False
        outcome = self._failed_job
        assert outcome is not None
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
        # A flusher that hit its batch bound hands over to a fresh task; wait for the chain.
        for _ in range(SEGMENT_COUNT_MAX):
            task = self._flush_task
            if task is None:
                break
            await asyncio.wait([task])
        if self._needs_final_sync():
            loop = self._bind_loop()
            if await loop.run_in_executor(self._executor, self._final_sync):
                self._synced_sequence = self._written_sequence
        self._close_resources()

    def close(self) -> None:
        """Synchronous close, for use when no flush is in flight (else use aclose)."""
        if self._closed:
            return
        assert self._flush_task is None or self._flush_task.done(), "flush in flight: use aclose"
        self._closing = True
        if self._needs_final_sync() and self._final_sync():
            self._synced_sequence = self._written_sequence
        self._close_resources()

    def _needs_final_sync(self) -> bool:
        return (
            self._failure is None
            and self._fsync_policy is not FsyncPolicy.NONE
            and self._synced_sequence < self._written_sequence
        )

    def _final_sync(self) -> bool:
        assert self._active is not None
        try:
            self._sync_function(self._active.fd)
        except OSError as error:
            logger.error("%s", _describe_os_error("final fsync", self._active.path, error))
            return False
        self.fsync_count += 1
        return True

    def _close_resources(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._waiters:
            self._fail(f"journal {self._directory} closed", None)
        self._executor.shutdown(wait=True)
        if self._active is not None:
            os.close(self._active.fd)
            self._active = None
        if self._lock_fd is not None:
            release_directory_lock(self._lock_fd)
            self._lock_fd = None
        self._closed = True


def _recover_directory(
    directory: Path, repair: bool, snapshot_sequence: int
) -> tuple[list[SegmentInfo], int]:
    """Validate and fix up the directory; return its segments and the next sequence."""
    (directory / PROBE_FILE_NAME).unlink(missing_ok=True)
    scan = scan_journal(directory, covered_sequence=snapshot_sequence)
    problem = scan.problem
    if problem is not None:
        if problem.kind is ProblemKind.TORN_TAIL:
            logger.warning(
                "journal torn tail: truncating %s at byte offset %d, dropping %d bytes (%s)",
                problem.path,
                problem.offset,
                problem.dropped_bytes,
                problem.detail,
            )
            repair_journal(scan, backup=False)
        elif repair:
            backups = repair_journal(scan, backup=True)
            logger.warning(
                "journal repaired: cut %s at byte offset %d (%s); %d later segments dropped; "
                "backups: %s",
                problem.path,
                problem.offset,
                problem.detail,
                len(scan.later_segments),
                ", ".join(str(backup) for backup in backups),
            )
        else:
            raise JournalCorrupt(problem.path, problem.offset, problem.detail)

    segments = list(scan.usable_segments)
    next_sequence = scan.next_sequence
    if segments and next_sequence - 1 < snapshot_sequence:
        # Every record here is already in the snapshot (the journal lost a tail the snapshot
        # had seen); keeping these segments would leave a gap before the next one.
        logger.warning(
            "journal %s ends at %d, before snapshot %d: removing %d covered segments",
            directory,
            next_sequence - 1,
            snapshot_sequence,
            len(segments),
        )
        for info in segments:
            info.path.unlink()
        fsync_directory(directory)
        segments = []
    if segments and segments[0].first_sequence > snapshot_sequence + 1:
        raise JournalCorrupt(
            segments[0].path,
            0,
            f"journal starts at sequence {segments[0].first_sequence} but the snapshot covers "
            f"only up to {snapshot_sequence}: records are missing",
        )
    if not segments:
        next_sequence = snapshot_sequence + 1
    assert next_sequence >= snapshot_sequence + 1
    return segments, next_sequence
