"""Fixtures for the gRPC rules tests: an in-process server (tests/service harness) on a fake
clock, holding the six nodes of tests/rules/support.py, and clients for every service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from service.harness import TEST_LIMITS, FakeClock, ServerThread, Stubs, running_server

from atpd.config import Config
from atpd.core.commands import UpsertNode
from atpd.v1 import rules_pb2_grpc, supply_pb2_grpc

from .support import NODES


@dataclass(frozen=True)
class Api:
    """The harness's stubs plus the rules and supply services, on one channel."""

    core: Stubs
    rules: rules_pb2_grpc.RulesServiceStub
    supply: supply_pb2_grpc.SupplyServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Api:
        return cls(
            Stubs.on(channel),
            rules_pb2_grpc.RulesServiceStub(channel),
            supply_pb2_grpc.SupplyServiceStub(channel),
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    """A started server on a fake clock with the six rules-test nodes and no rules."""
    with running_server(Config(port=0, metrics_port=-1, limits=TEST_LIMITS), clock) as running:
        engine = running.app.engine

        def seed() -> None:
            for node_id, (kind, geo_path, tags) in NODES.items():
                engine.state.apply(UpsertNode(node_id, kind, geo_path, tags=tags), engine.now_ms())

        running.call(seed)
        yield running


@pytest.fixture
def api(server: ServerThread) -> Api:
    return Api.on(server.channel())
