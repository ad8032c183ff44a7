"""Stock positions: absolute counts with source sequences, deltas, safety stock and ATP."""

from __future__ import annotations

import pytest

from atpd.core.commands import AdjustStock, NodeKind, SetStock, Tick, UpsertNode
from atpd.core.limits import MAX_QUANTITY
from atpd.core.results import InvalidCommand, NotFound, Outcome, PositionView

from .support import NODES, make_state, put_stock, reserve, set_node_enabled


def test_set_stock_writes_on_hand_and_sequence() -> None:
    """SetStock stores on_hand and the source sequence and answers OK with the new position."""
    state = make_state()
    result = state.apply(SetStock("sku-a", "paris", 7, 3), 10)
    assert result.outcome is Outcome.OK
    assert result.changed
    assert result.last_source_sequence == 3
    assert result.position == PositionView("sku-a", "paris", 7, 0, 0, 7, 3)
    assert state.position("sku-a", "paris") == result.position


def test_set_stock_registers_sku_on_first_write() -> None:
    """A SKU exists only once a stock write for it succeeded."""
    state = make_state()
    assert "sku-a" not in state.skus
    state.apply(SetStock("sku-a", "paris", 1, 1), 0)
    assert "sku-a" in state.skus
    assert state.stock.position_count == 1


@pytest.mark.parametrize("sequence", [4, 5])
def test_set_stock_with_old_or_equal_sequence_is_stale(sequence: int) -> None:
    """A SetStock whose source sequence is not above the last applied one changes nothing."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", 7, 5, safety_stock=1), 0)
    before = state.digest()
    result = state.apply(SetStock("sku-a", "paris", 99, sequence, safety_stock=3), 0)
    assert result.outcome is Outcome.STALE
    assert not result.changed
    assert result.last_source_sequence == 5
    assert result.position == PositionView("sku-a", "paris", 7, 0, 1, 6, 5)
    assert state.digest() == before


def test_stale_set_stock_does_not_register_the_sku() -> None:
    """A refused SetStock (sequence 0 on a new position) does not create the SKU."""
    state = make_state()
    result = state.apply(SetStock("sku-new", "paris", 3, 0), 0)
    assert result.outcome is Outcome.STALE
    assert "sku-new" not in state.skus
    assert state.stock.position_count == 0


def test_source_sequences_are_per_position() -> None:
    """The stale check compares against the same (sku, node) only."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", 7, 100), 0)
    assert state.apply(SetStock("sku-a", "lyon", 2, 1), 0).outcome is Outcome.OK
    assert state.apply(SetStock("sku-b", "paris", 2, 1), 0).outcome is Outcome.OK
    assert state.position("sku-a", "lyon").on_hand == 2


def test_set_stock_keeps_safety_stock_when_omitted() -> None:
    """SetStock without safety_stock leaves the stored safety stock as it was."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", 10, 1, safety_stock=4), 0)
    state.apply(SetStock("sku-a", "paris", 12, 2), 0)
    assert state.position("sku-a", "paris").safety_stock == 4
    assert state.position("sku-a", "paris").atp == 8
    state.apply(SetStock("sku-a", "paris", 12, 3, safety_stock=0), 0)
    assert state.position("sku-a", "paris").atp == 12


def test_set_stock_on_unknown_node_is_not_found_and_changes_nothing() -> None:
    """SetStock naming an unknown node raises NotFound and leaves state (and SKUs) untouched."""
    state = make_state()
    before = state.digest()
    with pytest.raises(NotFound, match="node_id"):
        state.apply(SetStock("sku-a", "nowhere", 5, 1), 0)
    assert state.digest() == before
    assert "sku-a" not in state.skus


def test_set_stock_is_allowed_on_a_disabled_node() -> None:
    """Feeds keep counting stock at a disabled node."""
    state = make_state()
    set_node_enabled(state, "paris", False, 0)
    assert state.apply(SetStock("sku-a", "paris", 5, 1), 0).outcome is Outcome.OK
    assert state.position("sku-a", "paris").on_hand == 5


def test_adjust_stock_adds_delta_and_keeps_sequence() -> None:
    """AdjustStock moves on_hand by delta and does not touch the source sequence."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", 5, 9), 0)
    result = state.apply(AdjustStock("sku-a", "paris", 3, "return"), 0)
    assert result.outcome is Outcome.OK
    assert result.changed
    assert result.position == PositionView("sku-a", "paris", 8, 0, 0, 8, 9)
    result = state.apply(AdjustStock("sku-a", "paris", -8, "damaged"), 0)
    assert result.position.on_hand == 0
    # A later count with a sequence above 9 still applies: deltas do not move the sequence.
    assert state.apply(SetStock("sku-a", "paris", 4, 10), 0).outcome is Outcome.OK


def test_adjust_stock_registers_sku_on_first_write() -> None:
    """A positive delta on a never-seen SKU creates it with on_hand = delta."""
    state = make_state()
    result = state.apply(AdjustStock("sku-new", "berlin", 4), 0)
    assert result.outcome is Outcome.OK
    assert "sku-new" in state.skus
    assert state.position("sku-new", "berlin") == PositionView("sku-new", "berlin", 4, 0, 0, 4, 0)


