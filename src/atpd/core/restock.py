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

from atpd.core.caller_atp import compiled_rules
from atpd.core.commands import NodeKind
from atpd.core.demand import TAU_MS
from atpd.core.handlers_network import compiled_network
from atpd.core.reads import list_nodes
from atpd.core.restock_kernels import assign_moves
from atpd.core.restock_rules import RestockRules
from atpd.core.state_fields import StateFields
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from atpd.core.transfer_commands import CreateTransfer, PositionCheck, TransferItem

MAX_ROUNDS = 4
MAX_HORIZON_DAYS = 365
NO_DEMAND = -1.0  # cover reported for positions without demand (infinite)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(slots=True)
class RestockInputs:
    """The consistent copy a plan is computed from (arrays are [SKU in scope, node in scope])."""

    now_ms: int
    ship_day: int
    horizon_days: int
    sku_names: list[str]
    node_ids: list[str]
    node_kinds: list[NodeKind]
    on_hand: Ints
    reserved: Ints
    safety: Ints
    protected: Ints
    inbound: Ints  # open supply not overdue (counts for cover)
    inbound_all: Ints  # every open supply (what ApplyRestock checks)
    rate: Floats  # demand rate as of the last sale
    last_sale_ms: Ints  # 0: never sold
    rules: RestockRules
    lane_ok: Bools  # [from, to]
    lane_cost: Floats
    lane_lead_days: Ints


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
    computed_at_ms: int
    ship_day: int
    horizon_days: int
    shipments: tuple[PlannedShipment, ...]
    checks: tuple[PositionCheck, ...]
    receivers: int
    receivers_unmet: int
    dropped_lanes: int

    @property
    def total_units(self) -> int:
        return sum(x.units for x in self.shipments)

    @property
    def total_cost(self) -> float:
        return sum(x.cost for x in self.shipments)


def _columns(
    cells: npt.NDArray[np.int32], field: int, rows: Ints, columns: Ints, contiguous: bool
) -> Ints:
    if contiguous:
        return cells[: len(rows), field, : len(columns)].astype(np.int64)
    return cells[rows][:, field, :][:, columns].astype(np.int64)


def restock_inputs(
    state: StateFields,
    geo_prefix: str,
    sku_prefix: str,
    horizon_days: int,
    ship_day: int,
    now_ms: int,
) -> RestockInputs:
    """Copy what a plan reads, on the writer (between two commands)."""
    assert 1 <= horizon_days <= MAX_HORIZON_DAYS, horizon_days
    nodes = [n for n in list_nodes(state, geo_prefix) if n.enabled]
    columns = np.array([n.index for n in nodes], np.int64)
    names = state.skus.names
    if sku_prefix:
        rows = np.array([i for i, x in enumerate(names) if x.startswith(sku_prefix)], np.int64)
    else:
        rows = np.arange(len(names), dtype=np.int64)
    sku_names = [names[i] for i in rows.tolist()]
    contiguous = bool(
        np.array_equal(rows, np.arange(len(rows)))
        and np.array_equal(columns, np.arange(len(columns)))
    )
    cells = state.stock.cells
    shape = (len(rows), len(columns))
    on_hand = _columns(cells, FIELD_ON_HAND, rows, columns, contiguous)
    reserved = _columns(cells, FIELD_RESERVED, rows, columns, contiguous)
    safety = _columns(cells, FIELD_SAFETY, rows, columns, contiguous)
    local_row = {int(r): i for i, r in enumerate(rows.tolist())} if sku_prefix else None
    local_column = np.full(max(len(state.nodes), 1), -1, np.int64)
    local_column[columns] = np.arange(len(columns))
    inbound = np.zeros(shape, np.int64)
    inbound_all = np.zeros(shape, np.int64)
    for row, supplies in state.supply.by_sku.items():
        i = row if local_row is None else local_row.get(row, -1)
        if i < 0 or i >= shape[0]:
            continue
        for supply in supplies:
            j = int(local_column[supply.node_index])
            if j < 0:
                continue
            inbound_all[i, j] += supply.quantity
            if supply.eta_ms >= now_ms:
                inbound[i, j] += supply.quantity
    rate = np.zeros(shape, np.float64)
    last_sale_ms = np.zeros(shape, np.int64)
    for row, (row_rate, row_last) in state.demand.rows.items():
        i = row if local_row is None else local_row.get(row, -1)
        if i < 0 or i >= shape[0]:
            continue
        width = len(row_rate)
        inside = columns < width
        rate[i, inside] = row_rate[columns[inside]]
        last_sale_ms[i, inside] = row_last[columns[inside]]
    protected = _protected(state, rows, columns, sku_names, on_hand)
    lane_ok, lane_cost, lane_lead = _lanes(state, columns, local_column)
    return RestockInputs(
        now_ms,
        ship_day,
        horizon_days,
        sku_names,
        [n.node_id for n in nodes],
        [n.kind for n in nodes],
        on_hand,
        reserved,
        safety,
        protected,
        inbound,
        inbound_all,
        rate,
        last_sale_ms,
        state.rules.restock,
        lane_ok,
        lane_cost,
        lane_lead,
    )


