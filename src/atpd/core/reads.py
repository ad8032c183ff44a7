"""Reads: availability (per node, per geo prefix, in total), the catalogue, positions, nodes,
and the rows of a position export. Never change the state (caches aside).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core import kernels
from atpd.core.atp import own_atp_columns
from atpd.core.caller_atp import (
    caller_policy,
    compiled_rules,
    protection_inputs,
    stock_atp,
    supply_row,
)
from atpd.core.nodes import Node
from atpd.core.results import NotFound, PositionView
from atpd.core.rules_compile import CompiledPolicy, sku_safety
from atpd.core.state_fields import StateFields, node_index
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

MASK_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class AvailabilityView:
    """The raw answer of `availability`: one row per requested SKU of
    `[atp per node (node_count) | atp per geo id (geo_count) | total]`."""

    skus: tuple[str, ...]
    sku_rows: npt.NDArray[np.int64]
    node_mask: npt.NDArray[np.bool_]
    matrix: npt.NDArray[np.int64]
    node_count: int
    geo_count: int


@dataclass(frozen=True, slots=True)
class PositionRows:
    """Every stocked position of some nodes (see `position_rows`), one per row, SKU-major:
    columns of equal length, all int64."""

    sku_rows: npt.NDArray[np.int64]  # the SKU row in the state
    node_columns: npt.NDArray[np.int64]  # the index into the `nodes` asked for
    on_hand: npt.NDArray[np.int64]
    reserved: npt.NDArray[np.int64]
    safety: npt.NDArray[np.int64]
    source_sequence: npt.NDArray[np.int64]
    atp: npt.NDArray[np.int64]  # with no rules (own safety stock only)


def node_mask(
    state: StateFields, node_ids: Sequence[str] = (), geo_prefix: str = ""
) -> npt.NDArray[np.bool_]:
    """Enabled nodes, narrowed to `node_ids` and/or `geo_prefix`; cached per scope."""
    key = (tuple(node_ids), geo_prefix)
    mask = state.mask_cache.get(key)
    if mask is not None:
        return mask
    mask = state.enabled_mask.copy()
    if node_ids:
        wanted = np.zeros_like(mask)
        for i, node_id in enumerate(node_ids):
            wanted[node_index(state, node_id, f"node_ids[{i}]")] = True
        mask &= wanted
    if geo_prefix:
        geo, level = state.geo.lookup_prefix(geo_prefix)
        if geo < 0:
            raise NotFound(f"geo_prefix: no node under {geo_prefix!r}")
        mask &= state.geo.node_geo[level, : len(state.nodes)] == geo
    if len(state.mask_cache) >= MASK_CACHE_SIZE:
        state.mask_cache.clear()
    mask.flags.writeable = False  # shared by every answer in this scope
    state.mask_cache[key] = mask
    return mask


def availability(
    state: StateFields,
    skus: Sequence[str],
    node_ids: Sequence[str] = (),
    geo_prefix: str = "",
    channel: str = "",
    segment: str = "",
    policy: CompiledPolicy | None = None,
) -> AvailabilityView:
    """ATP of `skus` for one caller (named, or given as its resolved `policy`), per node,
    per geo prefix and in total."""
    mask = node_mask(state, node_ids, geo_prefix)
    sku_get = state.skus.get
    rows = np.array([sku_get(sku) for sku in skus], np.int64)
    geo_count = len(state.geo)
    if policy is None:
        policy = caller_policy(state, channel, segment)
    if policy is None:
        matrix = kernels.rollup_atp(state.stock.cells, rows, mask, state.geo.node_geo, geo_count)
        return AvailabilityView(tuple(skus), rows, mask, matrix, len(state.nodes), geo_count)
    compiled = compiled_rules(state)
    scoped = policy.mask_cache.get(id(mask))
    if scoped is None or scoped[0] is not mask:
        if len(policy.mask_cache) >= MASK_CACHE_SIZE:
            policy.mask_cache.clear()
        scoped = (mask, mask & policy.visible)
        policy.mask_cache[id(mask)] = scoped
    mask = scoped[1]
    node_count = len(state.nodes)
    matrix = np.zeros((len(rows), node_count + geo_count + 1), np.int64)
    buffer = policy.policy.buffer
    for k, row in enumerate(rows.tolist()):
        if row < 0:
            continue
        sku = skus[k]
        against, consumed = protection_inputs(state, policy, row, sku)
        kernels.rollup_atp_rules(
            state.stock.cells,
            row,
            mask,
            state.geo.node_geo,
            geo_count,
            policy.safety_node,
            sku_safety(policy, row, sku),
            buffer,
            supply_row(state, policy, row),
            compiled.protection_mask,
            compiled.protection_units,
            compiled.protection_percent,
            against,
            consumed,
            matrix[k],
        )
    return AvailabilityView(tuple(skus), rows, mask, matrix, node_count, geo_count)


def catalogue(
    state: StateFields, channel: str = "", segment: str = "", level: int = 1
) -> tuple[list[str], npt.NDArray[np.int64]]:
    """ATP of every SKU for one caller, per geo prefix at `level` (0: region, 1: country,
    ...): (prefix names, matrix[sku row, prefix]). One parallel kernel over the whole
    catalogue, then the few SKUs with incoming supply or protected holds are redone
    exactly through the per-SKU path."""
    assert 0 <= level < state.geo.node_geo.shape[0]
    node_count, sku_count = len(state.nodes), len(state.skus)
    level_geo = state.geo.node_geo[level, :node_count]
    geo_ids = sorted({int(g) for g in level_geo if g >= 0}, key=state.geo.geo_ids.name)
    group_of = {geo: i for i, geo in enumerate(geo_ids)}
    node_group = np.array([group_of.get(int(g), -1) for g in level_geo], np.int32)
    names = [state.geo.geo_ids.name(g) for g in geo_ids]
    policy = caller_policy(state, channel, segment)
    compiled = compiled_rules(state)
    mask = node_mask(state)
    if policy is None:
        safety_node = np.full(node_count, -1, np.int32)
        skus_safety = np.full(sku_count, -1, np.int64)
        buffer = 0
        against = np.zeros((sku_count, 1), np.bool_)
    else:
        mask = mask & policy.visible
        safety_node = policy.safety_node
        sku_names = state.skus.names
        skus_safety = np.array(
            [sku_safety(policy, row, sku_names[row]) for row in range(sku_count)], np.int64
        )
        buffer = policy.policy.buffer
        against = np.repeat(policy.against[np.newaxis, :], sku_count, axis=0)
        for index in compiled.prefixed_protections:
            if policy.against[index]:
                prefixes = state.rules.protections[index].sku_prefixes
                against[:, index] = [sku.startswith(prefixes) for sku in sku_names]
    matrix = kernels.catalogue_atp(
        state.stock.cells,
        sku_count,
        mask,
        node_group,
        len(geo_ids),
        safety_node,
        skus_safety,
        buffer,
        compiled.protection_mask,
        compiled.protection_units,
        compiled.protection_percent,
        against,
    )
    exact = set(state.supply.by_sku) | set(state.protection_consumed)
    if policy is not None and exact:
        in_groups = node_group >= 0
        for row in sorted(exact):
            view = availability(state, [state.skus.name(row)], (), "", channel, segment)
            per_node = view.matrix[0, :node_count]
            matrix[row] = np.bincount(
                node_group[in_groups], per_node[in_groups], len(geo_ids)
            ).astype(np.int64)
    return names, matrix


def position(state: StateFields, sku: str, node_id: str) -> PositionView:
    node = node_index(state, node_id, "node_id")
    row = state.skus.get(sku)
    if row < 0:
        return PositionView(sku, node_id, 0, 0, 0, 0, 0)
    cells = state.stock.cells
    return PositionView(
        sku,
        node_id,
        int(cells[row, FIELD_ON_HAND, node]),
        int(cells[row, FIELD_RESERVED, node]),
        int(cells[row, FIELD_SAFETY, node]),
        stock_atp(state, row, node),
        int(state.stock.source_seq[row, node]),
    )


def list_nodes(state: StateFields, geo_prefix: str = "") -> list[Node]:
    prefix = tuple(geo_prefix.split("/")) if geo_prefix else ()
    return [node for node in state.nodes if node.under(prefix)]


def position_rows(state: StateFields, nodes: Sequence[int]) -> PositionRows:
    """The positions of `nodes` (node indexes, in the order given) that were ever stocked, with
    their terms and their ATP under no rules: one consistent copy for an export. ATP for a
    caller with rules comes from `availability`."""
    columns = np.array(nodes, np.int64)
    sku_count = len(state.skus)
    stock = state.stock
    present = stock.present[:sku_count][:, columns]
    rows, cols = np.nonzero(present)
    cells = stock.cells[:sku_count][:, :, columns]
    on_hand = cells[rows, FIELD_ON_HAND, cols].astype(np.int64)
    reserved = cells[rows, FIELD_RESERVED, cols].astype(np.int64)
    safety = cells[rows, FIELD_SAFETY, cols].astype(np.int64)
    sequences = stock.source_seq[:sku_count][:, columns][rows, cols]
    atp = own_atp_columns(on_hand, reserved, safety)
    return PositionRows(rows, cols, on_hand, reserved, safety, sequences, atp)
