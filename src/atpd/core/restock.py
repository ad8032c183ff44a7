"""Restock planning: which transfers bring positions below their minimum cover back up, from
positions above their maximum, at least transport cost.

Two halves. `restock_inputs` runs on the writer, between two commands: it copies what the plan
reads (the positions in scope, incoming supply, protections, demand, lanes) into plain arrays.
`plan_restock` is then a pure function of that copy (numpy and one numba kernel), run in a
worker thread by the service, so writes never wait for the computation.

Terms, per (SKU, node) in scope, over a horizon of h days:
- velocity v: units sold per day (core/demand.py);
- stock for cover a = max(on_hand - reserved, 0) + incoming supply not overdue;
- cover at the horizon's end (days) = (a - v h) / v (infinite without demand);
- the target (rules `[restock.targets]`): min_days, max_days, keep_units; a position without
  a target takes no part;
- a receiver has demand and cover below min_days; it needs ceil(v (h + max_days) - a) units
  (ordering up to max, as a min/max policy does);
- a donor may give min(on_hand - reserved - max(safety, protected, keep_units),
  floor(a - v (h + max_days))) when that is positive: never below its safety stock, its
  protections, its keep_units or its own max (hence min) cover.

The matching is a bounded greedy (core/restock_kernels.assign_moves): per SKU, receivers by
urgency take from the donor whose lane costs least per unit moved, a lane already shipping in
the plan costing only its unit cost, which bulks SKUs onto the same lanes. Lanes that end up
below `min_shipment_units` are closed and the matching is redone (at most MAX_ROUNDS rounds;
small lanes left after the last are dropped). Guarantees: the floors above, each shipped lane
at or above the minimum size, no receiver above its need; not a cost optimum (a min-cost flow
with fixed lane costs is NP-hard), but O(SKUs x receivers x donors) and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.demand import TAU_MS
from atpd.core.restock_inputs import (
    RestockInputs,
    copy_positions,
    protected_units,
    restock_inputs,
)
from atpd.core.restock_kernels import assign_moves, position_terms
from atpd.core.transfer_commands import CreateTransfer, PositionCheck, TransferItem

MAX_ROUNDS = 4
MAX_HORIZON_DAYS = 365
NO_DEMAND = -1.0  # cover reported for positions without demand (infinite)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

__all__ = ["RestockInputs", "RestockPlan", "plan_restock", "plan_transfers", "restock_inputs"]


@dataclass(frozen=True, slots=True)
class PlannedMove:
    sku: str
    units: int
    from_cover_before_days: float
    from_cover_after_days: float
    to_cover_before_days: float
    to_cover_after_days: float


@dataclass(frozen=True, slots=True)
class PlannedShipment:
    from_node_id: str
    to_node_id: str
    lead_days: int
    units: int
    cost: float
    moves: tuple[PlannedMove, ...]


@dataclass(frozen=True, slots=True)
class RestockPlan:
    """A plan as arrays: moves sorted by lane (from, to) then SKU; lane k holds the moves
    lane_starts[k]:lane_starts[k + 1]. Indexes are into sku_names and node_ids."""

    computed_at_ms: int
    ship_day: int
    horizon_days: int
    sku_names: list[str]
    node_ids: list[str]
    move_sku: Ints
    move_units: Ints
    cover: Floats  # [move, 4]: from before, from after, to before, to after (days; -1: no demand)
    lane_from: Ints
    lane_to: Ints
    lane_starts: Ints
    lane_units: Ints
    lane_cost: Floats
    lane_lead_days: Ints
    checks: tuple[PositionCheck, ...]
    receivers: int
    receivers_unmet: int
    dropped_lanes: int
    truncated: bool  # max_restock_moves reached: the least urgent SKUs were left out

    @property
    def total_units(self) -> int:
        return int(self.lane_units.sum())

    @property
    def total_cost(self) -> float:
        return float(self.lane_cost.sum())

    @property
    def move_count(self) -> int:
        return len(self.move_sku)

    def shipments(self, max_moves: int) -> list[PlannedShipment]:
        """Every lane, with its moves until `max_moves` moves are listed (for display)."""
        shown = 0
        result = []
        for k in range(len(self.lane_from)):
            start, stop = int(self.lane_starts[k]), int(self.lane_starts[k + 1])
            stop = min(stop, start + max(max_moves - shown, 0))
            shown += stop - start
            moves = tuple(
                PlannedMove(self.sku_names[sku], units, *cover)
                for sku, units, cover in zip(
                    self.move_sku[start:stop].tolist(),
                    self.move_units[start:stop].tolist(),
                    self.cover[start:stop].tolist(),
                    strict=True,
                )
            )
            result.append(
                PlannedShipment(
                    self.node_ids[int(self.lane_from[k])],
                    self.node_ids[int(self.lane_to[k])],
                    int(self.lane_lead_days[k]),
                    int(self.lane_units[k]),
                    float(self.lane_cost[k]),
                    moves,
                )
            )
        return result


def _velocity_at(inputs: RestockInputs, sku: Ints, node: Ints) -> Floats:
    """Units per day at the plan's time at the given positions (local indexes)."""
    slot = inputs.demand_slot[sku]
    column = inputs.columns[node]
    width = inputs.demand_rate.shape[1]
    known = (slot >= 0) & (column < width)
    velocity = np.zeros(len(sku), np.float64)
    s, c = slot[known], column[known]
    last = inputs.demand_last[s, c]
    elapsed = np.maximum(inputs.now_ms - last, 0).astype(np.float64)
    velocity[known] = np.where(last > 0, inputs.demand_rate[s, c] * np.exp(-elapsed / TAU_MS), 0)
    return velocity


