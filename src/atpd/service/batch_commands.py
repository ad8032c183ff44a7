"""One batch of independent writes (Reserve, Release, Confirm, Fulfil, SetStock, AdjustStock)
applied on the writer, each exactly as its unary method would be, answered once all are durable.

Per command, in order: the access checks of its unary method (role, node scope, channel, and
for Confirm/Release/Fulfil the reservation's maker; checked just before the command is applied,
so a Confirm may follow the Reserve of the same id in one batch), validation, the engine
(`execute_unwaited`: same journal records, watch events and core metrics as `execute`), and
its response encoded at once. Then one wait for the journal covers every record of the batch.
A refusal of one command is that command's answer (code and the unary message); the others go
on. If the journal fails during the wait, every command that had succeeded answers UNAVAILABLE,
as each unary call would have: its record may not be durable, and the server rebuilds its
state from what is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import grpc

from atpd.core.commands import Confirm, Fulfil, Release
from atpd.core.results import Outcome, ReservationResult
from atpd.core.text import bounded
from atpd.persistence.codec import encode_reserve_request
from atpd.service import convert, validation
from atpd.service.access_lookup import EngineLookup
from atpd.service.auth import AccessControl, MethodPolicy, Refused
from atpd.service.engine import Engine, PendingGroup, WritesUnavailable
from atpd.service.errors import is_bug, status_of
from atpd.service.lease_fence import LeadershipLostUnacknowledged
from atpd.service.option_reserve import check_plan_access, reserve_option, verified_plan
from atpd.service.ownership import check_owner
from atpd.service.principals import ANONYMOUS, Principal
from atpd.service.servicers import ReservationServicer
from atpd.service.sourced_reserve import is_sourced, sourced_command
from atpd.v1 import batch_pb2, common_pb2, inventory_pb2, reservations_pb2

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "/atpd.v1."
# BatchCommand oneof name -> the unary method it stands for ("Service/Method").
UNARY_METHOD = {
    "reserve": "ReservationService/Reserve",
    "release": "ReservationService/Release",
    "confirm": "ReservationService/Confirm",
    "fulfil": "ReservationService/Fulfil",
    "set_stock": "InventoryService/SetStock",
    "adjust_stock": "InventoryService/AdjustStock",
}


# The commands applied into a CommandGroup (Engine.apply_grouped); a Reserve only when plain.
GROUPED_KINDS = frozenset(("reserve", "release", "confirm", "fulfil"))


def may_be_plain(request: reservations_pb2.ReserveRequest) -> bool:
    """A Reserve with no option token and no destination: applied grouped unless a line names
    no node (validation raises NodelessLine, before anything is applied). Any other
    (sourced, an option, or one to refuse) goes the unary way (`_one`)."""
    return not (request.option_token or request.pickup_node_id or request.HasField("destination"))


class BatchRefused(Exception):
    """The batch as a whole is refused (empty, too many commands): nothing was applied."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Applied:
    """A batch applied and not yet answered: its results so far, and what auditing needs."""

    __slots__ = ("answer", "commands", "methods", "policies", "principal", "results")

    def __init__(
        self,
        commands: Sequence[batch_pb2.BatchCommand],
        principal: Principal | None,
        answer: batch_pb2.CommandBatchResponse | batch_pb2.SubmitResponse,
    ) -> None:
        self.commands = commands
        self.principal = principal
        # The answer message being made: each command's result is written in place into its
        # `results` (a batch of copied-in results costs about half a microsecond a command).
        self.answer = answer
        self.results: Any = answer.results
        self.policies: list[tuple[MethodPolicy, Any] | None] = []
        # Per command, its unary method (None: no command set), for the call counters.
        self.methods: list[str | None] = []


def error_result(code: grpc.StatusCode, message: str) -> batch_pb2.BatchResult:
    result = batch_pb2.BatchResult()
    set_error(result, code, message)
    return result


def set_error(result: batch_pb2.BatchResult, code: grpc.StatusCode, message: str) -> None:
    """Make `result` (empty, or cleared here) the error answer `code` with `message`."""
    result.Clear()
    error = result.error
    error.code = code.value[0]
    error.message = bounded(message)


