"""The follower's side of replication: one Follow stream to the primary, records applied through
the same core as recovery replays them, and journaled verbatim with the primary's sequences.

A follower only changes its state with its primary's records (the engine refuses every other
write: Engine.check_leader). Each record is checked (framing CRC32C, the sequence that must come
next), decoded, applied at the primary's time (`Engine.apply_replicated`: watchers see its
changes as on the primary), then appended to the follower's own journal: the payload and time
are the primary's, so the framed bytes are the same. Acks report what is durable here.

A snapshot from the primary (the follower was too far behind) replaces the follower's state:
the file is staged, fsynced and renamed into the data directory, the journal is closed, and the
data directory is recovered again (recovery drops the segments the snapshot covers).

When the stream ends (primary gone, silent past replication_timeout_ms, a refusal) the follower
reconnects with a doubling backoff, from what its own journal holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from atpd.config import Config
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.persistence.codec import UndecodableRecord, decode_command
from atpd.persistence.framing import ScanState, scan_records
from atpd.persistence.fsutil import fsync_directory
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalCorrupt, JournalUnavailable
from atpd.persistence.load_file import LOAD_NAME, LOADS_DIRECTORY, LOADS_MARKER, resolve_stored
from atpd.persistence.recovery import recover
from atpd.service.engine import Engine
from atpd.service.leader_epoch import EpochGate, StaleEpoch
from atpd.v1 import replication_pb2, replication_pb2_grpc

if TYPE_CHECKING:
    from atpd.service.durability import Durability

log = logging.getLogger(__name__)

STAGING = ".staging-replica"
FIRST_BACKOFF_S = 0.05
# Room above the largest batch for one record bigger than the batch (records reach 16 MiB).
RECEIVE_MESSAGE_BYTES = 32 * 1024 * 1024


class StreamBroken(Exception):
    """What the primary sent cannot be applied here (a gap, a bad checksum, a refusal by the
    core): the stream is dropped and opened again after a backoff."""


class Follower:
    """Follows `leader_address` until `stop`; reconnects on its own."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        leader_address: str,
        durability_of: Callable[[], Durability | None],
        replace_durability: Callable[[Journal, AtpState], None],
    ) -> None:
        self.engine = engine
        self.config = config
        self.leader_address = leader_address
        self.durability_of = durability_of
        self.replace_durability = replace_durability
        self.follower_id = config.replica_id or f"{socket.gethostname()}:{config.port}"
        self.primary_sequence = 0
        self.connected = False
        self._caught_up_at = time.monotonic()
        self._applied = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Refuses records from a leader older than one already applied (service/leader_epoch.py).
        self.epoch_gate = EpochGate()
        self._token = (
            config.follow_token_file.read_text().strip()
            if config.follow_token_file is not None
            else ""
        )

    # ------------------------------------------------------------------ lag

    def applied_sequence(self) -> int:
        durability = self.durability_of()
        return durability.journal.last_sequence if durability is not None else 0

    def lag_sequences(self) -> int:
        return max(0, self.primary_sequence - self.applied_sequence())

    def lag_ms(self) -> int:
        """0 while connected and holding everything the primary has; else the time since."""
        if self.connected and self.lag_sequences() == 0:
            return 0
        return round((time.monotonic() - self._caught_up_at) * 1000)

    def _note_progress(self) -> None:
        if self.connected and self.lag_sequences() == 0:
            self._caught_up_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected = False

    async def _run(self) -> None:
        backoff_s = FIRST_BACKOFF_S
        limit_s = self.config.replication_reconnect_max_ms / 1000
        while True:
            started = time.monotonic()
            try:
                await self._session()
                reason = "the primary ended the stream"
            except grpc.aio.AioRpcError as error:
                reason = f"{error.code().name}: {error.details()}"
            except (StreamBroken, JournalUnavailable, OSError, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}"
            except Exception as error:
                # Not expected: logged with its traceback, and following goes on (a follower
                # that silently stopped would serve ever staler reads).
                log.exception("following %s failed", self.leader_address)
                reason = f"{type(error).__name__}: {error}"
            finally:
                self.connected = False
            if time.monotonic() - started > limit_s:
                backoff_s = FIRST_BACKOFF_S  # the session lived: start the backoff afresh
            log.warning(
                "following %s interrupted (%s); reconnecting in %.2f s",
                self.leader_address,
                reason,
                backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(limit_s, backoff_s * 2)

    def _channel(self) -> grpc.aio.Channel:
        options = [("grpc.max_receive_message_length", RECEIVE_MESSAGE_BYTES)]
        if self.config.follow_tls_ca_file is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.config.follow_tls_ca_file.read_bytes()
            )
            return grpc.aio.secure_channel(self.leader_address, credentials, options=options)
        return grpc.aio.insecure_channel(self.leader_address, options=options)

    async def _session(self) -> None:
        # A write failure being repaired: follow again once the journal takes records.
        while self.engine.write_failure is not None:
            await asyncio.sleep(FIRST_BACKOFF_S)
        durability = self.durability_of()
        assert durability is not None, "a follower keeps a journal"
        journal = durability.journal
        if journal.last_sequence > journal.durable_sequence:
            await journal.wait_durable(journal.last_sequence)
        metadata = (("authorization", f"Bearer {self._token}"),) if self._token else None
        timeout_s = self.config.replication_timeout_ms / 1000
        async with self._channel() as channel:
            stub = replication_pb2_grpc.ReplicationServiceStub(channel)
            # Written with call.write (no request iterator): the acks go out from their own task.
            call = stub.Follow(metadata=metadata)
            start = replication_pb2.FollowRequest(
                from_sequence=journal.last_sequence, follower_id=self.follower_id
            )
            await call.write(replication_pb2.FollowerMessage(start=start))
            acks = asyncio.get_running_loop().create_task(self._send_acks(call))
            try:
                while True:
                    message = await asyncio.wait_for(call.read(), timeout_s)
                    if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                        return
                    assert isinstance(message, replication_pb2.FollowMessage)
                    if not self.connected:
                        self.connected = True
                        log.info("following %s as %s", self.leader_address, self.follower_id)
                    self.primary_sequence = max(self.primary_sequence, message.primary_sequence)
                    await self._handle(message)
                    self._note_progress()
            finally:
                acks.cancel()
                call.cancel()

    async def _send_acks(self, call: grpc.aio.StreamStreamCall[Any, Any]) -> None:
        """Acknowledge what is durable here, as it becomes durable (one fsync may cover many
        batches: the acks follow the group commit, not each message)."""
        acked = -1
        while True:
            await self._applied.wait()
            self._applied.clear()
            durability = self.durability_of()
            if durability is None:
                continue
            journal = durability.journal
            target = journal.last_sequence
            if target <= acked:
                continue
            if target > journal.durable_sequence:
                await journal.wait_durable(target)
            acked = target
            ack = replication_pb2.FollowAck(durable_sequence=target)
            await call.write(replication_pb2.FollowerMessage(ack=ack))

    # ------------------------------------------------------------------ what the primary sends

    async def _handle(self, message: replication_pb2.FollowMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "records":
            await self._apply_records(message.records)
        elif kind == "load_file":
            await asyncio.to_thread(self._store_load_chunk, message.load_file)
        elif kind == "snapshot":
            await self._snapshot_chunk(message.snapshot)
        # A heartbeat only carries the primary's sequence (read above).

    async def _apply_records(self, batch: replication_pb2.JournalRecords) -> None:
        durability = self.durability_of()
        assert durability is not None
        journal = durability.journal
        expected = journal.last_sequence + 1
        if batch.first_sequence != expected:
            raise StreamBroken(f"records start at {batch.first_sequence}, expected {expected}")
        scan = scan_records(batch.data, first_sequence=expected, source_name="<stream>")
        count = batch.last_sequence - batch.first_sequence + 1
        if scan.state is not ScanState.CLEAN or scan.record_count != count:
            raise StreamBroken(
                f"records {batch.first_sequence}..{batch.last_sequence} fail their checks: "
                f"{scan.problem_detail or 'wrong count'}"
            )
        gate = self.epoch_gate
        for record in scan.records:
            try:
                epoch = gate.check(record.sequence, record.payload)
            except (StaleEpoch, ValueError) as error:
                raise StreamBroken(str(error)) from error
            try:
                command = decode_command(record.payload)
                if LOADS_MARKER in record.payload:
                    command = await asyncio.to_thread(
                        resolve_stored, command, durability.data_dir, record.sequence
                    )
                self.engine.apply_replicated(command, record.timestamp_ms)
            except (UndecodableRecord, CommandRejected, JournalCorrupt) as error:
                # Applied records are what the primary applied: a refusal means the histories
                # or the code versions differ. Nothing of this record was kept.
                raise StreamBroken(
                    f"record {record.sequence} cannot be applied: {error}"
                ) from error
            except Exception as error:
                # A bug in the core: the state may hold part of the record. Rebuild it from
                # what is durable here (as the engine does after a failed command), then retry.
                log.exception("record %d failed to apply", record.sequence)
                if journal.last_sequence > journal.durable_sequence:
                    await journal.wait_durable(journal.last_sequence)
                self.engine.report_write_failure(
                    f"replicated record {record.sequence} failed: {type(error).__name__}: {error}"
                )
                raise StreamBroken(f"record {record.sequence} failed to apply: {error}") from error
            try:
                sequence = journal.append(record.payload, record.timestamp_ms)
            except JournalUnavailable as error:
                # Applied, not journaled: the state goes back to what is durable.
                self.engine.report_write_failure(f"journal unavailable: {error}")
                raise
            assert sequence == record.sequence, (sequence, record.sequence)
            gate.accepted(epoch)
        self._applied.set()

    def _store_load_chunk(self, chunk: replication_pb2.LoadFileChunk) -> None:
        """A bulk load file the next record names, stored as the primary stored it."""
        directory, _, name = chunk.relative_path.partition("/")
        if directory != LOADS_DIRECTORY or not LOAD_NAME.fullmatch(name):
            raise StreamBroken(f"load file name {chunk.relative_path!r} is not a load file name")
        durability = self.durability_of()
        assert durability is not None
        loads = durability.data_dir / LOADS_DIRECTORY
        loads.mkdir(exist_ok=True)
        partial = loads / f".{name}.replica"
        _write_chunk(partial, chunk.offset, chunk.data)
        if chunk.last:
            os.replace(partial, loads / name)
            fsync_directory(loads)

    async def _snapshot_chunk(self, chunk: replication_pb2.SnapshotChunk) -> None:
        durability = self.durability_of()
        assert durability is not None
        staging = durability.data_dir / STAGING
        name = f"snapshot-{chunk.last_sequence:020d}.snap"
        if chunk.offset == 0:
            await asyncio.to_thread(_fresh_directory, staging)
        await asyncio.to_thread(_write_chunk, staging / name, chunk.offset, chunk.data)
        if chunk.last:
            await self._install_snapshot(staging / name, chunk.last_sequence)

    async def _install_snapshot(self, staged: Path, sequence: int) -> None:
        """Replace this follower's state and journal with the primary's snapshot."""
        durability = self.durability_of()
        assert durability is not None
        data_dir = durability.data_dir
        log.warning(
            "replacing the state with the primary's snapshot at sequence %d (this follower "
            "was at %d, older than the primary's journal)",
            sequence,
            durability.journal.last_sequence,
        )
        await durability.close(final_snapshot=False)
        final = data_dir / staged.name
        os.replace(staged, final)
        fsync_directory(data_dir)
        config = self.config
        recovered = await asyncio.to_thread(
            recover,
            data_dir,
            limits=config.limits,
            fsync_policy=FsyncPolicy(config.fsync),
            segment_bytes=config.journal_segment_bytes,
        )
        if recovered.journal.last_sequence != sequence:
            raise StreamBroken(
                f"the snapshot at {sequence} did not load (the journal is at "
                f"{recovered.journal.last_sequence})"
            )
        self.replace_durability(recovered.journal, recovered.state)
        self._applied.set()


def _fresh_directory(directory: Path) -> None:
    if directory.exists():
        for entry in directory.iterdir():
            entry.unlink()
    directory.mkdir(exist_ok=True)


def _write_chunk(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at `offset` (a new file at 0), fsynced: the rename that publishes the file
    after its last chunk then publishes durable bytes."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset == 0 else 0)
    fd = os.open(path, flags, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size != offset:
            raise StreamBroken(f"{path.name}: chunk at offset {offset}, file has {size} bytes")
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