def _protected(
    state: StateFields, rows: Ints, columns: Ints, sku_names: list[str], on_hand: Ints
) -> Ints:
    """Units each position keeps for protections' beneficiaries and that they have not taken."""
    protected = np.zeros(on_hand.shape, np.int64)
    protections = state.rules.protections
    if not protections or not len(columns):
        return protected
    compiled = compiled_rules(state)
    row_list = rows.tolist()
    for p, protection in enumerate(protections):
        node_mask = compiled.protection_mask[p, columns]
        sku_mask = np.array([protection.covers_sku(x) for x in sku_names], np.bool_)
        if not node_mask.any() or not sku_mask.any():
            continue
        if protection.units:
            amount = np.full(on_hand.shape, protection.units, np.int64)
        else:
            amount = on_hand * protection.percent // 100
        for i, row in enumerate(row_list):
            consumed = state.protection_consumed.get(row)
            if consumed is not None and sku_mask[i]:
                amount[i] -= consumed[p, columns]
        protected += np.where(np.outer(sku_mask, node_mask), np.maximum(amount, 0), 0)
    return protected


def _lanes(state: StateFields, columns: Ints, local_column: Ints) -> tuple[Bools, Floats, Ints]:
    """Lanes between nodes in scope: the network's transfer lanes when it has any, else every
    pair of nodes at the rules' default lead time and shipment cost."""
    count = len(columns)
    rules = state.rules.restock
    network = compiled_network(state)
    if len(network.lane_from):
        lane_ok = np.zeros((count, count), np.bool_)
        lane_cost = np.zeros((count, count), np.float64)
        lane_lead = np.zeros((count, count), np.int64)
        for source, destination, lead, cost in zip(
            network.lane_from.tolist(),
            network.lane_to.tolist(),
            network.lane_lead_days.tolist(),
            network.lane_cost.tolist(),
            strict=True,
        ):
            if source >= len(local_column) or destination >= len(local_column):
                continue
            i, j = int(local_column[source]), int(local_column[destination])
            if i >= 0 and j >= 0 and not lane_ok[i, j]:  # the first lane in file order wins
                lane_ok[i, j], lane_cost[i, j], lane_lead[i, j] = True, cost, lead
        return lane_ok, lane_cost, lane_lead
    lane_ok = ~np.eye(count, dtype=np.bool_)
    lane_cost = np.full((count, count), rules.default_shipment_cost, np.float64)
    lane_lead = np.full((count, count), rules.default_lead_days, np.int64)
    return lane_ok, lane_cost, lane_lead


