"""The replication role of this server: primary, or follower of a leader address.

Switchable at run time (leadership, service/leadership.py, calls these):
- `demote(leader_address)`: writes are refused at once (Engine.check_leader answers
  FAILED_PRECONDITION naming the leader), the expiry timer stops (holds expire by the leader's
  records only), streams of our own followers end, and a Follow stream to the leader starts.
- `promote()`: the Follow stream stops, what was received is made durable, then this server
  expires holds and accepts writes, and serves Follow streams to others.

Writes are checked against the role in one place, `Engine.check_leader`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from atpd.config import Config
from atpd.core.state import AtpState
from atpd.persistence.journal import Journal
from atpd.service.durability import Durability
from atpd.service.engine import Engine
from atpd.service.leader_epoch import EpochGate
from atpd.service.replication_follower import Follower
from atpd.service.replication_source import ReplicationSource
from atpd.v1 import admin_pb2

log = logging.getLogger(__name__)

PRIMARY = "primary"
FOLLOWER = "follower"
LEADER_TRAILER = "atpd-leader"
LAG_SEQUENCES_TRAILER = "atpd-lag-sequences"
LAG_MS_TRAILER = "atpd-lag-ms"


class ReplicationRole:
    def __init__(
        self,
        engine: Engine,
        config: Config,
        durability_of: Callable[[], Durability | None],
        set_durability: Callable[[Durability], None],
    ) -> None:
        self.engine = engine
        self.config = config
        self.durability_of = durability_of
        self._set_durability = set_durability
        self.source = ReplicationSource(engine, config)
        self.follower: Follower | None = None
        # The newest leader epoch applied here, kept across follow streams (service/leadership.py).
        self.epoch_gate = EpochGate()
        metrics = engine.metrics
        metrics.replication_lag_sequences.set_function(
            lambda: self.follower.lag_sequences() if self.follower is not None else 0
        )
        metrics.replication_lag_ms.set_function(
            lambda: self.follower.lag_ms() if self.follower is not None else 0
        )
        if config.follow:
            # From the start: no write, no expiry may run before the follower is set up.
            engine.leader_address = config.follow

    @property
    def role(self) -> str:
        return PRIMARY if self.engine.leader_address is None else FOLLOWER

    @property
    def leader_address(self) -> str | None:
        return self.engine.leader_address

    async def start(self) -> None:
        """Once the state is recovered and the journal attached (before SERVING)."""
        if self.engine.leader_address is not None:
            await self.demote(self.engine.leader_address)
            return
        durability = self.durability_of()
        if durability is not None:
            self.source.attach(durability)

    async def promote(self) -> None:
        """Stop following and start accepting writes."""
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
        durability = self.durability_of()
        if durability is not None:
            journal = durability.journal
            if journal.last_sequence > journal.durable_sequence:
                await journal.wait_durable(journal.last_sequence)
            self.source.attach(durability)
        self.engine.leader_address = None
        log.warning("promoted: this server is the primary and accepts writes")
        if self.engine.ready:
            self.engine.start()  # expire what came due meanwhile, arm the timer

    async def demote(self, leader_address: str) -> None:
        """Refuse writes now and follow `leader_address` (empty: a cluster between leaders,
        service/leadership.py: follow nobody until one is elected)."""
        self.engine.leader_address = leader_address
        self.engine.stop()  # the expiry timer: the leader's records expire holds now
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
        if not leader_address:
            log.warning("no leader known: writes are refused here until one is elected")
            return
        self.follower = Follower(
            self.engine, self.config, leader_address, self.durability_of, self._replace
        )
        self.follower.epoch_gate = self.epoch_gate
        self.follower.start()
        log.warning("following %s: writes are refused here", leader_address)

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
        self.source.close()

    def replace_durability(self, journal: Journal, state: AtpState) -> None:
        """A journal and state that replace the current ones (a diverged cluster member starting
        over: service/cluster_member.py)."""
        self._replace(journal, state)

    def _replace(self, journal: Journal, state: AtpState) -> None:
        """A follower installed a snapshot: a new journal and state replace the old ones."""
        old = self.durability_of()
        assert old is not None
        durability = Durability(
            journal,
            old.data_dir,
            old.limits,
            old.snapshot_every_records,
            old.snapshot_every_seconds,
        )
        self._set_durability(durability)
        durability.attach(self.engine)
        self.engine.replace_state(state)

    # ------------------------------------------------------------------ what callers see

    def trailers(self) -> tuple[tuple[str, str], ...] | None:
        """Trailing metadata of every answer on a follower: the leader and the lag."""
        follower = self.follower
        if self.engine.leader_address is None or follower is None:
            return None
        return (
            (LEADER_TRAILER, self.engine.leader_address),
            (LAG_SEQUENCES_TRAILER, str(follower.lag_sequences())),
            (LAG_MS_TRAILER, str(follower.lag_ms())),
        )

    def fill_status(self, response: admin_pb2.GetStatusResponse, include_digest: bool) -> None:
        response.role = self.role
        if include_digest:
            response.state_digest = self.engine.state.digest()
        follower = self.follower
        if self.engine.leader_address is not None:
            response.leader_address = self.engine.leader_address
            if follower is not None:
                response.replication_lag_sequences = follower.lag_sequences()
                response.replication_lag_ms = follower.lag_ms()
            return
        response.replication_degraded = self.source.degraded
        for link in self.source.followers.values():
            response.followers.add(
                follower_id=link.follower_id, durable_sequence=link.durable_sequence
            )
