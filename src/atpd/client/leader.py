"""Several servers of one cluster (README "Running a cluster"): writes go to the leader, reads to
the leader or, with `read_from="follower"`, spread over the followers.

The client starts with the first target as its guess of the leader. A server that is not the
leader refuses a write with FAILED_PRECONDITION and a message containing NOT_LEADER_PHRASE,
before applying anything, so the write can go to the leader whatever it is; a unary answer also
carries the leader's address in trailing metadata `atpd-leader` when the server knows it. With
no address (an election in progress) or on UNAVAILABLE (the leader died), the client asks every
target's GetStatus which one is the primary, then sends the call again (within its deadline, and
only the calls safe to repeat after UNAVAILABLE: see atpd.client.aio).

A follower answers reads from its own state, which lags the leader by its replication lag (in
the answer's trailing metadata `atpd-lag-sequences` / `atpd-lag-ms`): read from followers what
may be a little stale (product pages), from the leader what must not (checkout).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import grpc

from atpd.client.errors import AtpdError, FailedPrecondition
from atpd.v1 import admin_pb2

NOT_LEADER_PHRASE = "send writes to the leader"
LEADER_TRAILER = "atpd-leader"
READ_FROM = ("leader", "follower")
# Deadline of each GetStatus while looking for the leader.
DISCOVER_TIMEOUT_S = 1.0
# Calls answered by any server from its own state (everything else goes to the leader).
READ_METHODS = frozenset(
    {
        "GetAvailability",
        "GetStock",
        "ListNodes",
        "GetReservation",
        "ListSupply",
        "GetRules",
        "Promise",
        "PromiseBatch",
        "Watch",
    }
)


class HasAdmin(Protocol):
    admin: Any


S = TypeVar("S", bound=HasAdmin)


def is_not_leader(error: AtpdError) -> bool:
    """The server refused a write because it is not the leader (nothing was applied)."""
    return isinstance(error, FailedPrecondition) and NOT_LEADER_PHRASE in str(error)


def leader_hint(failure: grpc.aio.AioRpcError) -> str:
    """The leader's address a refusal named in its trailing metadata ('' when none)."""
    trailers: Any = failure.trailing_metadata() or ()
    for item in trailers:
        key, value = item
        if key == LEADER_TRAILER and isinstance(value, str):
            return value
    return ""


def parse_targets(target: str | Sequence[str]) -> tuple[str, ...]:
    """A target, a comma-separated list, or a sequence: the distinct addresses, in order."""
    items = target.split(",") if isinstance(target, str) else list(target)
    addresses = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not addresses:
        raise ValueError("target: at least one host:port is needed")
    return addresses


class Targets(Generic[S]):
    """The servers of a cluster and one set of stubs per server (channels open on first use)."""

    def __init__(
        self,
        addresses: tuple[str, ...],
        make_stubs: Callable[[str], S],
        read_from: str,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        if read_from not in READ_FROM:
            raise ValueError(f"read_from: {read_from!r} is not one of {', '.join(READ_FROM)}")
        self.addresses = list(addresses)
        self.read_from = read_from
        self.leader = addresses[0]
        self._make_stubs = make_stubs
        self._metadata = metadata
        self._stubs: dict[str, S] = {}
        self._turn = itertools.count()
        self._discovering: asyncio.Task[bool] | None = None
        self._located: dict[Any, tuple[str, str]] = {}
        # Called with the new leader's address when it changes (the write stream follows).
        self.on_leader_change: Callable[[str], None] | None = None

    @property
    def several(self) -> bool:
        return len(self.addresses) > 1

    def stubs(self, address: str) -> S:
        found = self._stubs.get(address)
        if found is None:
            found = self._stubs[address] = self._make_stubs(address)
        return found

    def for_write(self) -> S:
        return self.stubs(self.leader)

    def for_read(self) -> S:
        """The leader's stubs, or with read_from="follower" the next follower's in turn."""
        if self.read_from == "leader" or not self.several:
            return self.for_write()
        followers = [address for address in self.addresses if address != self.leader]
        return self.stubs(followers[next(self._turn) % len(followers)])

    def all_stubs(self) -> list[S]:
        return list(self._stubs.values())

    def locate(self, method: Any) -> tuple[str, str]:
        """(service, method name) of a stub method, to call it on whichever server is right."""
        found = self._located.get(method)
        if found is None:
            for stubs in self.all_stubs():
                for service, stub in vars(stubs).items():
                    for name, value in getattr(stub, "__dict__", {}).items():
                        if value is method:
                            found = self._located[method] = (service, name)
            if found is None:
                raise ValueError(f"{method!r} is not a method of this client's stubs")
        return found

    def moved(self, address: str) -> None:
        """The leader is at `address` (named by a refusal or found by discovery)."""
        if address == self.leader:
            return
        if address not in self.addresses:
            self.addresses.append(address)
        self.leader = address
        if self.on_leader_change is not None:
            self.on_leader_change(address)

    async def discover(self) -> bool:
        """Ask every target which one leads; concurrent callers share one round. Whether a
        leader was found (then `leader` names it)."""
        task = self._discovering
        if task is None or task.done():
            task = self._discovering = asyncio.get_running_loop().create_task(self._discover())
        return await asyncio.shield(task)

    async def _discover(self) -> bool:
        addresses = list(self.addresses)
        statuses = await asyncio.gather(*(self._status(address) for address in addresses))
        named = ""
        for address, status in zip(addresses, statuses, strict=True):
            if status is None:
                continue
            if status.role == "primary" or (not status.role and not self.several):
                self.moved(address)
                return True
            named = named or status.leader_address
        if named:
            self.moved(named)
            return True
        return False

    async def _status(self, address: str) -> admin_pb2.GetStatusResponse | None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
            status: admin_pb2.GetStatusResponse = await self.stubs(address).admin.GetStatus(
                admin_pb2.GetStatusRequest(), timeout=DISCOVER_TIMEOUT_S, metadata=self._metadata
            )
            return status
        return None
