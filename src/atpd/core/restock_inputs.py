"""What a restock plan reads, gathered in two steps so the writer never waits for the big part.

`restock_inputs` runs on the writer between two commands and takes only small things: the
nodes and SKUs in scope, open supply, demand slots (and the demand arrays), protections,
lanes and rules; plus a reference to the stock table's arrays. `copy_positions` then copies
the positions in scope out of the stock table in the worker thread. A write racing that copy
is harmless: every position the plan uses is recorded with the values the copy read
(PositionCheck), and ApplyRestock refuses the plan if any of them differs from the state
then, so a racing write can make a plan stale, never wrong. (Demand rates are read the same
way: a sale during the copy may or may not be in the plan's velocity.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.caller_atp import compiled_rules
from atpd.core.commands import NodeKind
from atpd.core.handlers_network import compiled_network
from atpd.core.reads import list_nodes
from atpd.core.restock_rules import RestockRules
from atpd.core.state_fields import StateFields

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Cells = npt.NDArray[np.int32]


@dataclass(slots=True)
class Protections:
    """Per protection in force: nodes in scope it covers, units or percent, which SKUs, and
    what its beneficiaries hold, per SKU in scope that has such holds."""

    node_masks: list[Bools]
    units: list[int]
    percent: list[int]
    sku_prefixes: list[tuple[str, ...]]
    consumed: dict[int, npt.NDArray[np.int32]]  # local SKU -> [protection, node in scope]


@dataclass(slots=True)
class RestockInputs:
    now_ms: int
    ship_day: int
    horizon_days: int
    sku_names: list[str]
    node_ids: list[str]
    node_kinds: list[NodeKind]
    cells: Cells  # the stock table's arrays (read, never written, by the plan)
    rows: Ints  # SKU rows in scope
    columns: Ints  # node columns in scope
    # Open supply at positions in scope: (local SKU, local node, units, counts for cover).
    supply: list[tuple[int, int, int, bool]]
    # Demand (core/demand.py): each SKU's slot (-1: never sold) and the book's arrays.
    demand_slot: Ints
    demand_rate: Floats
    demand_last: Ints
    protections: Protections | None
    rules: RestockRules
    lane_ok: Bools  # [from, to] over nodes in scope
    lane_cost: Floats
    lane_lead_days: Ints
    max_moves: int  # Limits.max_restock_moves


def restock_inputs(
    state: StateFields,
    geo_prefix: str,
    sku_prefix: str,
    horizon_days: int,
    ship_day: int,
    now_ms: int,
) -> RestockInputs:
    """The small part of a plan's inputs, on the writer (between two commands)."""
    nodes = [n for n in list_nodes(state, geo_prefix) if n.enabled]
    columns = np.array([n.index for n in nodes], np.int64)
    names = state.skus.names
    if sku_prefix:
        rows = np.array([i for i, x in enumerate(names) if x.startswith(sku_prefix)], np.int64)
        local_row: dict[int, int] | None = {int(r): i for i, r in enumerate(rows.tolist())}
        sku_names = [names[i] for i in rows.tolist()]
    else:
        rows = np.arange(len(names), dtype=np.int64)
        local_row = None
        sku_names = list(names)
    local_column = np.full(max(len(state.nodes), 1), -1, np.int64)
    local_column[columns] = np.arange(len(columns))
    sku_count = len(sku_names)
    supply = []
    for row, entries in state.supply.by_sku.items():
        i = row if local_row is None else local_row.get(row, -1)
        if not 0 <= i < sku_count:
            continue
        for entry in entries:
            j = int(local_column[entry.node_index])
            if j >= 0:
                supply.append((i, j, entry.quantity, entry.eta_ms >= now_ms))
    demand_slot = np.full(sku_count, -1, np.int64)
    for row, slot in state.demand.slot_of.items():
        i = row if local_row is None else local_row.get(row, -1)
        if 0 <= i < sku_count:
            demand_slot[i] = slot
    lane_ok, lane_cost, lane_lead = _lanes(state, columns, local_column)
    return RestockInputs(
        now_ms,
        ship_day,
        horizon_days,
        sku_names,
        [n.node_id for n in nodes],
        [n.kind for n in nodes],
        state.stock.cells,
        rows,
        columns,
        supply,
        demand_slot,
        state.demand.rate,
        state.demand.last,
        _protections(state, columns, local_row, sku_count),
        state.rules.restock,
        lane_ok,
        lane_cost,
        lane_lead,
        state.limits.max_restock_moves,
    )


def copy_positions(inputs: RestockInputs) -> Cells:
    """[SKU, field, node] int32 of the positions in scope (worker thread)."""
    rows, columns, cells = inputs.rows, inputs.columns, inputs.cells
    if np.array_equal(rows, np.arange(len(rows))) and np.array_equal(
        columns, np.arange(len(columns))
    ):
        return cells[: len(rows), :, : len(columns)].copy()
    return cells[rows][:, :, columns]


def _protections(
    state: StateFields, columns: Ints, local_row: dict[int, int] | None, sku_count: int
) -> Protections | None:
    protections = state.rules.protections
    if not protections or not len(columns):
        return None
    compiled = compiled_rules(state)
    consumed = {}
    for row, held in state.protection_consumed.items():
        i = row if local_row is None else local_row.get(row, -1)
        if 0 <= i < sku_count:
            consumed[i] = held[: len(protections)][:, columns].copy()
    return Protections(
        [compiled.protection_mask[p, columns].copy() for p in range(len(protections))],
        [p.units for p in protections],
        [p.percent for p in protections],
        [p.sku_prefixes for p in protections],
        consumed,
    )


def protected_units(inputs: RestockInputs, positions: Cells) -> npt.NDArray[np.int32] | None:
    """[SKU, node] units kept for protections' beneficiaries and not taken (None: no
    protection applies in scope). Worker thread."""
    found = inputs.protections
    if found is None:
        return None
    on_hand = positions[:, 0, :]
    protected = np.zeros(on_hand.shape, np.int32)
    names = inputs.sku_names
    for p, node_mask in enumerate(found.node_masks):
        prefixes = found.sku_prefixes[p]
        sku_mask = np.array([not prefixes or x.startswith(prefixes) for x in names], np.bool_)
        if not node_mask.any() or not sku_mask.any():
            continue
        if found.units[p]:
            amount = np.full(on_hand.shape, found.units[p], np.int32)
        else:
            amount = (on_hand.astype(np.int64) * found.percent[p] // 100).astype(np.int32)
        for i, held in found.consumed.items():
            amount[i] -= held[p]
        protected += np.where(np.outer(sku_mask, node_mask), np.maximum(amount, 0), 0).astype(
            np.int32
        )
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
