"""The embedded demo data set: deterministic, the stated size and shape, and loadable."""

from __future__ import annotations

import numpy as np
import pytest

from atpd.core.commands import NodeKind, Reserve
from atpd.core.geo import parse_geo_path
from atpd.core.ids import ID_PATTERN, NODE_ID_PATTERN
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from atpd.demo import (
    DemoSummary,
    dataset,
    demo_nodes,
    demo_positions,
    demo_reservation_lines,
    demo_skus,
    demo_stock,
    load_demo,
)

NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def loaded() -> tuple[AtpState, DemoSummary]:
    state = AtpState()
    summary = load_demo(state, NOW_MS)
    return state, summary


def _fresh_build(seed: int) -> AtpState:
    dataset._catalogue.cache_clear()
    dataset.demo_positions.cache_clear()
    state = AtpState()
    load_demo(state, NOW_MS, seed=seed)
    return state


def test_two_builds_give_the_same_digest(loaded: tuple[AtpState, DemoSummary]) -> None:
    """Rebuilding from scratch (caches cleared) with the same seed yields an identical state."""
    state, _ = loaded
    assert _fresh_build(7).digest() == state.digest()


def test_another_seed_gives_another_stock_picture() -> None:
    """The seed drives the stock; the network and catalogue stay the same."""
    first, second = demo_positions(7), demo_positions(8)
    assert len(first) != len(second) or not np.array_equal(first.on_hand, second.on_hand)
    assert np.unique(first.sku).shape == np.unique(second.sku).shape == (len(demo_skus()),)


def test_summary_counts_are_in_the_stated_ranges(loaded: tuple[AtpState, DemoSummary]) -> None:
    """3 warehouses, about 60 stores, 20,000 SKUs and 60k-150k positions, matching the state."""
    state, summary = loaded
    assert summary.warehouses == 3
    assert 55 <= summary.stores <= 65
    assert summary.nodes == summary.warehouses + summary.stores == len(state.nodes)
    assert summary.skus == 20_000 == len(state.skus) == len(demo_skus())
    assert 60_000 <= summary.positions <= 150_000
    assert summary.positions == state.stock.position_count == len(demo_positions())
    on_hand = state.stock.cells[: len(state.skus), 0, : len(state.nodes)]
    assert summary.units_on_hand == int(on_hand.sum())


def test_one_shipping_warehouse_per_region() -> None:
    """Each of EU, AM and APAC has exactly one warehouse; warehouses ship and offer no pickup."""
    warehouses = [n for n in demo_nodes() if n.kind is NodeKind.WAREHOUSE]
    assert sorted(n.geo_path[0] for n in warehouses) == ["AM", "APAC", "EU"]
    assert all(n.ships and not n.pickup for n in warehouses)
    assert all(n.node_id.startswith("WH-") for n in warehouses)


def test_store_geo_paths_have_three_levels_under_a_region() -> None:
    """Every store sits at region/country/city with region in EU, AM, APAC."""
    stores = [n for n in demo_nodes() if n.kind is not NodeKind.WAREHOUSE]
    for node in stores:
        assert len(node.geo_path) == 3, node
        assert node.geo_path[0] in ("EU", "AM", "APAC"), node
        assert len(node.geo_path[1]) == 2 and node.geo_path[1].isupper(), node
        assert parse_geo_path("/".join(node.geo_path)) == node.geo_path
    assert {n.geo_path[0] for n in stores} == {"EU", "AM", "APAC"}
    cities = {n.geo_path[2] for n in stores}
    assert {"Paris", "London", "New York", "Tokyo", "Sao Paulo", "Hong Kong"} <= cities


def test_store_roles_and_tags() -> None:
    """Stores offer pickup, a couple of flagships also ship, outlets are tagged and typed."""
    stores = [n for n in demo_nodes() if n.kind is not NodeKind.WAREHOUSE]
    assert all(n.pickup and n.enabled for n in stores)
    shipping = [n for n in stores if n.ships]
    assert 2 <= len(shipping) <= 4
    assert all("flagship" in n.tags for n in shipping)
    assert sum("flagship" in n.tags for n in stores) >= 6
    outlets = [n for n in stores if "outlet" in n.tags]
    assert outlets and all(n.kind is NodeKind.OUTLET for n in outlets)


def test_ids_match_the_edge_patterns() -> None:
    """SKU and node ids would pass the gRPC edge validation and are unique."""
    skus = demo_skus()
    assert len(set(skus)) == len(skus)
    assert all(ID_PATTERN.match(sku) for sku in skus)
    node_ids = [n.node_id for n in demo_nodes()]
    assert len(set(node_ids)) == len(node_ids)
    assert all(NODE_ID_PATTERN.match(node_id) for node_id in node_ids)


