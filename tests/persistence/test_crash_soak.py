"""Crash soak (slow): SIGKILL a writer process again and again; no acknowledged record is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atpd.persistence.journal import FsyncPolicy

from .support import read_all

ROUNDS = 24
ACKS_BEFORE_KILL_MAX = 400
SEGMENT_BYTES = 8 * 1024

WRITER = """
import asyncio, sys
from pathlib import Path
from atpd.persistence.journal import FsyncPolicy, Journal

def payload(sequence):
    return (f"{sequence}:".encode() * 40)[: 8 + sequence % 200]

async def main():
    journal = Journal.open(
        Path(sys.argv[1]), fsync_policy=FsyncPolicy(sys.argv[2]), segment_bytes=int(sys.argv[3])
    )
    print(f"start {journal.last_sequence + 1}", flush=True)

    async def producer():
        for _ in range(1_000_000):
            sequence = journal.last_sequence + 1
            assert journal.append(payload(sequence), timestamp_ms=sequence) == sequence
            await journal.wait_durable(sequence)
            print(sequence, flush=True)

    await asyncio.gather(*(producer() for _ in range(8)))

asyncio.run(main())
"""


def payload(sequence: int) -> bytes:
    return (f"{sequence}:".encode() * 40)[: 8 + sequence % 200]


def run_and_kill(
    directory: Path, policy: FsyncPolicy, acks_before_kill: int
) -> tuple[int, set[int]]:
    """Start a writer, SIGKILL it after some acknowledgements; return its start and its acks."""
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), policy.value, str(SEGMENT_BYTES)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith("start "), first_line
        start = int(first_line.split()[1])
        acknowledged: set[int] = set()
        for _ in range(acks_before_kill):
            line = process.stdout.readline()
            assert line.endswith("\n"), "writer died on its own"
            acknowledged.add(int(line))
        process.send_signal(signal.SIGKILL)
        # Lines completed before the kill were acknowledgements too; a cut line was not.
        for line in process.stdout.read().splitlines(keepends=True):
            if line.endswith("\n"):
                acknowledged.add(int(line))
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    return start, acknowledged


@pytest.mark.slow
@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.NONE])
def test_kill_loop_loses_no_acknowledged_record(tmp_path: Path, policy: FsyncPolicy) -> None:
    """Across repeated SIGKILLs every acked record survives and the journal stays a clean prefix."""
    rng = random.Random(20260101)
    all_acknowledged: set[int] = set()
    for _ in range(ROUNDS):
        start, acknowledged = run_and_kill(tmp_path, policy, rng.randint(1, ACKS_BEFORE_KILL_MAX))
        assert start > max(all_acknowledged, default=0)
        assert min(acknowledged) >= start
        all_acknowledged |= acknowledged

    records = read_all(tmp_path, segment_bytes=SEGMENT_BYTES)
    assert [record.sequence for record in records] == list(range(1, len(records) + 1))
    assert len(records) >= max(all_acknowledged)
    assert all(record.payload == payload(record.sequence) for record in records)
    assert all(record.timestamp_ms == record.sequence for record in records)
