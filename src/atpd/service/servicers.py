"""gRPC servicers: decode and validate, hand a command to the engine, encode the result.

Every failure leaves through `_guard` (or the Watch stream's own handler) with the status that
service/errors.py maps its exception to; nothing here picks a status from an exception type.
Expected business outcomes (insufficient stock, stale, ...) travel in the response body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from atpd import __version__
from atpd.core.command_base import CommandOf
from atpd.core.commands import Confirm, Fulfil, Release, SetRules
from atpd.core.commands import Reserve as ReserveCommand
from atpd.core.plan import Plan
from atpd.core.promise_best import best_instead
from atpd.core.results import InvalidCommand, Outcome, ReservationResult, SupplyResult
from atpd.core.rules import RulesError, read_rules_document
from atpd.service import convert, validation, wire
from atpd.service.access_lookup import EngineLookup
from atpd.service.amend_servicer import AmendMixin
from atpd.service.durability import Durability
from atpd.service.engine import Engine
from atpd.service.errors import NotReady, abort, is_bug, status_of
from atpd.service.option_reserve import check_plan_access, reserve_option, verified_plan
from atpd.service.ownership import check_owner
from atpd.service.principals import current_principal
from atpd.service.promise_messages import option_message
from atpd.service.replication_role import ReplicationRole
from atpd.service.sourced_reserve import is_sourced, sourced_command
from atpd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
    rules_pb2,
    rules_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
)

Response = TypeVar("Response")


class _Base:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limits = engine.state.limits
        self._latency: dict[str, Any] = {}
        self._calls: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._ok_calls: dict[str, Any] = {}  # the common case, without a key tuple per call

    async def document_off_loop(
        self,
        read: Callable[[str, str], dict[str, Any]],
        text: str,
        source: str,
        errors: type[Exception],
        what: str,
    ) -> dict[str, Any]:
        """Parse TOML text (rules, a network: the costly part, up to its 1 MiB bound) in a worker
        thread so the loop keeps answering; the writer then only interprets the document."""
        try:
            return await asyncio.to_thread(read, text, source)
        except errors as error:
            raise InvalidCommand(f"{what}: {error}") from None

    async def _guard(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        handler: Callable[[], Awaitable[Response]],
        *,
        write: bool,
    ) -> Response:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if not self._admitted(write):
                await self.engine.clean.wait()
            return await handler()
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            await abort(context, code, str(error))
        finally:
            self._count(method, started, code)
        raise AssertionError("unreachable")  # pragma: no cover

    def _admitted(self, write: bool) -> bool:
        """Whether a call may go ahead now: raises NotReady for a write during recovery;
        False while the state is rebuilt after a write failure (wait for `engine.clean`, then
        answer from the state rebuilt from durable records)."""
        if write and not self.engine.ready:
            raise NotReady("the server is starting up (recovery in progress); retry shortly")
        return self.engine.clean.is_set()

    def _count(self, method: str, started: float, code: grpc.StatusCode) -> None:
        """The call's latency and its status in the RPC metrics (children bound once)."""
        timer = self._latency.get(method)
        if timer is None:
            timer = self._latency[method] = self.engine.metrics.rpc_latency.labels(method)
        timer.observe(time.perf_counter() - started)
        if code is grpc.StatusCode.OK:
            counter = self._ok_calls.get(method)
            if counter is None:
                counter = self._ok_calls[method] = self._calls_counter(method, code)
        else:
            counter = self._calls_counter(method, code)
        counter.inc()

    def _calls_counter(self, method: str, code: grpc.StatusCode) -> Any:
        counter = self._calls.get((method, code))
        if counter is None:
            labels = self.engine.metrics.rpc_calls.labels
            counter = self._calls[(method, code)] = labels(method, code.name)
        return counter


class AvailabilityServicer(_Base, availability_pb2_grpc.AvailabilityServiceServicer):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._geo_encoding = wire.GeoEncoding()

    async def GetAvailability(
        self, request: availability_pb2.GetAvailabilityRequest, context: Any
    ) -> availability_pb2.GetAvailabilityResponse:
        """The message form (grpc_testing, direct calls); the server registers `wire_get`."""
        response = availability_pb2.GetAvailabilityResponse()
        response.ParseFromString(await self.wire_get(request, context))
        return response

    async def wire_get(
        self, request: availability_pb2.GetAvailabilityRequest, context: Any
    ) -> bytes:
        """GetAvailability as serialized bytes: the common answer (no per-node entries) is
        encoded by hand (service/wire.py), the rest through the protobuf API."""

        async def handle() -> bytes:
            skus, node_ids, geo_prefix = validation.availability_query(request, self.limits)
            now_ms = self.engine.catch_up()
            state = self.engine.state
            policy = state.policy(request.channel, request.segment)
            view = state.availability(skus, node_ids, geo_prefix, policy=policy)
            if not (request.include_nodes or request.explain):
                if policy is None:
                    return wire.encode_availability(state, view, now_ms, "", "", self._geo_encoding)
                return wire.encode_availability(
                    state,
                    view,
                    now_ms,
                    policy.channel,
                    policy.segment,
                    self._geo_encoding,
                    policy.policy.max_per_line,
                )
            return convert.availability_response(
                state, view, request.include_nodes, now_ms, policy, request.explain
            ).SerializeToString()

        return await self._guard("GetAvailability", context, handle, write=False)


