"""RestockService: restock plans (computed off the writer, kept in memory, bounded) and their
application, by callers or by the optional schedule.

A plan is computed from a consistent copy of the positions taken on the writer between two
commands (core/restock.restock_inputs), then in a worker thread (core/restock.plan_restock: a
numba kernel that releases the GIL), so writes go on meanwhile. Plans are not state: they are
kept, the newest `max_restock_plans`, until applied or forgotten; a restart forgets them. The
ApplyRestock command carries the plan's transfers and the positions it relied on, so the
journal alone replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from atpd.core.network import parse_date
from atpd.core.reads import list_nodes
from atpd.core.restock import RestockPlan, plan_restock, plan_transfers, restock_inputs
from atpd.core.results import FailedPrecondition, LimitExceeded, NotFound
from atpd.core.transfer_commands import ApplyRestock, CreateTransfer
from atpd.core.transfers import DAY_MS
from atpd.persistence.codec import encode_command
from atpd.persistence.framing import MAX_PAYLOAD_BYTES
from atpd.service import convert, transfer_validation, validation
from atpd.service.engine import Engine
from atpd.service.servicers import ServicerBase
from atpd.service.transfers_servicer import date_of_day
from atpd.service.validation import InvalidArgument
from atpd.v1 import restock_pb2, restock_pb2_grpc

log = logging.getLogger(__name__)
EPOCH_ORDINAL = 719_163
# Moves listed in a RestockPlan response (a response must fit max_send_message_bytes; about
# 60 bytes a move); the plan itself may hold up to Limits.max_restock_moves.
MAX_MOVES_SHOWN = 20_000


@dataclass(frozen=True, slots=True)
class KeptPlan:
    plan_id: str
    plan: RestockPlan
    geo_prefix: str
    sku_prefix: str
    state_sequence: int
    compute_seconds: float
    transfers: tuple[CreateTransfer, ...]


class RestockPlans:
    """The newest plans by id (oldest forgotten first)."""

    def __init__(self, max_plans: int) -> None:
        assert max_plans >= 1
        self.max_plans = max_plans
        self.by_id: OrderedDict[str, KeptPlan] = OrderedDict()

    def keep(self, kept: KeptPlan) -> None:
        self.by_id[kept.plan_id] = kept
        while len(self.by_id) > self.max_plans:
            self.by_id.popitem(last=False)

    def find(self, plan_id: str) -> KeptPlan:
        kept = self.by_id.get(plan_id)
        if kept is None:
            raise NotFound(
                f"plan_id: unknown plan {plan_id!r} (plans are kept in memory, the newest "
                f"{self.max_plans} (max_restock_plans), until a restart)"
            )
        return kept


def cover(value: float) -> float:
    return round(value, 2) if value >= 0 else -1.0


def plan_message(kept: KeptPlan) -> restock_pb2.RestockPlan:
    plan = kept.plan
    message = restock_pb2.RestockPlan(
        plan_id=kept.plan_id,
        computed_at_ms=plan.computed_at_ms,
        state_sequence=kept.state_sequence,
        geo_prefix=kept.geo_prefix,
        sku_prefix=kept.sku_prefix,
        horizon_days=plan.horizon_days,
        total_units=plan.total_units,
        total_cost=round(plan.total_cost, 2),
        receivers=plan.receivers,
        receivers_unmet=plan.receivers_unmet,
        dropped_lanes=plan.dropped_lanes,
        compute_seconds=kept.compute_seconds,
        move_count=plan.move_count,
        moves_truncated=plan.move_count > MAX_MOVES_SHOWN,
        truncated=plan.truncated,
    )
    ship_date = date_of_day(plan.ship_day)
    for shipment in plan.shipments(MAX_MOVES_SHOWN):
        entry = message.shipments.add(
            from_node_id=shipment.from_node_id,
            to_node_id=shipment.to_node_id,
            ship_date=ship_date,
            lead_days=shipment.lead_days,
            units=shipment.units,
            cost=round(shipment.cost, 2),
        )
        for move in shipment.moves:
            entry.moves.add(
                sku=move.sku,
                units=move.units,
                from_cover_before_days=cover(move.from_cover_before_days),
                from_cover_after_days=cover(move.from_cover_after_days),
                to_cover_before_days=cover(move.to_cover_before_days),
                to_cover_after_days=cover(move.to_cover_after_days),
            )
    return message


class RestockServicer(ServicerBase, restock_pb2_grpc.RestockServiceServicer):
    def __init__(self, engine: Engine, max_plans: int) -> None:
        super().__init__(engine)
        self.plans = RestockPlans(max_plans)
        self._schedule: asyncio.Task[None] | None = None

    async def compute(
        self, geo_prefix: str, sku_prefix: str, horizon_days: int, ship_date: str
    ) -> KeptPlan:
        """Plan now: the copy on the loop, the computation in a worker thread."""
        now_ms = self.engine.catch_up()
        state = self.engine.state
        today = now_ms // DAY_MS
        ship_day = today
        if ship_date:
            ship_day = parse_date(transfer_validation.ship_date(ship_date)).toordinal()
            ship_day -= EPOCH_ORDINAL
            ahead = self.limits.max_transfer_days_ahead
            if not today <= ship_day <= today + ahead:
                raise InvalidArgument(
                    "ship_date", f"{ship_date} is not between today (UTC) and {ahead} days ahead"
                )
        if geo_prefix and not list_nodes(state, geo_prefix):
            raise NotFound(f"geo_prefix: no node under {geo_prefix!r}")
        started = time.perf_counter()
        inputs = restock_inputs(state, geo_prefix, sku_prefix, horizon_days, ship_day, now_ms)
        sequence = self.engine.journal.last_sequence
        # A random part: plan ids never repeat across restarts (an applied plan's transfer ids
        # derive from its plan id).
        plan_id = f"RP-{sequence}-{secrets.token_hex(4)}"
        max_lines = self.limits.max_lines_per_transfer

        def work() -> tuple[RestockPlan, tuple[CreateTransfer, ...]]:
            plan = plan_restock(inputs)
            transfers = plan_transfers(plan, plan_id, date_of_day(ship_day), max_lines)
            record = encode_command(ApplyRestock(plan_id, transfers, plan.checks))
            if len(record) > MAX_PAYLOAD_BYTES:
                raise LimitExceeded(
                    f"max_restock_moves: the plan's {plan.move_count} moves make a "
                    f"{len(record)}-byte journal record, over the {MAX_PAYLOAD_BYTES}-byte "
                    "limit; narrow the scope (geo_prefix, sku_prefix) or lower max_restock_moves"
                )
            return plan, transfers

        plan, transfers = await asyncio.to_thread(work)
        seconds = time.perf_counter() - started
        kept = KeptPlan(plan_id, plan, geo_prefix, sku_prefix, sequence, seconds, transfers)
        self.plans.keep(kept)
        return kept

    async def PlanRestock(
        self, request: restock_pb2.PlanRestockRequest, context: Any
    ) -> restock_pb2.RestockPlan:
        async def handle() -> restock_pb2.RestockPlan:
            geo_prefix = validation.geo_prefix(request.geo_prefix)
            sku_prefix = transfer_validation.sku_prefix(request.sku_prefix)
            horizon = transfer_validation.horizon_days(request)
            kept = await self.compute(geo_prefix, sku_prefix, horizon, request.ship_date)
            return plan_message(kept)

        return await self._guard("PlanRestock", context, handle, write=False)

    async def GetRestockPlan(
        self, request: restock_pb2.GetRestockPlanRequest, context: Any
    ) -> restock_pb2.RestockPlan:
        async def handle() -> restock_pb2.RestockPlan:
            return plan_message(self.plans.find(transfer_validation.plan_id(request.plan_id)))

        return await self._guard("GetRestockPlan", context, handle, write=False)

    async def apply(self, kept: KeptPlan) -> restock_pb2.ApplyRestockResponse:
        command = ApplyRestock(kept.plan_id, kept.transfers, kept.plan.checks)
        result = await self.engine.execute(command)
        return restock_pb2.ApplyRestockResponse(
            outcome=convert.pb_enum(result.outcome),
            plan_id=result.plan_id,
            transfer_ids=list(result.transfer_ids),
        )

    async def ApplyRestock(
        self, request: restock_pb2.ApplyRestockRequest, context: Any
    ) -> restock_pb2.ApplyRestockResponse:
        async def handle() -> restock_pb2.ApplyRestockResponse:
            return await self.apply(self.plans.find(transfer_validation.plan_id(request.plan_id)))

        return await self._guard("ApplyRestock", context, handle, write=True)

    # ------------------------------------------------------------------ the schedule

    def start_schedule(
        self, interval_s: float, geo_prefix: str, horizon_days: int, max_units_per_day: int
    ) -> None:
        """Plan and apply every `interval_s` (the server calls this once ready, if configured)."""
        assert interval_s > 0 and self._schedule is None
        self._schedule = asyncio.get_running_loop().create_task(
            self._run_schedule(interval_s, geo_prefix, horizon_days, max_units_per_day)
        )

    async def stop_schedule(self) -> None:
        task, self._schedule = self._schedule, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def units_applied_today(self, now_ms: int) -> int:
        """Units of restock transfers created today (UTC), from the state: survives restarts."""
        today = now_ms // DAY_MS
        return sum(
            line.quantity
            for transfer in self.engine.state.transfers.all()
            if transfer.plan_id and transfer.created_at_ms // DAY_MS == today
            for line in transfer.lines
        )

    async def run_once(self, geo_prefix: str, horizon_days: int, max_units_per_day: int) -> str:
        """One scheduled round; says what it did (for the log and tests)."""
        if not self.engine.ready:
            return "not ready"
        kept = await self.compute(geo_prefix, "", horizon_days, "")
        if not kept.transfers:
            return f"plan {kept.plan_id}: nothing to move"
        done = self.units_applied_today(self.engine.now_ms())
        if done + kept.plan.total_units > max_units_per_day:
            return (
                f"plan {kept.plan_id}: {kept.plan.total_units} units would pass "
                f"restock_schedule_max_units_per_day ({done} applied today); not applied"
            )
        try:
            await self.apply(kept)
        except FailedPrecondition as error:  # moved meanwhile: the next round plans again
            return f"plan {kept.plan_id}: {error}"
        return f"plan {kept.plan_id}: applied {kept.plan.total_units} units"

    async def _run_schedule(
        self, interval_s: float, geo_prefix: str, horizon_days: int, max_units_per_day: int
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                log.info(
                    "restock schedule: %s",
                    await self.run_once(geo_prefix, horizon_days, max_units_per_day),
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # a round that failed must not end the schedule
                log.exception("restock schedule: round failed")
