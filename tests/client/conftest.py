"""Fixtures: an in-process atpd on port 0 (real clock) with the four harness nodes and stock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service.harness import TEST_LIMITS, ServerThread, World, running_server

from atpd.config import Config

ON_HAND = 1_000


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with running_server(Config(port=0, metrics_port=-1, limits=TEST_LIMITS)) as running:
        world = World(running, running.stubs())
        world.add_nodes()
        for sku in ("sku-1", "sku-2"):
            world.set_stock(sku, "paris", ON_HAND)
        yield running


def batches_applied(server: ServerThread) -> float:
    """Batches the server applied (its atpd_batch_commands histogram's count)."""
    value = server.app.engine.metrics.registry.get_sample_value("atpd_batch_commands_count")
    return value or 0.0
