"""Leadership through a real etcd: one leader at a time, the most up-to-date member wins, a
leader that stops renewing is fenced before its successor is elected."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from atpd.etcd_local import LocalEtcd
from atpd.service.etcd_api import EtcdApi
from atpd.service.leadership import ClusterSettings, LeaderRecord, Leadership
from atpd.service.lease_fence import LeaseFence, LeaseLost

WAIT_S = 15.0
POLL_S = 0.02
_clusters = itertools.count()


@dataclass
class FakeMember:
    """Records what leadership asked of it."""

    sequence: int | None
    events: list[tuple[str, str, int, float]] = field(default_factory=list)
    leading = False

    def candidate_sequence(self) -> int | None:
        return self.sequence

    async def become_leader(self, epoch: int) -> None:
        self.leading = True
        self.events.append(("leader", "", epoch, time.monotonic()))

    def become_follower(self, leader_address: str, epoch: int) -> None:
        self.leading = False
        self.events.append(("follower", leader_address, epoch, time.monotonic()))


@dataclass
class Node:
    member: FakeMember
    fence: LeaseFence
    leadership: Leadership


def make_nodes(etcd: LocalEtcd, sequences: list[int | None], cluster: str) -> list[Node]:
    nodes = []
    for index, sequence in enumerate(sequences):
        settings = ClusterSettings(
            cluster=cluster,
            etcd=(etcd.endpoint,),
            advertise=f"127.0.0.1:{7000 + index}",
            member_id=f"m{index}",
        )
        member = FakeMember(sequence)
        fence = LeaseFence()
        nodes.append(Node(member, fence, Leadership(settings, member, fence)))
    return nodes


async def wait_for(predicate: object, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_S)


def leaders(nodes: list[Node]) -> list[Node]:
    return [node for node in nodes if node.leadership.is_leader]


async def read_leader(etcd: LocalEtcd, cluster: str) -> LeaderRecord | None:
    api = EtcdApi((etcd.endpoint,), 1.0)
    try:
        found, _ = await api.get(f"/atpd/{cluster}/leader".encode())
    finally:
        await api.close()
    return None if found is None else LeaderRecord.decode(found.value)


def test_the_most_up_to_date_member_is_elected_and_the_others_follow(etcd: LocalEtcd) -> None:
    """Of three members at sequences 5, 9 and 7, the one at 9 leads (epoch 1); the others
    follow its advertised address; exactly one fence is open."""
    cluster = f"elect{next(_clusters)}"

    async def scenario() -> None:
        nodes = make_nodes(etcd, [5, 9, 7], cluster)
        for node in nodes:
            node.leadership.start()
        try:
            await wait_for(lambda: len(leaders(nodes)) == 1, "a leader")
            winner = leaders(nodes)[0]
            assert winner is nodes[1]
            assert winner.leadership.epoch == 1
            assert winner.fence.open
            winner.fence.check()
            others = [nodes[0], nodes[2]]
            await wait_for(
                lambda: all(
                    node.member.events and node.member.events[-1][1] == "127.0.0.1:7001"
                    for node in others
                ),
                "the others to follow",
            )
            for node in others:
                assert not node.fence.open
                with pytest.raises(LeaseLost):
                    node.fence.check()
            record = await read_leader(etcd, cluster)
            assert record == LeaderRecord("127.0.0.1:7001", 1, "m1")
        finally:
            for node in nodes:
                await node.leadership.stop()

    asyncio.run(scenario())


def test_a_leader_that_stops_renewing_is_fenced_before_its_successor_is_elected(
    etcd: LocalEtcd,
) -> None:
    """The leader stops renewing (as a SIGSTOPped process): its fence closes before another
    member is elected with a higher epoch, and a member that is not eligible (None) never
    leads."""
    cluster = f"fence{next(_clusters)}"

    async def scenario() -> None:
        nodes = make_nodes(etcd, [9, 4, None], cluster)
        for node in nodes:
            node.leadership.start()
        try:
            await wait_for(lambda: len(leaders(nodes)) == 1, "a leader")
            old = leaders(nodes)[0]
            assert old is nodes[0]
            # Freeze the old leader: its task stops, its lease is not revoked (no stop()).
            task = old.leadership._task
            assert task is not None
            task.cancel()
            frozen_deadline = old.fence.deadline
            assert frozen_deadline > time.monotonic()
            await wait_for(lambda: nodes[1].leadership.is_leader, "the successor")
            elected_at = next(e[3] for e in nodes[1].member.events if e[0] == "leader")
            # The old leader's right to write ended before the successor was elected.
            assert frozen_deadline < elected_at
            assert nodes[1].leadership.epoch == 2
            assert not nodes[2].leadership.is_leader
            record = await read_leader(etcd, cluster)
            assert record is not None and record.epoch == 2 and record.member == "m1"
        finally:
            for node in nodes:
                await node.leadership.stop()

    asyncio.run(scenario())


def test_a_leader_that_shuts_down_hands_over_without_waiting_for_its_lease(
    etcd: LocalEtcd,
) -> None:
    """stop() revokes the lease: the other member leads well within one TTL."""
    cluster = f"handover{next(_clusters)}"

    async def scenario() -> None:
        nodes = make_nodes(etcd, [3, 3], cluster)
        for node in nodes:
            node.leadership.start()
        try:
            await wait_for(lambda: len(leaders(nodes)) == 1, "a leader")
            old = leaders(nodes)[0]
            other = nodes[1] if old is nodes[0] else nodes[0]
            await old.leadership.stop()
            assert not old.fence.open
            await wait_for(lambda: other.leadership.is_leader, "the successor")
            assert other.leadership.epoch == 2
        finally:
            for node in nodes:
                await node.leadership.stop()

    asyncio.run(scenario())
