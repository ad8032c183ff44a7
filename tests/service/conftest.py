"""Fixtures: an atpd server started in-process on port 0, and clients on real channels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atpd.config import Config
from atpd.core.limits import Limits

from .harness import TEST_LIMITS, FakeClock, ServerThread, Stubs, World, running_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    """A started server on a fake clock: time moves only when the test advances it, so
    expiries are exact and state digests are comparable across calls."""
    with running_server(Config(port=0, metrics_port=-1, limits=TEST_LIMITS), clock) as running:
        yield running


@pytest.fixture
def live_server() -> Iterator[ServerThread]:
    """A started server on the real clock, with a 10 ms minimum TTL for timer-driven expiry."""
    limits = Limits(min_ttl_ms=10, max_ttl_ms=86_400_000, max_lines_per_reservation=4)
    with running_server(Config(port=0, metrics_port=-1, limits=limits)) as running:
        yield running


@pytest.fixture
def api(server: ServerThread) -> Stubs:
    return server.stubs()


@pytest.fixture
def world(server: ServerThread, api: Stubs) -> World:
    """The four NODES, no stock yet."""
    world = World(server, api)
    world.add_nodes()
    return world
