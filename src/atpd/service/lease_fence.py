"""The leader's right to write, bounded by its etcd lease (README "Running a cluster").

A leader may accept a write only while it is sure etcd has not yet let its lease expire: once
etcd expires it, another server may take over and write. The fence holds the local deadline
(`time.monotonic()`, which goes on counting while the process is stopped: a SIGSTOPped leader
finds its deadline passed when it runs again) and the engine checks it before applying a write
and again before acknowledging it. How the deadline is computed, and its margin, is in
service/leadership.py.
"""

from __future__ import annotations

import time


class LeaseLost(Exception):
    """This server's leadership lease may have lapsed: it refuses writes. A write refused after
    it was applied here may or may not survive (the next leader may not have it): retry it on the
    leader with the same ids (every write is idempotent by its id)."""

    def __init__(self, leader_address: str = "") -> None:
        self.leader_address = leader_address
        super().__init__(
            "this server is no longer the leader (its etcd lease lapsed): send writes to the "
            "leader" + (f" at {leader_address}" if leader_address else " (being elected; retry)")
        )


class LeadershipLostUnacknowledged(Exception):
    """This server stopped leading between applying a write and acknowledging it: the next
    leader may or may not have it. Not acknowledged (UNAVAILABLE): retry it on the leader with
    the same ids if it is safe to repeat, or read first (a stock delta)."""

    def __init__(self, reason: Exception) -> None:
        super().__init__(
            f"leadership lost before this write was acknowledged ({reason}); it may or may not "
            "survive: retry on the leader with the same ids, or read first"
        )


class LeaseFence:
    __slots__ = ("deadline",)

    def __init__(self) -> None:
        # Monotonic seconds until which writes are allowed; 0: not the leader.
        self.deadline = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self.deadline

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise LeaseLost()

    def close(self) -> None:
        """Stop writes at once (leadership given up or found lost)."""
        self.deadline = 0.0
