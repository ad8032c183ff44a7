"""Availability roll-ups: the matrix layout, scoping, and the numba kernel against plain Python."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpd.core import kernels
from atpd.core.commands import Line, NodeKind, Reserve, SetStock, UpsertNode
from atpd.core.geo import Geography
from atpd.core.results import NotFound
from atpd.core.state import AtpState, AvailabilityView
from atpd.core.stock import FIELD_COUNT, FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

from .support import NODES, make_state, put_stock, reserve, set_node_enabled

HYPOTHESIS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def geo_column(state: AtpState, view: AvailabilityView, prefix: str) -> int:
    geo, _ = state.geo.lookup_prefix(prefix)
    assert geo >= 0, prefix
    return view.node_count + geo


def cell(state: AtpState, view: AvailabilityView, row: int, column: str) -> int:
    """The matrix entry for a node id, a geo prefix, or "total"."""
    if column == "total":
        index = view.node_count + view.geo_count
    elif column in state.node_ids:
        index = state.node_ids.get(column)
    else:
        index = geo_column(state, view, column)
    return int(view.matrix[row, index])


@pytest.fixture
def state() -> AtpState:
    """sku-a: paris 5, lyon 3 (safety 1), berlin 7 (2 reserved), soho 4; sku-b: lyon 2."""
    state = make_state()
    put_stock(state, "sku-a", "paris", 5)
    put_stock(state, "sku-a", "lyon", 3, safety_stock=1)
    put_stock(state, "sku-a", "berlin", 7)
    put_stock(state, "sku-a", "soho", 4)
    put_stock(state, "sku-b", "lyon", 2)
    reserve(state, "r1", ("sku-a", "berlin", 2))
    return state


def test_matrix_is_nodes_then_geo_ids_then_total(state: AtpState) -> None:
    """Each row is [ATP per node | ATP per geo id | total] for one requested SKU."""
    view = state.availability(["sku-a", "sku-b"])
    assert view.skus == ("sku-a", "sku-b")
    assert view.node_count == 4
    assert view.geo_count == len(state.geo) == 10
    assert view.matrix.shape == (2, 4 + 10 + 1)
    assert view.matrix[0, :4].tolist() == [5, 2, 5, 4]
    expected_geo = {
        "EU": 12,
        "EU/FR": 7,
        "EU/FR/Paris": 5,
        "EU/FR/Lyon": 2,
        "EU/DE": 5,
        "EU/DE/Berlin": 5,
        "NA": 4,
        "NA/US": 4,
        "NA/US/NYC": 4,
        "NA/US/NYC/SoHo": 4,
    }
    for prefix, value in expected_geo.items():
        assert cell(state, view, 0, prefix) == value, prefix
    assert cell(state, view, 0, "total") == 16
    assert view.matrix[1].sum() == 2 * 5  # lyon, EU, EU/FR, EU/FR/Lyon, and the total
    assert cell(state, view, 1, "EU/FR/Lyon") == cell(state, view, 1, "total") == 2


def test_geo_columns_are_named_by_geo_ids(state: AtpState) -> None:
    """Geo column g is the prefix state.geo.geo_ids.name(g), interned widest first."""
    names = [state.geo.geo_ids.name(g) for g in range(len(state.geo))]
    assert names[:3] == ["EU", "EU/FR", "EU/FR/Paris"]
    assert set(names) == {
        "/".join(path[: level + 1]) for path in NODES.values() for level in range(len(path))
    }
    assert [state.geo.geo_level[g] for g in range(3)] == [0, 1, 2]


def test_unknown_sku_row_is_zeros(state: AtpState) -> None:
    """A SKU never written answers an all-zero row, in its requested place."""
    view = state.availability(["ghost", "sku-b"])
    assert view.sku_rows[0] == -1
    assert not view.matrix[0].any()
    assert cell(state, view, 1, "total") == 2


def test_empty_sku_list_gives_empty_matrix(state: AtpState) -> None:
    """No SKUs asked: a matrix with no rows."""
    assert state.availability([]).matrix.shape == (0, 4 + 10 + 1)


def test_reserved_and_safety_stock_lower_the_rollup(state: AtpState) -> None:
    """Roll-ups sum node ATP, which already excludes holds and safety stock."""
    before = cell(state, state.availability(["sku-a"]), 0, "total")
    reserve(state, "r2", ("sku-a", "paris", 4))
    put_stock(state, "sku-a", "soho", 4, safety_stock=3)
    view = state.availability(["sku-a"])
    assert cell(state, view, 0, "total") == before - 4 - 3
    assert cell(state, view, 0, "EU/FR/Paris") == 1


def test_negative_node_atp_counts_as_zero(state: AtpState) -> None:
    """A node whose holds exceed a recount adds 0, not a negative, to its roll-ups."""
    put_stock(state, "sku-a", "berlin", 0)
    view = state.availability(["sku-a"])
    assert cell(state, view, 0, "berlin") == 0
    assert cell(state, view, 0, "EU/DE") == 0
    assert cell(state, view, 0, "EU") == 7
    assert view.matrix.min() >= 0


def test_disabled_node_is_left_out(state: AtpState) -> None:
    """A disabled node shows 0 and adds nothing to its geo roll-ups or the total."""
    state.availability(["sku-a"])  # fill the scope cache first: disabling must invalidate it
    set_node_enabled(state, "paris", False, 0)
    view = state.availability(["sku-a"])
    assert cell(state, view, 0, "paris") == 0
    assert cell(state, view, 0, "EU/FR") == 2
    assert cell(state, view, 0, "total") == 11
    assert not view.node_mask[state.node_ids.get("paris")]
    set_node_enabled(state, "paris", True, 0)
    assert cell(state, state.availability(["sku-a"]), 0, "total") == 16


def test_node_ids_narrow_the_rollup(state: AtpState) -> None:
    """With node_ids only those nodes count, in node columns, geo columns and total."""
    view = state.availability(["sku-a"], node_ids=["lyon", "soho"])
    assert view.matrix[0, :4].tolist() == [0, 2, 0, 4]
    assert cell(state, view, 0, "EU") == 2
    assert cell(state, view, 0, "NA/US") == 4
    assert cell(state, view, 0, "EU/DE") == 0
    assert cell(state, view, 0, "total") == 6


def test_geo_prefix_narrows_the_rollup(state: AtpState) -> None:
    """With geo_prefix only nodes under that prefix (whole segments) count."""
    view = state.availability(["sku-a"], geo_prefix="EU/FR")
    assert view.matrix[0, :4].tolist() == [5, 2, 0, 0]
    assert cell(state, view, 0, "EU") == 7
    assert cell(state, view, 0, "NA") == 0
    assert cell(state, view, 0, "total") == 7
    view = state.availability(["sku-a"], geo_prefix="NA/US/NYC/SoHo")
    assert cell(state, view, 0, "total") == 4


def test_node_ids_and_geo_prefix_intersect(state: AtpState) -> None:
    """node_ids and geo_prefix together keep the nodes in both."""
    view = state.availability(["sku-a"], node_ids=["paris", "berlin"], geo_prefix="EU/FR")
    assert view.matrix[0, :4].tolist() == [5, 0, 0, 0]
    assert cell(state, view, 0, "total") == 5


def test_node_ids_still_exclude_disabled_nodes(state: AtpState) -> None:
    """Naming a disabled node explicitly does not bring it back."""
    set_node_enabled(state, "soho", False, 0)
    view = state.availability(["sku-a"], node_ids=["soho"])
    assert cell(state, view, 0, "total") == 0


def test_unknown_node_in_scope_is_not_found(state: AtpState) -> None:
    """An unknown node in node_ids raises NotFound naming its position."""
    with pytest.raises(NotFound, match=r"node_ids\[1\]"):
        state.availability(["sku-a"], node_ids=["paris", "nowhere"])


@pytest.mark.parametrize("prefix", ["AS", "EU/F", "EU/FR/", "eu", "EU/FR/Paris/Marais"])
def test_unknown_geo_prefix_is_not_found(state: AtpState, prefix: str) -> None:
    """A geo prefix no node was ever placed under raises NotFound (prefixes are whole segments)."""
    with pytest.raises(NotFound, match="geo_prefix"):
        state.availability(["sku-a"], geo_prefix=prefix)


def test_moved_node_rolls_up_under_its_new_path(state: AtpState) -> None:
    """Re-upserting a node with another geo path moves its ATP to the new prefixes."""
    state.apply(UpsertNode("berlin", NodeKind.WAREHOUSE, ("EU", "FR")), 0)
    view = state.availability(["sku-a"])
    assert cell(state, view, 0, "EU/FR") == 12
    assert cell(state, view, 0, "EU/DE") == 0
    assert cell(state, view, 0, "EU/DE/Berlin") == 0
    assert cell(state, view, 0, "EU") == 12
    assert state.availability(["sku-a"], geo_prefix="EU/DE").matrix[0, -1] == 0


def test_availability_does_not_change_state(state: AtpState) -> None:
    """Reads leave the digest unchanged."""
    before = state.digest()
    state.availability(["sku-a", "ghost"], node_ids=["paris"], geo_prefix="EU")
    state.position("sku-a", "paris")
    assert state.digest() == before


# ---------------------------------------------------------------- kernel against plain Python

SEGMENTS = st.sampled_from(["A", "B", "C"])
GEO_PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map(tuple)


def python_rollup(
    cells: np.ndarray,
    sku_rows: list[int],
    mask: list[bool],
    paths: list[tuple[str, ...]],
    geo_names: list[str],
) -> list[list[int]]:
    """The roll-up spelled out over strings: a geo column sums the nodes under its prefix."""
    out = []
    for row in sku_rows:
        node_atp = [0] * len(mask)
        if row >= 0:
            for j, enabled in enumerate(mask):
                if enabled:
                    free = (
                        int(cells[row, FIELD_ON_HAND, j])
                        - int(cells[row, FIELD_RESERVED, j])
                        - int(cells[row, FIELD_SAFETY, j])
                    )
                    node_atp[j] = max(0, free)
        geo_atp = []
        for name in geo_names:
            segments = tuple(name.split("/"))
            geo_atp.append(
                sum(
                    a
                    for a, path in zip(node_atp, paths, strict=True)
                    if path[: len(segments)] == segments
                )
            )
        out.append([*node_atp, *geo_atp, sum(node_atp)])
    return out


@st.composite
def kernel_inputs(
    draw: st.DrawFn,
) -> tuple[np.ndarray, list[int], list[bool], list[tuple[str, ...]], int]:
    node_count = draw(st.integers(1, 8))
    row_count = draw(st.integers(1, 4))
    capacity = node_count + draw(st.integers(0, 3))
    paths = draw(st.lists(GEO_PATHS, min_size=node_count, max_size=node_count))
    mask = draw(st.lists(st.booleans(), min_size=node_count, max_size=node_count))
    cells = np.zeros((row_count, FIELD_COUNT, capacity), np.int32)
    quantities = st.integers(0, 40)
    for row in range(row_count):
        for j in range(node_count):
            cells[row, FIELD_ON_HAND, j] = draw(quantities)
            cells[row, FIELD_RESERVED, j] = draw(quantities)
            cells[row, FIELD_SAFETY, j] = draw(st.integers(0, 10))
    sku_rows = draw(st.lists(st.integers(-1, row_count - 1), max_size=5))
    return cells, sku_rows, mask, paths, capacity


@HYPOTHESIS
@given(kernel_inputs())
def test_rollup_kernel_matches_plain_python(
    inputs: tuple[np.ndarray, list[int], list[bool], list[tuple[str, ...]], int],
) -> None:
    """rollup_atp equals a string-prefix roll-up in Python for random stock, geo trees and masks."""
    cells, sku_rows, mask, paths, capacity = inputs
    geography = Geography(capacity)
    for j, path in enumerate(paths):
        geography.place(j, path)
    matrix = kernels.rollup_atp(
        cells,
        np.array(sku_rows, np.int64),
        np.array(mask, np.bool_),
        geography.node_geo,
        len(geography),
    )
    geo_names = [geography.geo_ids.name(g) for g in range(len(geography))]
    assert matrix.dtype == np.int64
    assert matrix.shape == (len(sku_rows), len(mask) + len(geo_names) + 1)
    assert matrix.tolist() == python_rollup(cells, sku_rows, mask, paths, geo_names)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[AtpState, list[str], list[str], str]:
    """A random state (nodes, stock, holds) and a random availability scope over it."""
    state = AtpState()
    node_count = draw(st.integers(1, 6))
    node_ids = [f"n{j}" for j in range(node_count)]
    for node_id in node_ids:
        state.apply(
            UpsertNode(node_id, NodeKind.STORE, draw(GEO_PATHS), enabled=draw(st.booleans())), 0
        )
    skus = ["s0", "s1", "s2"]
    for sku in skus:
        for node_id in node_ids:
            if draw(st.booleans()):
                state.apply(
                    SetStock(sku, node_id, draw(st.integers(0, 20)), 1, draw(st.integers(0, 5))), 0
                )
    for k in range(draw(st.integers(0, 4))):
        sku, node_id = draw(st.sampled_from(skus)), draw(st.sampled_from(node_ids))
        state.apply(Reserve(f"r{k}", (Line(sku, node_id, draw(st.integers(1, 5))),), 10_000), 0)
    for sku in skus:  # recounts after holds may push a position below its holds
        if sku in state.skus and draw(st.booleans()):
            node_id = draw(st.sampled_from(node_ids))
            state.apply(SetStock(sku, node_id, draw(st.integers(0, 3)), 2), 0)
    scope_nodes = draw(st.lists(st.sampled_from(node_ids), max_size=3, unique=True))
    prefixes = [state.geo.geo_ids.name(g) for g in range(len(state.geo))]
    geo_prefix = draw(st.sampled_from(["", *prefixes]))
    asked = draw(st.lists(st.sampled_from([*skus, "ghost"]), max_size=4))
    return state, asked, scope_nodes, geo_prefix


@HYPOTHESIS
@given(worlds())
def test_state_availability_matches_positions(
    world: tuple[AtpState, list[str], list[str], str],
) -> None:
    """state.availability agrees with per-position ATP summed over enabled, in-scope nodes."""
    state, asked, scope_nodes, geo_prefix = world
    view = state.availability(asked, node_ids=scope_nodes, geo_prefix=geo_prefix)
    wanted = tuple(geo_prefix.split("/")) if geo_prefix else ()
    in_scope = [
        node.enabled
        and (not scope_nodes or node.node_id in scope_nodes)
        and node.geo_path[: len(wanted)] == wanted
        for node in state.nodes
    ]
    assert view.node_mask.tolist() == in_scope
    geo_names = [state.geo.geo_ids.name(g) for g in range(len(state.geo))]
    for k, sku in enumerate(asked):
        node_atp = [
            state.position(sku, node.node_id).atp if scoped else 0
            for node, scoped in zip(state.nodes, in_scope, strict=True)
        ]
        geo_atp = [
            sum(
                a
                for a, node in zip(node_atp, state.nodes, strict=True)
                if node.under(tuple(name.split("/")))
            )
            for name in geo_names
        ]
        assert view.matrix[k].tolist() == [*node_atp, *geo_atp, sum(node_atp)]
    state.check_invariants()


def test_returned_node_mask_cannot_poison_the_scope_cache(state: AtpState) -> None:
    """The cached scope mask handed out in a view is read-only: later answers stay right."""
    view = state.availability(["sku-a"])
    with pytest.raises(ValueError, match="read-only"):
        view.node_mask[0] = False
    assert cell(state, state.availability(["sku-a"]), 0, "total") == 16


def test_position_rows_are_the_stocked_positions_of_the_nodes_asked(state: AtpState) -> None:
    """`position_rows` (the export's copy) lists each stocked position of the nodes given,
    SKU-major, with its terms and its ATP under no rules, as `position` reports them."""
    nodes = [state.node_ids.get("berlin"), state.node_ids.get("lyon")]
    rows = state.position_rows(nodes)
    listed = [
        (state.skus.name(int(row)), ["berlin", "lyon"][int(column)])
        for row, column in zip(rows.sku_rows, rows.node_columns, strict=True)
    ]
    assert listed == [("sku-a", "berlin"), ("sku-a", "lyon"), ("sku-b", "lyon")]
    for k, (sku, node_id) in enumerate(listed):
        view = state.position(sku, node_id)
        assert (view.on_hand, view.reserved, view.safety_stock, view.atp) == (
            rows.on_hand[k],
            rows.reserved[k],
            rows.safety[k],
            rows.atp[k],
        )
        assert view.last_source_sequence == rows.source_sequence[k]
