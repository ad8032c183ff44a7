"""Handlers of the node and stock commands: UpsertNode, SetStock, AdjustStock."""

from __future__ import annotations

import numpy as np

from atpd.core.change_capture import touch
from atpd.core.commands import AdjustStock, SetStock, UpsertNode
from atpd.core.limits import MAX_QUANTITY
from atpd.core.nodes import Node
from atpd.core.reads import position
from atpd.core.results import InvalidCommand, LimitExceeded, NodeResult, Outcome, StockResult
from atpd.core.state_fields import StateFields, check_quantity, node_index, register_sku
from atpd.core.stock import FIELD_ON_HAND, FIELD_SAFETY


def upsert_node(state: StateFields, command: UpsertNode, now_ms: int) -> NodeResult:
    index = state.node_ids.get(command.node_id)
    created = index < 0
    if created:
        if len(state.nodes) >= state.limits.max_nodes:
            raise LimitExceeded(f"max_nodes: already {len(state.nodes)} nodes")
        index = state.node_ids.intern(command.node_id)
        state.stock.ensure(len(state.skus), index + 1)
        if state.geo.node_geo.shape[1] < state.stock.node_capacity:
            state.geo.grow(state.stock.node_capacity)
        state.nodes.append(Node(command.node_id, index, command.kind, (), True, False, True, ()))
    node = state.nodes[index]
    if not created and (
        node.kind,
        node.geo_path,
        node.ships,
        node.pickup,
        node.enabled,
        node.tags,
    ) == (
        command.kind,
        command.geo_path,
        command.ships,
        command.pickup,
        command.enabled,
        command.tags,
    ):
        return NodeResult(Outcome.OK, created=False, changed=False)
    node.kind = command.kind
    node.geo_path = command.geo_path
    node.ships = command.ships
    node.pickup = command.pickup
    node.enabled = command.enabled
    node.tags = command.tags
    state.geo.place(index, command.geo_path)
    state.enabled_mask = np.array([n.enabled for n in state.nodes], np.bool_)
    state.mask_cache.clear()
    state.compiled_cache = None  # node masks of the rules are rebuilt on next use
    state.network_cache = None  # the network's node arrays too
    return NodeResult(Outcome.OK, created)


def set_stock(state: StateFields, command: SetStock, now_ms: int) -> StockResult:
    # The edge checks these too; the core checks again because an int32 cell that cannot
    # take the value would fail halfway through the writes.
    check_quantity(command.on_hand, "on_hand")
    if command.safety_stock is not None:
        check_quantity(command.safety_stock, "safety_stock")
    node = node_index(state, command.node_id, "node_id")
    sku = state.skus.get(command.sku)
    last = int(state.stock.source_seq[sku, node]) if sku >= 0 else 0
    if command.source_sequence <= last:
        return StockResult(Outcome.STALE, position(state, command.sku, command.node_id), last)
    sku = register_sku(state, command.sku)
    cells = state.stock.cells
    touch(state, sku, node)
    cells[sku, FIELD_ON_HAND, node] = command.on_hand
    if command.safety_stock is not None:
        cells[sku, FIELD_SAFETY, node] = command.safety_stock
    state.stock.source_seq[sku, node] = command.source_sequence
    state.stock.mark_present(sku, node)
    view = position(state, command.sku, command.node_id)
    return StockResult(Outcome.OK, view, command.source_sequence, changed=True)


def adjust_stock(state: StateFields, command: AdjustStock, now_ms: int) -> StockResult:
    node = node_index(state, command.node_id, "node_id")
    sku = state.skus.get(command.sku)
    on_hand = int(state.stock.cells[sku, FIELD_ON_HAND, node]) if sku >= 0 else 0
    new_on_hand = on_hand + command.delta
    if new_on_hand < 0:
        view = position(state, command.sku, command.node_id)
        return StockResult(Outcome.NEGATIVE_ON_HAND, view, view.last_source_sequence)
    if new_on_hand > MAX_QUANTITY:
        raise InvalidCommand(f"delta: on_hand would exceed {MAX_QUANTITY}")
    sku = register_sku(state, command.sku)
    touch(state, sku, node)
    state.stock.cells[sku, FIELD_ON_HAND, node] = new_on_hand
    state.stock.mark_present(sku, node)
    view = position(state, command.sku, command.node_id)
    return StockResult(Outcome.OK, view, view.last_source_sequence, changed=True)
