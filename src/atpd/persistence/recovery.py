"""Recovery: newest valid snapshot, then the journal tail replayed through the core.

Replay is deterministic because every record carries the time the core applied it at: the
recovered state equals the state before the crash (tests compare `AtpState.digest()`).

Anything recovery cannot load is reported with the file, the byte offset and the reason, never
as a traceback: a snapshot whose content is bad raises SnapshotCorrupt (the entry's offset), a
journal record that does not decode, fails its checks or is rejected by the core raises
JournalCorrupt (the record's offset in its segment). Neither is guessed around: the operator
decides (`atpd verify-journal`, `atpd verify-snapshot`, `--repair`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from atpd.core.limits import Limits
from atpd.core.load_command import BulkLoad
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.persistence.codec import UndecodableRecord, decode_command
from atpd.persistence.framing import Record, scan_records
from atpd.persistence.fsutil import make_directory_durable
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.journal_scan import scan_journal
from atpd.persistence.load_file import resolve_stored
from atpd.persistence.snapshot_file import LoadedSnapshot, SnapshotCorrupt, load_latest_snapshot
from atpd.persistence.state_snapshot import SnapshotContentError, import_state
from atpd.persistence.verify import cut_journal_at

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recovered:
    state: AtpState
    journal: Journal
    snapshot_sequence: int
    snapshot_path: Path | None
    replayed: int
    seconds: float


def load_snapshot_state(data_dir: Path, limits: Limits) -> tuple[AtpState, int, Path | None]:
    """The state of the newest valid snapshot (falling back to older ones), or an empty one."""
    snapshot = load_latest_snapshot(data_dir)
    if snapshot is None:
        return AtpState(limits), 0, None
    state = import_snapshot(snapshot, limits)
    return state, snapshot.last_sequence, snapshot.path


def import_snapshot(snapshot: LoadedSnapshot, limits: Limits | None = None) -> AtpState:
    """The state of a loaded snapshot; raises SnapshotCorrupt naming the entry's offset."""
    try:
        return import_state(snapshot.arrays, snapshot.blobs, limits)
    except SnapshotContentError as error:
        offset = snapshot.offsets.get(error.entry)
        raise SnapshotCorrupt(snapshot.path, f"content is invalid: {error}", offset) from error


def replay(state: AtpState, records: Iterator[Record], data_dir: Path | None = None) -> int:
    """Apply journal records in order; returns how many. A bulk load record gets its rows from
    its load file under `data_dir`. Raises JournalCorrupt naming the record's file and offset
    for a record that cannot be decoded or applied; the state is then unusable."""
    state.reservations.answering = False  # results are thrown away: no copies for them
    try:
        return _replay(state, records, data_dir)
    finally:
        state.reservations.answering = True


def _replay(state: AtpState, records: Iterator[Record], data_dir: Path | None) -> int:
    count = 0
    apply = state.apply
    for record in records:
        try:
            command = decode_command(record.payload)
        except UndecodableRecord as error:
            raise JournalCorrupt(
                _where(record),
                record.offset,
                f"record {record.sequence} cannot be replayed: {error}",
            ) from error
        try:
            if data_dir is not None and type(command) is BulkLoad:
                command = resolve_stored(command, data_dir, record.sequence)
            apply(command, record.timestamp_ms)
        except JournalCorrupt as error:
            raise JournalCorrupt(_where(record), record.offset, error.detail) from error
        except CommandRejected as error:
            # Only applied commands are journaled: a rejection means the journal and the code
            # disagree (e.g. a downgrade). Refuse to guess.
            raise JournalCorrupt(
                _where(record),
                record.offset,
                f"record {record.sequence} ({type(command).__name__}) was rejected on replay: "
                f"{error}",
            ) from error
        except Exception as error:
            # A record that passed its checks yet broke the core: a bug, reported with the
            # record that triggers it (the full traceback goes to the log).
            log.exception("replay of record %d failed", record.sequence)
            raise JournalCorrupt(
                _where(record),
                record.offset,
                f"record {record.sequence} ({type(command).__name__}) failed on replay: "
                f"{type(error).__name__}: {error}",
            ) from error
        count += 1
    return count


