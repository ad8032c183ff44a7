"""Recovery: newest valid snapshot, then the journal tail replayed through the core.

Replay is deterministic because every record carries the time the core applied it at: the
recovered state equals the state before the crash (tests compare `AtpState.digest()`).
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
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.persistence.codec import decode_command
from atpd.persistence.framing import Record, scan_records
from atpd.persistence.journal import FsyncPolicy, Journal, JournalCorrupt, scan_journal
from atpd.persistence.load_file import resolve_stored
from atpd.persistence.snapshot_file import load_latest_snapshot
from atpd.persistence.state_snapshot import import_state

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
    state = import_state(snapshot.arrays, snapshot.blobs, limits)
    return state, snapshot.last_sequence, snapshot.path


def replay(state: AtpState, records: Iterator[Record], data_dir: Path | None = None) -> int:
    """Apply journal records in order; returns how many. A bulk load record gets its rows from
    its load file under `data_dir`."""
    count = 0
    for record in records:
        command = decode_command(record.payload)
        if data_dir is not None:
            command = resolve_stored(command, data_dir, record.sequence)
        try:
            state.apply(command, record.timestamp_ms)
        except CommandRejected as error:
            # Only applied commands are journaled: a rejection means the journal and the code
            # disagree (e.g. a downgrade). Refuse to guess.
            raise JournalCorrupt(
                Path(f"<record {record.sequence}>"), 0, f"replay rejected {command!r}: {error}"
            ) from error
        count += 1
    return count


def recover(
    data_dir: Path,
    *,
    limits: Limits,
    fsync_policy: FsyncPolicy,
    segment_bytes: int,
    repair: bool = False,
) -> Recovered:
    started = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
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
    )
    try:
        replayed = replay(state, journal.records_after(snapshot_sequence), data_dir)
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