class ReservationServicer(AmendMixin, _Base, reservations_pb2_grpc.ReservationServiceServicer):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._geo_path_of = EngineLookup(engine).node_geo_path

    async def Reserve(
        self, request: reservations_pb2.ReserveRequest, context: Any
    ) -> reservations_pb2.ReserveResponse:
        # `_guard` written out (no closure nor coroutine per call on this hot path).
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if not self._admitted(True):
                await self.engine.clean.wait()
            command = self._reserve_command(request)
            if isinstance(command, str):
                return reservations_pb2.ReserveResponse(
                    outcome=common_pb2.OUTCOME_INSUFFICIENT_STOCK, no_option_reason=command
                )
            result = await self.engine.execute(command)
            response = convert.reserve_response(result)
            if result.outcome is Outcome.PROMISE_CHANGED and command.plan is not None:
                # A read of the state after the writer answered: the client reserves the
                # offered option later, and the writer re-checks it then.
                self.offer_best(response, command.plan)
            return response
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            await abort(context, code, str(error))
        finally:
            self._count("Reserve", started, code)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reserve_command(self, request: reservations_pb2.ReserveRequest) -> ReserveCommand | str:
        """The command a Reserve request asks for, or why a sourced one found no option."""
        principal = current_principal()
        maker = principal.maker if principal is not None else None
        # The token's default channel for a call naming none (an option carries its own).
        default = principal.default_channel if principal is not None else ""
        if default and not request.channel and not request.option_token:
            request.channel = default
        if is_sourced(request):
            return sourced_command(
                self.engine.state,
                request,
                self.limits,
                self.engine.catch_up(),
                principal,
                self._geo_path_of,
            )
        if request.option_token:
            plan = verified_plan(
                self.engine.option_tokens,
                request.option_token,
                self.engine.now_ms(),
                retry=request.reservation_id in self.engine.state.reservations,
            )
            check_plan_access(principal, plan, self._geo_path_of)
            return reserve_option(request, self.limits, plan, maker)
        return validation.reserve(request, self.limits, maker)

    def offer_best(self, response: reservations_pb2.ReserveResponse, plan: Plan) -> None:
        """Fill best_option_token (and best_option) with the best option now for the plan's
        cart, destination and caller; left empty when there is none."""
        tokens = self.engine.option_tokens
        if tokens is None:
            return
        now_ms = self.engine.catch_up()
        best = best_instead(self.engine.state, plan, now_ms)
        if best.plan is None:
            return
        token = tokens.issue(best.plan, now_ms, self.engine.journal.last_sequence)
        response.best_option_token = token
        if best.option is not None:
            response.best_option.CopyFrom(option_message(best.option, token))

    async def _lifecycle(
        self, method: str, command: Callable[[], Confirm | Release | Fulfil], context: Any
    ) -> reservations_pb2.ReservationResponse:
        # `_guard` written out (no closure nor coroutine per call on this hot path).
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if not self._admitted(True):
                await self.engine.clean.wait()
            lifecycle = command()
            principal = current_principal()
            if principal is not None:
                # Race-free: no await from here to the command's application (ownership.py).
                state = self.engine.state
                row = state.reservations.find(lifecycle.reservation_id)
                if row >= 0:
                    check_owner(
                        f"ReservationService/{method}",
                        principal,
                        lifecycle.reservation_id,
                        state.reservations.maker_of(row),
                        self._geo_path_of,
                    )
            result: ReservationResult = await self.engine.execute(lifecycle)
            return convert.reservation_response(result.outcome, result.reservation)
        except Exception as error:
            code = status_of(error)
            if is_bug(error):
                raise
            await abort(context, code, str(error))
        finally:
            self._count(method, started, code)
        raise AssertionError("unreachable")  # pragma: no cover

    async def Confirm(
        self, request: reservations_pb2.ConfirmRequest, context: Any
    ) -> reservations_pb2.ReservationResponse:
        return await self._lifecycle("Confirm", lambda: validation.confirm(request), context)

    async def Release(
        self, request: reservations_pb2.ReleaseRequest, context: Any
    ) -> reservations_pb2.ReservationResponse:
        return await self._lifecycle("Release", lambda: validation.release(request), context)

    async def Fulfil(
        self, request: reservations_pb2.FulfilRequest, context: Any
    ) -> reservations_pb2.ReservationResponse:
        return await self._lifecycle(
            "Fulfil", lambda: validation.fulfil(request, self.limits), context
        )

    async def GetReservation(
        self, request: reservations_pb2.GetReservationRequest, context: Any
    ) -> reservations_pb2.ReservationResponse:
        async def handle() -> reservations_pb2.ReservationResponse:
            reservation_id = validation.reservation_id(request.reservation_id)
            self.engine.catch_up()
            reservation = self.engine.state.reservation(reservation_id)
            return reservations_pb2.ReservationResponse(
                outcome=common_pb2.OUTCOME_OK,
                reservation=convert.reservation_message(reservation),
            )

        return await self._guard("GetReservation", context, handle, write=False)