def _where(record: Record) -> Path:
    """The file a record came from, for an error (built only then: a Path per record would
    cost a tenth of a replay)."""
    return Path(record.source_name or f"<record {record.sequence}>")


def recover(
    data_dir: Path,
    *,
    limits: Limits,
    fsync_policy: FsyncPolicy,
    segment_bytes: int,
    repair: bool = False,
) -> Recovered:
    started = time.perf_counter()
    # Durably: a data directory whose own entry a power cut removes takes the journal with it.
    make_directory_durable(data_dir)
    with _no_cyclic_gc():
        return _recover(data_dir, limits, fsync_policy, segment_bytes, repair, started)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Loading builds millions of long-lived objects; the cyclic GC would rescan them over and
    over (a third of the time at 1M reservations). Nothing cyclic is garbage here."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _recover(
    data_dir: Path,
    limits: Limits,
    fsync_policy: FsyncPolicy,
    segment_bytes: int,
    repair: bool,
    started: float,
) -> Recovered:
    state, snapshot_sequence, snapshot_path = load_snapshot_state(data_dir, limits)
    journal = Journal.open(
        data_dir,
        fsync_policy=fsync_policy,
        segment_bytes=segment_bytes,
        repair=repair,
        snapshot_sequence=snapshot_sequence,
        keep_records=True,  # replayed just below: the tail is read and checked once
    )
    try:
        replayed = replay(state, journal.records_after(snapshot_sequence), data_dir)
    except JournalCorrupt as error:
        journal.close()
        if not repair:
            raise
        # The operator asked for a repair: keep a backup, cut the journal at the record that
        # cannot be replayed (it and everything after it are lost), and recover again.
        backups = cut_journal_at(data_dir, error.path, error.offset, error.detail)
        log.warning(
            "repair: journal cut at %s offset %d (%s); backups: %s",
            error.path,
            error.offset,
            error.detail,
            ", ".join(str(b) for b in backups) or "none",
        )
        return _recover(data_dir, limits, fsync_policy, segment_bytes, False, started)
    except BaseException:
        journal.close()
        raise
    seconds = time.perf_counter() - started
    log.info(
        "recovered in %.2f s: snapshot %s (sequence %d), %d journal records replayed; "
        "%d nodes, %d SKUs, %d positions, %d open reservations",
        seconds,
        snapshot_path.name if snapshot_path else "none",
        snapshot_sequence,
        replayed,
        len(state.nodes),
        len(state.skus),
        state.stock.position_count,
        state.open_reservations,
    )
    return Recovered(state, journal, snapshot_sequence, snapshot_path, replayed, seconds)


def durable_records(data_dir: Path, after: int, upto: int) -> Iterator[Record]:
    """Records after..upto read straight from the segment files, without opening the journal
    (which the running server holds): used to rebuild the state after a write failure."""
    scan = scan_journal(data_dir, covered_sequence=after)
    for segment in scan.usable_segments:
        if segment.last_sequence <= after or segment.first_sequence > upto:
            continue
        result = scan_records(
            segment.path.read_bytes()[: segment.valid_bytes],
            first_sequence=segment.first_sequence,
            source_name=str(segment.path),
        )
        for record in result.records:
            if after < record.sequence <= upto:
                yield record


def rebuild_durable_state(data_dir: Path, limits: Limits, durable_sequence: int) -> AtpState:
    """The state made of what is durable: snapshot + journal records up to durable_sequence."""
    with _no_cyclic_gc():
        state, snapshot_sequence, _ = load_snapshot_state(data_dir, limits)
        replay(state, durable_records(data_dir, snapshot_sequence, durable_sequence), data_dir)
    return state