def test_sku_ids_encode_category_collection_colour_and_size() -> None:
    """A SKU id is CAT-COLL-COL[-SIZE]-NNNNNN; sized categories carry a size segment."""
    for sku in demo_skus()[:2_000]:
        parts = sku.split("-")
        assert len(parts) in (4, 5), sku
        category, collection, colour, style = parts[0], parts[1], parts[2], parts[-1]
        assert len(category) == 3 and len(collection) == 4 and len(colour) == 3, sku
        assert len(style) == 6 and style.isdigit(), sku
        assert (len(parts) == 5) == (category in ("SHO", "RTW", "KNT", "BLT", "FRG")), sku


def test_stock_is_sparse_with_deep_warehouses_and_shallow_stores() -> None:
    """Warehouses hold most SKUs; stores hold hundreds to ~2,000 SKUs, mostly 1-5 units."""
    positions = demo_positions()
    nodes = demo_nodes()
    per_node = np.bincount(positions.node, minlength=len(nodes))
    for index, node in enumerate(nodes):
        if node.kind is NodeKind.WAREHOUSE:
            assert per_node[index] > 0.5 * len(demo_skus()), node.node_id
        else:
            assert 200 <= per_node[index] <= 2_500, node.node_id
    is_warehouse = np.array([n.kind is NodeKind.WAREHOUSE for n in nodes])[positions.node]
    store_on_hand = positions.on_hand[~is_warehouse]
    assert np.mean(store_on_hand <= 5) > 0.9
    assert np.median(positions.on_hand[is_warehouse]) > np.median(store_on_hand)
    flagship = np.array(["flagship" in n.tags for n in nodes])[positions.node]
    assert positions.on_hand[flagship].mean() > positions.on_hand[~is_warehouse & ~flagship].mean()


def test_safety_stock_only_at_warehouses_and_below_on_hand() -> None:
    """Safety stock is set on some warehouse positions, never at stores, always < on hand."""
    warehouses = {n.node_id for n in demo_nodes() if n.kind is NodeKind.WAREHOUSE}
    with_safety = 0
    for command in demo_stock():
        assert command.source_sequence == 1
        if command.safety_stock is not None:
            with_safety += 1
            assert command.node_id in warehouses, command
            assert 0 < command.safety_stock < command.on_hand, command
    assert with_safety > 1_000


def test_every_sku_is_stocked_in_some_warehouse() -> None:
    """No catalogue SKU is orphaned: each one sits in at least one warehouse."""
    positions = demo_positions()
    warehouse_indexes = [i for i, n in enumerate(demo_nodes()) if n.kind is NodeKind.WAREHOUSE]
    in_warehouse = np.isin(positions.node, warehouse_indexes)
    assert np.unique(positions.sku[in_warehouse]).shape[0] == len(demo_skus())


def test_warehouse_stocked_sku_has_positive_availability(
    loaded: tuple[AtpState, DemoSummary],
) -> None:
    """A SKU the EU warehouse holds shows positive ATP there and in the EU roll-up."""
    state, _ = loaded
    positions = demo_positions()
    warehouse = [n.node_id for n in demo_nodes()].index("WH-EU-01")
    sku = demo_skus()[int(positions.sku[positions.node == warehouse][0])]
    assert state.position(sku, "WH-EU-01").atp > 0
    view = state.availability([sku], geo_prefix="EU")
    assert view.matrix[0, -1] > 0
    assert view.matrix[0, warehouse] == state.position(sku, "WH-EU-01").atp


def test_loaded_state_passes_invariants(loaded: tuple[AtpState, DemoSummary]) -> None:
    """The loaded demo state satisfies the core's invariant check."""
    state, _ = loaded
    state.check_invariants()


def test_reservation_lines_are_deterministic_and_in_stock(
    loaded: tuple[AtpState, DemoSummary],
) -> None:
    """Benchmark lines repeat per seed and each fits the ATP of a fresh demo state."""
    state, _ = loaded
    lines = demo_reservation_lines(2_000, seed=3)
    assert lines == demo_reservation_lines(2_000, seed=3)
    assert lines != demo_reservation_lines(2_000, seed=4)
    assert all(1 <= line.quantity <= state.position(line.sku, line.node_id).atp for line in lines)
    assert any(line.node_id.startswith("ST-") for line in lines)
    assert any(line.node_id.startswith("WH-") for line in lines)


def test_reservation_lines_reserve_on_a_fresh_demo_state() -> None:
    """A reservation made of demo lines at distinct positions succeeds on a fresh demo state."""
    state = AtpState()
    load_demo(state, NOW_MS)
    lines = list({(line.sku, line.node_id): line for line in demo_reservation_lines(50)}.values())
    result = state.apply(Reserve("demo-cart-1", tuple(lines), ttl_ms=60_000), NOW_MS + 1)
    assert result.outcome is Outcome.OK
    state.check_invariants()
