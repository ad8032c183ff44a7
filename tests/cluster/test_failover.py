"""Failover of three `atpd serve --cluster` processes around a real etcd: SIGKILL of the leader
under reservation load, SIGSTOP of the leader past its lease."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from atpd.etcd_local import LocalEtcd
from cluster.cluster_support import (
    FAILOVER_BOUND_S,
    OK,
    Cluster,
    Member,
    has_reservation,
    reserve_request,
    running_cluster,
    seed,
)

pytestmark = pytest.mark.durable

WORKERS = 4
ACKS_BEFORE_KILL = 40
LOAD_AFTER_FAILOVER_S = 0.5
WORKER_RPC_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.02


class ReservationLoad:
    """WORKERS threads reserving one unit at a time on whichever member leads; a refused or
    failed call is retried with the same id on the leader found then (Reserve is idempotent).
    `acked` is the client's ack log: ids whose Reserve answered OK."""

    def __init__(self, cluster: Cluster, leader: Member) -> None:
        self.cluster = cluster
        self.leader = leader
        self.acked: list[str] = []
        self.acked_by: dict[str, int] = {}  # reservation id -> index of the member that acked
        self.stop = threading.Event()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=(worker,), daemon=True)
            for worker in range(WORKERS)
        ]

    def __enter__(self) -> ReservationLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _work(self, worker: int) -> None:
        target = self.leader
        number = 0
        while not self.stop.is_set():
            reservation_id = f"w{worker}-{number}"
            while not self.stop.is_set():
                try:
                    answer = target.stubs().reservations.Reserve(
                        reserve_request(reservation_id), timeout=WORKER_RPC_TIMEOUT_S
                    )
                except grpc.RpcError:
                    target = self.cluster.leader() or target
                    time.sleep(RETRY_PAUSE_S)
                    continue
                if answer.outcome != OK:
                    self.failures.append(f"{reservation_id}: outcome {answer.outcome}")
                    return
                with self._lock:
                    self.acked.append(reservation_id)
                    self.acked_by[reservation_id] = target.index
                break
            number += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def acked_by_other_than(self, member: Member) -> bool:
        with self._lock:
            return any(index != member.index for index in self.acked_by.values())


def test_sigkill_of_the_leader_under_load_loses_no_acknowledged_reservation(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    """With sync replication, SIGKILL of the leader while four clients reserve: another member
    leads and acknowledges writes within the failover bound, every reservation acknowledged
    before or after is on it, and the killed member restarts as a follower and converges."""
    extra = ("--replication", "sync")
    with running_cluster(tmp_path, etcd.endpoint, "kill", extra) as cluster:
        old = cluster.wait_leader()
        seed(old.stubs(), 1_000_000)
        with ReservationLoad(cluster, old) as load:
            cluster.wait(lambda: load.count() >= ACKS_BEFORE_KILL, "acks", FAILOVER_BOUND_S)
            old.kill()
            killed_at = time.monotonic()
            cluster.wait(lambda: load.acked_by_other_than(old), "a write on a new leader", 60)
            failover_s = time.monotonic() - killed_at
            time.sleep(LOAD_AFTER_FAILOVER_S)
        assert not load.failures, load.failures
        assert failover_s < FAILOVER_BOUND_S, f"failover took {failover_s:.1f} s"
        others = [member for member in cluster.members if member is not old]
        new = cluster.wait_leader(others)
        missing = [rid for rid in load.acked if not has_reservation(new.stubs(), rid)]
        assert not missing, f"{len(missing)} acknowledged reservations lost: {missing[:10]}"
        old.start()
        cluster.wait_converged(cluster.members)
        status = old.status()
        assert status is not None and status.role == "follower"
        assert status.leader_address == new.address


def test_a_leader_stopped_past_its_lease_is_fenced_then_rejoins_as_a_follower(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    """SIGSTOP the leader until another member leads, write there, SIGCONT: the old leader
    refuses a write at once (FAILED_PRECONDITION), follows the new leader and converges; the
    refused write exists nowhere."""
    with running_cluster(tmp_path, etcd.endpoint, "stop") as cluster:
        old = cluster.wait_leader()
        seed(old.stubs(), 1_000)
        cluster.wait_converged(cluster.members)  # async replication: nothing in flight
        old.signal(signal.SIGSTOP)
        others = [member for member in cluster.members if member is not old]
        new = cluster.wait_leader(others)
        assert new.stubs().reservations.Reserve(reserve_request("after"), timeout=5).outcome == OK
        old.signal(signal.SIGCONT)
        with pytest.raises(grpc.RpcError) as refused:
            old.stubs().reservations.Reserve(reserve_request("to-the-old-leader"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        def follows_new() -> bool:
            status = old.status()
            return (
                status is not None
                and status.role == "follower"
                and (status.leader_address == new.address)
            )

        cluster.wait(follows_new, "the old leader to follow the new one", FAILOVER_BOUND_S)
        cluster.wait_converged(cluster.members)
        assert has_reservation(old.stubs(), "after")
        assert not has_reservation(new.stubs(), "to-the-old-leader")


def test_a_deposed_leader_with_records_nobody_has_starts_over_from_the_new_leader(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    """A leads alone and journals a reservation, then dies; B and C (empty) elect B, which
    writes its own history; A restarts: its journal diverged, so it is moved aside into
    `diverged-1-*`, A rebuilds from B and converges, and the reservation only A had is gone."""
    members = [Member(index, tmp_path, etcd.endpoint, "diverge", ()) for index in range(3)]
    cluster = Cluster(members)
    first, second, third = members
    try:
        first.start()
        assert cluster.wait_leader([first]) is first
        seed(first.stubs(), 1_000)
        assert (
            first.stubs().reservations.Reserve(reserve_request("only-a"), timeout=5).outcome == OK
        )
        first.kill()
        second.start()
        third.start()
        new = cluster.wait_leader([second, third])
        seed(new.stubs(), 2_000)
        assert new.stubs().reservations.Reserve(reserve_request("on-b"), timeout=5).outcome == OK
        first.start()
        cluster.wait_converged(members)
        assert list(first.data_dir.glob("diverged-1-*")), "the diverged journal was not kept"
        assert has_reservation(first.stubs(), "on-b")
        assert not has_reservation(first.stubs(), "only-a")
    finally:
        for member in members:
            member.close()
