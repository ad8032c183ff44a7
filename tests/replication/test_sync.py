"""Sync replication with real processes: every reservation the primary acknowledged survives its
SIGKILL on the follower; with no follower, `sync_fallback` degrades to async (loudly) or
refuses writes, as configured."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from persistence.server_support import RPC_TIMEOUT_S, fetch_reservations, setup_world, wait_until

from atpd.v1 import common_pb2

from .support import CATCH_UP_TIMEOUT_S, cluster, reserve, status, wait_caught_up, write_config

pytestmark = pytest.mark.durable

NODES = {"PAR": "EU/FR/Paris"}
SKUS = ("BAG-1", "BAG-2")
WRITERS = 3
ACKS_BEFORE_KILL = 60
FOLLOWER_STOPPED_S = 0.5


def test_sigkill_after_acks_loses_no_acknowledged_reservation(tmp_path: Path) -> None:
    """Writers reserve on a sync primary and log each acknowledged id; the follower is stopped
    (SIGSTOP) and the primary SIGKILLed mid-load; the follower (SIGKILLed and restarted too, so
    only its disk counts) holds every acknowledged reservation."""
    config = write_config(
        tmp_path, "sync", replication="sync", sync_timeout_ms=10_000, sync_fallback="refuse"
    )
    with cluster(tmp_path) as running:
        running.primary.extra_args = ("--config", str(config))
        follower = running.add_follower("follower")
        running.start_all()
        stubs = running.primary.stubs()
        setup_world(stubs, NODES, SKUS, on_hand=1_000_000)
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def write(writer: int) -> None:
            for index in range(100_000):
                if stop.is_set():
                    return
                reservation_id = f"w{writer}-{index}"
                try:
                    outcome = reserve(stubs, reservation_id, SKUS[index % 2], "PAR", 1)
                except grpc.RpcError:
                    return  # the primary is gone
                assert outcome == common_pb2.OUTCOME_OK
                with lock:
                    acknowledged.append(reservation_id)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(acknowledged) >= ACKS_BEFORE_KILL, CATCH_UP_TIMEOUT_S, "acks")
            # A follower that stops answering: with async the primary would go on
            # acknowledging what only it holds, and lose it with its SIGKILL.
            os.kill(follower.pid, signal.SIGSTOP)
            time.sleep(FOLLOWER_STOPPED_S)
            running.primary.kill()
            os.kill(follower.pid, signal.SIGCONT)
        finally:
            stop.set()
            for thread in threads:
                thread.join(RPC_TIMEOUT_S)
        with lock:
            acked = list(acknowledged)
        follower.kill()
        follower.start(running.follow_args())  # its primary is gone: it serves reads anyway
        found = fetch_reservations(follower.stubs(), acked)
        missing = [reservation_id for reservation_id, held in found.items() if held is None]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged: {missing[:5]}"


def test_sync_without_follower_degrades_to_async(tmp_path: Path) -> None:
    """With sync_fallback = "degrade", a write with no follower is acknowledged after
    sync_timeout_ms, the primary reports itself degraded and logs it; once a follower has
    caught up it is sync again."""
    config = write_config(
        tmp_path, "degrade", replication="sync", sync_timeout_ms=300, sync_fallback="degrade"
    )
    with cluster(tmp_path) as running:
        running.primary.start(("--config", str(config)))
        stubs = running.primary.stubs()
        setup_world(stubs, NODES, SKUS, on_hand=10)
        assert reserve(stubs, "alone", "BAG-1", "PAR", 1) == common_pb2.OUTCOME_OK
        assert status(stubs).replication_degraded
        assert "SYNC REPLICATION DEGRADED TO ASYNC" in running.primary.log_text()
        follower = running.add_follower("follower")
        follower.start(running.follow_args())
        wait_caught_up(running.primary, follower)
        wait_until(
            lambda: not status(stubs).replication_degraded,
            CATCH_UP_TIMEOUT_S,
            "sync replication restored",
        )
        assert reserve(stubs, "replicated", "BAG-1", "PAR", 1) == common_pb2.OUTCOME_OK
        assert fetch_reservations(follower.stubs(), ["replicated"])["replicated"] is not None


def test_sync_without_follower_refuses_writes(tmp_path: Path) -> None:
    """With sync_fallback = "refuse", a write with no follower answers UNAVAILABLE saying why,
    and nothing is applied; with a follower connected, writes are acknowledged."""
    config = write_config(
        tmp_path, "refuse", replication="sync", sync_timeout_ms=2_000, sync_fallback="refuse"
    )
    with cluster(tmp_path) as running:
        running.primary.start(("--config", str(config)))
        stubs = running.primary.stubs()
        with pytest.raises(grpc.RpcError) as info:
            setup_world(stubs, NODES, SKUS, on_hand=10)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "no follower is connected" in str(info.value.details())
        assert status(stubs).journal_sequence == 0
        follower = running.add_follower("follower")
        follower.start(running.follow_args())
        wait_until(lambda: len(status(stubs).followers) == 1, CATCH_UP_TIMEOUT_S, "a follower")
        setup_world(stubs, NODES, SKUS, on_hand=10)
        assert reserve(stubs, "replicated", "BAG-1", "PAR", 1) == common_pb2.OUTCOME_OK
        assert fetch_reservations(follower.stubs(), ["replicated"])["replicated"] is not None
