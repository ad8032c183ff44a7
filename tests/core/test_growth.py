"""Stock table growth: pre-sized capacities from config, and growth that loses nothing."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atpd.core.commands import (
    AddSupply,
    AdjustStock,
    Command,
    Fulfil,
    Line,
    NodeKind,
    ReceiveSupply,
    Release,
    Reserve,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.core.load_command import BulkLoad, LoadColumns, LoadMode
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind
from atpd.persistence.state_snapshot import export_state, import_state


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


# ---------------------------------------------------------------- background resize


def make_load(
    load_id: str, full: bool, rows: list[tuple[str, str, int]], sequence: int
) -> BulkLoad:
    """A bulk load of (sku, node, on_hand) rows (distinct positions)."""
    sku_names = list(dict.fromkeys(sku for sku, _, _ in rows))
    node_names = list(dict.fromkeys(node for _, node, _ in rows))
    columns = LoadColumns(
        sku_names,
        np.array([sku_names.index(sku) for sku, _, _ in rows], np.int32),
        node_names,
        np.array([node_names.index(node) for _, node, _ in rows], np.int32),
        np.array([on_hand for _, _, on_hand in rows], np.int32),
        np.full(len(rows), -1, np.int32),
    )
    mode = LoadMode.FULL if full else LoadMode.DELTA
    return BulkLoad.create(load_id, mode, sequence, tuple(node_names) if full else (), columns)


# Largest capacity (rows or columns) a test resize asks for: well above the 15 SKUs x 10 nodes
# the machine uses, far below what would take real memory.
MAX_TEST_CAPACITY = 64


class ResizeMachine(RuleBasedStateMachine):
    """Commands interleaved with background-resize steps (begin, copies of arbitrary slices in
    any order, finish with small budgets, i.e. several rounds) on a table that starts tiny,
    mirrored on a pre-sized table that never grows: both must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.grown = AtpState(Limits(initial_node_capacity=2, initial_sku_capacity=2))
        self.reference = AtpState(Limits(initial_node_capacity=64, initial_sku_capacity=64))
        self.now_ms = 1
        self.loads = 0
        self.apply(UpsertNode("n0", NodeKind.STORE, ("EU", "FR")))

    def apply(self, command: Command) -> None:
        outcomes = []
        for state in (self.grown, self.reference):
            try:
                result = state.apply(command, self.now_ms)
                outcomes.append(getattr(result, "outcome", None))
            except CommandRejected as error:
                outcomes.append(type(error))
        assert outcomes[0] == outcomes[1], (command, outcomes)

    def node_id(self, number: int) -> str:
        return self.grown.nodes[number % len(self.grown.nodes)].node_id

    @rule(number=st.integers(0, 9))
    def upsert_node(self, number: int) -> None:
        self.apply(UpsertNode(f"n{number}", NodeKind.STORE, ("EU", f"c{number % 5}")))

    @rule(sku=st.integers(0, 12), node=st.integers(0, 9), on_hand=st.integers(0, 50))
    def set_stock(self, sku: int, node: int, on_hand: int) -> None:
        node_id = self.node_id(node)
        sequence = self.reference.position(f"s{sku}", node_id).last_source_sequence + 1
        self.apply(SetStock(f"s{sku}", node_id, on_hand, sequence, on_hand // 10))

    @rule(sku=st.integers(0, 12), node=st.integers(0, 9), delta=st.integers(-5, 20))
    def adjust(self, sku: int, node: int, delta: int) -> None:
        self.apply(AdjustStock(f"s{sku}", self.node_id(node), delta))

    @rule(sku=st.integers(0, 12), node=st.integers(0, 9), quantity=st.integers(1, 5))
    def reserve(self, sku: int, node: int, quantity: int) -> None:
        line = Line(f"s{sku}", self.node_id(node), quantity)
        self.apply(Reserve(f"r{self.now_ms}-{sku}-{node}", (line,), 1_000))

    @rule(pos_sale=st.booleans(), index=st.integers(0, 10))
    def finish_reservation(self, pos_sale: bool, index: int) -> None:
        open_ids = sorted(k for k, r in self.reference.reservations.items() if r.status.is_open)
        if open_ids:
            reservation_id = open_ids[index % len(open_ids)]
            self.apply(Fulfil(reservation_id) if pos_sale else Release(reservation_id))

    @rule(elapsed_ms=st.integers(0, 1_500))
    def tick(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        self.apply(Tick())

    @rule(sku=st.integers(0, 9), node=st.integers(0, 9), quantity=st.integers(1, 9))
    def supply(self, sku: int, node: int, quantity: int) -> None:
        supply_id = f"po-{self.now_ms}-{sku}"
        self.apply(
            AddSupply(
                supply_id, f"s{sku}", self.node_id(node), quantity, 0, SupplyKind.PURCHASE_ORDER
            )
        )
        self.apply(ReceiveSupply(supply_id, quantity // 2 or None))

    @rule(
        full=st.booleans(),
        positions=st.sets(
            st.tuples(st.integers(0, 14), st.integers(0, 9)), min_size=1, max_size=12
        ),
        on_hand=st.integers(0, 12),
        sequence=st.integers(0, 3),
    )
    def bulk_load(
        self, full: bool, positions: set[tuple[int, int]], on_hand: int, sequence: int
    ) -> None:
        rows = {(f"s{sku}", self.node_id(node)): on_hand + sku for sku, node in positions}
        self.loads += 1
        load = make_load(
            f"load-{self.loads}", full, [(s, n, q) for (s, n), q in rows.items()], sequence
        )
        self.apply(load)

    @precondition(lambda self: self.grown.stock.resize is None)
    @rule(sku_factor=st.sampled_from([1, 2, 4]), node_factor=st.sampled_from([1, 2, 4]))
    def begin(self, sku_factor: int, node_factor: int) -> None:
        stock = self.grown.stock
        if sku_factor == node_factor == 1:
            target = self.grown.resize_target()
            if target is None:
                return
        else:
            # Bounded: repeated x4 growth would otherwise reach gigabytes within one example.
            target = (
                min(stock.sku_capacity * sku_factor, MAX_TEST_CAPACITY),
                min(stock.node_capacity * node_factor, MAX_TEST_CAPACITY),
            )
            if target == (stock.sku_capacity, stock.node_capacity):
                return
        self.grown.begin_resize(*target)

    @precondition(lambda self: self.grown.stock.resize is not None)
    @rule(data=st.data())
    def copy_slice(self, data: st.DataObject) -> None:
        resize = self.grown.stock.resize
        assert resize is not None
        count = len(resize.rows)
        if count:
            start = data.draw(st.integers(0, count - 1))
            resize.copy(start, data.draw(st.integers(start + 1, count)))

    @precondition(lambda self: self.grown.stock.resize is not None)
    @rule(max_rows=st.integers(0, 6))
    def finish(self, max_rows: int) -> None:
        before = self.grown.digest()
        self.grown.finish_resize(max_rows)
        assert self.grown.digest() == before

    @invariant()
    def tables_agree(self) -> None:
        assert self.grown.digest() == self.reference.digest()

    def teardown(self) -> None:
        grown = self.grown
        resize = grown.stock.resize
        if resize is not None:
            resize.copy_all(1 << 20)
            while not grown.finish_resize(len(grown.skus)):
                pass
            assert grown.stock.resize is None and grown.stock.dirty_rows is None
        assert grown.digest() == self.reference.digest()
        grown.check_invariants()
        skus = list(grown.skus.names)
        if skus:
            assert np.array_equal(
                grown.availability(skus).matrix, self.reference.availability(skus).matrix
            )
        sku_count, node_count = len(grown.skus), len(grown.nodes)
        assert not grown.stock.present[sku_count:].any()
        assert not grown.stock.cells[:, :, node_count:].any()
        assert grown.geo.node_geo.shape[1] >= node_count


ResizeMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
test_background_resize_matches_a_presized_table = ResizeMachine.TestCase


def test_full_load_during_a_resize_zeroes_unlisted_positions_in_the_grown_table() -> None:
    """A FULL load applied after the copy zeroes the unlisted positions in the grown table too."""
    state = AtpState(Limits(initial_node_capacity=2, initial_sku_capacity=4))
    state.apply(UpsertNode("n0", NodeKind.STORE, ("EU",)), 1)
    for sku in ("a", "b", "c"):
        state.apply(SetStock(sku, "n0", 7, 1), 1)
    resize = state.begin_resize(8, 4)
    resize.copy_all(1 << 20)
    state.apply(make_load("full-1", True, [("a", "n0", 3)], 0), 2)
    assert state.finish_resize(len(state.skus))
    assert state.stock.cells is resize.cells
    assert [state.position(sku, "n0").on_hand for sku in ("a", "b", "c")] == [3, 0, 0]
    state.check_invariants()


def test_synchronous_growth_abandons_a_resize_and_keeps_its_target() -> None:
    """A command needing room before the resize finished grows now; the copy is dropped."""
    state = AtpState(Limits(initial_node_capacity=2, initial_sku_capacity=2))
    state.apply(UpsertNode("n0", NodeKind.STORE, ("EU",)), 1)
    state.apply(SetStock("a", "n0", 5, 1), 1)
    resize = state.begin_resize(2, 8)
    state.apply(SetStock("b", "n0", 6, 1), 1)
    state.apply(SetStock("c", "n0", 7, 1), 1)  # past 2 SKUs: grows synchronously
    assert resize.cancelled and state.stock.resize is None and state.stock.dirty_rows is None
    assert (state.stock.sku_capacity, state.stock.node_capacity) == (4, 8)
    resize.copy_all(1 << 20)  # a copy still running afterwards touches nothing of the state
    assert [state.position(sku, "n0").on_hand for sku in ("a", "b", "c")] == [5, 6, 7]


def _stocked(limits: Limits, sku_count: int, node_count: int) -> AtpState:
    state = AtpState(limits)
    for node in range(node_count):
        state.apply(UpsertNode(f"n{node}", NodeKind.STORE, ("EU",)), 0)
    for sku in range(sku_count):
        for node in range(node_count):
            state.apply(SetStock(f"sku-{sku}", f"n{node}", sku + node + 1, 1), 0)
    return state


def test_a_snapshot_bigger_than_the_presize_is_adopted_without_a_copy_and_still_grows() -> None:
    """Loading a snapshot at least as big as the configured capacity uses its arrays as the
    table (no copy); later SKUs and nodes grow it and the state matches one never reloaded."""
    limits = Limits(initial_sku_capacity=4, initial_node_capacity=2)
    state = _stocked(limits, 6, 3)
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs, limits)
    assert loaded.stock.cells is arrays["cells"] and loaded.stock.present is arrays["present"]
    assert (loaded.stock.sku_capacity, loaded.stock.node_capacity) == (6, 3)
    assert loaded.digest() == state.digest()
    for target in (state, loaded):
        target.apply(UpsertNode("n3", NodeKind.STORE, ("EU",)), 1)
        target.apply(SetStock("sku-new", "n3", 7, 1), 1)
        target.apply(SetStock("sku-0", "n3", 2, 1), 1)
    assert loaded.stock.sku_capacity >= 7 and loaded.stock.node_capacity >= 4
    assert loaded.digest() == state.digest()
    assert loaded.position("sku-5", "n2").on_hand == 8
    loaded.check_invariants()


def test_a_snapshot_smaller_than_the_presize_keeps_the_configured_capacity() -> None:
    """A snapshot under the configured capacity is copied into a table of that capacity."""
    limits = Limits(initial_sku_capacity=64, initial_node_capacity=8)
    state = _stocked(limits, 5, 2)
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs, limits)
    assert loaded.stock.cells is not arrays["cells"]
    assert (loaded.stock.sku_capacity, loaded.stock.node_capacity) == (64, 8)
    assert loaded.digest() == state.digest()


def test_a_snapshot_export_of_a_full_table_is_a_copy() -> None:
    """export_state copies the stock even when every row and column is in use (an adopted
    table), so a snapshot being written never sees later writes."""
    limits = Limits(initial_sku_capacity=4, initial_node_capacity=2)
    loaded = import_state(*export_state(_stocked(limits, 6, 3)), limits)
    arrays, _ = export_state(loaded)
    assert not np.shares_memory(arrays["cells"], loaded.stock.cells)
    assert not np.shares_memory(arrays["source_seq"], loaded.stock.source_seq)
    assert not np.shares_memory(arrays["present"], loaded.stock.present)
