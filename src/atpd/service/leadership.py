"""Leadership and fencing through etcd (README "Running a cluster").

Keys, under `/atpd/<cluster>/`:
- `leader`: JSON {address, epoch, member}, bound to the leader's lease: it disappears when the
  leader stops renewing (crash, partition, SIGSTOP) for the lease TTL;
- `epoch`: the last epoch handed out (a counter, never bound to a lease);
- `epochs/<epoch>`: the last sequence before that epoch's first record (its leader's journal
  length when elected), kept for good: how a rejoining member finds out whether its journal
  diverged (service/cluster_member.py);
- `candidates/<member>`: each live member's durable journal sequence, zero-padded to 20 digits
  so bytewise order is numeric order, bound to the member's lease.

Election. Each following member keeps its journal sequence in `candidates/<member>` (updated
every settle/2 when it moved). When `leader` is absent, each member publishes it again, waits
`settle` (so the others, woken by the same watch event, publish theirs), and tries one etcd
transaction: IF `leader` is absent AND `epoch` has not moved since read AND every candidate's
sequence is below ours + 1 (no candidate is ahead of us) THEN put `leader` (bound to our lease)
and `epoch` + 1. So only a most up-to-date member can win, and among equals the first
transaction wins; the others see `leader` and follow it. A candidate that is behind waits: if
the one ahead dies too, its candidate key expires with its lease and the next best wins.

Fencing. The lease is renewed every TTL/4. etcd starts a renewed TTL when it receives the
request, which is after we sent it, so `sent + TTL` is never after etcd's expiry; the leader
stops writing at `sent + TTL - margin` (`lease_margin_ms`), the margin covering the rate
difference between this machine's monotonic clock and etcd's (clocks are never compared, only
durations: a 2 s TTL with a 300 ms margin tolerates a 15 % rate difference). etcd deletes
`leader` only once the lease expired, so a successor can only be elected after the old leader's
deadline passed. The engine checks the deadline before applying a write and before acknowledging
it, so even a leader stopped mid-write (SIGSTOP) and continued after its successor took over
acknowledges nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from atpd.service.etcd_api import (
    EtcdApi,
    EtcdUnavailable,
    KeyValue,
    LeaseGrant,
    compare_absent,
    compare_all_values_below,
    compare_modified_at,
    put_operation,
)
from atpd.service.lease_fence import LeaseFence

log = logging.getLogger(__name__)

SEQUENCE_DIGITS = 20
# After losing etcd or a lease: wait this long before trying again (doubles up to the TTL).
RETRY_FIRST_S = 0.1


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    cluster: str
    etcd: tuple[str, ...]
    advertise: str  # host:port clients and followers reach this server at
    member_id: str  # unique in the cluster; the advertised address by default
    lease_ttl_s: int = 2
    lease_margin_ms: int = 300
    # Candidates wait this long after publishing their sequence before trying to take over.
    election_settle_ms: int = 200
    # Deadline of one etcd call.
    etcd_timeout_ms: int = 1000

    def key(self, name: str) -> bytes:
        return f"/atpd/{self.cluster}/{name}".encode()


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    address: str
    epoch: int
    member: str

    def encode(self) -> bytes:
        text = json.dumps({"address": self.address, "epoch": self.epoch, "member": self.member})
        return text.encode()

    @staticmethod
    def decode(value: bytes) -> LeaderRecord:
        try:
            fields = json.loads(value)
            return LeaderRecord(str(fields["address"]), int(fields["epoch"]), str(fields["member"]))
        except (ValueError, KeyError, TypeError) as error:
            raise EtcdUnavailable(
                f"leader key holds {value[:200]!r}: not a leader record"
            ) from error


def encode_sequence(sequence: int) -> bytes:
    return f"{sequence:0{SEQUENCE_DIGITS}d}".encode()


class Member(Protocol):
    """What leadership drives: the replication role of this server."""

    def candidate_sequence(self) -> int | None:
        """The last journal sequence durable here, or None while this server must not lead
        (its history diverged from the leader's and is being replaced)."""

    async def become_leader(self, epoch: int) -> None:
        """Stop following, apply what is durable here, stamp `epoch` on records, take writes."""

    def become_follower(self, leader_address: str, epoch: int) -> None:
        """Stop writes at once; follow `leader_address` (empty: not known yet)."""


class Leadership:
    def __init__(
        self,
        settings: ClusterSettings,
        member: Member,
        fence: LeaseFence,
        api: EtcdApi | None = None,
    ) -> None:
        self.settings = settings
        self.member = member
        self.fence = fence
        self.api = api or EtcdApi(settings.etcd, settings.etcd_timeout_ms / 1000)
        self.leader_key = settings.key("leader")
        self.epoch_key = settings.key("epoch")
        self.candidates_prefix = settings.key("candidates/")
        self.epochs_prefix = settings.key("epochs/")
        self.candidate_key = settings.key(f"candidates/{settings.member_id}")
        self.is_leader = False
        self.epoch = 0
        self.leader: LeaderRecord | None = None  # the leader known now (maybe us)
        self._lease: LeaseGrant | None = None
        self._deadline = 0.0  # local end of our lease (monotonic seconds)
        self._step_down_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.on_elected: Callable[[], None] | None = None  # each election won (metrics)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Give leadership up at once (a successor need not wait for the lease to expire)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lease = self._lease
        self._step_down("shutting down")
        if lease is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.api.revoke(lease.lease_id)
        await self.api.close()

    async def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        while not self._stopping:
            try:
                await self._term()
                retry_s = RETRY_FIRST_S
            except EtcdUnavailable as error:
                log.warning("leadership: %s; trying again in %.1f s", error, retry_s)
            except Exception:
                # A bug, or a promotion that failed: never leave the cluster silently.
                log.exception("leadership: unexpected failure; trying again in %.1f s", retry_s)
            self._step_down("lease lost")
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, float(self.settings.lease_ttl_s))

    # ------------------------------------------------------------------ one lease

    async def _term(self) -> None:
        """Hold one lease until it is lost: follow the leader, or campaign, or lead."""
        grant = await self.api.grant(self.settings.lease_ttl_s)
        self._lease = grant
        self._renewed(grant)
        loop = asyncio.get_running_loop()
        renewing = loop.create_task(self._keep_alive(grant))
        publishing = loop.create_task(self._publish_candidacy(grant))
        try:
            while True:
                if renewing.done():
                    renewing.result()  # raises why it ended
                    raise EtcdUnavailable("lease renewal stopped")
                found, revision = await self.api.get(self.leader_key)
                if found is None:
                    if self.is_leader:
                        self._step_down("the leader key disappeared from etcd")
                    await self._campaign(grant)
                    continue
                await self._observe_leader(found, grant)
                await self._until(self.api.wait_change(self.leader_key, revision, 2.0), renewing)
        finally:
            publishing.cancel()
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, EtcdUnavailable):
                await renewing
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            self._lease = None
            self._deadline = 0.0

    @staticmethod
    async def _until(waiting: Awaitable[None], renewing: asyncio.Task[None]) -> None:
        """Wait for `waiting`, but no longer than the lease renewal runs."""
        task = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait((task, renewing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, EtcdUnavailable):
                    await task
        if task.done() and not task.cancelled():
            task.result()

    async def _observe_leader(self, found: KeyValue, grant: LeaseGrant) -> None:
        record = LeaderRecord.decode(found.value)
        if found.lease == grant.lease_id:
            return  # ours: keep leading
        if self.is_leader:
            # Someone else holds the key while we thought we led: our lease must have lapsed.
            self._step_down(f"the leader key now names {record.address}")
        if record.member == self.settings.member_id:
            # Held by an earlier run of this server (restarted before its lease expired): that
            # run is gone, so its lease can go now rather than after the TTL.
            log.info("leadership: revoking the lease of this server's previous run")
            await self.api.revoke(found.lease)
            return
        if self.leader != record:
            self.leader = record
            self.epoch = max(self.epoch, record.epoch)
            log.info("leadership: following %s (epoch %d)", record.address, record.epoch)
            self.member.become_follower(record.address, record.epoch)

    async def _publish_candidacy(self, grant: LeaseGrant) -> None:
        """While following, keep this member's sequence in etcd fresh (every half settle time,
        when it moved), so an election never rests on an old value of a member that is merely
        slow to publish when the leader vanishes."""
        published: int | None = None
        interval_s = self.settings.election_settle_ms / 2000
        while True:
            await asyncio.sleep(interval_s)
            sequence = self.member.candidate_sequence()
            if self.is_leader or sequence is None or sequence == published:
                continue
            try:
                await self.api.put(self.candidate_key, encode_sequence(sequence), grant.lease_id)
            except EtcdUnavailable as error:
                log.debug("leadership: sequence not published: %s", error)
                continue
            published = sequence

    async def _campaign(self, grant: LeaseGrant) -> None:
        sequence = self.member.candidate_sequence()
        if sequence is None:
            await asyncio.sleep(self.settings.election_settle_ms / 1000)
            return
        if self.leader is not None:
            # The leader we followed is gone: writes go nowhere until a successor is elected.
            self.leader = None
            self.member.become_follower("", self.epoch)
        await self.api.put(self.candidate_key, encode_sequence(sequence), grant.lease_id)
        await asyncio.sleep(self.settings.election_settle_ms / 1000)
        latest = self.member.candidate_sequence()
        if latest is None:
            return
        if latest != sequence:
            sequence = latest
            await self.api.put(self.candidate_key, encode_sequence(sequence), grant.lease_id)
        counter, _ = await self.api.get(self.epoch_key)
        epoch = (int(counter.value) if counter is not None else 0) + 1
        record = LeaderRecord(self.settings.advertise, epoch, self.settings.member_id)
        won = await self.api.transaction(
            [
                compare_absent(self.leader_key),
                compare_modified_at(self.epoch_key, counter.mod_revision if counter else 0),
                compare_all_values_below(self.candidates_prefix, encode_sequence(sequence + 1)),
            ],
            [
                put_operation(self.leader_key, record.encode(), grant.lease_id),
                put_operation(self.epoch_key, str(epoch).encode()),
                # Where this epoch's history starts (service/cluster_member.py): kept for good.
                put_operation(self._epoch_start_key(epoch), str(sequence).encode()),
            ],
        )
        if not won:
            log.info("leadership: not elected (sequence %d); watching the leader key", sequence)
            await asyncio.sleep(self.settings.election_settle_ms / 1000)
            return
        log.warning("leadership: elected leader, epoch %d, at sequence %d", epoch, sequence)
        self.is_leader = True
        self.epoch = epoch
        self.leader = record
        self.fence.deadline = self._deadline
        self._arm_step_down()
        if self.on_elected is not None:
            self.on_elected()
        await self.member.become_leader(epoch)

    def _epoch_start_key(self, epoch: int) -> bytes:
        return self.epochs_prefix + encode_sequence(epoch)

    async def epoch_history(self) -> dict[int, int]:
        """Each epoch handed out -> the last sequence before its leader's own records."""
        found = await self.api.get_prefix(self.epochs_prefix)
        history: dict[int, int] = {}
        for entry in found:
            try:
                history[int(entry.key[len(self.epochs_prefix) :])] = int(entry.value)
            except ValueError:
                log.warning("leadership: ignoring %r = %r", entry.key, entry.value)
        return history

    # ------------------------------------------------------------------ the lease

    def _renewed(self, grant: LeaseGrant) -> None:
        margin_s = self.settings.lease_margin_ms / 1000
        self._deadline = grant.requested_at + grant.ttl_s - margin_s
        if self.is_leader:
            self.fence.deadline = self._deadline
            self._arm_step_down()

    async def _keep_alive(self, grant: LeaseGrant) -> None:
        """Renew every TTL/4; transient failures are retried until the local deadline, after
        which the lease counts as lost (raises EtcdUnavailable)."""
        interval_s = grant.ttl_s / 4
        while True:
            await asyncio.sleep(interval_s)
            try:
                self._renewed(await self.api.keep_alive(grant.lease_id))
            except EtcdUnavailable as error:
                if time.monotonic() >= self._deadline or "expired" in str(error):
                    raise
                log.warning("leadership: lease renewal failed (%s); retrying", error)
                interval_s = grant.ttl_s / 16
                continue
            interval_s = grant.ttl_s / 4

    def _arm_step_down(self) -> None:
        """Demote at the deadline even if nothing else runs (the fence already refuses writes
        then; this switches the role so clients are sent elsewhere)."""
        if self._step_down_timer is not None:
            self._step_down_timer.cancel()
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, self._deadline - time.monotonic())
        self._step_down_timer = loop.call_later(delay_s, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._step_down_timer = None
        if self.is_leader and time.monotonic() >= self._deadline:
            self._step_down("lease deadline passed without renewal")

    def _step_down(self, reason: str) -> None:
        self.fence.close()
        if self._step_down_timer is not None:
            self._step_down_timer.cancel()
            self._step_down_timer = None
        if not self.is_leader:
            return
        log.error("leadership: stepping down (%s); writes refused from now on", reason)
        self.is_leader = False
        self.leader = None
        self.member.become_follower("", self.epoch)