class InventoryServicer(_Base, inventory_pb2_grpc.InventoryServiceServicer):
    async def UpsertNode(
        self, request: inventory_pb2.UpsertNodeRequest, context: Any
    ) -> inventory_pb2.UpsertNodeResponse:
        async def handle() -> inventory_pb2.UpsertNodeResponse:
            result = await self.engine.execute(validation.upsert_node(request, self.limits))
            return inventory_pb2.UpsertNodeResponse(
                outcome=convert.pb_enum(result.outcome), created=result.created
            )

        return await self._guard("UpsertNode", context, handle, write=True)

    async def ListNodes(
        self, request: inventory_pb2.ListNodesRequest, context: Any
    ) -> inventory_pb2.ListNodesResponse:
        async def handle() -> inventory_pb2.ListNodesResponse:
            prefix = validation.geo_prefix(request.geo_prefix)
            nodes = self.engine.state.list_nodes(prefix)
            return inventory_pb2.ListNodesResponse(nodes=[convert.node_message(n) for n in nodes])

        return await self._guard("ListNodes", context, handle, write=False)

    async def SetStock(
        self, request: inventory_pb2.SetStockRequest, context: Any
    ) -> inventory_pb2.SetStockResponse:
        async def handle() -> inventory_pb2.SetStockResponse:
            result = await self.engine.execute(validation.set_stock(request))
            return inventory_pb2.SetStockResponse(
                outcome=convert.pb_enum(result.outcome),
                position=convert.position_message(result.position),
                last_source_sequence=result.last_source_sequence,
            )

        return await self._guard("SetStock", context, handle, write=True)

    async def AdjustStock(
        self, request: inventory_pb2.AdjustStockRequest, context: Any
    ) -> inventory_pb2.AdjustStockResponse:
        async def handle() -> inventory_pb2.AdjustStockResponse:
            result = await self.engine.execute(validation.adjust_stock(request))
            return inventory_pb2.AdjustStockResponse(
                outcome=convert.pb_enum(result.outcome),
                position=convert.position_message(result.position),
            )

        return await self._guard("AdjustStock", context, handle, write=True)

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: Any
    ) -> inventory_pb2.GetStockResponse:
        async def handle() -> inventory_pb2.GetStockResponse:
            sku = validation.sku_id(request.sku, "sku")
            node_id = validation.node_id(request.node_id, "node_id")
            self.engine.catch_up()
            view = self.engine.state.position(sku, node_id)
            return inventory_pb2.GetStockResponse(position=convert.position_message(view))

        return await self._guard("GetStock", context, handle, write=False)


class RulesServicer(_Base, rules_pb2_grpc.RulesServiceServicer):
    async def SetRules(
        self, request: rules_pb2.SetRulesRequest, context: Any
    ) -> rules_pb2.SetRulesResponse:
        async def handle() -> rules_pb2.SetRulesResponse:
            command = validation.set_rules(request)
            document = await self.document_off_loop(
                read_rules_document, command.text, command.source, RulesError, "rules"
            )
            result = await self.engine.execute(SetRules(command.text, command.source, document))
            return rules_pb2.SetRulesResponse(
                outcome=convert.pb_enum(result.outcome),
                version=result.version,
                previous_version=result.previous_version,
            )

        return await self._guard("SetRules", context, handle, write=True)

    async def GetRules(
        self, request: rules_pb2.GetRulesRequest, context: Any
    ) -> rules_pb2.GetRulesResponse:
        async def handle() -> rules_pb2.GetRulesResponse:
            rules = self.engine.state.rules
            return rules_pb2.GetRulesResponse(
                version=rules.version,
                text=rules.text,
                channels=[c for c in rules.channels if c],
                segments=[s for s in rules.segments if s],
                default_channel=rules.default_channel,
                default_segment=rules.default_segment,
            )

        return await self._guard("GetRules", context, handle, write=False)


