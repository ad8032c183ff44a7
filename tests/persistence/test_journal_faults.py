"""Journal behaviour when the disk really fails: ENOSPC on a full tmpfs, EFBIG past RLIMIT_FSIZE."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalUnavailable

from .conftest import DiskFault
from .support import read_all

PRODUCER_COUNT = 4
APPENDS_PER_PRODUCER_MAX = 2000
PAYLOAD_BYTES = 1000


@dataclass
class FillOutcome:
    acknowledged: dict[int, bytes] = field(default_factory=dict)
    failed_waits: list[tuple[int, JournalUnavailable]] = field(default_factory=list)
    failed_appends: list[JournalUnavailable] = field(default_factory=list)


async def fill_until_failure(journal: Journal) -> FillOutcome:
    """Concurrent producers append and wait until the journal refuses them."""
    outcome = FillOutcome()

    async def producer(producer_id: int) -> None:
        for index in range(APPENDS_PER_PRODUCER_MAX):
            payload = f"{producer_id}:{index}:".encode().ljust(PAYLOAD_BYTES, b".")
            try:
                sequence = journal.append(payload, timestamp_ms=index)
            except JournalUnavailable as error:
                outcome.failed_appends.append(error)
                return
            try:
                await journal.wait_durable(sequence)
            except JournalUnavailable as error:
                outcome.failed_waits.append((sequence, error))
                return
            outcome.acknowledged[sequence] = payload
        raise AssertionError("the disk never filled up")

    await asyncio.gather(*(producer(producer_id) for producer_id in range(PRODUCER_COUNT)))
    return outcome


def assert_failure_is_clean(journal: Journal, outcome: FillOutcome, errno_name: str) -> None:
    acknowledged_count = len(outcome.acknowledged)
    assert acknowledged_count > 0
    # Acknowledged records are exactly a prefix: nothing after the failure was acknowledged.
    assert sorted(outcome.acknowledged) == list(range(1, acknowledged_count + 1))
    assert journal.durable_sequence == acknowledged_count
    assert outcome.failed_waits, "the failing append's waiter must raise"
    assert all(sequence > acknowledged_count for sequence, _ in outcome.failed_waits)
    message = str(outcome.failed_waits[0][1])
    assert errno_name in message and "journal-" in message
    assert journal.failed
    with pytest.raises(JournalUnavailable, match=errno_name):
        journal.append(b"after the failure", timestamp_ms=0)


def test_full_disk_fails_waiters_and_recovery_keeps_acknowledged(disk_fault: DiskFault) -> None:
    """Full disk: waiters fail, nothing later is acked, reopening finds exactly the acked."""

    async def run() -> FillOutcome:
        journal = Journal.open(
            disk_fault.directory,
            fsync_policy=FsyncPolicy.ALWAYS,
            segment_bytes=disk_fault.segment_bytes,
        )
        outcome = await fill_until_failure(journal)
        assert_failure_is_clean(journal, outcome, disk_fault.errno_name)
        journal.close()
        return outcome

    outcome = asyncio.run(run())
    records = read_all(disk_fault.directory, segment_bytes=disk_fault.segment_bytes)
    assert [record.sequence for record in records] == sorted(outcome.acknowledged)
    assert [record.payload for record in records] == [
        outcome.acknowledged[sequence] for sequence in sorted(outcome.acknowledged)
    ]


def test_try_reopen_waits_for_space_then_resumes(disk_fault: DiskFault) -> None:
    """try_reopen fails while the disk is full, then resumes the sequence once space is freed."""

    async def run() -> tuple[FillOutcome, int]:
        journal = Journal.open(
            disk_fault.directory,
            fsync_policy=FsyncPolicy.ALWAYS,
            segment_bytes=disk_fault.segment_bytes,
        )
        outcome = await fill_until_failure(journal)
        assert_failure_is_clean(journal, outcome, disk_fault.errno_name)

        disk_fault.exhaust()
        assert not await journal.try_reopen()
        assert journal.failed
        with pytest.raises(JournalUnavailable):
            journal.append(b"still full", timestamp_ms=0)

        disk_fault.release()
        assert await journal.try_reopen()
        assert not journal.failed
        sequence = journal.append(b"after space was freed", timestamp_ms=0)
        assert sequence == len(outcome.acknowledged) + 1
        await journal.wait_durable(sequence)
        await journal.aclose()
        return outcome, sequence

    outcome, resumed_sequence = asyncio.run(run())
    records = read_all(disk_fault.directory, segment_bytes=disk_fault.segment_bytes)
    expected = [outcome.acknowledged[sequence] for sequence in sorted(outcome.acknowledged)]
    assert [record.payload for record in records] == [*expected, b"after space was freed"]
    assert records[-1].sequence == resumed_sequence
