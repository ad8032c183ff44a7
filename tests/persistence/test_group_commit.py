"""Group commit (issue 13): records appended while the loop is busy share one fsync, a loop
that is never idle still flushes, the merge factor is exposed as metrics, and what a client
was acknowledged survives SIGKILL."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from atpd.persistence.journal import GROUP_COMMIT_MAX_ITERATIONS, FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalUnavailable
from atpd.v1 import common_pb2

from .server_support import (
    RPC_TIMEOUT_S,
    daemon,
    fetch_reservations,
    free_port,
    reserve_request,
    setup_world,
)
from .support import payload_for, read_all

RECORDS = 60


def test_records_appended_over_busy_iterations_share_one_fsync(tmp_path: Path) -> None:
    """Callers appending in different loop iterations, while the loop still has work ready,
    all land in one batch and one fsync (the flusher waits for the loop to be idle)."""

    async def run() -> tuple[int, int, int]:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=1 << 20)

        async def commit(index: int) -> None:
            for _ in range(index % 5):  # arrive over five consecutive loop iterations
                await asyncio.sleep(0)
            await journal.wait_durable(journal.append(payload_for(index + 1), timestamp_ms=0))

        await asyncio.gather(*(commit(index) for index in range(RECORDS)))
        counts = journal.fsync_count, journal.batch_count, journal.records_count
        await journal.aclose()
        return counts

    fsyncs, batches, records = asyncio.run(run())
    assert (fsyncs, batches, records) == (1, 1, RECORDS)
    assert len(read_all(tmp_path)) == RECORDS


def test_a_loop_that_is_never_idle_still_flushes(tmp_path: Path) -> None:
    """A task that keeps the loop busy forever delays a flush by a bounded number of
    iterations, never indefinitely."""

    async def run() -> int:
        journal = Journal.open(tmp_path, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=1 << 20)
        iterations = 0
        stop = False

        async def busy() -> None:
            nonlocal iterations
            while not stop:
                iterations += 1
                await asyncio.sleep(0)

        spinner = asyncio.ensure_future(busy())
        await asyncio.sleep(0)
        for index in range(3):
            await journal.wait_durable(journal.append(payload_for(index + 1), timestamp_ms=0))
        stop = True
        await spinner
        await journal.aclose()
        assert journal.records_count == 3
        return iterations

    assert asyncio.run(run()) >= GROUP_COMMIT_MAX_ITERATIONS


def test_a_bug_in_the_disk_thread_fails_the_waiters_instead_of_hanging(tmp_path: Path) -> None:
    """An unexpected exception in the journal's disk thread (a bug, not a disk error) fails the
    journal and its waiters with JournalUnavailable, and the journal still closes."""

    def broken_sync(fd: int) -> None:
        raise RuntimeError("a bug in the sync function")

    async def run() -> None:
        journal = Journal.open(
            tmp_path,
            fsync_policy=FsyncPolicy.ALWAYS,
            segment_bytes=1 << 20,
            sync_function=broken_sync,
        )
        sequences = [journal.append(payload_for(index + 1), timestamp_ms=0) for index in range(3)]
        waits = [asyncio.ensure_future(journal.wait_durable(s)) for s in sequences]
        done, _ = await asyncio.wait(waits, timeout=30)  # bounded: a hang fails below
        assert done == set(waits)
        for wait in waits:
            with pytest.raises(JournalUnavailable, match="crashed"):
                wait.result()
        assert journal.failed and journal.durable_sequence == 0
        with pytest.raises(JournalUnavailable):
            journal.append(payload_for(4), timestamp_ms=0)
        await journal.aclose()

    asyncio.run(run())


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.findall(r"^(atpd_journal_\w+_total) ([0-9.e+]+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


@pytest.mark.durable
def test_concurrent_reserves_share_fsyncs_and_survive_sigkill(tmp_path: Path) -> None:
    """Concurrent reservations over gRPC share fsyncs (journal counters on /metrics: more
    records than fsyncs), and every acknowledged one is there after SIGKILL and restart."""
    metrics_port = free_port()
    nodes = {"ST-PAR-01": "EU/FR/Paris"}
    skus = ("BAG-01", "BAG-02")
    with daemon(
        tmp_path / "data", tmp_path, extra_args=("--metrics-port", str(metrics_port))
    ) as server:
        stubs = server.start()
        setup_world(stubs, nodes, skus, on_hand=1_000)
        before = scrape(metrics_port)
        ids = [f"gc-{index}" for index in range(200)]

        def reserve(reservation_id: str) -> bool:
            sku = skus[hash(reservation_id) % 2]
            request = reserve_request(reservation_id, [(sku, "ST-PAR-01", 1)], 600_000)
            response = stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
            return bool(response.outcome == common_pb2.OUTCOME_OK)

        with ThreadPoolExecutor(32) as pool:
            acknowledged = [i for i, ok in zip(ids, pool.map(reserve, ids), strict=True) if ok]
        after = scrape(metrics_port)
        records = after["atpd_journal_records_total"] - before["atpd_journal_records_total"]
        fsyncs = after["atpd_journal_fsyncs_total"] - before["atpd_journal_fsyncs_total"]
        assert records >= len(acknowledged) == len(ids)
        assert 0 < fsyncs < records
        server.kill()
        stubs = server.start()
        found = fetch_reservations(stubs, acknowledged)
        assert all(found[i] is not None for i in acknowledged)
        assert all(
            found[i].status == common_pb2.RESERVATION_STATUS_HELD  # type: ignore[union-attr]
            for i in acknowledged
        )