def _targets(inputs: RestockInputs) -> tuple[Ints, Ints]:
    """target_of [SKU, kind slot] (index in the rules' targets, -1: none) and kind_slot
    [node]: the most specific target per node kind and SKU (longest SKU prefix; a target
    without prefixes counts 0; the later target on a tie)."""
    kinds = sorted(set(inputs.node_kinds))
    kind_slot = np.array([kinds.index(k) for k in inputs.node_kinds], np.int64)
    targets = inputs.rules.targets
    sku_count = len(inputs.sku_names)
    target_of = np.full((sku_count, max(len(kinds), 1)), -1, np.int64)
    if not targets or not sku_count:
        return target_of, kind_slot
    lengths = np.full((len(targets), sku_count), -1, np.int64)
    for t, target in enumerate(targets):
        if not target.sku_prefixes:
            lengths[t] = 0
            continue
        for prefix in target.sku_prefixes:
            matched = np.fromiter(
                (x.startswith(prefix) for x in inputs.sku_names), np.bool_, count=sku_count
            )
            lengths[t] = np.where(matched, np.maximum(lengths[t], len(prefix)), lengths[t])
    for slot, kind in enumerate(kinds):
        best_length = np.full(sku_count, -1, np.int64)
        for t, target in enumerate(targets):
            if target.covers_kind(kind):
                better = (lengths[t] >= 0) & (lengths[t] >= best_length)
                target_of[better, slot] = t
                best_length = np.where(better, lengths[t], best_length)
    return target_of, kind_slot