class SupplyServicer(_Base, supply_pb2_grpc.SupplyServiceServicer):
    async def _write(
        self, method: str, command: Callable[[], CommandOf[SupplyResult]], context: Any
    ) -> supply_pb2.SupplyResponse:
        async def handle() -> supply_pb2.SupplyResponse:
            result = await self.engine.execute(command())
            return supply_pb2.SupplyResponse(
                outcome=convert.pb_enum(result.outcome),
                supply=convert.supply_message(result.supply, self.engine.now_ms()),
            )

        return await self._guard(method, context, handle, write=True)

    async def AddSupply(
        self, request: supply_pb2.AddSupplyRequest, context: Any
    ) -> supply_pb2.SupplyResponse:
        return await self._write("AddSupply", lambda: validation.add_supply(request), context)

    async def ReceiveSupply(
        self, request: supply_pb2.ReceiveSupplyRequest, context: Any
    ) -> supply_pb2.SupplyResponse:
        return await self._write(
            "ReceiveSupply", lambda: validation.receive_supply(request), context
        )

    async def CancelSupply(
        self, request: supply_pb2.CancelSupplyRequest, context: Any
    ) -> supply_pb2.SupplyResponse:
        return await self._write("CancelSupply", lambda: validation.cancel_supply(request), context)

    async def ListSupply(
        self, request: supply_pb2.ListSupplyRequest, context: Any
    ) -> supply_pb2.ListSupplyResponse:
        async def handle() -> supply_pb2.ListSupplyResponse:
            state = self.engine.state
            now_ms = self.engine.now_ms()
            if request.sku:
                validation.sku_id(request.sku, "sku")
                supplies = list(state.supply.by_sku.get(state.skus.get(request.sku), ()))
            else:
                supplies = list(state.supply.by_id.values())
            supplies.sort(key=lambda x: (x.eta_ms, x.supply_id))
            return supply_pb2.ListSupplyResponse(
                supplies=[convert.supply_message(x, now_ms) for x in supplies]
            )

        return await self._guard("ListSupply", context, handle, write=False)


class AdminServicer(_Base, admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Set by create_server: the durability layer appears once recovery is done.
        self.durability_of: Callable[[], Durability | None] = lambda: None
        self.replication: ReplicationRole | None = None

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: Any
    ) -> admin_pb2.GetStatusResponse:
        async def handle() -> admin_pb2.GetStatusResponse:
            state = self.engine.state
            response = admin_pb2.GetStatusResponse(
                nodes=len(state.nodes),
                skus=len(state.skus),
                positions=state.stock.position_count,
                open_reservations=state.open_reservations,
                now_ms=self.engine.now_ms(),
                version=__version__,
                journal_failure=self.engine.write_failure or "",
            )
            durability = self.durability_of()
            if durability is not None:
                journal = durability.journal
                response.journal_sequence = journal.last_sequence
                response.durable_sequence = journal.durable_sequence
                response.fsync_policy = journal.fsync_policy.value
                if durability.snapshotter is not None:
                    response.last_snapshot_sequence = durability.snapshotter.last_sequence
            else:
                response.fsync_policy = "in-memory (no journal)"
            if self.replication is not None:
                self.replication.fill_status(response, request.include_digest)
            return response

        return await self._guard("GetStatus", context, handle, write=False)

    async def Snapshot(
        self, request: admin_pb2.SnapshotRequest, context: Any
    ) -> admin_pb2.SnapshotResponse:
        async def handle() -> admin_pb2.SnapshotResponse:
            durability = self.durability_of()
            if durability is None:
                raise NotReady("no journal: the server runs in memory only (or is starting)")
            info = await durability.snapshot()
            return admin_pb2.SnapshotResponse(
                last_sequence=info.last_sequence,
                path=str(info.path),
                bytes=info.size_bytes,
                seconds=info.seconds,
                segments_removed=info.segments_removed,
            )

        return await self._guard("Snapshot", context, handle, write=True)


# The shared guard (status mapping, readiness, metrics) for servicers in other modules
# (service/network_servicer.py).
ServicerBase = _Base
