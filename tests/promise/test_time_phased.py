"""Time-phased ATP (core/time_phased.py) against a unit-by-unit reference, and its vectorised
form against the scalar one; ATP now as the core computes it splits into on hand and arriving."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core import time_phased
from atpd.core.atp import atp
from atpd.core.supply import Supply, SupplyKind

pytestmark = pytest.mark.core
NOW_MS = 1_764_000_000_000
HOUR_MS = 3_600_000

supply_lists = st.lists(
    st.tuples(
        st.integers(NOW_MS, NOW_MS + 5 * HOUR_MS).map(lambda t: t - t % HOUR_MS + NOW_MS % HOUR_MS),
        st.integers(1, 6),
    ),
    max_size=6,
)


def reference_available(free: int, supply: list[tuple[int, int]], at_ms: int) -> int:
    """Units a caller can have at an instant, straight from the ATP formula."""
    return atp(free, 0, 0, supply=sum(q for eta, q in supply if eta <= at_ms))


def reference_earliest(free: int, supply: list[tuple[int, int]], quantity: int) -> int | None:
    """Walk every instant that matters and return the first one with `quantity` units."""
    for at_ms in sorted({NOW_MS, *(eta for eta, _ in supply)}):
        if reference_available(free, supply, at_ms) >= quantity:
            return at_ms
    return None


@settings(max_examples=300)
@given(st.integers(-15, 20), supply_lists, st.integers(1, 40))
def test_schedule_matches_unit_by_unit_reference(
    free: int, supply: list[tuple[int, int]], quantity: int
) -> None:
    """From ATP now and the counted supply alone, the schedule gives each quantity the date
    the ATP formula gives it, and its steps reach ATP now."""
    atp_now = atp(free, 0, 0, supply=sum(q for _, q in supply))
    result = time_phased.schedule(atp_now, supply, NOW_MS)
    assert result.total == atp_now
    assert result.earliest_ms_for(quantity) == reference_earliest(free, supply, quantity)
    for step in result.steps:
        assert reference_available(free, supply, step.available_from_ms) == (
            step.cumulative_quantity
        )
    assert result.on_hand_now == reference_available(free, supply, NOW_MS)
    cumulative = [step.cumulative_quantity for step in result.steps]
    assert cumulative == sorted(set(cumulative))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-15, 20), supply_lists, st.integers(1, 40)), max_size=12))
def test_vectorised_earliest_equals_scalar(
    positions: list[tuple[int, list[tuple[int, int]], int]],
) -> None:
    """earliest_many over many positions equals Schedule.earliest_ms_for of each."""
    atp_now = np.array(
        [atp(f, 0, 0, supply=sum(q for _, q in s)) for f, s, _ in positions], np.int64
    )
    wanted = np.array([q for _, _, q in positions], np.int64)
    offsets = np.cumsum([0, *(len(s) for _, s, _ in positions)], dtype=np.int64)
    flat = [entry for _, s, _ in positions for entry in s]
    eta = np.array([e for e, _ in flat], np.int64)
    quantity = np.array([q for _, q in flat], np.int64)
    out = time_phased.earliest_many(atp_now, wanted, offsets, eta, quantity, NOW_MS)
    for index, (_, supply, want) in enumerate(positions):
        expected = time_phased.schedule(int(atp_now[index]), supply, NOW_MS).earliest_ms_for(want)
        assert out[index] == (time_phased.NEVER if expected is None else expected)


def test_three_now_ten_more_later() -> None:
    """5 on hand, 2 reserved, a PO of 10 in 3 days counted: 3 now, 13 from its ETA."""
    supply = [(NOW_MS + 72 * HOUR_MS, 10)]
    atp_now = atp(5, 2, 0, supply=10)
    result = time_phased.schedule(atp_now, supply, NOW_MS)
    assert [(s.available_from_ms, s.cumulative_quantity) for s in result.steps] == [
        (NOW_MS, 3),
        (NOW_MS + 72 * HOUR_MS, 13),
    ]
    assert result.on_hand_now == 3
    assert result.earliest_ms_for(4) == NOW_MS + 72 * HOUR_MS
    assert result.earliest_ms_for(14) is None


def test_counted_supply_is_what_the_core_counts() -> None:
    """counted_supply keeps exactly the entries supply.eligible counts: kind, ETA not past,
    within the horizon, at this node."""
    entries = [
        Supply("a", "S", "N", 0, 0, 4, NOW_MS + HOUR_MS, SupplyKind.PURCHASE_ORDER),
        Supply("b", "S", "N", 0, 0, 5, NOW_MS - 1, SupplyKind.PURCHASE_ORDER),
        Supply("c", "S", "N", 0, 0, 6, NOW_MS + 10 * HOUR_MS, SupplyKind.PURCHASE_ORDER),
        Supply("d", "S", "N", 0, 0, 7, NOW_MS + HOUR_MS, SupplyKind.TRANSFER),
        Supply("e", "S", "M", 0, 1, 8, NOW_MS + HOUR_MS, SupplyKind.PURCHASE_ORDER),
    ]
    kinds = frozenset({SupplyKind.PURCHASE_ORDER})
    counted = time_phased.counted_supply(entries, 0, kinds, NOW_MS, 5 * HOUR_MS)
    assert counted == [(NOW_MS + HOUR_MS, 4)]


def test_bad_supply_is_refused_naming_the_entry() -> None:
    """Supply before now or with no units, or a negative ATP, is refused naming the field."""
    with pytest.raises(ValueError, match=r"supply\[1\].eta_ms"):
        time_phased.schedule(3, [(NOW_MS, 1), (NOW_MS - 1, 1)], NOW_MS)
    with pytest.raises(ValueError, match=r"supply\[0\].quantity"):
        time_phased.schedule(3, [(NOW_MS, 0)], NOW_MS)
    with pytest.raises(ValueError, match="atp_now"):
        time_phased.schedule(-1, [], NOW_MS)
    with pytest.raises(ValueError, match="quantity: 0"):
        time_phased.schedule(1, [], NOW_MS).earliest_ms_for(0)