def _cover(stock: Floats, velocity: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(velocity > 0, stock / np.where(velocity > 0, velocity, 1.0), NO_DEMAND)


def plan_restock(inputs: RestockInputs) -> RestockPlan:
    """The plan (worker thread): copy the positions, then two numba kernels."""
    positions = copy_positions(inputs)
    sku_count, node_count = len(inputs.sku_names), len(inputs.node_ids)
    counted = [x for x in inputs.supply if x[3]]
    inbound = np.zeros((sku_count, node_count) if counted else (0, 0), np.int32)
    for i, j, units, _ in counted:
        inbound[i, j] += units
    protected = protected_units(inputs, positions)
    target_of, kind_slot = _targets(inputs)
    rules = inputs.rules
    targets = rules.targets or ()
    need = np.empty((sku_count, node_count), np.int32)
    give = np.empty((sku_count, node_count), np.int32)
    urgency = np.empty((sku_count, node_count), np.float64)
    row_urgency = np.empty(sku_count, np.float64)
    receivers = position_terms(
        positions,
        inputs.demand_slot,
        inputs.demand_rate,
        inputs.demand_last,
        inputs.columns,
        inputs.now_ms,
        TAU_MS,
        inbound,
        np.zeros((0, 0), np.int32) if protected is None else protected,
        target_of,
        kind_slot,
        np.array([t.min_days for t in targets] or [0.0]),
        np.array([t.max_days for t in targets] or [0.0]),
        np.array([t.keep_units for t in targets] or [0], np.int64),
        float(inputs.horizon_days),
        need,
        give,
        urgency,
        row_urgency,
    )
    # SKUs with a receiver and a donor, most urgent first (their lowest receiver cover), so a
    # plan cut at max_moves keeps the most urgent.
    rows = np.flatnonzero(row_urgency < np.inf).astype(np.int64)
    rows = rows[np.argsort(row_urgency[rows], kind="stable")]
    allowed = inputs.lane_ok.copy()
    moves = np.zeros((0, 4), np.int64)
    dropped = 0
    truncated = False
    for round_number in range(MAX_ROUNDS):
        opened = np.zeros((node_count, node_count), np.bool_)
        moves = assign_moves(
            rows,
            need,
            give,
            urgency,
            allowed,
            inputs.lane_cost,
            rules.unit_cost,
            opened,
            inputs.max_moves,
        )
        truncated = len(moves) >= inputs.max_moves
        totals = np.zeros((node_count, node_count), np.int64)
        np.add.at(totals, (moves[:, 1], moves[:, 2]), moves[:, 3])
        small = (totals > 0) & (totals < rules.min_shipment_units)
        if not small.any():
            break
        allowed &= ~small
        dropped += int(small.sum())
        if round_number == MAX_ROUNDS - 1:
            moves = moves[~small[moves[:, 1], moves[:, 2]]]
    terms = _Terms(inputs, positions, inbound, target_of, kind_slot, need)
    return _plan(inputs, moves, terms, receivers, dropped, truncated)


@dataclass(slots=True)
class _Terms:
    inputs: RestockInputs
    positions: npt.NDArray[np.int32]
    inbound: npt.NDArray[np.int32]
    target_of: Ints
    kind_slot: Ints
    need: npt.NDArray[np.int32]

    def stock(self, sku: Ints, node: Ints) -> Floats:
        free = self.positions[sku, 0, node].astype(np.int64) - self.positions[sku, 1, node]
        stock: Floats = np.maximum(free, 0).astype(np.float64)
        if self.inbound.shape[0]:
            stock += self.inbound[sku, node]
        return stock

    def velocity(self, sku: Ints, node: Ints) -> Floats:
        return _velocity_at(self.inputs, sku, node)


def _plan(
    inputs: RestockInputs,
    moves: Ints,
    terms: _Terms,
    receivers: int,
    dropped: int,
    truncated: bool,
) -> RestockPlan:
    """The plan's arrays from the kernel's moves (vectorised: a plan may hold 100,000s)."""
    horizon = float(inputs.horizon_days)
    moves = moves[np.lexsort((moves[:, 0], moves[:, 2], moves[:, 1]))]
    sku, source, destination, units = moves[:, 0], moves[:, 1], moves[:, 2], moves[:, 3]
    node_count = max(len(inputs.node_ids), 1)
    # Units given and received per position the plan touches.
    given_key, given_inverse = np.unique(sku * node_count + source, return_inverse=True)
    given = np.bincount(given_inverse, weights=units).astype(np.int64)
    received_key, received_inverse = np.unique(sku * node_count + destination, return_inverse=True)
    received = np.bincount(received_inverse, weights=units).astype(np.int64)
    v_from, v_to = terms.velocity(sku, source), terms.velocity(sku, destination)
    stock_from, stock_to = terms.stock(sku, source), terms.stock(sku, destination)
    cover = np.stack(
        (
            _cover(stock_from - v_from * horizon, v_from),
            _cover(stock_from - given[given_inverse] - v_from * horizon, v_from),
            _cover(stock_to - v_to * horizon, v_to),
            _cover(stock_to + received[received_inverse] - v_to * horizon, v_to),
        ),
        axis=1,
    )
    # Receivers still below their min cover after the plan: all but those the plan brought
    # back to it (a receiver that got nothing is still below).
    receiver_sku, receiver_node = np.divmod(received_key, node_count)
    v_receiver = terms.velocity(receiver_sku, receiver_node)
    min_days = np.array([t.min_days for t in inputs.rules.targets] or [0.0])
    t_index = terms.target_of[receiver_sku, terms.kind_slot[receiver_node]]
    met = (
        terms.stock(receiver_sku, receiver_node) + received - v_receiver * horizon
        >= v_receiver * min_days[t_index]
    )
    unmet = receivers - int(met.sum())
    first = np.flatnonzero(np.diff(source * node_count + destination, prepend=-1))
    starts = np.append(first, len(moves)).astype(np.int64)
    lane_units = np.add.reduceat(units, first) if len(moves) else np.zeros(0, np.int64)
    lane_from, lane_to = source[first], destination[first]
    lane_cost = inputs.lane_cost[lane_from, lane_to] + inputs.rules.unit_cost * lane_units
    inbound_all: dict[tuple[int, int], int] = {}
    for i, j, quantity, _ in inputs.supply:
        inbound_all[(i, j)] = inbound_all.get((i, j), 0) + quantity
    used = np.union1d(given_key, received_key)
    used_sku, used_node = np.divmod(used, node_count)
    fields = terms.positions[used_sku, :, used_node].tolist()
    checks = tuple(
        PositionCheck(
            inputs.sku_names[s],
            inputs.node_ids[n],
            on_hand,
            reserved,
            inbound_all.get((s, n), 0),
            safety,
        )
        for s, n, (on_hand, reserved, safety) in zip(
            used_sku.tolist(), used_node.tolist(), fields, strict=True
        )
    )
    return RestockPlan(
        inputs.now_ms,
        inputs.ship_day,
        inputs.horizon_days,
        inputs.sku_names,
        inputs.node_ids,
        sku,
        units,
        cover,
        lane_from,
        lane_to,
        starts,
        lane_units.astype(np.int64),
        lane_cost.astype(np.float64),
        inputs.lane_lead_days[lane_from, lane_to].astype(np.int64),
        checks,
        receivers,
        unmet,
        dropped,
        truncated,
    )


def plan_transfers(
    plan: RestockPlan, plan_id: str, ship_date: str, max_lines: int
) -> tuple[CreateTransfer, ...]:
    """The transfer orders applying a plan: one per lane, split every `max_lines` SKUs; ids
    `<plan_id>-<n>`."""
    assert max_lines >= 1
    transfers: list[CreateTransfer] = []
    names = plan.sku_names
    skus, units = plan.move_sku.tolist(), plan.move_units.tolist()
    starts = plan.lane_starts.tolist()
    for k in range(len(plan.lane_from)):
        source = plan.node_ids[int(plan.lane_from[k])]
        destination = plan.node_ids[int(plan.lane_to[k])]
        for start in range(starts[k], starts[k + 1], max_lines):
            stop = min(start + max_lines, starts[k + 1])
            transfers.append(
                CreateTransfer(
                    f"{plan_id}-{len(transfers) + 1}",
                    source,
                    destination,
                    tuple(TransferItem(names[skus[i]], units[i]) for i in range(start, stop)),
                    ship_date,
                    plan_id,
                )
            )
    return tuple(transfers)
