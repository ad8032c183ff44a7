"""Fixtures: an in-memory atpd on port 0 with small load limits, its FeedService stub, and the
FeedServicer instance (to wait on server-side conditions without sleeping)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service.harness import FakeClock, ServerThread, Stubs, running_server, seed_nodes

from atpd.config import Config
from atpd.service.feeds import FeedServicer
from atpd.v1 import feeds_pb2_grpc

from .support import FEED_LIMITS


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def servicers(monkeypatch: pytest.MonkeyPatch) -> list[FeedServicer]:
    """Every FeedServicer created during the test, in creation order."""
    created: list[FeedServicer] = []
    original = FeedServicer.__init__

    def record(self: FeedServicer, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        created.append(self)

    monkeypatch.setattr(FeedServicer, "__init__", record)
    return created


@pytest.fixture
def server(clock: FakeClock, servicers: list[FeedServicer]) -> Iterator[ServerThread]:
    """A started in-memory server on a fake clock with the four test nodes."""
    config = Config(port=0, metrics_port=-1, limits=FEED_LIMITS)
    with running_server(config, clock) as running:
        seed_nodes(running)
        yield running


@pytest.fixture
def api(server: ServerThread) -> Stubs:
    return server.stubs()


@pytest.fixture
def feeds(server: ServerThread) -> feeds_pb2_grpc.FeedServiceStub:
    return feeds_pb2_grpc.FeedServiceStub(server.channel())
