"""Fixtures: an in-memory atpd on a fake clock with the four harness nodes, and a client with
the StoreService, Watch and the harness stubs on one channel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service.harness import FakeClock, ServerThread, running_server, seed_nodes

from atpd.config import Config

from .support import STORE_LIMITS, StoreApi


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    """A started server on a fake clock, the four harness nodes seeded."""
    with running_server(Config(port=0, metrics_port=-1, limits=STORE_LIMITS), clock) as running:
        seed_nodes(running)
        yield running


@pytest.fixture
def store(server: ServerThread) -> StoreApi:
    return StoreApi.on(server)
