"""The engine's durability: the journal adapter, background snapshots, write-failure handling.

Snapshots fork the process, as Redis BGSAVE does: the child sees a copy-on-write image of the
state at one journal sequence and writes it out, while the parent goes on serving after a
stall of one fork (milliseconds, whatever the state size). A snapshot only becomes visible
(renamed from `.staging/` into the data directory) once the parent knows every record it covers
is durable, so a snapshot never contains an effect that was not acknowledged-safe.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from atpd.core.commands import Command
from atpd.core.limits import Limits
from atpd.core.state import AtpState
from atpd.persistence.codec import encode_command
from atpd.persistence.fsutil import fsync_directory
from atpd.persistence.journal import Journal
from atpd.persistence.journal_errors import JournalUnavailable
from atpd.persistence.recovery import rebuild_durable_state
from atpd.persistence.snapshot_file import list_snapshots, prune_snapshots, write_snapshot
from atpd.persistence.state_snapshot import export_state
from atpd.service.engine import Engine, WritesUnavailable

log = logging.getLogger(__name__)

STAGING = ".staging"
SNAPSHOTS_KEPT = 2
PR_SET_PDEATHSIG = 1
# Test hook: "fork:MS" pauses a snapshot child MS ms right after the fork (the window before it
# asks to die with its parent), "publish:MS" right before it renames its file into place.
# Unset in production.
CHILD_PAUSE_ENVIRONMENT = "ATPD_TEST_SNAPSHOT_CHILD_PAUSE"
CHILD_PARENT_GONE_EXIT_CODE = 3
# No command encodes to more than this (a Reserve of 100 lines is ~20 KiB): the journal is
# asked to keep this much backlog room free before a command is applied.
LARGEST_RECORD_BYTES = 1 << 20
REOPEN_INTERVAL_S = 1.0


class ReplicationHooks(Protocol):
    """What the journal adapter asks of replication (service/replication_source.py)."""

    # Sync replication: only then may `replicated` wait (asynchronous replication never makes a
    # write wait, so the unary path skips that await altogether).
    sync: bool

    def check_writable(self) -> None:
        """Raise WritesUnavailable when writes must be refused before they are applied."""

    def appended(self, sequence: int, timestamp_ms: int, payload: bytes) -> None:
        """A record was journaled (not durable yet)."""

    async def replicated(self, sequence: int) -> None:
        """Return once `sequence` (durable here) is replicated as the mode requires."""


class JournalLog:
    """CommandLog over the persistence journal: commands are encoded once, here, and journal
    errors become WritesUnavailable for the engine. In a cluster each record carries the
    leader epoch it was written under (`epoch_suffix`, service/leader_epoch.py).

    Replication (service/replication_source.py) hooks in here: it may refuse a command before
    it is applied, sees each record's payload as journaled, and (sync replication) is awaited
    after a record is durable locally, so a write is acknowledged only once a follower has it."""

    __slots__ = ("epoch_suffix", "journal", "replication")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.replication: ReplicationHooks | None = None
        # The encoded leader_epoch field appended to every record; empty outside a cluster.
        self.epoch_suffix = b""

    @property
    def last_sequence(self) -> int:
        return self.journal.last_sequence

    def check_writable(self) -> None:
        journal = self.journal
        if journal.failed:
            raise WritesUnavailable(f"journal unavailable: {journal.failure_reason}")
        if journal.pending_bytes + LARGEST_RECORD_BYTES > journal.max_pending_bytes:
            # Back-pressure, not a failure: the disk is behind; the command was not applied.
            raise WritesUnavailable(
                f"journal backlog full ({journal.pending_bytes} bytes waiting for the disk); "
                "retry shortly"
            )
        if self.replication is not None:
            self.replication.check_writable()

    def append(self, command: Command, now_ms: int) -> int:
        return self.append_payload(encode_command(command), now_ms)

    def append_payload(self, payload: bytes, now_ms: int) -> int:
        """Journal an encoded command (`codec.encode_command` or `encode_group`)."""
        payload += self.epoch_suffix
        try:
            sequence = self.journal.append(payload, now_ms)
        except JournalUnavailable as error:
            raise WritesUnavailable(f"journal unavailable: {error}") from error
        if self.replication is not None:
            self.replication.appended(sequence, now_ms, payload)
        return sequence

    async def wait_durable(self, sequence: int) -> None:
        if sequence <= 0:
            return  # nothing journaled yet
        try:
            await self.journal.wait_durable(sequence)
        except JournalUnavailable as error:
            raise WritesUnavailable(f"journal unavailable: {error}") from error
        replication = self.replication
        if replication is not None and replication.sync:
            await replication.replicated(sequence)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    last_sequence: int
    path: Path
    size_bytes: int
    seconds: float
    fork_ms: float  # the stall: the fork, or the copy when the fork fallback was used
    segments_removed: int


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent: a child forked from a threaded process must
    not dlopen (the loader lock may be held by a thread that does not exist in the child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def _child_pause(where: str) -> None:
    """The test hook: sleep in the child when CHILD_PAUSE_ENVIRONMENT names `where`."""
    setting = os.environ.get(CHILD_PAUSE_ENVIRONMENT, "")
    point, _, pause_ms = setting.partition(":")
    if point == where and pause_ms.isdigit():
        time.sleep(int(pause_ms) / 1000)


def _exit_if_orphaned(parent_pid: int) -> None:
    """In a snapshot child: end at once, writing nothing, when the server is gone."""
    if os.getppid() != parent_pid:
        os._exit(CHILD_PARENT_GONE_EXIT_CODE)


def _die_with_parent(parent_pid: int) -> None:
    """In a snapshot child: be killed if the server dies, so no orphan writes on.

    The server may die between the fork and the prctl call; the signal is then never sent, so
    the parent pid is checked again once the request is in place (a dead parent's children are
    re-parented, changing getppid)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    # Without prctl (not Linux) the checks before writing and before publishing still hold.
    _exit_if_orphaned(parent_pid)