def test_adjust_below_zero_is_refused_and_changes_nothing() -> None:
    """AdjustStock that would take on_hand below 0 answers NEGATIVE_ON_HAND, no change."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", 2, 1), 0)
    before = state.digest()
    result = state.apply(AdjustStock("sku-a", "paris", -3), 0)
    assert result.outcome is Outcome.NEGATIVE_ON_HAND
    assert not result.changed
    assert result.position.on_hand == 2
    assert state.digest() == before


def test_negative_adjust_on_unknown_sku_does_not_register_it() -> None:
    """A refused negative delta on a new SKU leaves the SKU unregistered."""
    state = make_state()
    result = state.apply(AdjustStock("sku-new", "paris", -1), 0)
    assert result.outcome is Outcome.NEGATIVE_ON_HAND
    assert "sku-new" not in state.skus


def test_adjust_checks_on_hand_not_atp() -> None:
    """A delta may take on_hand below reserved (ATP clamps at 0) but never below 0."""
    state = make_state()
    put_stock(state, "sku-a", "paris", 5)
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = state.apply(AdjustStock("sku-a", "paris", -3), 0)
    assert result.outcome is Outcome.OK
    assert result.position == PositionView("sku-a", "paris", 2, 4, 0, 0, 1)
    state.check_invariants()


def test_adjust_above_max_quantity_is_invalid() -> None:
    """A delta taking on_hand above MAX_QUANTITY raises InvalidCommand and changes nothing."""
    state = make_state()
    state.apply(SetStock("sku-a", "paris", MAX_QUANTITY - 1, 1), 0)
    before = state.digest()
    with pytest.raises(InvalidCommand, match="delta"):
        state.apply(AdjustStock("sku-a", "paris", 2), 0)
    assert state.digest() == before
    assert state.apply(AdjustStock("sku-a", "paris", 1), 0).position.on_hand == MAX_QUANTITY


def test_adjust_on_unknown_node_is_not_found() -> None:
    """AdjustStock naming an unknown node raises NotFound and changes nothing."""
    state = make_state()
    before = state.digest()
    with pytest.raises(NotFound):
        state.apply(AdjustStock("sku-a", "nowhere", 1), 0)
    assert state.digest() == before


def test_atp_is_on_hand_minus_reserved_minus_safety() -> None:
    """ATP = on_hand - reserved - safety_stock while that is positive."""
    state = make_state()
    put_stock(state, "sku-a", "paris", 10, safety_stock=2)
    reserve(state, "r1", ("sku-a", "paris", 3))
    position = state.position("sku-a", "paris")
    assert (position.on_hand, position.reserved, position.safety_stock) == (10, 3, 2)
    assert position.atp == 5


@pytest.mark.parametrize(("on_hand", "safety_stock"), [(4, 0), (2, 0), (6, 5), (0, 9)])
def test_atp_never_goes_negative(on_hand: int, safety_stock: int) -> None:
    """A recount below reserved + safety stock clamps ATP at 0 and keeps the holds."""
    state = make_state()
    put_stock(state, "sku-a", "paris", 10)
    reserve(state, "r1", ("sku-a", "paris", 4))
    position = put_stock(state, "sku-a", "paris", on_hand, safety_stock=safety_stock)
    assert position.atp == max(0, on_hand - 4 - safety_stock)
    assert position.atp >= 0
    assert position.reserved == 4
    state.check_invariants()


def test_position_of_unknown_sku_is_zero() -> None:
    """Reading a never-written SKU at a known node gives an all-zero position."""
    state = make_state()
    assert state.position("ghost", "lyon") == PositionView("ghost", "lyon", 0, 0, 0, 0, 0)


def test_position_at_unknown_node_is_not_found() -> None:
    """Reading a position at an unknown node raises NotFound."""
    state = make_state()
    with pytest.raises(NotFound):
        state.position("sku-a", "nowhere")


def test_many_skus_and_nodes_grow_the_table_without_losing_data() -> None:
    """Registering more SKUs and nodes than the initial capacity keeps every position."""
    state = make_state()
    state.apply(SetStock("sku-0", "paris", 1, 1), 0)
    sku_count = state.stock.sku_capacity + 5
    for i in range(1, sku_count):
        state.apply(AdjustStock(f"sku-{i}", "lyon", i), 0)
    node_count = state.stock.node_capacity + 3
    for j in range(node_count - len(NODES)):
        state.apply(UpsertNode(f"extra-{j}", NodeKind.WAREHOUSE, ("AS", f"c{j}")), 0)
    state.apply(SetStock("sku-7", f"extra-{node_count - len(NODES) - 1}", 70, 1), 0)
    assert state.stock.sku_capacity >= sku_count
    assert state.stock.node_capacity >= node_count
    assert state.position("sku-0", "paris").on_hand == 1
    assert all(state.position(f"sku-{i}", "lyon").on_hand == i for i in range(1, sku_count))
    assert state.position("sku-7", f"extra-{node_count - len(NODES) - 1}").on_hand == 70
    assert state.availability(["sku-7"]).matrix[0, -1] == 7 + 70
    state.check_invariants()


def test_tick_on_quiet_state_changes_nothing_not_even_the_clock() -> None:
    """A Tick with nothing due reports no change and leaves the state (clock too) as it was:
    it is not journaled, so a replay could not reproduce a moved clock."""
    state = make_state()
    put_stock(state, "sku-a", "paris", 3)
    before = state.digest()
    result = state.apply(Tick(), 500)
    assert result.expired == ()
    assert not result.changed
    assert state.digest() == before
