"""Followers as real processes: same state as the primary (digest at the same sequence) after a
mixed workload including a bulk load, never a write, lag in the trailers, a restarted follower
catches up from its own journal, a follower too far behind gets the primary's snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from feeds.support import DELTA
from feeds.support import load as bulk_load
from persistence.server_support import RPC_TIMEOUT_S, line, setup_world, wait_until

from atpd.v1 import (
    admin_pb2,
    availability_pb2,
    batch_pb2,
    batch_pb2_grpc,
    common_pb2,
    feeds_pb2_grpc,
    inventory_pb2,
    reservations_pb2,
    watch_pb2,
    watch_pb2_grpc,
)

from .support import (
    CATCH_UP_TIMEOUT_S,
    Cluster,
    assert_same_state,
    cluster,
    reserve,
    status,
    trailers_of,
    wait_caught_up,
    write_config,
)

pytestmark = pytest.mark.durable

NODES = {"PAR": "EU/FR/Paris", "BER": "EU/DE/Berlin"}
SKUS = ("BAG-1", "BAG-2", "SCARF-1")
OK = common_pb2.OUTCOME_OK


def mixed_workload(cluster: Cluster, prefix: str) -> None:
    """Reservations held, confirmed, released, fulfilled; counts, adjustments, a batch, a bulk
    load."""
    stubs = cluster.primary.stubs()
    for index in range(12):
        sku = SKUS[index % len(SKUS)]
        node_id = "PAR" if index % 2 else "BER"
        assert reserve(stubs, f"{prefix}-{index}", sku, node_id, 1 + index % 3) == OK
    reservations = stubs.reservations
    reservations.Confirm(
        reservations_pb2.ConfirmRequest(reservation_id=f"{prefix}-0"), timeout=RPC_TIMEOUT_S
    )
    reservations.Release(
        reservations_pb2.ReleaseRequest(reservation_id=f"{prefix}-1"), timeout=RPC_TIMEOUT_S
    )
    reservations.Fulfil(
        reservations_pb2.FulfilRequest(reservation_id=f"{prefix}-2"), timeout=RPC_TIMEOUT_S
    )
    stubs.inventory.AdjustStock(
        inventory_pb2.AdjustStockRequest(sku="BAG-1", node_id="PAR", delta=-2, reason="damaged"),
        timeout=RPC_TIMEOUT_S,
    )
    # A batch: its reservation commands travel as one CommandGroup record.
    batch = [
        batch_pb2.BatchCommand(
            reserve=reservations_pb2.ReserveRequest(
                reservation_id=f"{prefix}-batch-{index}",
                lines=[reservations_pb2.ReservationLine(sku="BAG-2", node_id="PAR", quantity=1)],
                ttl_ms=600_000,
            )
        )
        for index in range(4)
    ]
    batch.append(
        batch_pb2.BatchCommand(
            release=reservations_pb2.ReleaseRequest(reservation_id=f"{prefix}-batch-0")
        )
    )
    answer = batch_pb2_grpc.CommandServiceStub(stubs.channel).CommandBatch(
        batch_pb2.CommandBatchRequest(commands=batch), timeout=RPC_TIMEOUT_S
    )
    assert all(result.WhichOneof("result") != "error" for result in answer.results), answer
    feeds = feeds_pb2_grpc.FeedServiceStub(stubs.channel)
    response = bulk_load(
        feeds,
        f"{prefix}-load",
        DELTA,
        [("SCARF-1", "PAR", 70, None), ("SCARF-2", "BER", 9, 1)],
    )
    assert response.rows == 2, response


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A primary and two followers for the tests that only read and write through them."""
    root = tmp_path_factory.mktemp("cluster")
    with cluster(root) as running:
        running.add_follower("follower-a")
        running.add_follower("follower-b")
        running.start_all()
        setup_world(running.primary.stubs(), NODES, SKUS, on_hand=40)
        yield running


def test_followers_have_the_primary_digest_after_a_mixed_workload(running: Cluster) -> None:
    """Two followers reach the primary's journal sequence with the same state digest."""
    mixed_workload(running, "mixed")
    for follower in running.followers:
        assert_same_state(running.primary, follower)
        answer = status(follower.stubs())
        assert answer.role == "follower" and answer.leader_address == running.primary.target
    leader = status(running.primary.stubs())
    assert leader.role == "primary"
    assert sorted(f.durable_sequence for f in leader.followers) == [leader.durable_sequence] * 2