def _targets(inputs: RestockInputs) -> tuple[Bools, Floats, Floats, Ints]:
    """Per position: has a target, min_days, max_days, keep_units (the most specific target
    for the node's kind and the SKU: longest SKU prefix, later target on a tie)."""
    shape = inputs.on_hand.shape
    has = np.zeros(shape, np.bool_)
    min_days = np.zeros(shape, np.float64)
    max_days = np.zeros(shape, np.float64)
    keep = np.zeros(shape, np.int64)
    targets = inputs.rules.targets
    if not targets or not shape[0] or not shape[1]:
        return has, min_days, max_days, keep
    names = np.array(inputs.sku_names, dtype=object)
    # Specificity per target and SKU: -1 where it does not apply, else its longest prefix.
    lengths = np.full((len(targets), shape[0]), -1, np.int64)
    for t, target in enumerate(targets):
        if not target.sku_prefixes:
            lengths[t] = 0
            continue
        for prefix in target.sku_prefixes:
            matched = np.fromiter((x.startswith(prefix) for x in names), np.bool_, count=shape[0])
            lengths[t] = np.where(matched, np.maximum(lengths[t], len(prefix)), lengths[t])
    for kind in set(inputs.node_kinds):
        node_mask = np.array([k == kind for k in inputs.node_kinds], np.bool_)
        best = np.full(shape[0], -1, np.int64)
        best_length = np.full(shape[0], -1, np.int64)
        for t, target in enumerate(targets):
            if not target.covers_kind(kind):
                continue
            better = (lengths[t] >= 0) & (lengths[t] >= best_length)
            best = np.where(better, t, best)
            best_length = np.where(better, lengths[t], best_length)
        found = best >= 0
        if not found.any():
            continue
        mins = np.array([t.min_days for t in targets])[np.maximum(best, 0)]
        maxs = np.array([t.max_days for t in targets])[np.maximum(best, 0)]
        keeps = np.array([t.keep_units for t in targets], np.int64)[np.maximum(best, 0)]
        block = np.outer(found, node_mask)
        has |= block
        min_days = np.where(block, mins[:, None], min_days)
        max_days = np.where(block, maxs[:, None], max_days)
        keep = np.where(block, keeps[:, None], keep)
    return has, min_days, max_days, keep


def _cover(stock: Floats, velocity: Floats) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(velocity > 0, stock / np.where(velocity > 0, velocity, 1.0), NO_DEMAND)


def plan_restock(inputs: RestockInputs) -> RestockPlan:
    """The plan for a copy of the state (pure; any thread)."""
    horizon = float(inputs.horizon_days)
    elapsed = np.maximum(inputs.now_ms - inputs.last_sale_ms, 0).astype(np.float64)
    velocity = np.where(inputs.last_sale_ms > 0, inputs.rate * np.exp(-elapsed / TAU_MS), 0.0)
    has, min_days, max_days, keep = _targets(inputs)
    free = inputs.on_hand - inputs.reserved
    stock = np.maximum(free, 0) + inputs.inbound
    demand = velocity * horizon
    receiver = has & (velocity > 0) & (stock - demand < velocity * min_days)
    need = np.where(receiver, np.ceil(velocity * (horizon + max_days) - stock), 0.0)
    need = np.maximum(need, 0).astype(np.int64)
    floor = np.maximum(np.maximum(inputs.safety, inputs.protected), keep)
    give_cover = np.floor(stock - velocity * (horizon + max_days))
    give = np.where(has & ~receiver, np.minimum(free - floor, give_cover), 0.0)
    give = np.maximum(give, 0).astype(np.int64)
    urgency = np.where(velocity > 0, (stock - demand) / np.where(velocity > 0, velocity, 1.0), 0.0)
    rows = np.flatnonzero((need > 0).any(axis=1) & (give > 0).any(axis=1)).astype(np.int64)
    rules = inputs.rules
    allowed = inputs.lane_ok.copy()
    node_count = len(inputs.node_ids)
    moves = np.zeros((0, 4), np.int64)
    dropped = 0
    for round_number in range(MAX_ROUNDS):
        opened = np.zeros((node_count, node_count), np.bool_)
        moves = assign_moves(
            rows, need, give, urgency, allowed, inputs.lane_cost, rules.unit_cost, opened
        )
        totals = np.zeros((node_count, node_count), np.int64)
        np.add.at(totals, (moves[:, 1], moves[:, 2]), moves[:, 3])
        small = (totals > 0) & (totals < rules.min_shipment_units)
        if not small.any():
            break
        allowed &= ~small
        dropped += int(small.sum())
        if round_number == MAX_ROUNDS - 1:
            keep_move = ~small[moves[:, 1], moves[:, 2]]
            moves = moves[keep_move]
    return _plan(inputs, moves, velocity, stock, demand, min_days, receiver, dropped)