class BatchRunner:
    """Applies batches for one server (shared by CommandBatch and every Submit stream)."""

    def __init__(
        self, engine: Engine, access: AccessControl | None, max_batch_commands: int
    ) -> None:
        self.engine = engine
        self.limits = engine.state.limits
        self.access = access
        self.max_batch_commands = max_batch_commands
        self._geo_path_of = EngineLookup(engine).node_geo_path
        # Its best-option offer for a PROMISE_CHANGED Reserve, the same as the unary answer's.
        self._reservations = ReservationServicer(engine)
        self._policies: dict[str, MethodPolicy] = {}
        self._calls: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._batch_sizes = engine.metrics.batch_commands

    def check_size(self, count: int, field: str) -> None:
        if count == 0:
            raise BatchRefused(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}: is empty: send at least one command"
            )
        if count > self.max_batch_commands:
            raise BatchRefused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{field}: {count} commands, more than max_batch_commands "
                f"({self.max_batch_commands}); split the batch",
            )

    async def apply(
        self,
        commands: Sequence[batch_pb2.BatchCommand],
        principal: Principal | None,
        answer: batch_pb2.CommandBatchResponse | batch_pb2.SubmitResponse | None = None,
    ) -> Applied:
        """Apply every command in order; nothing of it is answered before `finish`.

        Reserve (a plain one), Confirm, Release and Fulfil are applied without a suspension
        in between, at one time, and journaled together as CommandGroup records
        (Engine.apply_grouped); the group is flushed before any other command, which may
        suspend (SetStock and AdjustStock may wait for the stock table to grow)."""
        engine = self.engine
        if not engine.clean.is_set():
            # A write just failed: act on the state rebuilt from durable records.
            await engine.clean.wait()
        self._batch_sizes.observe(len(commands))
        applied = Applied(
            commands, principal, batch_pb2.CommandBatchResponse() if answer is None else answer
        )
        results = applied.results
        policies = applied.policies
        methods = applied.methods
        group = PendingGroup()
        for index, command in enumerate(commands):
            kind = command.WhichOneof("command")
            if kind is None:
                set_error(
                    results.add(),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"commands[{index}]: no command set (one of reserve, release, confirm, "
                    "fulfil, set_stock, adjust_stock)",
                )
                policies.append(None)
                methods.append(None)
                continue
            method = UNARY_METHOD[kind]
            methods.append(method)
            request = getattr(command, kind)
            policy = self._policy(method)
            policies.append(None if policy is None else (policy, request))
            if (
                kind in GROUPED_KINDS
                and (kind != "reserve" or may_be_plain(request))
                and self._grouped(kind, method, request, policy, principal, group, results)
            ):
                continue
            try:
                engine.flush_group(group)
            except WritesUnavailable as error:
                set_error(results.add(), status_of(error), str(error))
                continue
            one = await self._one(kind, method, request, policy, principal)
            results.add().CopyFrom(one)
        # If it fails, `finish` answers UNAVAILABLE for every command that had succeeded.
        with contextlib.suppress(WritesUnavailable):
            engine.flush_group(group)
        return applied

    async def finish(
        self, applied: Applied, context: Any
    ) -> batch_pb2.CommandBatchResponse | batch_pb2.SubmitResponse:
        """Wait once for every record of the batch (and before it) to be durable; the answer
        (`applied.answer`, its results filled)."""
        results = applied.results
        try:
            if self.engine.write_failure is not None:
                # A record of this batch may be lost (its group failed to journal).
                raise WritesUnavailable(self.engine.write_failure)
            await self.engine.wait_all_durable()
        except (WritesUnavailable, LeadershipLostUnacknowledged) as error:
            # LeadershipLostUnacknowledged: this server stopped leading meanwhile (a cluster:
            # README "Running a cluster"); the next leader may not have these: none is acked.
            code = status_of(error)
            for result in results:
                if not result.HasField("error"):
                    set_error(result, code, str(error))
        self._count(applied.methods, results)
        if self.access is not None:
            self._audit(applied.policies, results, applied.principal, context)
        return applied.answer

    # ------------------------------------------------------------------ one command

    def _policy(self, method: str) -> MethodPolicy | None:
        if self.access is None:
            return None
        policy = self._policies.get(method)
        if policy is None:
            policy = self._policies[method] = self.access.policy(PACKAGE_PREFIX + method)
        return policy

    def _authorize(
        self, policy: MethodPolicy | None, principal: Principal | None, request: Any
    ) -> None:
        """The unary method's access check of one command (raises Refused)."""
        if policy is not None and not policy.open:
            assert self.access is not None and principal is not None
            self.access.authorize(policy, principal, request)

    async def _one(
        self,
        kind: str,
        method: str,
        request: Any,
        policy: MethodPolicy | None,
        principal: Principal | None,
    ) -> batch_pb2.BatchResult:
        try:
            self._authorize(policy, principal, request)
            if kind == "reserve":
                return batch_pb2.BatchResult(reserve=await self._reserve(request, principal))
            if kind == "set_stock":
                stock = await self.engine.execute_unwaited(validation.set_stock(request))
                return batch_pb2.BatchResult(
                    set_stock=inventory_pb2.SetStockResponse(
                        outcome=convert.pb_enum(stock.outcome),
                        position=convert.position_message(stock.position),
                        last_source_sequence=stock.last_source_sequence,
                    )
                )
            if kind == "adjust_stock":
                adjusted = await self.engine.execute_unwaited(validation.adjust_stock(request))
                return batch_pb2.BatchResult(
                    adjust_stock=inventory_pb2.AdjustStockResponse(
                        outcome=convert.pb_enum(adjusted.outcome),
                        position=convert.position_message(adjusted.position),
                    )
                )
            raise AssertionError(f"{kind} is applied grouped")
        except Exception as error:
            return self._refusal(method, error)

    def _grouped(
        self,
        kind: str,
        method: str,
        request: Any,
        policy: MethodPolicy | None,
        principal: Principal | None,
        group: PendingGroup,
        results: Any,
    ) -> bool:
        """`_one` for a plain Reserve, a Confirm, a Release or a Fulfil: the same checks and
        answer (added to `results`), applied into `group` without a suspension. False for a
        Reserve to source (a line names no node): nothing was applied nor answered, `_one`
        takes it."""
        count = len(results)
        try:
            self._authorize(policy, principal, request)
            if kind == "reserve":
                maker = None
                if principal is not None:
                    maker = principal.maker
                    if principal.default_channel and not request.channel:
                        request.channel = principal.default_channel  # as the unary Reserve
                try:
                    command = validation.reserve(request, self.limits, maker)
                except validation.NodelessLine:
                    return False
                payload = None
                if maker is None and command.ttl_ms == request.ttl_ms:
                    # The record is the request as sent (codec.encode_reserve_request).
                    request.DiscardUnknownFields()
                    payload = encode_reserve_request(request.SerializeToString())
                held = self.engine.apply_grouped(command, group, payload)
                convert.fill_reserve_response(results.add().reserve, held)
                return True
            lifecycle = self._lifecycle_command(kind, method, request, principal)
            done: ReservationResult = self.engine.apply_grouped(lifecycle, group)
            message = results.add().reservation
            message.outcome = convert.pb_enum(done.outcome)
            convert.fill_reservation(message.reservation, done.reservation)
            return True
        except Exception as error:
            # Its answer may be half written: the refusal replaces it.
            answer = results[count] if len(results) > count else results.add()
            refusal = self._refusal(method, error)
            answer.CopyFrom(refusal)
            return True

    def _refusal(self, method: str, error: Exception) -> batch_pb2.BatchResult:
        """A command's error as its answer (the unary call's code and message); the others of
        the batch keep theirs."""
        if isinstance(error, Refused):
            if error.code is grpc.StatusCode.PERMISSION_DENIED and self.access is not None:
                self.access.denied_log.log(logging.WARNING, method, error.message)
            return error_result(error.code, error.message)
        if is_bug(error):
            # The unary call answers INTERNAL through the transport; here only this command
            # does, the others keep their answers.
            log.error("unexpected error in %s inside a batch", method, exc_info=error)
            name = method.rsplit("/", 1)[-1]
            return error_result(
                grpc.StatusCode.INTERNAL,
                f"internal error in {name} ({type(error).__name__}); the server log has details",
            )
        code = status_of(error)
        if code is grpc.StatusCode.PERMISSION_DENIED and self.access is not None:
            self.access.denied_log.log(logging.WARNING, method, str(error))
        return error_result(code, str(error))

    async def _reserve(
        self, request: reservations_pb2.ReserveRequest, principal: Principal | None
    ) -> reservations_pb2.ReserveResponse:
        """ReservationServicer.Reserve, without its wait for the disk."""
        engine = self.engine
        maker = principal.maker if principal is not None else None
        default = principal.default_channel if principal is not None else ""
        if default and not request.channel and not request.option_token:
            request.channel = default  # the token's default channel, as the unary Reserve
        if is_sourced(request):
            sourced = sourced_command(
                engine.state, request, self.limits, engine.catch_up(), principal, self._geo_path_of
            )
            if isinstance(sourced, str):
                return reservations_pb2.ReserveResponse(
                    outcome=common_pb2.OUTCOME_INSUFFICIENT_STOCK, no_option_reason=sourced
                )
            command = sourced
        elif request.option_token:
            plan = verified_plan(
                engine.option_tokens,
                request.option_token,
                engine.now_ms(),
                retry=request.reservation_id in engine.state.reservations,
            )
            check_plan_access(principal, plan, self._geo_path_of)
            command = reserve_option(request, self.limits, plan, maker)
        else:
            command = validation.reserve(request, self.limits, maker)
        result = await engine.execute_unwaited(command)
        response = convert.reserve_response(result)
        if result.outcome is Outcome.PROMISE_CHANGED and command.plan is not None:
            self._reservations.offer_best(response, command.plan)
        return response

    def _lifecycle_command(
        self, kind: str, method: str, request: Any, principal: Principal | None
    ) -> Confirm | Release | Fulfil:
        """ReservationServicer._lifecycle's command (Confirm, Release, Fulfil), checked against
        the reservation's maker. Race-free: nothing awaits between this check and the
        command's application."""
        lifecycle: Confirm | Release | Fulfil
        if kind == "confirm":
            lifecycle = validation.confirm(request)
        elif kind == "release":
            lifecycle = validation.release(request)
        else:
            lifecycle = validation.fulfil(request, self.limits)
        if principal is not None:
            reservation = self.engine.state.reservations.get(lifecycle.reservation_id)
            if reservation is not None:
                check_owner(
                    method,
                    principal,
                    lifecycle.reservation_id,
                    reservation.maker,
                    self._geo_path_of,
                )
        return lifecycle

    # ------------------------------------------------------------------ bookkeeping

    def _count(self, methods: list[str | None], results: Any) -> None:
        """Counted as the unary calls would be (atpd_rpc_calls by method and status), each
        counter once per batch."""
        counts: dict[tuple[str, int], int] = {}
        for method, result in zip(methods, results, strict=True):
            if method is not None:
                key = (method, result.error.code if result.HasField("error") else 0)
                counts[key] = counts.get(key, 0) + 1
        for (method, number), count in counts.items():
            code = _status_by_number(number)
            counter = self._calls.get((method, code))
            if counter is None:
                name = method.rsplit("/", 1)[-1]
                counter = self._calls[(method, code)] = self.engine.metrics.rpc_calls.labels(
                    name, code.name
                )
            counter.inc(count)

    def _audit(
        self,
        policies: list[tuple[MethodPolicy, Any] | None],
        results: Any,
        principal: Principal | None,
        context: Any,
    ) -> None:
        """Per command, as for unary calls: audited methods (SetStock, AdjustStock) whatever
        their outcome, and every command refused for permission."""
        assert self.access is not None
        caller = principal if principal is not None else ANONYMOUS
        denied = grpc.StatusCode.PERMISSION_DENIED.value[0]
        for entry, result in zip(policies, results, strict=True):
            if entry is None:
                continue
            policy, request = entry
            which = result.WhichOneof("result")
            if which == "error":
                if policy.audited or result.error.code == denied:
                    code = _status_by_number(result.error.code).name
                    self.access.audit(
                        policy, caller, context, code, request, None, result.error.message
                    )
            elif policy.audited:
                self.access.audit(policy, caller, context, "OK", request, getattr(result, which))


_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def _status_by_number(number: int) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
