"""The few etcd v3 calls leadership needs, over etcd's own gRPC API (the stubs aetcd ships).

Every call has a deadline: a leader must learn that etcd is out of reach in bounded time, since
its right to write ends with its lease (service/leadership.py). Endpoints are tried in turn: a
call that fails with UNAVAILABLE moves to the next one for the following calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc


class EtcdUnavailable(Exception):
    """etcd did not answer (every endpoint down, a deadline passed, the lease is gone...)."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    lease_id: int
    ttl_s: int
    # time.monotonic() when the request was sent: etcd starts the TTL when it receives it,
    # which is later, so `requested_at + ttl_s` is never after etcd's own expiry.
    requested_at: float


def _key_value(message: Any) -> KeyValue:
    return KeyValue(
        bytes(message.key),
        bytes(message.value),
        int(message.create_revision),
        int(message.mod_revision),
        int(message.lease),
    )


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix` (etcd's convention)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class EtcdApi:
    def __init__(self, endpoints: tuple[str, ...], call_timeout_s: float) -> None:
        if not endpoints:
            raise ValueError("etcd: at least one endpoint (host:port) is needed")
        self.endpoints = endpoints
        self.call_timeout_s = call_timeout_s
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch: Any = None

    def _stubs(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.endpoints[self._index])
            self._kv = rpc.KVStub(self._channel)
            self._lease = rpc.LeaseStub(self._channel)
            self._watch = rpc.WatchStub(self._channel)

    async def _failed(self, error: grpc.aio.AioRpcError, what: str) -> EtcdUnavailable:
        """Move to the next endpoint when this one is down; the error for the caller."""
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            await self.close()
            self._index = (self._index + 1) % len(self.endpoints)
        return EtcdUnavailable(f"etcd {what}: {error.code().name}: {error.details()}")

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)

    async def grant(self, ttl_s: int) -> LeaseGrant:
        self._stubs()
        requested_at = time.monotonic()
        try:
            answer = await self._lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl_s), timeout=self.call_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "lease grant") from error
        if answer.error:
            raise EtcdUnavailable(f"etcd lease grant: {answer.error}")
        return LeaseGrant(int(answer.ID), int(answer.TTL), requested_at)

    async def keep_alive(self, lease_id: int) -> LeaseGrant:
        """Renew the lease once; raises EtcdUnavailable when etcd does not renew it (the lease
        expired, or etcd is out of reach)."""
        self._stubs()
        requested_at = time.monotonic()

        async def one_request() -> AsyncIterator[Any]:
            yield rpc.LeaseKeepAliveRequest(ID=lease_id)

        call = self._lease.LeaseKeepAlive(one_request(), timeout=self.call_timeout_s)
        try:
            async for answer in call:
                if answer.TTL <= 0:
                    raise EtcdUnavailable(f"etcd lease {lease_id:x} has expired")
                return LeaseGrant(lease_id, int(answer.TTL), requested_at)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "lease keep-alive") from error
        finally:
            call.cancel()
        raise EtcdUnavailable("etcd lease keep-alive: no answer")

    async def revoke(self, lease_id: int) -> None:
        self._stubs()
        try:
            await self._lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.call_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "lease revoke") from error

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (None when absent) and the store revision it was read at."""
        self._stubs()
        try:
            answer = await self._kv.Range(rpc.RangeRequest(key=key), timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "get") from error
        found = _key_value(answer.kvs[0]) if answer.kvs else None
        return found, int(answer.header.revision)

    async def get_prefix(self, prefix: bytes) -> list[KeyValue]:
        self._stubs()
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        try:
            answer = await self._kv.Range(request, timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "get prefix") from error
        return [_key_value(message) for message in answer.kvs]

    async def put(self, key: bytes, value: bytes, lease_id: int = 0) -> None:
        self._stubs()
        try:
            await self._kv.Put(
                rpc.PutRequest(key=key, value=value, lease=lease_id), timeout=self.call_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "put") from error

    async def delete(self, key: bytes) -> None:
        self._stubs()
        try:
            await self._kv.DeleteRange(rpc.DeleteRangeRequest(key=key), timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "delete") from error

    async def transaction(self, compare: list[Any], success: list[Any]) -> bool:
        """Apply `success` atomically if every comparison holds; whether it did."""
        self._stubs()
        request = rpc.TxnRequest(compare=compare, success=success)
        try:
            answer = await self._kv.Txn(request, timeout=self.call_timeout_s)
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "transaction") from error
        return bool(answer.succeeded)

    async def wait_change(self, key: bytes, after_revision: int, timeout_s: float) -> None:
        """Return once `key` changes after `after_revision` (put or delete), or after
        `timeout_s` whatever happens (the caller reads the key again either way)."""
        self._stubs()
        request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(key=key, start_revision=after_revision + 1)
        )
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield request
            await stop.wait()  # keep the stream open until we are done with it

        # No gRPC deadline: etcd answers one with UNKNOWN, not DEADLINE_EXCEEDED; time out here.
        call = self._watch.Watch(requests())
        try:
            async with asyncio.timeout(timeout_s):
                async for answer in call:
                    if answer.events or answer.canceled or answer.compact_revision:
                        return
        except TimeoutError:
            return
        except grpc.aio.AioRpcError as error:
            raise await self._failed(error, "watch") from error
        finally:
            stop.set()
            call.cancel()


def compare_absent(key: bytes) -> Any:
    """A transaction comparison: `key` does not exist."""
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
    )


def compare_modified_at(key: bytes, mod_revision: int) -> Any:
    """`key` was last written at `mod_revision` (0: it does not exist)."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=mod_revision
    )


def compare_all_values_below(prefix: bytes, bound: bytes) -> Any:
    """Every key under `prefix` holds a value that sorts (bytewise) before `bound`."""
    return rpc.Compare(
        key=prefix,
        range_end=prefix_end(prefix),
        target=rpc.Compare.VALUE,
        result=rpc.Compare.LESS,
        value=bound,
    )


def put_operation(key: bytes, value: bytes, lease_id: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id))
