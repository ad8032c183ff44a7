"""This server as a member of an etcd-led cluster: what leadership (service/leadership.py) asks
becomes switches of the replication role (service/replication_role.py).

- Elected: stamp the new epoch on every record, `promote()` (stop following, make what was
  received durable, take writes), then journal a first record of the epoch at once.
- Another leads: `demote(address)`. Before following it, check that this server's journal is
  a prefix of the leader's history: a deposed leader may hold records its successor never had
  (written before it was stopped, not yet replicated). Epochs tell (as Raft's log matching):
  each leader records in etcd the sequence its epoch starts after (`epochs/<epoch>` = `since`);
  a journal whose last record is from epoch E and at sequence L diverged if the first epoch
  after E started before L. A diverged member moves its journal, snapshots and load files aside
  (`diverged-<epoch>-<time>/` in its data directory, for the operator) and starts over from
  the leader (snapshot, then records); until it has, it is no candidate for leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from atpd.config import Config
from atpd.persistence.fsutil import fsync_directory
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_scan import SEGMENT_NAME
from atpd.persistence.load_file import LOADS_DIRECTORY
from atpd.persistence.recovery import recover
from atpd.persistence.snapshot_file import SNAPSHOT_NAME
from atpd.service.durability import Durability
from atpd.service.engine import Engine
from atpd.service.leader_epoch import epoch_suffix, record_epoch
from atpd.service.replication_role import ReplicationRole

log = logging.getLogger(__name__)

DIVERGED_PREFIX = "diverged-"


def last_record_epoch(journal: Journal) -> int:
    """The epoch of the journal's last record; 0 when it has none or its segment is gone (a
    snapshot covers it). Only before anything is appended (start-up)."""
    last = journal.last_sequence
    if last <= 0:
        return 0
    try:
        for record in journal.records_after(last - 1):
            if record.sequence == last:
                return record_epoch(record.payload)
    except (OSError, ValueError, AssertionError) as error:
        log.warning("epoch of record %d unknown (%s): taken as 0", last, error)
    return 0


def diverged(last_sequence: int, last_epoch: int, history: dict[int, int]) -> bool:
    """Whether a journal ending at `last_sequence` with a record of `last_epoch` holds records
    the leader's history does not: the first epoch after `last_epoch` started after sequence
    `since`, and this journal goes beyond it. `history` maps epoch -> since."""
    later = [epoch for epoch in history if epoch > last_epoch]
    if not later:
        return False
    return last_sequence > history[min(later)]


class ClusterMember:
    def __init__(
        self,
        role: ReplicationRole,
        engine: Engine,
        config: Config,
        durability_of: Callable[[], Durability | None],
    ) -> None:
        self.role = role
        self.engine = engine
        self.config = config
        self.durability_of = durability_of
        # Epoch -> the sequence it starts after; read from etcd (set by the wiring).
        self.epoch_history: Callable[[], Awaitable[dict[int, int]]] | None = None
        self.epoch = 0  # the epoch this server leads, 0 while it does not
        # Set from a divergence until this server has caught up with the leader once: until
        # then it holds less than it may seem, and must not lead.
        self.starting_over = False
        self._target: str | None = None  # the leader to follow, applied by _switch
        self._switching: asyncio.Task[None] | None = None

    def recovered(self) -> None:
        """At start-up, before anything is appended: the newest epoch on this journal."""
        durability = self.durability_of()
        if durability is not None:
            self.role.epoch_gate.accepted(last_record_epoch(durability.journal))

    # ------------------------------------------------------------------ leadership's asks

    def candidate_sequence(self) -> int | None:
        """The last sequence journaled here (records still being written become durable
        before this server could serve as leader: promote() waits for them)."""
        durability = self.durability_of()
        if durability is None or self.engine.write_failure is not None:
            return None
        if self.starting_over:
            follower = self.role.follower
            if follower is None or not follower.connected or follower.lag_sequences() > 0:
                return None
            self.starting_over = False
        return durability.journal.last_sequence

    async def become_leader(self, epoch: int) -> None:
        await self._settled()
        durability = self.durability_of()
        assert durability is not None, "a cluster member keeps a journal"
        self.epoch = epoch
        self.role.epoch_gate.accepted(epoch)
        durability.log.epoch_suffix = epoch_suffix(epoch)
        await self.role.promote()
        try:
            await self.engine.journal_tick()
        except Exception as error:
            # Leading goes on: the epoch is stamped on the next write instead.
            log.error("first record of epoch %d not journaled: %s", epoch, error)

    def become_follower(self, leader_address: str, epoch: int) -> None:
        """Writes stop now (synchronously); following switches in the background."""
        self.epoch = 0
        self.engine.leader_address = leader_address
        self._target = leader_address
        if self._switching is None or self._switching.done():
            self._switching = asyncio.get_running_loop().create_task(self._switch())

    # ------------------------------------------------------------------ switching

    async def _settled(self) -> None:
        """Wait for a follow switch in progress (a promotion must not race it)."""
        task = self._switching
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task

    async def _switch(self) -> None:
        while True:
            target = self._target
            if target is None:
                return
            try:
                if target and await self._diverged():
                    await self._start_over()
                if self._target != target:
                    continue  # the leader changed meanwhile
                await self.role.demote(target)
            except Exception:
                log.exception("switching to follow %r failed; retrying", target)
                await asyncio.sleep(0.5)
                continue
            if self._target == target:
                self._target = None
                return

    async def _diverged(self) -> bool:
        durability = self.durability_of()
        if durability is None or self.epoch_history is None:
            return False
        history = await self.epoch_history()
        journal = durability.journal
        last_epoch = self.role.epoch_gate.newest_epoch
        if not diverged(journal.last_sequence, last_epoch, history):
            return False
        log.error(
            "this journal diverged from the leader's history (last record %d of epoch %d; the "
            "leader's history moved on after sequence %d): starting over from the leader",
            journal.last_sequence,
            last_epoch,
            history[min(epoch for epoch in history if epoch > last_epoch)],
        )
        return True

    async def _start_over(self) -> None:
        """Move this journal aside and restart from an empty one (the leader then sends its
        snapshot or its whole journal)."""
        self.starting_over = True
        try:
            await self.role.demote("")  # no follower writes into the journal while it moves
            durability = self.durability_of()
            assert durability is not None
            data_dir = durability.data_dir
            last_epoch = self.role.epoch_gate.newest_epoch
            await durability.close(final_snapshot=False)
            aside = data_dir / f"{DIVERGED_PREFIX}{last_epoch}-{int(time.time())}"
            await asyncio.to_thread(_move_aside, data_dir, aside)
            config = self.config
            recovered = await asyncio.to_thread(
                recover,
                data_dir,
                limits=config.limits,
                fsync_policy=FsyncPolicy(config.fsync),
                segment_bytes=config.journal_segment_bytes,
            )
            self.role.replace_durability(recovered.journal, recovered.state)
            self.role.epoch_gate.newest_epoch = 0
            log.warning("diverged records kept in %s; following the leader from scratch", aside)
        except BaseException:
            self.starting_over = False
            raise


def _move_aside(data_dir: Path, aside: Path) -> None:
    aside.mkdir()
    for entry in os.scandir(data_dir):
        name = entry.name
        if SEGMENT_NAME.fullmatch(name) or SNAPSHOT_NAME.fullmatch(name) or name == LOADS_DIRECTORY:
            os.replace(entry.path, aside / name)
    fsync_directory(aside)
    fsync_directory(data_dir)
