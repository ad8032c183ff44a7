"""atpd.client across a server crash: `atpd serve` SIGKILLed while concurrent reserves stream
through the client, then restarted on the same port. Every call ends OK (retried with the same
id across the outage) and each reservation holds its stock exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from atpd.client import AsyncClient

from . import server_support
from .server_support import daemon, fetch_positions, setup_world

pytestmark = pytest.mark.durable

NODES = {"ST-PAR-01": "EU/FR/Paris"}
SKU = "SKU-A"
WORKERS = 16
PER_WORKER = 25
KILL_AFTER = 120


def test_retries_across_a_restart_hold_each_reservation_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reserves in flight when the server dies are retried by the client once it is back:
    all answered OK, and reserved equals one unit per reservation id (no double hold)."""
    with daemon(tmp_path / "data", tmp_path) as server:
        stubs = server.start()
        setup_world(stubs, NODES, [SKU], on_hand=10_000)
        port = server.port
        # The restart must come back where the client connects.
        monkeypatch.setattr(server_support, "free_port", lambda: port)
        acked = 0
        restarted = asyncio.Event()

        async def worker(client: AsyncClient, number: int) -> list[bool]:
            nonlocal acked
            answers = []
            for i in range(PER_WORKER):
                result = await client.reserve(f"w{number}-{i}", [(SKU, "ST-PAR-01", 1)])
                answers.append(result.ok)
                acked += 1
            return answers

        async def crash() -> None:
            while acked < KILL_AFTER:
                await asyncio.sleep(0.005)
            server.kill()
            await asyncio.to_thread(server.start)
            restarted.set()

        async def main() -> list[list[bool]]:
            async with AsyncClient(f"127.0.0.1:{port}", timeout_s=90.0) as client:
                crasher = asyncio.ensure_future(crash())
                answers = await asyncio.gather(*(worker(client, n) for n in range(WORKERS)))
                await crasher
                return answers

        answers = asyncio.run(main())
        assert restarted.is_set()
        assert all(all(a) for a in answers)
        position = fetch_positions(server.stubs(), [(SKU, "ST-PAR-01")])[(SKU, "ST-PAR-01")]
        assert position.reserved == WORKERS * PER_WORKER