def _plan(
    inputs: RestockInputs,
    moves: Ints,
    velocity: Floats,
    stock: Floats,
    demand: Floats,
    min_days: Floats,
    receiver: Bools,
    dropped: int,
) -> RestockPlan:
    received = np.zeros(stock.shape, np.int64)
    given = np.zeros(stock.shape, np.int64)
    np.add.at(received, (moves[:, 0], moves[:, 2]), moves[:, 3])
    np.add.at(given, (moves[:, 0], moves[:, 1]), moves[:, 3])
    before = _cover(stock - demand, velocity)
    after = _cover(stock + received - given - demand, velocity)
    unmet = receiver & (stock + received - demand < velocity * min_days)
    order = np.lexsort((moves[:, 0], moves[:, 2], moves[:, 1]))
    moves = moves[order]
    rules = inputs.rules
    shipments = []
    start = 0
    move_list = moves.tolist()
    while start < len(move_list):
        source, destination = move_list[start][1], move_list[start][2]
        end = start
        planned = []
        while end < len(move_list) and move_list[end][1:3] == [source, destination]:
            s, _, _, units = move_list[end]
            planned.append(
                PlannedMove(
                    inputs.sku_names[s],
                    units,
                    float(before[s, source]),
                    float(after[s, source]),
                    float(before[s, destination]),
                    float(after[s, destination]),
                )
            )
            end += 1
        units = sum(x.units for x in planned)
        shipments.append(
            PlannedShipment(
                inputs.node_ids[source],
                inputs.node_ids[destination],
                int(inputs.lane_lead_days[source, destination]),
                units,
                float(inputs.lane_cost[source, destination]) + rules.unit_cost * units,
                tuple(planned),
            )
        )
        start = end
    used = sorted({(m[0], m[1]) for m in move_list} | {(m[0], m[2]) for m in move_list})
    checks = tuple(
        PositionCheck(
            inputs.sku_names[s],
            inputs.node_ids[n],
            int(inputs.on_hand[s, n]),
            int(inputs.reserved[s, n]),
            int(inputs.inbound_all[s, n]),
        )
        for s, n in used
    )
    return RestockPlan(
        inputs.now_ms,
        inputs.ship_day,
        inputs.horizon_days,
        tuple(shipments),
        checks,
        int(receiver.sum()),
        int(unmet.sum()),
        dropped,
    )


def plan_transfers(
    plan: RestockPlan, plan_id: str, ship_date: str, max_lines: int
) -> tuple[CreateTransfer, ...]:
    """The transfer orders applying a plan: one per lane, split every `max_lines` SKUs; ids
    `<plan_id>-<n>`."""
    assert max_lines >= 1
    transfers: list[CreateTransfer] = []
    for shipment in plan.shipments:
        for start in range(0, len(shipment.moves), max_lines):
            chunk = shipment.moves[start : start + max_lines]
            transfers.append(
                CreateTransfer(
                    f"{plan_id}-{len(transfers) + 1}",
                    shipment.from_node_id,
                    shipment.to_node_id,
                    tuple(TransferItem(x.sku, x.units) for x in chunk),
                    ship_date,
                    plan_id,
                )
            )
    return tuple(transfers)
