"""The failover soak (`make crashtest`, marker slow): rounds of SIGKILL or SIGSTOP of the leader
under sync reservation load; after each, every acknowledged reservation is on the new leader and
the three members converge once the victim is back."""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path

import pytest

from atpd.etcd_local import LocalEtcd
from cluster.cluster_support import FAILOVER_BOUND_S, has_reservation, running_cluster, seed
from cluster.test_failover import ACKS_BEFORE_KILL, ReservationLoad

pytestmark = [pytest.mark.durable, pytest.mark.slow]

ROUNDS = 6


def test_failover_soak_loses_no_acknowledged_reservation(etcd: LocalEtcd, tmp_path: Path) -> None:
    """ROUNDS failovers alternating SIGKILL + restart and SIGSTOP + SIGCONT of the leader, with
    four clients reserving throughout: no acknowledged reservation is ever missing from the
    leader, and the members converge (same sequence and digest) after every round."""
    with running_cluster(tmp_path, etcd.endpoint, "soak", ("--replication", "sync")) as cluster:
        leader = cluster.wait_leader()
        seed(leader.stubs(), 10_000_000)
        acked: list[str] = []
        for number in range(ROUNDS):
            with ReservationLoad(cluster, leader) as load:
                load.acked.clear()
                cluster.wait(lambda: load.count() >= ACKS_BEFORE_KILL, "acks", FAILOVER_BOUND_S)
                stopped = number % 2 == 1
                if stopped:
                    leader.signal(signal.SIGSTOP)
                else:
                    leader.kill()
                victim = leader
                others = [member for member in cluster.members if member is not victim]
                cluster.wait(partial(load.acked_by_other_than, victim), "a new leader's ack", 60)
                time.sleep(0.3)
            assert not load.failures, load.failures
            acked.extend(load.acked)
            leader = cluster.wait_leader(others)
            missing = [rid for rid in acked if not has_reservation(leader.stubs(), rid)]
            assert not missing, f"round {number}: {len(missing)} lost: {missing[:10]}"
            if stopped:
                victim.signal(signal.SIGCONT)
            else:
                victim.start()
            cluster.wait_converged(cluster.members)
