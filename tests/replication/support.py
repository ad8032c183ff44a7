"""Helpers for the replication tests: a primary and followers as real `atpd serve` processes on
loopback (free ports), their status and digests, and waits for a follower to catch up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
from persistence.server_support import (
    RPC_TIMEOUT_S,
    Daemon,
    Stubs,
    free_port,
    line,
    wait_until,
)

from atpd.v1 import admin_pb2, reservations_pb2

CATCH_UP_TIMEOUT_S = 30.0
TTL_MS = 600_000


def write_config(directory: Path, name: str, **values: object) -> Path:
    """A TOML config file with `values` (strings quoted, numbers as they are)."""
    lines = []
    for key, value in values.items():
        shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
        lines.append(f"{key} = {shown}")
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Cluster:
    """A primary and followers, each on its own data directory; all killed on exit."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.root = root
        self.stack = stack
        self.primary = self._daemon("primary")
        self.followers: list[Daemon] = []

    def _daemon(self, name: str, config: Path | None = None) -> Daemon:
        data_dir = self.root / name / "data"
        log_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        extra = ("--config", str(config)) if config is not None else ()
        server = Daemon(data_dir, log_dir, extra_args=extra)
        self.stack.callback(server.close)
        return server

    def add_follower(self, name: str, config: Path | None = None) -> Daemon:
        follower = self._daemon(name, config)
        self.followers.append(follower)
        return follower

    def follow_args(self) -> tuple[str, ...]:
        return ("--follow", self.primary.target)

    def start_all(self, primary_args: Sequence[str] = ()) -> None:
        """Start the primary, then the followers, all at once (start-up compiles kernels)."""
        self.primary.start(primary_args)
        for follower in self.followers:
            follower.spawn(self.follow_args())
        for follower in self.followers:
            assert follower.wait_serving(), follower.log_text()
        # SERVING comes before the stream is open: wait until the primary sees them all.
        wait_until(
            lambda: len(status(self.primary.stubs()).followers) == len(self.followers),
            CATCH_UP_TIMEOUT_S,
            "every follower connected",
        )


@contextmanager
def cluster(root: Path) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(root, stack)


def status(stubs: Stubs, digest: bool = False) -> admin_pb2.GetStatusResponse:
    response: admin_pb2.GetStatusResponse = stubs.admin.GetStatus(
        admin_pb2.GetStatusRequest(include_digest=digest), timeout=RPC_TIMEOUT_S
    )
    return response


def wait_caught_up(primary: Daemon, follower: Daemon) -> admin_pb2.GetStatusResponse:
    """Wait until the follower's journal reaches the primary's; return the follower's status."""
    target = status(primary.stubs()).durable_sequence

    def reached() -> bool:
        try:
            return status(follower.stubs()).durable_sequence >= target
        except grpc.RpcError:
            return False

    wait_until(reached, CATCH_UP_TIMEOUT_S, f"follower to reach sequence {target}")
    return status(follower.stubs())


def assert_same_state(primary: Daemon, follower: Daemon) -> None:
    """Once caught up, the follower's digest at a sequence equals the primary's there."""
    wait_caught_up(primary, follower)
    leader = status(primary.stubs(), digest=True)
    copy = status(follower.stubs(), digest=True)
    assert copy.journal_sequence == leader.journal_sequence
    assert copy.state_digest == leader.state_digest, (leader, copy)


def trailers_of(call: Any) -> dict[str, str]:
    """A finished call's (or RpcError's) trailing metadata as a dict."""
    return {str(key): str(value) for key, value in call.trailing_metadata() or ()}


def reserve(stubs: Stubs, reservation_id: str, sku: str, node_id: str, quantity: int) -> int:
    request = reservations_pb2.ReserveRequest(
        reservation_id=reservation_id, lines=[line(sku, node_id, quantity)], ttl_ms=TTL_MS
    )
    response = stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
    outcome: int = response.outcome
    return outcome


__all__ = [
    "Cluster",
    "assert_same_state",
    "cluster",
    "free_port",
    "reserve",
    "status",
    "trailers_of",
    "wait_caught_up",
    "write_config",
]
