"""`AsyncClient`: every atpd service as asyncio methods with plain results and exceptions.

Writes that can be batched (reserve, confirm, release, fulfil, set_stock, adjust_stock) go
through one Submit stream, coalesced with the other calls in flight (`coalescer.py`); pass
`coalesce=False` to send each as its unary call instead. Everything else is a unary call.

Deadlines: every call has one (`timeout_s`, default 10 s, or the call's own `timeout_s`). A call
that runs out raises DeadlineExceeded; a write may then still have been applied.

Retries, within the deadline, with backoff (50 ms doubling to 1 s), always with the same
request (so the same reservation id): on UNAVAILABLE (server restarting, journal down) or a lost
stream or connection, for the calls whose repetition cannot do anything twice:
- reserve: idempotent on reservation_id (the stored reservation answers, `replayed` True);
- confirm, release: confirming a confirmed or releasing a released reservation answers OK;
- fulfil without lines (everything held): fulfilling a fulfilled reservation answers OK;
- set_stock: absolute, ordered by source_sequence (a repeat answers STALE, the count is right);
- every read.
Not retried, since a repetition could apply twice: adjust_stock (a delta) and fulfil with lines
(a partial take-out); they raise Unavailable and the caller decides (read the position or the
reservation first).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from atpd.client.coalescer import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_COMMANDS,
    DEFAULT_MAX_DELAY_US,
    DEFAULT_MAX_INFLIGHT_BATCHES,
    BatchRefusedError,
    Coalescer,
    DeadlineReached,
    StreamLost,
)
from atpd.client.connection import DEFAULT_TARGET, ConnectionOptions, open_channel
from atpd.client.errors import (
    AtpdError,
    DeadlineExceeded,
    Unavailable,
    error_for,
    error_for_number,
    error_from_rpc,
)
from atpd.client.leader import READ_METHODS, Targets, is_not_leader, leader_hint, parse_targets
from atpd.client.requests import LineLike, Stubs, enum_value, request_lines
from atpd.client.results import (
    Availability,
    Node,
    Position,
    PromiseBatchResult,
    PromiseResult,
    Reservation,
    ReservationResult,
    ReserveResult,
    Rules,
    RulesResult,
    SnapshotInfo,
    Status,
    StockResult,
    Supply,
    SupplyResult,
    UpsertNodeResult,
    WatchEvent,
    from_message,
)
from atpd.v1 import (
    admin_pb2,
    availability_pb2,
    batch_pb2,
    common_pb2,
    inventory_pb2,
    promise_pb2,
    reservations_pb2,
    rules_pb2,
    supply_pb2,
    watch_pb2,
)

DEFAULT_TIMEOUT_S = 10.0
RETRY_INITIAL_BACKOFF_S = 0.05
RETRY_MAX_BACKOFF_S = 1.0

T = TypeVar("T")


class AsyncClient:
    """An atpd client for one asyncio loop (create and use it on that loop).

    `async with AsyncClient("host:port", token=...) as client: ...`, or call `close()`."""

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        read_from: str = "leader",
        token: str | None = None,
        ca_file: Path | None = None,
        tls: bool = False,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        coalesce: bool = True,
        max_batch_commands: int = DEFAULT_MAX_BATCH_COMMANDS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_delay_us: int = DEFAULT_MAX_DELAY_US,
        max_inflight_batches: int = DEFAULT_MAX_INFLIGHT_BATCHES,
        retry_initial_backoff_s: float = RETRY_INITIAL_BACKOFF_S,
        retry_max_backoff_s: float = RETRY_MAX_BACKOFF_S,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0, got {timeout_s}")
        # Several targets: the servers of one cluster (atpd.client.leader).
        addresses = parse_targets(target)
        self.options = ConnectionOptions(addresses[0], token, ca_file, tls, cert_file, key_file)
        for address in addresses:
            replace(self.options, target=address).check()
        self.timeout_s = timeout_s
        self.coalesce = coalesce
        self.retry_initial_backoff_s = retry_initial_backoff_s
        self.retry_max_backoff_s = retry_max_backoff_s
        self._metadata = self.options.metadata()
        self.targets = Targets(
            addresses,
            lambda address: Stubs(open_channel(replace(self.options, target=address))),
            read_from,
            self._metadata,
        )
        self.coalescer = Coalescer(
            lambda: self.stubs.commands,
            self._metadata,
            max_batch_commands=max_batch_commands,
            max_batch_bytes=max_batch_bytes,
            max_delay_us=max_delay_us,
            max_inflight_batches=max_inflight_batches,
        )
        self.targets.on_leader_change = lambda _: self.coalescer.detach()

    @property
    def stubs(self) -> Stubs:
        """The generated stubs of the leader (for what this class does not wrap); the channel
        opens on first use, on the running loop."""
        return self.targets.for_write()

    async def close(self) -> None:
        await self.coalescer.close()
        for stubs in self.targets.all_stubs():
            await stubs.channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ calling

    async def _call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout_s: float | None,
        *,
        retry: bool = True,
    ) -> T:
        """A unary call with the deadline and the retry rules (module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.timeout_s)
        backoff = self.retry_initial_backoff_s
        service, name = self.targets.locate(method)
        while True:
            remaining = deadline - loop.time()
            stubs = self.targets.for_read() if name in READ_METHODS else self.targets.for_write()
            bound: Callable[..., Awaitable[T]] = getattr(getattr(stubs, service), name)
            try:
                return await bound(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as failure:
                error = error_from_rpc(failure)
                hint = leader_hint(failure)
            backoff = await self._after_failure(error, hint, retry, deadline, backoff)

    async def _after_failure(
        self, error: AtpdError, hint: str, retry: bool, deadline: float, backoff: float
    ) -> float:
        """Raise `error`, or get ready to send the call again: to the leader when this server
        is not it (nothing was applied: always safe), after UNAVAILABLE when `retry` allows
        (looking for the leader first when there are several targets). The next backoff."""
        if is_not_leader(error):
            leader = self.targets.leader
            if hint:
                self.targets.moved(hint)
            else:
                await self.targets.discover()
            if self.targets.leader != leader:
                return backoff  # straight to the new leader
            return await self._backoff(error, deadline, backoff)  # an election is under way
        if not (retry and isinstance(error, Unavailable)):
            raise error
        if self.targets.several:
            await self.targets.discover()
        return await self._backoff(error, deadline, backoff)

    async def _backoff(self, error: AtpdError, deadline: float, backoff: float) -> float:
        """Sleep before the next attempt, or raise `error` when the deadline would pass."""
        loop = asyncio.get_running_loop()
        if loop.time() + backoff >= deadline:
            raise error
        await asyncio.sleep(backoff)
        return min(backoff * 2, self.retry_max_backoff_s)

    async def _write(
        self,
        kind: str,
        request: Any,
        unary: Callable[..., Awaitable[Any]],
        timeout_s: float | None,
        retry: bool,
    ) -> Any:
        """A batchable write: through the coalescer (or `unary`), with deadline and retries.
        Answers the response message of the unary method."""
        if not self.coalesce:
            return await self._call(unary, request, timeout_s, retry=retry)
        command = batch_pb2.BatchCommand(**{kind: request})
        loop = asyncio.get_running_loop()
        timeout = timeout_s or self.timeout_s
        deadline = loop.time() + timeout
        backoff = self.retry_initial_backoff_s
        while True:
            try:
                result = await self.coalescer.submit(command, deadline)
            except DeadlineReached:
                raise DeadlineExceeded(
                    f"no answer within {timeout:g} s (the command may have been applied)"
                ) from None
            except StreamLost as lost:
                error: AtpdError = error_for(lost.code, str(lost))
            except BatchRefusedError as refused:
                raise error_for_number(refused.code, refused.message) from None
            else:
                which = result.WhichOneof("result")
                if which != "error":
                    return getattr(result, which)
                error = error_for_number(result.error.code, result.error.message)
            backoff = await self._after_failure(error, "", retry, deadline, backoff)

    # ------------------------------------------------------------------ reservations

    async def reserve(
        self,
        reservation_id: str,
        lines: Sequence[LineLike] = (),
        *,
        ttl_ms: int = 15 * 60_000,
        kind: str = "CART",
        channel: str = "",
        segment: str = "",
        option_token: str = "",
        destination: tuple[str, str] | None = None,
        pickup_node_id: str = "",
        timeout_s: float | None = None,
    ) -> ReserveResult:
        """Hold stock for every line, all or nothing (lines (sku, node_id, quantity); node-less
        lines with `destination` (country, postal code) or `pickup_node_id` are sourced by the
        server; or `option_token` from `promise`). Retried safely: idempotent on the id."""
        request = reservations_pb2.ReserveRequest(
            reservation_id=reservation_id,
            lines=request_lines(lines),
            ttl_ms=ttl_ms,
            kind=enum_value(common_pb2.ReservationKind, "RESERVATION_KIND_", kind, "kind"),  # type: ignore[arg-type]
            channel=channel,
            segment=segment,
            option_token=option_token,
            pickup_node_id=pickup_node_id,
        )
        if destination is not None:
            request.destination.country, request.destination.postal_code = destination
        response = await self._write(
            "reserve", request, self.stubs.reservations.Reserve, timeout_s, True
        )
        return from_message(ReserveResult, response)

    async def confirm(
        self, reservation_id: str, *, timeout_s: float | None = None
    ) -> ReservationResult:
        """HELD -> CONFIRMED (the hold stops expiring)."""
        request = reservations_pb2.ConfirmRequest(reservation_id=reservation_id)
        response = await self._write(
            "confirm", request, self.stubs.reservations.Confirm, timeout_s, True
        )
        return from_message(ReservationResult, response)

    async def release(
        self, reservation_id: str, *, timeout_s: float | None = None
    ) -> ReservationResult:
        """Free what the reservation holds (releasing a released one is OK)."""
        request = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
        response = await self._write(
            "release", request, self.stubs.reservations.Release, timeout_s, True
        )
        return from_message(ReservationResult, response)

    async def fulfil(
        self,
        reservation_id: str,
        lines: Sequence[LineLike] = (),
        *,
        release_remainder: bool = False,
        timeout_s: float | None = None,
    ) -> ReservationResult:
        """The goods left: everything held, or the given lines (then not retried)."""
        request = reservations_pb2.FulfilRequest(
            reservation_id=reservation_id,
            lines=request_lines(lines),
            release_remainder=release_remainder,
        )
        response = await self._write(
            "fulfil", request, self.stubs.reservations.Fulfil, timeout_s, not lines
        )
        return from_message(ReservationResult, response)

    async def get_reservation(
        self, reservation_id: str, *, timeout_s: float | None = None
    ) -> Reservation:
        request = reservations_pb2.GetReservationRequest(reservation_id=reservation_id)
        response = await self._call(self.stubs.reservations.GetReservation, request, timeout_s)
        return from_message(Reservation, response.reservation)

    async def get_reservation_result(
        self, reservation_id: str, *, timeout_s: float | None = None
    ) -> ReservationResult:
        """GetReservation's whole answer (the CLI prints it)."""
        request = reservations_pb2.GetReservationRequest(reservation_id=reservation_id)
        response = await self._call(self.stubs.reservations.GetReservation, request, timeout_s)
        return from_message(ReservationResult, response)

    # ------------------------------------------------------------------ stock and nodes

    async def set_stock(
        self,
        sku: str,
        node_id: str,
        on_hand: int,
        source_sequence: int,
        *,
        safety_stock: int | None = None,
        timeout_s: float | None = None,
    ) -> StockResult:
        """The counted on_hand (absolute); a source_sequence not above the last one is STALE."""
        request = inventory_pb2.SetStockRequest(
            sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=source_sequence
        )
        if safety_stock is not None:
            request.safety_stock = safety_stock
        response = await self._write(
            "set_stock", request, self.stubs.inventory.SetStock, timeout_s, True
        )
        return from_message(StockResult, response)

    async def adjust_stock(
        self,
        sku: str,
        node_id: str,
        delta: int,
        *,
        reason: str = "",
        timeout_s: float | None = None,
    ) -> StockResult:
        """on_hand += delta. Never retried (a repeat would apply the delta twice)."""
        request = inventory_pb2.AdjustStockRequest(
            sku=sku, node_id=node_id, delta=delta, reason=reason
        )
        response = await self._write(
            "adjust_stock", request, self.stubs.inventory.AdjustStock, timeout_s, False
        )
        return from_message(StockResult, response)

    async def get_stock(
        self, sku: str, node_id: str, *, timeout_s: float | None = None
    ) -> Position:
        request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
        response = await self._call(self.stubs.inventory.GetStock, request, timeout_s)
        return from_message(Position, response.position)

    async def upsert_node(
        self,
        node_id: str,
        kind: str,
        geo_path: str,
        *,
        ships: bool = True,
        pickup: bool = True,
        enabled: bool = True,
        tags: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> UpsertNodeResult:
        node = inventory_pb2.Node(
            node_id=node_id,
            kind=enum_value(common_pb2.NodeKind, "NODE_KIND_", kind, "kind"),  # type: ignore[arg-type]
            geo_path=geo_path,
            ships=ships,
            pickup=pickup,
            enabled=enabled,
            tags=list(tags),
        )
        request = inventory_pb2.UpsertNodeRequest(node=node)
        response = await self._call(self.stubs.inventory.UpsertNode, request, timeout_s)
        return from_message(UpsertNodeResult, response)

    async def list_nodes(
        self, geo_prefix: str = "", *, timeout_s: float | None = None
    ) -> tuple[Node, ...]:
        request = inventory_pb2.ListNodesRequest(geo_prefix=geo_prefix)
        response = await self._call(self.stubs.inventory.ListNodes, request, timeout_s)
        return tuple(from_message(Node, node) for node in response.nodes)

    # ------------------------------------------------------------------ availability, promise

    async def availability(
        self,
        skus: Sequence[str],
        *,
        node_ids: Sequence[str] = (),
        geo_prefix: str = "",
        channel: str = "",
        segment: str = "",
        include_nodes: bool = False,
        explain: bool = False,
        timeout_s: float | None = None,
    ) -> Availability:
        request = availability_pb2.GetAvailabilityRequest(
            skus=list(skus),
            node_ids=list(node_ids),
            geo_prefix=geo_prefix,
            channel=channel,
            segment=segment,
            include_nodes=include_nodes or explain,
            explain=explain,
        )
        response = await self._call(self.stubs.availability.GetAvailability, request, timeout_s)
        return from_message(Availability, response)

    async def promise(
        self,
        lines: Sequence[tuple[str, int]],
        *,
        destination: tuple[str, str] | None = None,
        pickup_node_id: str = "",
        channel: str = "",
        segment: str = "",
        timeout_s: float | None = None,
    ) -> PromiseResult:
        """Delivery or pickup options for (sku, quantity) lines; each option's token reserves it."""
        request = promise_pb2.PromiseRequest(
            lines=[promise_pb2.PromiseLine(sku=s, quantity=q) for s, q in lines],
            pickup_node_id=pickup_node_id,
            channel=channel,
            segment=segment,
        )
        if destination is not None:
            request.destination.country, request.destination.postal_code = destination
        response = await self._call(self.stubs.promise.Promise, request, timeout_s)
        return from_message(PromiseResult, response)

    async def promise_batch(
        self,
        skus: Sequence[str],
        destination: tuple[str, str],
        *,
        channel: str = "",
        segment: str = "",
        timeout_s: float | None = None,
    ) -> PromiseBatchResult:
        """The earliest delivery date of one unit of each SKU (a product listing)."""
        request = promise_pb2.PromiseBatchRequest(skus=list(skus), channel=channel, segment=segment)
        request.destination.country, request.destination.postal_code = destination
        response = await self._call(self.stubs.promise.PromiseBatch, request, timeout_s)
        return from_message(PromiseBatchResult, response)

    # ------------------------------------------------------------------ supply and rules

    async def add_supply(
        self,
        supply_id: str,
        sku: str,
        node_id: str,
        quantity: int,
        eta_ms: int,
        *,
        kind: str = "PURCHASE_ORDER",
        timeout_s: float | None = None,
    ) -> SupplyResult:
        request = supply_pb2.AddSupplyRequest(
            supply_id=supply_id,
            sku=sku,
            node_id=node_id,
            quantity=quantity,
            eta_ms=eta_ms,
            kind=enum_value(supply_pb2.SupplyKind, "SUPPLY_KIND_", kind, "kind"),  # type: ignore[arg-type]
        )
        response = await self._call(self.stubs.supply.AddSupply, request, timeout_s)
        return from_message(SupplyResult, response)

    async def receive_supply(
        self, supply_id: str, quantity: int | None = None, *, timeout_s: float | None = None
    ) -> SupplyResult:
        """Not retried when a quantity is given (a partial receipt repeated counts twice)."""
        request = supply_pb2.ReceiveSupplyRequest(supply_id=supply_id)
        if quantity is not None:
            request.quantity = quantity
        response = await self._call(
            self.stubs.supply.ReceiveSupply, request, timeout_s, retry=quantity is None
        )
        return from_message(SupplyResult, response)

    async def cancel_supply(
        self, supply_id: str, *, timeout_s: float | None = None
    ) -> SupplyResult:
        request = supply_pb2.CancelSupplyRequest(supply_id=supply_id)
        response = await self._call(self.stubs.supply.CancelSupply, request, timeout_s)
        return from_message(SupplyResult, response)

    async def list_supply(
        self, sku: str = "", *, timeout_s: float | None = None
    ) -> tuple[Supply, ...]:
        request = supply_pb2.ListSupplyRequest(sku=sku)
        response = await self._call(self.stubs.supply.ListSupply, request, timeout_s)
        return tuple(from_message(Supply, supply) for supply in response.supplies)

    async def set_rules(
        self, text: str, source: str = "", *, timeout_s: float | None = None
    ) -> RulesResult:
        request = rules_pb2.SetRulesRequest(text=text, source=source)
        response = await self._call(self.stubs.rules.SetRules, request, timeout_s)
        return from_message(RulesResult, response)

    async def get_rules(self, *, timeout_s: float | None = None) -> Rules:
        response = await self._call(
            self.stubs.rules.GetRules, rules_pb2.GetRulesRequest(), timeout_s
        )
        return from_message(Rules, response)

    # ------------------------------------------------------------------ admin and watch

    async def status(self, *, timeout_s: float | None = None) -> Status:
        response = await self._call(
            self.stubs.admin.GetStatus, admin_pb2.GetStatusRequest(), timeout_s
        )
        return from_message(Status, response)

    async def snapshot(self, *, timeout_s: float | None = None) -> SnapshotInfo:
        response = await self._call(
            self.stubs.admin.Snapshot, admin_pb2.SnapshotRequest(), timeout_s, retry=False
        )
        return from_message(SnapshotInfo, response)

    async def watch(
        self,
        skus: Sequence[str] = (),
        *,
        node_ids: Sequence[str] = (),
        geo_prefix: str = "",
        channel: str = "",
        segment: str = "",
        from_sequence: int = 0,
        epoch: int = 0,
        low_stock_threshold: int = 0,
    ) -> AsyncIterator[WatchEvent]:
        """Availability changes as they happen (no deadline: it runs until you stop iterating).
        The first event is SYNC with the head sequence; resume after a break with
        from_sequence and epoch of the last event seen."""
        request = watch_pb2.WatchRequest(
            skus=list(skus),
            node_ids=list(node_ids),
            geo_prefix=geo_prefix,
            channel=channel,
            segment=segment,
            from_sequence=from_sequence,
            epoch=epoch,
            low_stock_threshold=low_stock_threshold,
        )
        call = self.targets.for_read().watch.Watch(request, metadata=self._metadata)
        try:
            async for event in call:
                yield from_message(WatchEvent, event)
        except grpc.aio.AioRpcError as failure:
            raise error_from_rpc(failure) from None
        finally:
            call.cancel()
