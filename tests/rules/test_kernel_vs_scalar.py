"""Kernel against scalar against reference: for random stock, rule sets (policies, protections,
supply) and callers, the numba roll-up (`availability`), the scalar `caller_atp` and the
`explain_position` terms agree with a reference written from the README; geo roll-ups and the
parallel `catalogue` kernel agree with the per-SKU answers."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpd.core.commands import Fulfil, Line, Release, UpsertNode
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind

from .generators import CALLERS, NODE_IDS, SKUS, RuleData, reference_atp, rule_data
from .support import HOUR_MS, NODES, add_supply, advance, make_world, reserve_as, set_rules, stock

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The catalogue kernel runs in parallel threads: fewer examples keep it cheap on 2 cores.
CATALOGUE_SETTINGS = settings(SETTINGS, max_examples=30)
ALL_CALLERS = (*CALLERS, ("", ""), ("", "vip"))

# Every position of the world, each unstocked or with (on_hand, safety or None).
ALL_POSITIONS = [(sku, node_id) for sku in SKUS for node_id in NODE_IDS]
CELL = st.tuples(st.integers(0, 20), st.none() | st.integers(0, 2))
positions = st.lists(
    st.one_of(CELL, CELL.map(lambda cell: (cell[0] + 5, cell[1])), st.none()),
    min_size=len(ALL_POSITIONS),
    max_size=len(ALL_POSITIONS),
).map(
    lambda cells: [
        (sku, node_id, cell[0], cell[1])
        for (sku, node_id), cell in zip(ALL_POSITIONS, cells, strict=True)
        if cell is not None
    ]
)
supplies = st.lists(
    st.tuples(
        st.sampled_from(SKUS),
        st.sampled_from(NODE_IDS),
        st.integers(1, 6),
        st.integers(0, 150),
        st.sampled_from(list(SupplyKind)),
    ),
    max_size=5,
)
# Holds: (caller, sku, node, wanted, then); each takes min(wanted, what the caller may take).
reservations = st.lists(
    st.tuples(
        st.sampled_from(CALLERS),
        st.sampled_from(SKUS),
        st.sampled_from(NODE_IDS),
        st.integers(1, 6),
        st.sampled_from(["keep", "keep", "release", "fulfil-part"]),
    ),
    min_size=2,
    max_size=10,
)


def build(
    rules: RuleData | None,
    stocked: list[tuple[str, str, int, int | None]],
    supply: list[tuple[str, str, int, int, SupplyKind]],
    holds: list[tuple[tuple[str, str], str, str, int, str]],
    disabled: list[str],
    later_hours: int,
) -> AtpState:
    state = make_world()
    for sku, node_id, on_hand, safety in stocked:
        stock(state, sku, node_id, on_hand, safety)
    if rules is not None:
        set_rules(state, rules.text())
    for i, (sku, node_id, quantity, eta_hours, kind) in enumerate(supply):
        add_supply(state, f"s{i}", sku, node_id, quantity, eta_hours * HOUR_MS, kind)
    for i, ((channel, segment), sku, node_id, wanted, then) in enumerate(holds):
        policy = state.policy(channel, segment)
        row = state.skus.get(sku)
        if row < 0:
            continue
        node = state.node_ids.get(node_id)
        if policy is None:
            available = state.position(sku, node_id).atp
        else:
            available = state.caller_atp(policy, row, node)
            if policy.policy.max_per_line:
                available = min(available, policy.policy.max_per_line)
        quantity = min(wanted, available)
        if quantity == 0:
            continue
        result = reserve_as(
            state, f"r{i}", (sku, node_id, quantity), channel=channel, segment=segment
        )
        assert result.outcome is Outcome.OK, result
        if then == "release":
            state.apply(Release(f"r{i}"), state.now_ms)
        elif then == "fulfil-part":
            state.apply(Fulfil(f"r{i}", (Line(sku, node_id, 1),)), state.now_ms)
    for node_id in disabled:
        node_kind, geo, tags = NODES[node_id]
        state.apply(UpsertNode(node_id, node_kind, geo, enabled=False, tags=tags), state.now_ms)
    if later_hours:
        advance(state, later_hours * HOUR_MS)
    state.check_invariants()
    return state


def check_availability(state: AtpState, rules: RuleData | None, channel: str, segment: str) -> None:
    view = state.availability(list(SKUS), channel=channel, segment=segment)
    policy = state.policy(channel, segment)
    node_count = len(state.nodes)
    geo_names = state.geo.geo_ids.names
    for k, sku in enumerate(SKUS):
        row = state.skus.get(sku)
        per_node = view.matrix[k, :node_count]
        for node in state.nodes:
            kernel = int(per_node[node.index])
            expected = reference_atp(state, rules, channel, segment, sku, node.node_id)
            assert kernel == expected, (sku, node.node_id, channel, segment, kernel, expected)
            if policy is not None and row >= 0:
                assert state.caller_atp(policy, row, node.index) == kernel
                terms = state.explain_position(policy, row, node.index)
                if policy.visible[node.index]:
                    formula = (
                        terms["on_hand"]
                        - terms["reserved"]
                        - terms["safety_stock"]
                        - terms["buffer"]
                        + terms["supply"]
                        - terms["protected_for_others"]
                    )
                    assert terms["atp"] == max(0, formula) == kernel, terms
        # Roll-ups: every geo prefix is the sum of the nodes under it; the total of all.
        for geo, name in enumerate(geo_names):
            under = [
                int(per_node[n.index])
                for n in state.nodes
                if n.geo_path[: len(name.split("/"))] == tuple(name.split("/"))
            ]
            assert int(view.matrix[k, node_count + geo]) == sum(under), (sku, name)
        assert int(view.matrix[k, -1]) == int(per_node.sum())
    # A scoped query is the same numbers, restricted.
    scoped = state.availability(list(SKUS), (), "EU/FR", channel, segment)
    in_fr = np.array([n.geo_path[:2] == ("EU", "FR") for n in state.nodes])
    in_scope = np.where(in_fr, view.matrix[:, :node_count], 0)
    assert (scoped.matrix[:, :node_count] == in_scope).all()
    picked = state.availability(list(SKUS), ("st-par", "wh-nyc"), "", channel, segment)
    for name in ("st-par", "wh-nyc"):
        index = state.node_ids.get(name)
        assert (picked.matrix[:, index] == view.matrix[:, index]).all()
    assert int(picked.matrix[:, :node_count].sum()) == int(
        view.matrix[:, state.node_ids.get("st-par")].sum()
        + view.matrix[:, state.node_ids.get("wh-nyc")].sum()
    )


def check_catalogue(state: AtpState, channel: str, segment: str) -> None:
    node_count = len(state.nodes)
    for level in (0, 1, 2):
        names, matrix = state.catalogue(channel, segment, level)
        assert matrix.shape == (len(state.skus), len(names))
        view = state.availability(list(state.skus.names), channel=channel, segment=segment)
        for g, name in enumerate(names):
            members = [n.index for n in state.nodes if "/".join(n.geo_path[: level + 1]) == name]
            sums = view.matrix[:, members].sum(axis=1)
            assert (matrix[:, g] == sums).all(), (level, name, matrix[:, g], sums)
            geo = state.geo.geo_ids.get(name)
            assert (matrix[:, g] == view.matrix[:, node_count + geo]).all()


@SETTINGS
@given(
    rules=st.none() | rule_data(),
    stocked=positions,
    supply=supplies,
    holds=reservations,
    disabled=st.lists(st.sampled_from(NODE_IDS), max_size=2, unique=True),
    later_hours=st.integers(0, 80),
)
def test_kernel_scalar_and_reference_agree(
    rules: RuleData | None,
    stocked: list[tuple[str, str, int, int | None]],
    supply: list[tuple[str, str, int, int, SupplyKind]],
    holds: list[tuple[tuple[str, str], str, str, int, str]],
    disabled: list[str],
    later_hours: int,
) -> None:
    """Kernel, caller_atp, explain terms and the README reference agree per node."""
    state = build(rules, stocked, supply, holds, disabled, later_hours)
    for channel, segment in ALL_CALLERS:
        check_availability(state, rules, channel, segment)


@CATALOGUE_SETTINGS
@given(
    rules=st.none() | rule_data(),
    stocked=positions,
    supply=supplies,
    holds=reservations,
    disabled=st.lists(st.sampled_from(NODE_IDS), max_size=2, unique=True),
    later_hours=st.integers(0, 80),
)
def test_catalogue_groups_equal_per_sku_availability(
    rules: RuleData | None,
    stocked: list[tuple[str, str, int, int | None]],
    supply: list[tuple[str, str, int, int, SupplyKind]],
    holds: list[tuple[tuple[str, str], str, str, int, str]],
    disabled: list[str],
    later_hours: int,
) -> None:
    """Catalogue group sums equal per-SKU availability summed over each group's nodes."""
    state = build(rules, stocked, supply, holds, disabled, later_hours)
    for channel, segment in ALL_CALLERS:
        check_catalogue(state, channel, segment)
