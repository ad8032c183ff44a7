"""Batches are durable when answered: `atpd serve` (fsync always) SIGKILLed while a Submit
stream and CommandBatch calls are in flight keeps every acknowledged command after restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from atpd.v1 import batch_pb2, batch_pb2_grpc, common_pb2

from .server_support import (
    RPC_TIMEOUT_S,
    assert_stock_consistent,
    daemon,
    fetch_positions,
    fetch_reservations,
    held_by_cell,
    reserve_request,
    setup_world,
)

pytestmark = pytest.mark.durable

NODES = {"ST-PAR-01": "EU/FR/Paris", "ST-LYO-01": "EU/FR/Lyon"}
SKUS = ("SKU-A", "SKU-B")
BATCH_COMMANDS = 16
ACKS_BEFORE_KILL = 12
# Long enough that no hold expires during the test.
TTL_MS = 3_600_000


def batch_of(prefix: str, number: int) -> list[batch_pb2.BatchCommand]:
    commands = []
    for i in range(BATCH_COMMANDS):
        sku = SKUS[i % 2]
        node_id = list(NODES)[(i // 2) % 2]
        request = reserve_request(f"{prefix}-{number}-{i}", [(sku, node_id, 1)], TTL_MS)
        commands.append(batch_pb2.BatchCommand(reserve=request))
    return commands


def test_acknowledged_batches_survive_sigkill(tmp_path: Path) -> None:
    """Every Reserve whose batch was answered OK (over Submit or CommandBatch) is there after a
    SIGKILL and restart; nothing is reserved that no command asked for."""
    with daemon(tmp_path / "data", tmp_path) as server:
        stubs = server.start()
        setup_world(stubs, NODES, SKUS, on_hand=10_000)
        commands = batch_pb2_grpc.CommandServiceStub(stubs.channel)
        acked: list[str] = []
        sent: list[str] = []
        enough = threading.Event()
        lock = threading.Lock()

        def stream() -> Iterator[batch_pb2.SubmitRequest]:
            number = 0
            while True:
                batch = batch_of("s", number)
                with lock:
                    sent.extend(c.reserve.reservation_id for c in batch)
                yield batch_pb2.SubmitRequest(correlation_id=f"b{number}", commands=batch)
                number += 1

        def submit() -> None:
            try:
                for answer in commands.Submit(stream(), timeout=60.0):
                    number = int(answer.correlation_id[1:])
                    assert all(
                        r.reserve.outcome == common_pb2.OUTCOME_OK for r in answer.results
                    ), answer
                    with lock:
                        acked.extend(f"s-{number}-{i}" for i in range(BATCH_COMMANDS))
                        if len(acked) >= ACKS_BEFORE_KILL * BATCH_COMMANDS:
                            enough.set()
            except grpc.RpcError:
                enough.set()  # the kill

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        unary_batches = 0
        while not enough.is_set() and unary_batches < 50:
            batch = batch_of("u", unary_batches)
            with lock:
                sent.extend(c.reserve.reservation_id for c in batch)
            response = commands.CommandBatch(
                batch_pb2.CommandBatchRequest(commands=batch), timeout=RPC_TIMEOUT_S
            )
            assert all(r.reserve.outcome == common_pb2.OUTCOME_OK for r in response.results)
            with lock:
                acked.extend(c.reserve.reservation_id for c in batch)
            unary_batches += 1
        assert enough.wait(60.0)
        server.kill()
        thread.join(30.0)
        with lock:
            acknowledged = list(acked)
            asked = set(sent)
        stubs = server.start()
        found = fetch_reservations(stubs, asked)
        missing = [rid for rid in acknowledged if found[rid] is None]
        assert not missing, f"{len(missing)} acknowledged reservations lost: {missing[:5]}"
        cells = [(sku, node_id) for sku in SKUS for node_id in NODES]
        positions = fetch_positions(stubs, cells)
        assert_stock_consistent(positions, held_by_cell(found.values()))
