"""Stock table growth: pre-sized capacities from config, and growth that loses nothing."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.commands import AdjustStock, Line, NodeKind, Release, Reserve, SetStock, UpsertNode
from atpd.core.limits import Limits
from atpd.core.state import AtpState


def test_node_capacity_is_presized_from_config() -> None:
    """Nodes up to initial_node_capacity are added without reallocating the stock arrays."""
    state = AtpState(Limits(initial_node_capacity=200, initial_sku_capacity=64))
    state.apply(UpsertNode("n0", NodeKind.STORE, ("EU",)), 0)
    for k in range(50):
        state.apply(SetStock(f"sku-{k}", "n0", k + 1, 1), 0)
    cells, source_seq, present = state.stock.cells, state.stock.source_seq, state.stock.present
    node_geo = state.geo.node_geo
    for index in range(1, 200):
        state.apply(UpsertNode(f"n{index}", NodeKind.STORE, ("EU", f"c{index % 7}")), index)
    assert state.stock.cells is cells and state.stock.source_seq is source_seq
    assert state.stock.present is present and state.geo.node_geo is node_geo
    assert state.stock.node_capacity == 200
    assert [state.position(f"sku-{k}", "n0").on_hand for k in range(50)] == list(range(1, 51))
    state.check_invariants()


def test_capacity_never_exceeds_the_limits() -> None:
    """An initial capacity above max_nodes / max_skus is clamped to them."""
    state = AtpState(Limits(max_nodes=3, max_skus=5, initial_node_capacity=64))
    assert (state.stock.node_capacity, state.stock.sku_capacity) == (3, 5)


# A random build-up: new nodes, new SKUs, stock counts and reservations, interleaved.
build_steps = st.lists(
    st.tuples(
        st.sampled_from(["node", "set", "adjust", "reserve", "release"]),
        st.integers(0, 40),
        st.integers(0, 20),
        st.integers(1, 9),
    ),
    min_size=1,
    max_size=120,
)


def build(limits: Limits, steps: list[tuple[str, int, int, int]]) -> AtpState:
    state = AtpState(limits)
    state.apply(UpsertNode("n0", NodeKind.STORE, ("EU", "FR")), 0)
    for now_ms, (action, sku_number, node_number, quantity) in enumerate(steps, start=1):
        sku, node_id = f"sku-{sku_number}", f"n{node_number % (len(state.nodes) + 1)}"
        if action == "node" or node_id not in state.node_ids:
            state.apply(UpsertNode(node_id, NodeKind.STORE, ("EU", f"c{node_number}")), now_ms)
        elif action == "set":
            sequence = state.position(sku, node_id).last_source_sequence + 1
            state.apply(SetStock(sku, node_id, quantity * 3, sequence, quantity - 1), now_ms)
        elif action == "adjust":
            state.apply(AdjustStock(sku, node_id, quantity), now_ms)
        elif action == "reserve" and state.position(sku, node_id).atp >= quantity:
            line = (Line(sku, node_id, quantity),)
            state.apply(Reserve(f"r{now_ms}", line, 60_000), now_ms)
        elif action == "release" and state.reservations:
            state.apply(Release(min(state.reservations)), now_ms)
    return state


@settings(max_examples=60, deadline=None)
@given(steps=build_steps)
def test_growth_preserves_every_position_and_the_digest(
    steps: list[tuple[str, int, int, int]],
) -> None:
    """A table grown from capacity 1 x 1 ends identical to a pre-sized one (digest, ATP)."""
    grown = build(Limits(initial_node_capacity=1, initial_sku_capacity=1), steps)
    presized = build(Limits(initial_node_capacity=64, initial_sku_capacity=64), steps)
    assert grown.digest() == presized.digest()
    grown.check_invariants()
    skus = list(grown.skus.names)
    if skus:
        assert np.array_equal(grown.availability(skus).matrix, presized.availability(skus).matrix)
    # Capacity past what is in use was never written.
    sku_count, node_count = len(grown.skus), len(grown.nodes)
    assert not grown.stock.present[sku_count:].any()
    assert not grown.stock.cells[:, :, node_count:].any()
