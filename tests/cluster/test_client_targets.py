"""atpd.client with several targets: writes reach the leader whichever target comes first,
across a failover; reads go to followers when asked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from persistence.server_support import run_cli

from atpd.client import Client
from atpd.client.errors import NotFound
from atpd.client.leader import Targets, parse_targets
from atpd.etcd_local import LocalEtcd
from cluster.cluster_support import FAILOVER_BOUND_S, running_cluster, seed

LINE = ("SKU-1", "paris", 1)
CLIENT_TIMEOUT_S = 30.0


@pytest.mark.core
def test_targets_send_writes_to_the_leader_and_reads_round_the_followers() -> None:
    """Reads with read_from="follower" take each follower in turn and never the leader; a
    moved leader is added when unknown; bad read_from and empty targets are refused."""
    made: list[str] = []

    class FakeStubs:
        def __init__(self, address: str) -> None:
            self.admin = None
            self.address = address
            made.append(address)

    targets = Targets(parse_targets("a:1, b:2,c:3,a:1"), FakeStubs, "follower", ())
    assert targets.addresses == ["a:1", "b:2", "c:3"]
    assert targets.for_write().address == "a:1"
    assert [targets.for_read().address for _ in range(4)] == ["b:2", "c:3", "b:2", "c:3"]
    moved: list[str] = []
    targets.on_leader_change = moved.append
    targets.moved("d:4")
    assert targets.addresses[-1] == "d:4" and targets.for_write().address == "d:4"
    assert moved == ["d:4"]
    assert {targets.for_read().address for _ in range(6)} == {"a:1", "b:2", "c:3"}
    assert len(made) == len(set(made))  # one set of stubs per server
    with pytest.raises(ValueError, match="read_from"):
        Targets(("a:1",), FakeStubs, "nearest", ())
    with pytest.raises(ValueError, match="target"):
        parse_targets(" , ")


def test_the_client_follows_the_leader_across_a_failover(etcd: LocalEtcd, tmp_path: Path) -> None:
    """A client given the followers first reserves on the leader (unary, coalesced, and the
    CLI with --target a,b,c); reads
    from followers see the reservation once replicated; after SIGKILL of the leader the same
    client reserves on its successor without being told."""
    with running_cluster(tmp_path, etcd.endpoint, "client") as cluster:
        leader = cluster.wait_leader()
        seed(leader.stubs(), 1_000)
        followers = [member for member in cluster.members if member is not leader]
        targets = [member.address for member in (*followers, leader)]
        with Client(targets, coalesce=False, timeout_s=CLIENT_TIMEOUT_S) as unary:
            assert unary.reserve("unary", [LINE]).outcome == "OK"
            assert unary.async_client.targets.leader == leader.address
        everyone = ",".join(targets)
        cli = run_cli("reserve", "cli", "SKU-1@paris=1", "--target", everyone, "--timeout", "20")
        assert cli.returncode == 0, cli.stderr
        cli = run_cli("get", "cli", "--target", everyone, "--read-from", "follower")
        assert cli.returncode in (0, 1), cli.stderr  # a follower may not have it yet
        with Client(targets, read_from="follower", timeout_s=CLIENT_TIMEOUT_S) as client:
            assert client.reserve("before", [LINE]).outcome == "OK"
            deadline = time.monotonic() + FAILOVER_BOUND_S
            while True:
                try:
                    client.get_reservation("before")
                    client.get_reservation("before")  # the other follower too
                    break
                except NotFound:
                    assert time.monotonic() < deadline, "never replicated to the followers"
                    time.sleep(0.05)
            leader.kill()
            assert client.reserve("after", [LINE]).outcome == "OK"
            new = cluster.wait_leader(followers)
            assert client.async_client.targets.leader == new.address
