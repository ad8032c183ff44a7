"""Growth of the stock table off the writer: what a command needs, what a background resize
should grow to, and the two steps of a resize (begin here, copy anywhere, finish here).
"""

from __future__ import annotations

from typing import Any

from atpd.core.command_base import CommandOf
from atpd.core.commands import AddSupply, AdjustStock, SetStock, UpsertNode
from atpd.core.load_command import BulkLoad
from atpd.core.state_fields import StateFields
from atpd.core.stock import RESIZE_HIGH_WATER_PERCENT, Resize, grown_capacity

# The commands that can add a SKU row or a node column (every other one is answered at once).
_GROWING = (UpsertNode, SetStock, AdjustStock, AddSupply, BulkLoad)


def capacity_needed(state: StateFields, command: CommandOf[Any]) -> tuple[int, int] | None:
    """(SKU rows, node columns) that `command` may need when the stock table has fewer,
    so applying it now would grow the table synchronously; None otherwise. Cheap and
    conservative: every SKU a bulk load names counts as possibly new."""
    if not isinstance(command, _GROWING):
        return None  # checked before every command: the common case first
    stock = state.stock
    sku_count, node_count = len(state.skus), len(state.nodes)
    if isinstance(command, UpsertNode):
        if node_count < stock.node_capacity or command.node_id in state.node_ids:
            return None
        if node_count >= state.limits.max_nodes:
            return None  # refused by the limit, never grown
        return sku_count, node_count + 1
    if isinstance(command, SetStock | AdjustStock | AddSupply):
        if sku_count < stock.sku_capacity or command.sku in state.skus:
            return None
        if sku_count >= state.limits.max_skus:
            return None
        return sku_count + 1, node_count
    if isinstance(command, BulkLoad) and command.columns is not None:
        rows = min(sku_count + len(command.columns.sku_names), state.limits.max_skus)
        return (rows, node_count) if rows > stock.sku_capacity else None
    return None


def resize_target(
    state: StateFields, needed: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """The capacities a background resize should grow to: an axis whose used count (or
    `needed`) reached RESIZE_HIGH_WATER_PERCENT of its capacity doubles (further if
    `needed` asks), never past the limits. None when no axis needs to grow."""
    stock = state.stock
    sku_used, node_used = len(state.skus), len(state.nodes)
    if needed is not None:
        sku_used, node_used = max(sku_used, needed[0]), max(node_used, needed[1])
    sku_capacity = _target(stock.sku_capacity, sku_used, state.limits.max_skus)
    node_capacity = _target(stock.node_capacity, node_used, state.limits.max_nodes)
    if sku_capacity == stock.sku_capacity and node_capacity == stock.node_capacity:
        return None
    return sku_capacity, node_capacity


def _target(capacity: int, used: int, limit: int) -> int:
    """One axis of `resize_target`: its capacity now, or what it should grow to."""
    if used * 100 < capacity * RESIZE_HIGH_WATER_PERCENT or capacity >= limit:
        return capacity
    return max(capacity, min(grown_capacity(capacity * 2, used), limit))


def begin_resize(state: StateFields, sku_capacity: int, node_capacity: int) -> Resize:
    """Start growing the stock table in the background (see core/stock.py `Resize`): the
    caller copies (`Resize.copy_all`, any thread), then calls `finish_resize` here."""
    return state.stock.begin_resize(sku_capacity, node_capacity, len(state.skus), len(state.nodes))


def finish_resize(state: StateFields, max_rows: int) -> bool:
    """Swap the grown table in when at most `max_rows` rows are left to copy (True), or
    start another copy round of those rows (False). Also grows the per-node geography."""
    done = state.stock.finish_resize(len(state.skus), len(state.nodes), max_rows)
    if done and state.geo.node_geo.shape[1] < state.stock.node_capacity:
        state.geo.grow(state.stock.node_capacity)
    return done
