"""Store operations in the core: forced sales, offline queues, returns, exchanges, inspection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.commands_store import (
    Exchange,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    ReturnLine,
    SaleLine,
)
from atpd.core.limits import Limits
from atpd.core.results import AlreadyExists, InvalidCommand, NotFound, Outcome
from atpd.core.state import AtpState
from atpd.persistence.codec import decode_command, encode_command
from atpd.persistence.state_snapshot import export_state, import_state

from .support import make_state, put_stock, reserve, set_node_enabled

NOW_MS = 1_000_000
SKUS = ("bag", "belt", "scarf")


def sale(
    receipt_id: str, *lines: tuple[str, int], force: bool = False, at_ms: int = 0
) -> RecordSale:
    return RecordSale(
        receipt_id, "paris", tuple(SaleLine(s, q) for s, q in lines), force, at_ms, "", "", "till-1"
    )


def on_hand(state: AtpState, sku: str, node_id: str = "paris") -> int:
    return state.position(sku, node_id).on_hand


def replayed_state(commands: list[tuple[object, int]]) -> AtpState:
    """A fresh state fed the journal records of `commands` (encode, decode, apply)."""
    state = make_state()
    for command, now_ms in commands:
        state.apply(decode_command(encode_command(command)), now_ms)  # type: ignore[arg-type]
    return state


def test_forced_sale_short_floors_on_hand_and_records_a_discrepancy() -> None:
    """2 sold where the system counted 1: on_hand 0 and a discrepancy (expected 1, sold 2)."""
    state = make_state()
    put_stock(state, "bag", "paris", 1)
    result = state.apply(sale("r-1", ("bag", 2), force=True, at_ms=NOW_MS - 50), NOW_MS)
    assert result.outcome is Outcome.OK
    assert on_hand(state, "bag") == 0
    [record] = result.discrepancies
    assert (record.expected, record.sold, record.missing) == (1, 2, 1)
    assert (record.sold_at_ms, record.recorded_at_ms) == (NOW_MS - 50, NOW_MS)
    assert (record.receipt_id, record.terminal_id) == ("r-1", "till-1")
    assert list(state.store.discrepancies) == [record]
    state.check_invariants()


def test_unforced_sale_short_is_refused_and_stores_nothing() -> None:
    """Without force a short sale is INSUFFICIENT_STOCK; nothing changes, a retry is fresh."""
    state = make_state()
    put_stock(state, "bag", "paris", 1)
    digest = state.digest()
    result = state.apply(sale("r-1", ("bag", 2)), NOW_MS)
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages[0].available == 1
    assert state.digest() == digest
    assert state.apply(sale("r-1", ("bag", 1)), NOW_MS).outcome is Outcome.OK


def test_unforced_sale_at_a_disabled_node_is_refused_forced_is_recorded() -> None:
    """A disabled store refuses an unforced sale (NODE_DISABLED) but records a forced one."""
    state = make_state()
    put_stock(state, "bag", "paris", 3)
    set_node_enabled(state, "paris", False, 1)
    assert state.apply(sale("r-1", ("bag", 1)), NOW_MS).outcome is Outcome.NODE_DISABLED
    assert state.apply(sale("r-2", ("bag", 1), force=True), NOW_MS).outcome is Outcome.OK
    assert on_hand(state, "bag") == 2


def test_sale_ids_are_idempotent_and_clash_on_other_content() -> None:
    """The same receipt twice is recorded once; the same id with other lines is ALREADY_EXISTS."""
    state = make_state()
    put_stock(state, "bag", "paris", 5)
    assert state.apply(sale("r-1", ("bag", 2)), NOW_MS).changed
    again = state.apply(sale("r-1", ("bag", 2)), NOW_MS + 1)
    assert again.replayed and not again.changed
    assert on_hand(state, "bag") == 3
    with pytest.raises(AlreadyExists, match="receipt_id"):
        state.apply(sale("r-1", ("bag", 3)), NOW_MS + 2)
    with pytest.raises(AlreadyExists, match="return_id"):
        state.apply(RecordReturn("r-1", "paris", (ReturnLine("bag", 1),)), NOW_MS + 2)


def test_bad_sales_are_refused_before_any_change() -> None:
    """Unknown node, repeated SKU, a till clock far ahead: refused with the field named."""
    state = make_state()
    digest = state.digest()
    with pytest.raises(NotFound, match="node_id"):
        state.apply(RecordSale("r-1", "nowhere", (SaleLine("bag", 1),), True), NOW_MS)
    with pytest.raises(InvalidCommand, match=r"lines\[1\].sku"):
        state.apply(sale("r-1", ("bag", 1), ("bag", 2), force=True), NOW_MS)
    with pytest.raises(InvalidCommand, match=r"sold_at_ms.*max_till_clock_skew_ms"):
        state.apply(sale("r-1", ("bag", 1), force=True, at_ms=NOW_MS + 3_600_000), NOW_MS)
    assert state.digest() == digest


@settings(max_examples=60, deadline=None)
@given(
    stock=st.lists(st.integers(0, 5), min_size=len(SKUS), max_size=len(SKUS)),
    sales=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 6), st.booleans()), max_size=12),
)
def test_forced_sales_never_go_negative_and_always_note_a_shortfall(
    stock: list[int], sales: list[tuple[str, int, bool]]
) -> None:
    """Property: forced sales never leave on_hand negative, and every sale of more than
    on_hand leaves exactly one discrepancy saying how many units were missing."""
    state = make_state()
    model = dict(zip(SKUS, stock, strict=True))
    for sku, units in model.items():
        put_stock(state, sku, "paris", units)
    if model["belt"]:
        # A hold on the position: a forced sale may take held units (reserved > on_hand).
        reserve(state, "cart", ("belt", "paris", 1))
    for i, (sku, quantity, offline) in enumerate(sales):
        before = model[sku]
        forced = sale(f"r-{i}", (sku, quantity), force=True)
        if offline:
            result = state.apply(RecordOfflineSales((forced,)), NOW_MS + i)
            found = result.results[0].discrepancies
        else:
            found = state.apply(forced, NOW_MS + i).discrepancies
        model[sku] = max(before - quantity, 0)
        assert on_hand(state, sku) == model[sku] >= 0
        if quantity > before:
            [record] = found
            assert (record.expected, record.sold, record.missing) == (
                before,
                quantity,
                quantity - before,
            )
        else:
            assert found == ()
    state.check_invariants()


@settings(max_examples=40, deadline=None)
@given(
    queue=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(SKUS), st.integers(1, 4)),
        min_size=1,
        max_size=8,
    ),
    split=st.integers(0, 8),
)
def test_offline_queue_sent_twice_is_applied_once(
    queue: list[tuple[int, str, int]], split: int
) -> None:
    """Property: an offline queue replayed (whole, or its head again with the rest) equals
    the queue applied once: never doubled, original times kept, never refused."""
    sales = tuple(
        sale(f"q-{n}", (sku, quantity), at_ms=NOW_MS - 10_000 + n)
        for n, sku, quantity in {n: (n, s, q) for n, s, q in queue}.values()
    )
    once = make_state()
    put_stock(once, "bag", "paris", 2)
    first = once.apply(RecordOfflineSales(sales), NOW_MS)
    assert not any(x.duplicate for x in first.results)
    twice = make_state()
    put_stock(twice, "bag", "paris", 2)
    twice.apply(RecordOfflineSales(sales[:split] or sales), NOW_MS)
    again = twice.apply(RecordOfflineSales(sales), NOW_MS)
    assert [x.duplicate for x in again.results][: min(split, len(sales)) or len(sales)] == [
        True
    ] * (min(split, len(sales)) or len(sales))
    assert twice.store.to_json() == once.store.to_json()
    for sku in SKUS:
        assert on_hand(twice, sku) == on_hand(once, sku)
    times = {d.receipt_id: d.sold_at_ms for d in once.store.discrepancies}
    assert all(times[s.receipt_id] == s.sold_at_ms for s in sales if s.receipt_id in times)


def test_offline_queue_with_a_clashing_receipt_is_refused_whole() -> None:
    """A receipt sent twice in one call with different content refuses the call, naming it."""
    state = make_state()
    digest = state.digest()
    with pytest.raises(AlreadyExists, match=r"sales\[1\].receipt_id"):
        state.apply(RecordOfflineSales((sale("q", ("bag", 1)), sale("q", ("bag", 2)))), NOW_MS)
    assert state.digest() == digest


def test_return_to_shelf_or_inspection_and_release() -> None:
    """A return adds sellable units, or units to inspect that only a release makes sellable."""
    state = make_state()
    put_stock(state, "bag", "paris", 1)
    back = (ReturnLine("bag", 2), ReturnLine("scarf", 3, inspect=True))
    state.apply(RecordReturn("ret-1", "paris", back, 0, "r-0"), NOW_MS)
    assert on_hand(state, "bag") == 3
    assert on_hand(state, "scarf") == 0
    assert state.store.inspection == {("scarf", "paris"): 3}
    with pytest.raises(InvalidCommand, match=r"quantity: 4 units .* 3 are waiting"):
        state.apply(ReleaseInspection("rel-1", "scarf", "paris", 4, True), NOW_MS)
    state.apply(ReleaseInspection("rel-1", "scarf", "paris", 2, True), NOW_MS)
    assert state.apply(ReleaseInspection("rel-1", "scarf", "paris", 2, True), NOW_MS).replayed
    state.apply(ReleaseInspection("rel-2", "scarf", "paris", 1, False), NOW_MS)
    assert on_hand(state, "scarf") == 2
    assert state.store.inspection == {}
    state.check_invariants()


@settings(max_examples=50, deadline=None)
@given(
    shelf=st.integers(0, 4),
    returned=st.integers(1, 3),
    inspect=st.booleans(),
    wanted=st.integers(1, 6),
    same_sku=st.booleans(),
    force=st.booleans(),
)
def test_exchange_is_atomic(
    shelf: int, returned: int, inspect: bool, wanted: int, same_sku: bool, force: bool
) -> None:
    """Property: an exchange applies its return and its sale together or not at all; a refused
    sale leg leaves the return unapplied (state digest unchanged)."""
    state = make_state()
    put_stock(state, "bag", "paris", shelf)
    put_stock(state, "belt", "paris", 1)
    sold_sku = "belt" if same_sku else "bag"
    command = Exchange(
        "x-1",
        "paris",
        (ReturnLine("belt", returned, inspect),),
        (SaleLine(sold_sku, wanted),),
        force,
    )
    digest = state.digest()
    result = state.apply(command, NOW_MS)
    available = (1 + (0 if inspect else returned)) if same_sku else shelf
    if not force and wanted > available:
        assert result.outcome is Outcome.INSUFFICIENT_STOCK
        assert state.digest() == digest
        return
    assert result.outcome is Outcome.OK
    belt = 1 + (0 if inspect else returned) - (wanted if same_sku else 0)
    assert on_hand(state, "belt") == max(belt, 0)
    assert state.store.inspection.get(("belt", "paris"), 0) == (returned if inspect else 0)
    if not same_sku:
        assert on_hand(state, "bag") == max(shelf - wanted, 0)
    state.check_invariants()


def test_store_records_survive_replay_and_snapshot() -> None:
    """Journal replay and a snapshot round trip give the same digest, store book included."""
    state = make_state()
    commands: list[tuple[object, int]] = []

    def run(command: object, now_ms: int) -> None:
        state.apply(command, now_ms)  # type: ignore[arg-type]
        commands.append((command, now_ms))

    run(sale("r-1", ("bag", 2), force=True, at_ms=NOW_MS - 9), NOW_MS)
    run(RecordOfflineSales((sale("q-1", ("belt", 1), at_ms=NOW_MS - 99),)), NOW_MS + 1)
    run(RecordReturn("ret-1", "paris", (ReturnLine("scarf", 2, inspect=True),)), NOW_MS + 2)
    run(
        Exchange("x-1", "paris", (ReturnLine("bag", 1),), (SaleLine("belt", 1),), True),
        NOW_MS + 3,
    )
    run(ReleaseInspection("rel-1", "scarf", "paris", 1, False), NOW_MS + 4)
    assert len(state.store.discrepancies) == 3
    assert replayed_state(commands).digest() == state.digest()
    arrays, blobs = export_state(state)
    restored = import_state(arrays, blobs)
    assert restored.digest() == state.digest()
    restored.check_invariants()


def test_receipts_and_discrepancies_are_bounded() -> None:
    """Past max_retained_receipts the oldest id is forgotten; past max_retained_discrepancies
    the oldest record is dropped and counted as forgotten."""
    state = make_state(Limits(max_retained_receipts=2, max_retained_discrepancies=2))
    for i in range(3):
        state.apply(sale(f"r-{i}", ("bag", 1), force=True), NOW_MS)
    assert list(state.store.receipts) == ["r-1", "r-2"]
    assert [d.receipt_id for d in state.store.discrepancies] == ["r-1", "r-2"]
    assert state.store.forgotten_discrepancies == 1


def test_a_sale_sent_online_then_from_the_offline_queue_is_recorded_once() -> None:
    """The same receipt (same store and lines) sent online unforced, then resent in an offline
    queue with its till time, is a duplicate; other lines under that receipt are refused."""
    state = make_state()
    put_stock(state, "bag", "paris", 3)
    assert state.apply(sale("r-1", ("bag", 1)), NOW_MS).changed
    queued = sale("r-1", ("bag", 1), at_ms=NOW_MS - 5_000)
    result = state.apply(RecordOfflineSales((queued, sale("r-2", ("bag", 1)))), NOW_MS + 1)
    assert [x.duplicate for x in result.results] == [True, False]
    assert on_hand(state, "bag") == 1
    with pytest.raises(AlreadyExists, match=r"sales\[0\].receipt_id"):
        state.apply(RecordOfflineSales((sale("r-1", ("bag", 2)),)), NOW_MS + 2)
