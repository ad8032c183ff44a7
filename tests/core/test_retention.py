"""Finished reservations kept for idempotent retries: bounded by max_retained_reservations."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.config import ConfigError, load_config
from atpd.core.commands import Release, ReservationKind, Tick
from atpd.core.limits import Limits
from atpd.core.reservations import ReservationStatus
from atpd.core.results import NotFound, Outcome
from atpd.core.state import AtpState
from atpd.persistence.state_snapshot import export_state, import_state

from .support import make_state, put_stock, reserve, reserved

T0 = 1_000


def stocked(limits: Limits) -> AtpState:
    state = make_state(limits)
    put_stock(state, "sku-a", "paris", 1_000, now_ms=T0)
    return state


def reserve_and_release(state: AtpState, reservation_id: str, now_ms: int) -> None:
    assert reserve(state, reservation_id, ("sku-a", "paris", 1), now_ms=now_ms).outcome is (
        Outcome.OK
    )
    state.apply(Release(reservation_id), now_ms)


def test_oldest_finished_reservation_is_evicted_first() -> None:
    """Past the cap, the earliest closed reservation is forgotten; the newer ones stay."""
    state = stocked(Limits(max_retained_reservations=3))
    for i, reservation_id in enumerate(["r1", "r2", "r3", "r4"]):
        reserve_and_release(state, reservation_id, T0 + 10 * i)
    assert "r1" not in state.reservations
    assert [state.reservation(x).status for x in ("r2", "r3", "r4")] == [
        ReservationStatus.RELEASED
    ] * 3
    assert len(state.retention) == 3
    assert state.evicted_total == 1
    with pytest.raises(NotFound):
        state.reservation("r1")
    state.check_invariants()


def test_retry_of_an_evicted_id_reserves_again() -> None:
    """A late retry of an evicted reservation id is a new reservation: it holds stock again."""
    state = stocked(Limits(max_retained_reservations=1))
    reserve_and_release(state, "r1", T0)
    reserve_and_release(state, "r2", T0 + 1)
    again = reserve(state, "r1", ("sku-a", "paris", 1), now_ms=T0 + 2)
    assert again.outcome is Outcome.OK and not again.replayed
    assert again.reservation is not None
    assert again.reservation.status is ReservationStatus.HELD
    assert reserved(state, "sku-a", "paris") == 1
    # A retained id is still answered from its stored outcome.
    replay = reserve(state, "r2", ("sku-a", "paris", 1), now_ms=T0 + 3)
    assert replay.reservation is not None
    assert replay.replayed and replay.reservation.status is ReservationStatus.RELEASED
    state.check_invariants()


def test_reservation_closing_now_is_never_the_one_evicted() -> None:
    """Closes in one millisecond (ties sorted by id) keep the one just closed, at the cap."""
    state = stocked(Limits(max_retained_reservations=2))
    for reservation_id in ["c", "b", "a"]:
        reserve_and_release(state, reservation_id, T0)
        assert reservation_id in state.reservations
        assert len(state.retention) <= 2
    assert sorted(state.reservations) == ["a", "c"]


def test_open_reservations_are_never_evicted() -> None:
    """Only finished reservations count against the cap; open holds are never dropped."""
    state = stocked(Limits(max_retained_reservations=1))
    for i in range(5):
        reserve(state, f"open-{i}", ("sku-a", "paris", 1), now_ms=T0 + i)
    reserve_and_release(state, "done-1", T0 + 10)
    reserve_and_release(state, "done-2", T0 + 11)
    assert sorted(state.reservations) == ["done-2"] + [f"open-{i}" for i in range(5)]
    assert reserved(state, "sku-a", "paris") == 5
    state.check_invariants()


def test_expiries_past_the_cap_evict_in_one_tick() -> None:
    """Holds expiring together past the cap leave exactly the cap, the latest expired kept."""
    state = stocked(Limits(max_retained_reservations=2))
    for i in range(4):
        reserve(state, f"r{i}", ("sku-a", "paris", 1), now_ms=T0 + i, ttl_ms=1_000)
    result = state.apply(Tick(), T0 + 10_000)
    assert result.expired == ("r0", "r1", "r2", "r3") and result.changed
    assert sorted(state.reservations) == ["r2", "r3"]
    assert state.evicted_total == 2
    state.check_invariants()


def test_pos_sale_at_the_cap_is_retained() -> None:
    """A POS sale (closed in the Reserve itself) at the cap is kept for its retries."""
    state = stocked(Limits(max_retained_reservations=1))
    reserve_and_release(state, "cart", T0)
    sale = reserve(state, "sale", ("sku-a", "paris", 2), kind=ReservationKind.POS_SALE)
    assert sale.reservation is not None
    assert sale.reservation.status is ReservationStatus.FULFILLED
    assert sorted(state.reservations) == ["sale"]
    assert reserve(state, "sale", ("sku-a", "paris", 2), kind=ReservationKind.POS_SALE).replayed


def test_config_refuses_a_zero_cap(tmp_path: object) -> None:
    """max_retained_reservations is a [limits] config key and must be at least 1."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    good = tmp_path / "good.toml"
    good.write_text("[limits]\nmax_retained_reservations = 5\n")
    assert load_config(good).limits.max_retained_reservations == 5
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_retained_reservations = 0\n")
    with pytest.raises(ConfigError, match="limits"):
        load_config(bad)


# One step of a random workload: (action, reservation number, time step in ms).
steps = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "release", "tick", "snapshot"]),
        st.integers(0, 11),
        st.integers(0, 700),
    ),
    max_size=60,
)


def run(state: AtpState, actions: list[tuple[str, int, int]], snapshot: bool) -> AtpState:
    now_ms = state.now_ms
    for action, number, step_ms in actions:
        now_ms += step_ms
        reservation_id = f"r{number}"
        if action == "reserve":
            reserve(state, reservation_id, ("sku-a", "paris", 1), now_ms=now_ms, ttl_ms=1_000)
        elif action == "release" and reservation_id in state.reservations:
            # Time moves first: a finished reservation past its retention is purged before the
            # release looks for it, which is NOT_FOUND (the same in every run).
            with contextlib.suppress(NotFound):
                state.apply(Release(reservation_id), now_ms)
        elif action == "tick":
            state.apply(Tick(), now_ms)
        elif action == "snapshot" and snapshot:
            arrays, blobs = export_state(state)
            state = import_state(arrays, blobs, state.limits)
        assert len(state.retention) <= state.limits.max_retained_reservations
        state.check_invariants()
    return state


@settings(max_examples=150, deadline=None)
@given(actions=steps, cap=st.integers(1, 4))
def test_eviction_is_a_pure_function_of_the_commands(
    actions: list[tuple[str, int, int]], cap: int
) -> None:
    """Eviction replays identically, and a snapshot taken mid-way keeps the retention order."""
    limits = Limits(max_retained_reservations=cap, terminal_retention_ms=3_000)
    straight = run(stocked(limits), actions, snapshot=False)
    replayed = run(stocked(limits), actions, snapshot=False)
    restored = run(stocked(limits), actions, snapshot=True)
    assert straight.digest() == replayed.digest() == restored.digest()
    order = straight.reservations.retention_order()
    assert order == restored.reservations.retention_order()
    assert straight.evicted_total == replayed.evicted_total
