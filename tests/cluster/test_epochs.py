"""Leader epochs on the journal and the lease fence on the write path."""

from __future__ import annotations

import time

import grpc
import pytest
from service.harness import TEST_LIMITS, node, running_server

from atpd.config import Config
from atpd.core.commands import Line, Reserve, SetStock
from atpd.persistence.codec import decode_command, encode_command
from atpd.service.cluster_member import diverged
from atpd.service.leader_epoch import EpochGate, StaleEpoch, epoch_suffix, record_epoch
from atpd.service.lease_fence import LeaseFence
from atpd.v1 import batch_pb2, batch_pb2_grpc, inventory_pb2

RESERVE = Reserve("r-1", (Line("SKU-1", "paris", 2),), 60_000)


@pytest.mark.core
def test_an_epoch_stamped_record_decodes_to_the_same_command() -> None:
    """The epoch suffix changes nothing of the command, and reads back as written."""
    for command in (RESERVE, SetStock("SKU-1", "paris", 5, 1)):
        payload = encode_command(command) + epoch_suffix(7)
        assert decode_command(payload) == command
        assert record_epoch(payload) == 7
    assert epoch_suffix(0) == b""
    assert record_epoch(encode_command(RESERVE)) == 0


@pytest.mark.core
def test_a_follower_refuses_a_record_from_an_older_epoch() -> None:
    """Epochs may stay or grow along the stream; a record older than the newest applied is
    refused with its sequence and both epochs named, and the gate is left unchanged."""
    gate = EpochGate()
    for sequence, epoch in ((1, 1), (2, 1), (3, 2), (4, 2)):
        gate.accepted(gate.check(sequence, encode_command(RESERVE) + epoch_suffix(epoch)))
    assert gate.newest_epoch == 2
    with pytest.raises(StaleEpoch) as refused:
        gate.check(5, encode_command(RESERVE) + epoch_suffix(1))
    assert refused.value.sequence == 5
    assert "epoch 1" in str(refused.value) and "epoch 2" in str(refused.value)
    assert gate.newest_epoch == 2
    gate.accepted(gate.check(5, encode_command(RESERVE) + epoch_suffix(3)))
    assert gate.newest_epoch == 3


@pytest.mark.core
def test_epoch_suffix_refuses_an_epoch_out_of_range() -> None:
    """A negative or too large epoch is a bug, refused at once."""
    for bad in (-1, 1 << 63):
        with pytest.raises(ValueError, match="leader epoch"):
            epoch_suffix(bad)


@pytest.mark.grpc
def test_a_closed_lease_fence_refuses_writes_and_reads_go_on() -> None:
    """With the fence closed (lease lapsed) a write is FAILED_PRECONDITION saying this server
    is no longer the leader, nothing is applied, and reads still answer; reopened, writes go."""
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config) as server:
        api = server.stubs()
        api.inventory.UpsertNode(node("paris", "EU/FR/Paris"), timeout=10)
        fence = LeaseFence()
        server.call(lambda: setattr(server.app.engine, "lease_fence", fence))
        digest = server.digest()
        request = inventory_pb2.SetStockRequest(
            sku="SKU-1", node_id="paris", on_hand=3, source_sequence=1
        )
        with pytest.raises(grpc.RpcError) as refused:
            api.inventory.SetStock(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no longer the leader" in (refused.value.details() or "")
        assert server.digest() == digest
        api.inventory.ListNodes(inventory_pb2.ListNodesRequest(), timeout=10)
        fence.deadline = time.monotonic() + 60
        api.inventory.SetStock(request, timeout=10)
        assert server.digest() != digest


@pytest.mark.core
def test_a_journal_diverged_when_it_goes_beyond_where_the_next_epoch_started() -> None:
    """A journal ending in epoch E at sequence L diverged iff the first epoch after E started
    before L; a journal of the newest epoch, or ending before the next started, did not."""
    history = {1: 0, 2: 100, 3: 150}
    assert not diverged(100, 1, history)  # all of epoch 1 that epoch 2 kept
    assert diverged(101, 1, history)  # a record of epoch 1 that epoch 2 never had
    assert diverged(120, 1, history)  # epoch 2 started at 101: 101..120 differ
    assert not diverged(140, 2, history)
    assert diverged(151, 2, history)
    assert not diverged(500, 3, history)  # the newest epoch: nothing after it
    assert not diverged(0, 0, history)
    assert diverged(1, 0, {1: 0})  # records of no epoch beyond the first leader's start


@pytest.mark.grpc
def test_a_follower_refuses_batched_writes_as_unary_ones() -> None:
    """On a server that follows a leader, each command of a CommandBatch answers
    FAILED_PRECONDITION naming the leader, and nothing is applied."""
    config = Config(port=0, metrics_port=-1, limits=TEST_LIMITS)
    with running_server(config) as server:
        api = server.stubs()
        api.inventory.UpsertNode(node("paris", "EU/FR/Paris"), timeout=10)
        server.call(lambda: setattr(server.app.engine, "leader_address", "10.0.0.9:50051"))
        digest = server.digest()
        stock = inventory_pb2.SetStockRequest(
            sku="SKU-1", node_id="paris", on_hand=3, source_sequence=1
        )
        with grpc.insecure_channel(server.target) as channel:
            answer = batch_pb2_grpc.CommandServiceStub(channel).CommandBatch(
                batch_pb2.CommandBatchRequest(
                    commands=[batch_pb2.BatchCommand(set_stock=stock)] * 2
                ),
                timeout=10,
            )
        for result in answer.results:
            assert result.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
            assert "10.0.0.9:50051" in result.error.message
        assert server.digest() == digest
