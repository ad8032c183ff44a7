"""Rule sets compiled against the nodes: each caller's policy as arrays over node indices
(visibility, safety overrides, protections held back), rebuilt when the rules or the nodes
change, so the kernels and the reserve path read arrays instead of evaluating rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core.nodes import Node
from atpd.core.rules import Policy, RuleSet


@dataclass(slots=True)
class CompiledPolicy:
    """One caller's policy as arrays over node indices (rebuilt when nodes change)."""

    channel: str
    segment: str
    policy: Policy
    visible: npt.NDArray[np.bool_]  # visible to this caller and enabled
    safety_node: npt.NDArray[np.int32]  # override by node / kind, -1 where none
    against: npt.NDArray[np.bool_]  # per protection: held back from this caller
    mine: tuple[int, ...]  # protections this caller consumes first
    sku_safety_cache: dict[int, int] = field(default_factory=dict)
    against_by_sku: dict[int, npt.NDArray[np.bool_]] = field(default_factory=dict)
    # Scope masks (from AtpState.node_mask, themselves cached) narrowed to what this caller
    # sees, keyed by the scope mask's id and holding it so the id stays valid.
    mask_cache: dict[int, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class CompiledRules:
    rules: RuleSet
    node_count: int
    protection_mask: npt.NDArray[np.bool_]  # [protection, node]
    protection_units: npt.NDArray[np.int64]  # [protection]
    protection_percent: npt.NDArray[np.int64]
    policies: dict[tuple[str, str], CompiledPolicy]
    prefixed_protections: tuple[int, ...]  # protections limited to SKU prefixes
    no_consumption: npt.NDArray[np.int32]  # shared zeros [protection, node], never written
    no_supply: npt.NDArray[np.int64]  # shared zeros [node], never written


def compile_rules(rules: RuleSet, nodes: Sequence[Node], capacity: int) -> CompiledRules:
    count = len(rules.protections)
    protection_mask = np.zeros((max(count, 1), capacity), np.bool_)
    for p, protection in enumerate(rules.protections):
        for node in nodes:
            protection_mask[p, node.index] = protection.nodes.matches(node)
    policies: dict[tuple[str, str], CompiledPolicy] = {}
    enabled = np.array([n.enabled for n in nodes], np.bool_)
    for key, policy in rules.policies.items() or [(("", ""), Policy())]:
        visible = np.zeros(len(nodes), np.bool_)
        safety = np.full(capacity, -1, np.int32)
        by_kind = dict(policy.safety_by_kind)
        by_node = dict(policy.safety_by_node)
        for node in nodes:
            visible[node.index] = policy.nodes.matches(node) if rules.policies else True
            overrides = [
                v for v in (by_kind.get(node.kind), by_node.get(node.node_id)) if v is not None
            ]
            if overrides:
                safety[node.index] = max(overrides)
        against = np.zeros(max(count, 1), np.bool_)
        mine = []
        for p, protection in enumerate(rules.protections):
            if protection.protects(*key):
                mine.append(p)
            else:
                against[p] = True
        policies[key] = CompiledPolicy(
            key[0], key[1], policy, visible & enabled, safety, against, tuple(mine)
        )
    return CompiledRules(
        rules,
        len(nodes),
        protection_mask,
        np.array([p.units for p in rules.protections] or [0], np.int64),
        np.array([p.percent for p in rules.protections] or [0], np.int64),
        policies,
        tuple(i for i, p in enumerate(rules.protections) if p.sku_prefixes),
        np.zeros((max(count, 1), capacity), np.int32),
        np.zeros(capacity, np.int64),
    )


def sku_safety(policy: CompiledPolicy, sku_index: int, sku: str) -> int:
    """The SKU-prefix safety override for a SKU under a policy (-1: none); cached."""
    if not policy.policy.safety_by_sku_prefix:
        return -1
    cached = policy.sku_safety_cache.get(sku_index)
    if cached is None:
        matches = [v for prefix, v in policy.policy.safety_by_sku_prefix if sku.startswith(prefix)]
        cached = max(matches) if matches else -1
        if len(policy.sku_safety_cache) >= 100_000:
            policy.sku_safety_cache.clear()
        policy.sku_safety_cache[sku_index] = cached
    return cached
