"""ATP as one caller sees it, one position at a time (the scalar form of the formula).

The compiled policy of a caller, what its rules count (safety overrides, buffer, incoming
supply, protections held back from it), and the ATP that results. The kernels in
core/kernels.py compute the same per node for many positions at once; the property test
tests/rules/test_kernel_vs_scalar.py keeps the two equal.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from atpd.core.atp import atp
from atpd.core.results import InvalidCommand
from atpd.core.rules_compile import CompiledPolicy, CompiledRules, compile_rules, sku_safety
from atpd.core.state_fields import StateFields
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from atpd.core.supply import eligible

# Per-policy caches keyed by SKU row are cleared when they reach this size.
SKU_CACHE_SIZE = 100_000


def caller_policy(state: StateFields, channel: str, segment: str) -> CompiledPolicy | None:
    """The caller's compiled policy; None when no rule set is loaded (everyone sees every
    enabled node with the positions' own safety stock). Unknown names: InvalidCommand."""
    if not state.rules.policies:
        return None
    try:
        key = state.rules.resolve(channel, segment)
    except KeyError as error:
        raise InvalidCommand(str(error.args[0])) from None
    return compiled_rules(state).policies[key]


def compiled_rules(state: StateFields) -> CompiledRules:
    compiled = state.compiled_cache
    if compiled is None:
        compiled = compile_rules(state.rules, state.nodes, state.stock.node_capacity)
        state.compiled_cache = compiled
        count = compiled.protection_mask.shape[0]
        for row, consumed in list(state.protection_consumed.items()):
            if consumed.shape != (count, state.stock.node_capacity):
                grown = np.zeros((count, state.stock.node_capacity), np.int32)
                rows = min(count, consumed.shape[0])
                grown[:rows, : consumed.shape[1]] = consumed[:rows]
                state.protection_consumed[row] = grown
    return compiled


def stock_atp(state: StateFields, sku: int, node: int) -> int:
    """ATP of one position with no rules: its own safety stock, nothing else counted."""
    item = state.stock.cells.item
    return atp(
        item(sku, FIELD_ON_HAND, node),
        item(sku, FIELD_RESERVED, node),
        item(sku, FIELD_SAFETY, node),
    )


def atp_terms(
    state: StateFields, policy: CompiledPolicy, row: int, node: int
) -> tuple[int, int, int, int, int, int]:
    """(on_hand, reserved, safety, buffer, supply counted, protected for others)."""
    item = state.stock.cells.item
    on_hand = item(row, FIELD_ON_HAND, node)
    safety = policy.safety_node.item(node)
    if policy.policy.safety_by_sku_prefix:
        safety = max(safety, sku_safety(policy, row, state.skus.names[row]))
    if safety < 0:
        safety = item(row, FIELD_SAFETY, node)
    supply = 0
    if row in state.supply.by_sku:
        supply = state.supply.counted(
            row,
            node,
            policy.policy.supply_kinds,
            state.eval_ms,
            policy.policy.supply_horizon_ms,
        )
    protected = 0
    if state.rules.protections:
        compiled = compiled_rules(state)
        against, consumed = protection_inputs(state, policy, row, state.skus.names[row])
        units_of, percent_of = compiled.protection_units, compiled.protection_percent
        for index in range(len(state.rules.protections)):
            if against[index] and compiled.protection_mask[index, node]:
                units = units_of.item(index) or on_hand * percent_of.item(index) // 100
                remaining = units - consumed.item(index, node)
                if remaining > 0:
                    protected += remaining
    reserved = item(row, FIELD_RESERVED, node)
    return on_hand, reserved, safety, policy.policy.buffer, supply, protected


def caller_atp(state: StateFields, policy: CompiledPolicy, row: int, node: int) -> int:
    """ATP of one position for one caller (the scalar twin of kernels.rollup_atp_rules)."""
    if not policy.visible[node]:
        return 0
    return atp(*atp_terms(state, policy, row, node))


def explain_position(
    state: StateFields, policy: CompiledPolicy, row: int, node: int
) -> dict[str, int]:
    """Why a caller sees what it sees at one node: every term of the ATP formula."""
    on_hand, reserved, safety, buffer, supply, protected = atp_terms(state, policy, row, node)
    return {
        "on_hand": on_hand,
        "reserved": reserved,
        "safety_stock": safety,
        "buffer": buffer,
        "supply": supply,
        "protected_for_others": protected,
        "atp": atp(on_hand, reserved, safety, buffer, supply, protected),
    }


def protection_inputs(
    state: StateFields, policy: CompiledPolicy, row: int, sku: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
    """Which protections hold units back from this caller for this SKU, and what their
    beneficiaries already hold of it. Shared read-only arrays on the common paths."""
    compiled = compiled_rules(state)
    against = policy.against
    if compiled.prefixed_protections:
        cached = policy.against_by_sku.get(row)
        if cached is None:
            cached = against.copy()
            for index in compiled.prefixed_protections:
                if cached[index] and not state.rules.protections[index].covers_sku(sku):
                    cached[index] = False
            if len(policy.against_by_sku) >= SKU_CACHE_SIZE:
                policy.against_by_sku.clear()
            policy.against_by_sku[row] = cached
        against = cached
    consumed = state.protection_consumed.get(row)
    return against, compiled.no_consumption if consumed is None else consumed


def supply_row(state: StateFields, policy: CompiledPolicy, row: int) -> npt.NDArray[np.int64]:
    entries = state.supply.by_sku.get(row)
    if not entries:
        return compiled_rules(state).no_supply
    supply = np.zeros(state.stock.node_capacity, np.int64)
    kinds = policy.policy.supply_kinds
    horizon = policy.policy.supply_horizon_ms
    for entry in entries:
        if eligible(entry, kinds, state.eval_ms, horizon):
            supply[entry.node_index] += entry.quantity
    return supply
