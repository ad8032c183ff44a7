"""Fixtures: an in-memory atpd on port 0 on a fake clock (the four harness nodes seeded), a
factory for servers with other watch limits, and clients on real channels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from service.harness import FakeClock, ServerThread, World, running_server, seed_nodes

from atpd.config import Config
from atpd.core.limits import Limits

from .support import Api

# Up to 100 lines per reservation: one Reserve can then move 100 positions (many events).
WATCH_LIMITS = Limits(max_lines_per_reservation=100, min_ttl_ms=1_000, max_ttl_ms=86_400_000)

StartServer = Callable[..., ServerThread]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_server(clock: FakeClock) -> Iterator[StartServer]:
    """Start a server with Config overrides (e.g. watch_buffer_events=8) and the four nodes;
    every server started is stopped at the end of the test."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> ServerThread:
            config = Config(port=0, metrics_port=-1, limits=WATCH_LIMITS, **overrides)
            server = stack.enter_context(running_server(config, clock))
            seed_nodes(server)
            return server

        yield start


@pytest.fixture
def server(start_server: StartServer) -> ServerThread:
    """A started server with the default watch limits and the four nodes, no stock."""
    return start_server()


@pytest.fixture
def api(server: ServerThread) -> Api:
    return Api.on(server)


@pytest.fixture
def world(server: ServerThread, api: Api) -> World:
    """Stock written through gRPC with per-position source sequences (nodes already seeded)."""
    return World(server, api.base)