def clean_staging(data_dir: Path) -> None:
    shutil.rmtree(data_dir / STAGING, ignore_errors=True)


def write_snapshot_now(state: AtpState, data_dir: Path, journal: Journal) -> Path:
    """Synchronous snapshot (start-up, shutdown), when no command is in flight."""
    sequence = journal.last_sequence
    assert journal.durable_sequence == sequence, "snapshot of effects that are not durable"
    arrays, blobs = export_state(state)
    path = write_snapshot(data_dir, sequence, arrays, blobs)
    prune_snapshots(data_dir, keep=SNAPSHOTS_KEPT)
    journal.remove_segments_before(list_snapshots(data_dir)[0][0])
    return path


class Snapshotter:
    """Takes snapshots in a forked child; one at a time; callers of `take` share a run."""

    def __init__(self, state_of: Callable[[], AtpState], journal: Journal, data_dir: Path) -> None:
        self.state_of = state_of
        self.journal = journal
        self.data_dir = data_dir
        self._running: asyncio.Task[SnapshotInfo] | None = None
        snapshots = list_snapshots(data_dir)
        self.last_sequence = snapshots[-1][0] if snapshots else 0

    async def take(self) -> SnapshotInfo:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._take())
        return await asyncio.shield(self._running)

    def take_in_background(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._take())
            self._running.add_done_callback(self._log_failure)

    @staticmethod
    def _log_failure(task: asyncio.Task[SnapshotInfo]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background snapshot failed: %s", task.exception())

    async def _take(self) -> SnapshotInfo:
        started = time.perf_counter()
        sequence = self.journal.last_sequence
        existing = self.data_dir / f"snapshot-{sequence:020d}.snap"
        if sequence == self.last_sequence and existing.exists():
            # Nothing was journaled since the last snapshot: it already is this snapshot.
            return SnapshotInfo(sequence, existing, existing.stat().st_size, 0.0, 0.0, 0)
        staging = self.data_dir / STAGING
        clean_staging(self.data_dir)
        staging.mkdir(parents=True)
        state = self.state_of()
        parent_pid = os.getpid()
        fork_started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, measured by the snapshot tests
            code = 1
            try:
                _child_pause("fork")
                _die_with_parent(parent_pid)
                # Drop inherited descriptors (journal lock, segments, sockets): a child that
                # outlives a killed parent for a moment must not keep the data dir locked.
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                arrays, blobs = export_state(state)

                def parent_alive() -> None:
                    _child_pause("publish")
                    _exit_if_orphaned(parent_pid)

                write_snapshot(staging, sequence, arrays, blobs, before_publish=parent_alive)
                code = 0
            except BaseException:
                log.exception("snapshot child failed")
            finally:
                os._exit(code)
        fork_ms = (time.perf_counter() - fork_started) * 1000
        loop = asyncio.get_running_loop()
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code != 0:
            # A child can die where the parent would not (e.g. gRPC's fork handlers when
            # fork support was enabled by an earlier import of grpc). Fall back to a copy
            # taken on the loop (a stall proportional to the state) written off the loop.
            log.warning(
                "snapshot child exited with status %d; snapshotting from a copy instead",
                exit_code,
            )
            clean_staging(self.data_dir)
            staging.mkdir(parents=True)
            if self.journal.last_sequence != sequence:
                sequence = self.journal.last_sequence
            copy_started = time.perf_counter()
            arrays, blobs = export_state(self.state_of())
            fork_ms = (time.perf_counter() - copy_started) * 1000
            await loop.run_in_executor(None, write_snapshot, staging, sequence, arrays, blobs)
        # Publish only what is durable: raises JournalUnavailable if those records were lost.
        try:
            if sequence > 0:
                await self.journal.wait_durable(sequence)
        except BaseException:
            clean_staging(self.data_dir)
            raise
        name = f"snapshot-{sequence:020d}.snap"
        final = self.data_dir / name
        os.replace(staging / name, final)
        fsync_directory(self.data_dir)
        clean_staging(self.data_dir)
        prune_snapshots(self.data_dir, keep=SNAPSHOTS_KEPT)
        # Keep the journal back to the oldest kept snapshot, so falling back to it still works.
        oldest_kept = list_snapshots(self.data_dir)[0][0]
        removed = self.journal.remove_segments_before(oldest_kept)
        self.last_sequence = sequence
        info = SnapshotInfo(
            sequence,
            final,
            final.stat().st_size,
            time.perf_counter() - started,
            fork_ms,
            removed,
        )
        log.info(
            "snapshot at sequence %d: %s, %d bytes, %.2f s (fork %.1f ms), %d segments removed",
            sequence,
            final.name,
            info.size_bytes,
            info.seconds,
            fork_ms,
            removed,
        )
        return info


class Durability:
    """Journal + snapshots + write-failure handling, attached to an engine.

    On a journal write failure the engine refuses writes; this object rebuilds the state from
    what is durable (snapshot + journal up to the last durable record, so no unacknowledged
    effect survives), swaps it in, and retries the journal every second until the disk takes
    writes again. Reads are served throughout.
    """

    def __init__(
        self,
        journal: Journal,
        data_dir: Path,
        limits: Limits,
        snapshot_every_records: int,
        snapshot_every_seconds: float,
    ) -> None:
        self.journal = journal
        self.log = JournalLog(journal)
        self.data_dir = data_dir
        self.limits = limits
        self.snapshot_every_records = snapshot_every_records
        self.snapshot_every_seconds = snapshot_every_seconds
        self.engine: Engine | None = None
        self.snapshotter: Snapshotter | None = None
        self._records_since_snapshot = 0
        self._timer: asyncio.TimerHandle | None = None
        self._recovery: asyncio.Task[None] | None = None

    def attach(self, engine: Engine) -> None:
        """Make `engine` journal through us; call on the serving loop."""
        self.engine = engine
        engine.journal = self.log
        engine.on_record = self._on_record
        engine.on_write_failure = self._on_write_failure
        self.snapshotter = Snapshotter(lambda: engine.state, self.journal, self.data_dir)
        self._records_since_snapshot = self.journal.last_sequence - self.snapshotter.last_sequence
        journal = self.journal
        engine.metrics.bind_journal(
            lambda: journal.records_count,
            lambda: journal.fsync_count,
            lambda: journal.batch_count,
        )
        self._arm_timer()

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.snapshot_every_seconds, self._on_timer)

    def _on_timer(self) -> None:
        if self._records_since_snapshot > 0:
            self._snapshot_in_background()
        self._arm_timer()

    def _on_record(self, commands: int) -> None:
        # Counted in commands: a batch's group record replays as many as it holds.
        self._records_since_snapshot += commands
        if self._records_since_snapshot >= self.snapshot_every_records:
            self._snapshot_in_background()

    def _snapshot_in_background(self) -> None:
        assert self.snapshotter is not None
        if self.engine is not None and self.engine.write_failure is None:
            self._records_since_snapshot = 0
            self.snapshotter.take_in_background()

    async def snapshot(self) -> SnapshotInfo:
        assert self.snapshotter is not None
        self._records_since_snapshot = 0
        return await self.snapshotter.take()

    def _on_write_failure(self, reason: str) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover_writes())

    async def _recover_writes(self) -> None:
        engine = self.engine
        assert engine is not None
        loop = asyncio.get_running_loop()
        durable = self.journal.durable_sequence
        state = await loop.run_in_executor(
            None, rebuild_durable_state, self.data_dir, self.limits, durable
        )
        engine.replace_state(state)
        log.warning("state rebuilt from durable records (up to sequence %d)", durable)
        attempts = 0
        while True:
            attempts += 1
            if await self.journal.try_reopen():
                break
            if attempts == 1 or attempts % 60 == 0:
                log.error(
                    "journal still not writable (%s); retrying every %.0f s",
                    self.journal.failure_reason,
                    REOPEN_INTERVAL_S,
                )
            await asyncio.sleep(REOPEN_INTERVAL_S)
        engine.write_failure = None
        log.warning("journal writable again after %d attempts: accepting writes", attempts)

    async def close(self, final_snapshot: bool = True) -> None:
        """Flush the journal, write a final snapshot (graceful shutdown), release the files."""
        if self._timer is not None:
            self._timer.cancel()
        if self._recovery is not None:
            self._recovery.cancel()
        engine = self.engine
        if final_snapshot and engine is not None and engine.write_failure is None:
            try:
                # The journal's own wait: replication (sync) has no say in a shutdown.
                if self.journal.last_sequence > 0:
                    await self.journal.wait_durable(self.journal.last_sequence)
                write_snapshot_now(engine.state, self.data_dir, self.journal)
            except (JournalUnavailable, OSError) as error:
                log.error("final snapshot skipped: %s", error)
        await self.journal.aclose()