def test_a_follower_never_serves_a_write(running: Cluster) -> None:
    """Every write on a follower answers FAILED_PRECONDITION naming the leader (message and
    `atpd-leader` trailer), and changes nothing."""
    follower = running.followers[0]
    before = status(follower.stubs(), digest=True)
    stubs = follower.stubs()
    writes: tuple[Callable[[], object], ...] = (
        lambda: stubs.reservations.Reserve(
            reservations_pb2.ReserveRequest(
                reservation_id="on-follower", lines=[line("BAG-1", "PAR", 1)], ttl_ms=60_000
            ),
            timeout=RPC_TIMEOUT_S,
        ),
        lambda: stubs.inventory.SetStock(
            inventory_pb2.SetStockRequest(
                sku="BAG-1", node_id="PAR", on_hand=1, source_sequence=99
            ),
            timeout=RPC_TIMEOUT_S,
        ),
    )
    for write in writes:
        with pytest.raises(grpc.RpcError) as info:
            write()
        error = info.value
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert running.primary.target in str(error.details())
        trailers = trailers_of(error)
        assert trailers["atpd-leader"] == running.primary.target
    feeds = feeds_pb2_grpc.FeedServiceStub(stubs.channel)
    with pytest.raises(grpc.RpcError) as info:
        bulk_load(feeds, "on-follower", DELTA, [("BAG-1", "PAR", 1, None)])
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    after = status(follower.stubs(), digest=True)
    assert (after.journal_sequence, after.state_digest) == (
        before.journal_sequence,
        before.state_digest,
    )


def test_reads_on_a_follower_carry_its_lag(running: Cluster) -> None:
    """A read answered by a follower has `atpd-lag-sequences` and `atpd-lag-ms` trailers (zero
    once caught up) and the same answer as the primary."""
    follower = running.followers[1]
    wait_caught_up(running.primary, follower)
    request = availability_pb2.GetAvailabilityRequest(skus=list(SKUS))
    answer, call = follower.stubs().availability.GetAvailability.with_call(
        request, timeout=RPC_TIMEOUT_S
    )
    trailers = trailers_of(call)
    assert trailers["atpd-lag-sequences"] == "0"
    assert int(trailers["atpd-lag-ms"]) >= 0
    assert trailers["atpd-leader"] == running.primary.target
    leader_answer = running.primary.stubs().availability.GetAvailability(
        request, timeout=RPC_TIMEOUT_S
    )
    assert [i.total_atp for i in answer.items] == [i.total_atp for i in leader_answer.items]
    _, call = running.primary.stubs().availability.GetAvailability.with_call(
        request, timeout=RPC_TIMEOUT_S
    )
    assert "atpd-lag-ms" not in trailers_of(call)


def test_a_restarted_follower_catches_up(tmp_path: Path) -> None:
    """A follower SIGKILLed while the primary goes on writing (then restarts) restarts from its
    own journal and the records read back from the primary's journal files, and ends with the
    primary's digest."""
    with cluster(tmp_path) as running:
        follower = running.add_follower("follower")
        running.start_all()
        setup_world(running.primary.stubs(), NODES, SKUS, on_hand=40)
        mixed_workload(running, "before")
        wait_caught_up(running.primary, follower)
        follower.kill()
        mixed_workload(running, "while-down")
        # Restarted, the primary has nothing in memory: the records (a bulk load among them,
        # with its load file) come from its journal files.
        running.primary.kill()
        running.primary.start()
        follower.start(running.follow_args())
        assert "0 journal records replayed" not in follower.log_text()
        assert_same_state(running.primary, follower)
        mixed_workload(running, "after")
        assert_same_state(running.primary, follower)


def test_a_follower_too_far_behind_receives_a_snapshot(tmp_path: Path) -> None:
    """When the primary's journal no longer holds the records a new follower needs (two
    snapshots later, small segments removed), the follower gets the primary's snapshot, then
    the records after it."""
    with cluster(tmp_path) as running:
        config = write_config(tmp_path, "small-segments", journal_segment_bytes=512)
        running.primary = running._daemon("primary-small", config)
        running.primary.start()
        stubs = running.primary.stubs()
        setup_world(stubs, NODES, SKUS, on_hand=40)
        for round_name in ("one", "two"):
            mixed_workload(running, round_name)
            stubs.admin.Snapshot(admin_pb2.SnapshotRequest(), timeout=RPC_TIMEOUT_S)
        mixed_workload(running, "three")
        # Restarted, the primary holds no recent records in memory: they come from its files.
        assert running.primary.terminate() == 0
        running.primary.start()
        follower = running.add_follower("late")
        follower.start(running.follow_args())
        assert_same_state(running.primary, follower)
        wait_until(
            lambda: "replacing the state with the primary's snapshot" in follower.log_text(),
            CATCH_UP_TIMEOUT_S,
            "the follower to log the snapshot",
        )
        mixed_workload(running, "four")
        assert_same_state(running.primary, follower)


def test_watch_on_a_follower_sees_the_primary_writes(running: Cluster) -> None:
    """A Watch stream opened on a follower gets the ATP change of a write made on the primary,
    with the follower's lag trailers on the stream."""
    follower = running.followers[0]
    watch = watch_pb2_grpc.WatchServiceStub(follower.stubs().channel)
    events = watch.Watch(watch_pb2.WatchRequest(skus=["BAG-2"]), timeout=CATCH_UP_TIMEOUT_S)
    try:
        first = next(events)
        assert first.kind == watch_pb2.WATCH_EVENT_KIND_SYNC
        assert reserve(running.primary.stubs(), "watched", "BAG-2", "PAR", 1) == OK
        change = next(events)
        assert change.kind != watch_pb2.WATCH_EVENT_KIND_SYNC
        assert (change.sku, change.node_id, change.old_atp - change.new_atp) == ("BAG-2", "PAR", 1)
    finally:
        events.cancel()
