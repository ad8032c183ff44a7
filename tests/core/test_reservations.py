"""Reservations: all-or-nothing holds, idempotency, exact expiry, confirm / fulfil / release."""

from __future__ import annotations

import pytest

from atpd.core.commands import (
    AdjustStock,
    Confirm,
    Fulfil,
    Line,
    Maker,
    Release,
    ReservationKind,
    Reserve,
    SetStock,
    Tick,
)
from atpd.core.limits import Limits
from atpd.core.reservations import ReservationStatus
from atpd.core.results import (
    AlreadyExists,
    InvalidCommand,
    LimitExceeded,
    NotFound,
    Outcome,
    Shortage,
    ShortageReason,
)
from atpd.core.results import ReservationResult as Result
from atpd.core.state import AtpState

from .support import (
    TTL_MS,
    atp,
    make_state,
    put_stock,
    reserve,
    reserved,
    set_node_enabled,
)

T0 = 1_000


def stocked_state(limits: Limits | None = None) -> AtpState:
    """Four nodes; sku-a: 10 at paris, 4 at lyon; sku-b: 3 at berlin (clock at T0)."""
    state = make_state(limits)
    put_stock(state, "sku-a", "paris", 10, now_ms=T0)
    put_stock(state, "sku-a", "lyon", 4)
    put_stock(state, "sku-b", "berlin", 3)
    return state


@pytest.fixture
def state() -> AtpState:
    return stocked_state()


def confirm(state: AtpState, reservation_id: str, now_ms: int | None = None) -> Result:
    result: Result = state.apply(
        Confirm(reservation_id), state.now_ms if now_ms is None else now_ms
    )
    return result


def release(state: AtpState, reservation_id: str, now_ms: int | None = None) -> Result:
    result: Result = state.apply(
        Release(reservation_id), state.now_ms if now_ms is None else now_ms
    )
    return result


def fulfil(
    state: AtpState,
    reservation_id: str,
    *lines: tuple[str, str, int],
    release_remainder: bool = False,
    now_ms: int | None = None,
) -> Result:
    command = Fulfil(reservation_id, tuple(Line(s, n, q) for s, n, q in lines), release_remainder)
    result: Result = state.apply(command, state.now_ms if now_ms is None else now_ms)
    return result


# ---------------------------------------------------------------- reserve


def test_reserve_holds_stock_on_every_line(state: AtpState) -> None:
    """A successful multi-line Reserve adds each line to reserved and lowers ATP."""
    result = reserve(state, "r1", ("sku-a", "paris", 6), ("sku-b", "berlin", 3))
    assert result.outcome is Outcome.OK
    assert result.changed and not result.replayed
    reservation = result.reservation
    assert reservation is not None
    assert reservation.status is ReservationStatus.HELD
    assert reservation.held == [6, 3]
    assert reservation.created_at_ms == T0
    assert reservation.expires_at_ms == T0 + TTL_MS
    assert (reserved(state, "sku-a", "paris"), atp(state, "sku-a", "paris")) == (6, 4)
    assert (reserved(state, "sku-b", "berlin"), atp(state, "sku-b", "berlin")) == (3, 0)
    assert state.position("sku-a", "paris").on_hand == 10
    assert state.open_reservations == 1
    assert state.next_expiry_ms() == T0 + TTL_MS
    state.check_invariants()


def test_reserve_exactly_atp_succeeds_and_one_more_fails(state: AtpState) -> None:
    """The last unit can be reserved; the next one cannot (no oversell)."""
    put_stock(state, "sku-a", "lyon", 4, safety_stock=1)
    assert reserve(state, "r1", ("sku-a", "lyon", 3)).outcome is Outcome.OK
    result = reserve(state, "r2", ("sku-a", "lyon", 1))
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages == (Shortage("sku-a", "lyon", 1, 0),)


def test_reserve_is_all_or_nothing_and_lists_every_short_line(state: AtpState) -> None:
    """Any short line refuses the whole Reserve; every short line is listed with its ATP."""
    before = state.digest()
    result = reserve(
        state,
        "r1",
        ("sku-b", "berlin", 4),
        ("sku-a", "paris", 10),
        ("sku-a", "lyon", 5),
        ("sku-new", "soho", 1),
    )
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.reservation is None
    assert not result.changed
    assert result.shortages == (
        Shortage("sku-b", "berlin", 4, 3),
        Shortage("sku-a", "lyon", 5, 4),
        Shortage("sku-new", "soho", 1, 0, ShortageReason.UNKNOWN_SKU),
    )
    assert state.digest() == before
    assert "sku-new" not in state.skus
    assert "r1" not in state.reservations


def test_shortage_reports_atp_after_holds_and_safety(state: AtpState) -> None:
    """The available figure in a shortage is ATP: on_hand - reserved - safety."""
    put_stock(state, "sku-a", "paris", 10, safety_stock=2)
    reserve(state, "r1", ("sku-a", "paris", 5))
    result = reserve(state, "r2", ("sku-a", "paris", 4))
    assert result.shortages == (Shortage("sku-a", "paris", 4, 3),)


def test_refused_reserve_is_reevaluated_on_retry(state: AtpState) -> None:
    """A refused Reserve stores nothing: the same id succeeds once stock arrives."""
    command = Reserve("r1", (Line("sku-b", "berlin", 5),), TTL_MS)
    assert state.apply(command, T0).outcome is Outcome.INSUFFICIENT_STOCK
    state.apply(AdjustStock("sku-b", "berlin", 2), T0 + 1)
    result = state.apply(command, T0 + 2)
    assert result.outcome is Outcome.OK
    assert not result.replayed
    assert result.reservation is not None
    assert result.reservation.created_at_ms == T0 + 2


def test_reserve_on_disabled_node_is_refused(state: AtpState) -> None:
    """A line at a disabled node answers NODE_DISABLED naming it; nothing is held."""
    set_node_enabled(state, "lyon", False, T0)
    before = state.digest()
    result = reserve(state, "r1", ("sku-a", "paris", 1), ("sku-a", "lyon", 1))
    assert result.outcome is Outcome.NODE_DISABLED
    assert result.disabled_node_id == "lyon"
    assert result.reservation is None
    assert state.digest() == before
    set_node_enabled(state, "lyon", True, T0)
    assert reserve(state, "r1", ("sku-a", "lyon", 1)).outcome is Outcome.OK


def test_reserve_at_unknown_node_is_not_found(state: AtpState) -> None:
    """A line naming an unknown node raises NotFound naming the line; nothing is stored."""
    before = state.digest()
    with pytest.raises(NotFound, match=r"lines\[1\]\.node_id"):
        reserve(state, "r1", ("sku-a", "paris", 1), ("sku-a", "nowhere", 1))
    assert state.digest() == before


def test_same_id_same_content_replays_the_stored_reservation(state: AtpState) -> None:
    """A retried Reserve (lines in any order) returns the stored one, replayed, holding once."""
    first = reserve(state, "r1", ("sku-a", "paris", 2), ("sku-b", "berlin", 1))
    again = reserve(state, "r1", ("sku-b", "berlin", 1), ("sku-a", "paris", 2))
    assert again.outcome is Outcome.OK
    assert again.replayed
    assert not again.changed
    assert again.reservation == first.reservation
    assert reserved(state, "sku-a", "paris") == 2
    assert state.open_reservations == 1


def test_replay_is_answered_even_when_stock_is_gone(state: AtpState) -> None:
    """The replay returns the stored outcome without re-checking stock."""
    reserve(state, "r1", ("sku-b", "berlin", 3))
    state.apply(SetStock("sku-b", "berlin", 0, 99), T0)
    again = reserve(state, "r1", ("sku-b", "berlin", 3))
    assert again.outcome is Outcome.OK and again.replayed


@pytest.mark.parametrize("end", ["expired", "released", "fulfilled"])
def test_replay_after_terminal_status_returns_it(state: AtpState, end: str) -> None:
    """A retry after expiry / release / fulfilment returns the terminal reservation, no new hold."""
    reserve(state, "r1", ("sku-a", "paris", 2))
    now_ms = T0
    if end == "expired":
        now_ms = T0 + TTL_MS
        state.apply(Tick(), now_ms)
    elif end == "released":
        release(state, "r1")
    else:
        fulfil(state, "r1")
    again = reserve(state, "r1", ("sku-a", "paris", 2), now_ms=now_ms)
    assert again.replayed and again.reservation is not None
    assert again.reservation.status is ReservationStatus[end.upper()]
    assert reserved(state, "sku-a", "paris") == 0


@pytest.mark.parametrize(
    "changed",
    [
        Reserve("r1", (Line("sku-a", "paris", 3),), TTL_MS),
        Reserve("r1", (Line("sku-a", "lyon", 2),), TTL_MS),
        Reserve("r1", (Line("sku-a", "paris", 2), Line("sku-b", "berlin", 1)), TTL_MS),
        Reserve("r1", (Line("sku-a", "paris", 2),), TTL_MS + 1),
        Reserve("r1", (Line("sku-a", "paris", 2),), TTL_MS, ReservationKind.ORDER),
        Reserve("r1", (Line("sku-a", "paris", 2),), TTL_MS, channel="web"),
        Reserve("r1", (Line("sku-a", "paris", 2),), TTL_MS, segment="vip"),
    ],
    ids=["quantity", "node", "extra-line", "ttl", "kind", "channel", "segment"],
)
def test_same_id_different_content_already_exists(state: AtpState, changed: Reserve) -> None:
    """Reusing an id with any different field raises AlreadyExists and changes nothing."""
    reserve(state, "r1", ("sku-a", "paris", 2))
    before = state.digest()
    with pytest.raises(AlreadyExists, match="reservation_id"):
        state.apply(changed, T0)
    assert state.digest() == before


def test_pos_sale_reserves_and_fulfils_at_once(state: AtpState) -> None:
    """A POS_SALE takes the goods out immediately: FULFILLED, on_hand drops, nothing held."""
    result = reserve(state, "pos1", ("sku-a", "paris", 3), kind=ReservationKind.POS_SALE)
    assert result.outcome is Outcome.OK
    reservation = result.reservation
    assert reservation is not None
    assert reservation.status is ReservationStatus.FULFILLED
    assert reservation.held == [0]
    assert reservation.fulfilled == [3]
    position = state.position("sku-a", "paris")
    assert (position.on_hand, position.reserved, position.atp) == (7, 0, 7)
    assert state.open_reservations == 0
    assert state.next_expiry_ms() is None
    state.check_invariants()


def test_pos_sale_is_bounded_by_atp(state: AtpState) -> None:
    """A POS_SALE beyond ATP is INSUFFICIENT_STOCK like any Reserve."""
    reserve(state, "r1", ("sku-b", "berlin", 2))
    result = reserve(state, "pos1", ("sku-b", "berlin", 2), kind=ReservationKind.POS_SALE)
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages == (Shortage("sku-b", "berlin", 2, 1),)


def test_pos_sale_replay_ignores_ttl(state: AtpState) -> None:
    """A POS_SALE retry with another ttl is the same sale (a sale has no ttl)."""
    reserve(state, "pos1", ("sku-a", "paris", 1), kind=ReservationKind.POS_SALE, ttl_ms=5_000)
    again = reserve(state, "pos1", ("sku-a", "paris", 1), kind=ReservationKind.POS_SALE)
    assert again.replayed
    assert state.position("sku-a", "paris").on_hand == 9


def test_open_reservation_limit() -> None:
    """Beyond max_open_reservations a Reserve raises LimitExceeded; closing one frees a slot."""
    state = stocked_state(Limits(max_open_reservations=2))
    reserve(state, "r1", ("sku-a", "paris", 1))
    reserve(state, "r2", ("sku-a", "paris", 1))
    with pytest.raises(LimitExceeded, match="max_open_reservations"):
        reserve(state, "r3", ("sku-a", "paris", 1))
    assert "r3" not in state.reservations
    release(state, "r1")
    assert reserve(state, "r3", ("sku-a", "paris", 1)).outcome is Outcome.OK


# ---------------------------------------------------------------- expiry


def test_hold_is_still_held_one_ms_before_expiry(state: AtpState) -> None:
    """At expires_at - 1 the hold is HELD and its stock still reserved."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = state.apply(Tick(), T0 + TTL_MS - 1)
    assert result.expired == ()
    assert state.reservation("r1").status is ReservationStatus.HELD
    assert reserved(state, "sku-a", "paris") == 4


def test_hold_expires_exactly_at_created_plus_ttl(state: AtpState) -> None:
    """At expires_at the hold is EXPIRED and its stock freed."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = state.apply(Tick(), T0 + TTL_MS)
    assert result.expired == ("r1",)
    assert result.changed
    reservation = state.reservation("r1")
    assert reservation.status is ReservationStatus.EXPIRED
    assert reservation.held == [0]
    assert reservation.updated_at_ms == T0 + TTL_MS
    assert (reserved(state, "sku-a", "paris"), atp(state, "sku-a", "paris")) == (0, 10)
    assert state.open_reservations == 0
    assert state.next_expiry_ms() is None
    state.check_invariants()


def test_any_command_sees_due_expiries_first(state: AtpState) -> None:
    """A Reserve arriving at another hold's expiry time sees that stock already freed."""
    reserve(state, "r1", ("sku-b", "berlin", 3))
    result = reserve(state, "r2", ("sku-b", "berlin", 3), now_ms=T0 + TTL_MS)
    assert result.outcome is Outcome.OK
    assert state.last_expired == ("r1",)
    assert state.reservation("r1").status is ReservationStatus.EXPIRED


def test_late_noticed_expiry_is_dated_at_expires_at(state: AtpState) -> None:
    """An expiry noticed long after its time records the expiry time, not the notice time."""
    reserve(state, "r1", ("sku-a", "paris", 1))
    state.apply(Tick(), T0 + 10 * TTL_MS)
    assert state.reservation("r1").updated_at_ms == T0 + TTL_MS


def test_expiries_come_in_time_order_then_id_order(state: AtpState) -> None:
    """One Tick expires every due hold, ordered by expiry time then id; later ones stay."""
    reserve(state, "r-b", ("sku-a", "paris", 1), ttl_ms=2_000)
    reserve(state, "r-a", ("sku-a", "paris", 1), ttl_ms=2_000)
    reserve(state, "r-c", ("sku-a", "paris", 1), ttl_ms=1_000)
    reserve(state, "r-d", ("sku-a", "paris", 1), ttl_ms=3_000)
    assert state.next_expiry_ms() == T0 + 1_000
    result = state.apply(Tick(), T0 + 2_000)
    assert result.expired == ("r-c", "r-a", "r-b")
    assert state.reservation("r-d").status is ReservationStatus.HELD
    assert state.next_expiry_ms() == T0 + 3_000
    assert reserved(state, "sku-a", "paris") == 1


def test_rejected_command_still_expires_due_holds(state: AtpState) -> None:
    """A command refused with NotFound leaves exactly the state a Tick at that time would."""
    twin = stocked_state()
    for each in (state, twin):
        reserve(each, "r1", ("sku-a", "paris", 4))
    with pytest.raises(NotFound):
        state.apply(SetStock("sku-a", "nowhere", 1, 1), T0 + TTL_MS)
    assert state.last_expired == ("r1",)
    twin.apply(Tick(), T0 + TTL_MS)
    assert state.digest() == twin.digest()


def test_rejected_command_with_nothing_due_leaves_no_trace(state: AtpState) -> None:
    """A refused command with no expiry or purge due changes nothing, not even the clock."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    before = state.digest()
    with pytest.raises(NotFound):
        state.apply(Confirm("nope"), T0 + 10)
    assert state.now_ms == T0
    assert state.digest() == before


def test_time_never_goes_backwards(state: AtpState) -> None:
    """apply refuses a now_ms earlier than the previous command's."""
    with pytest.raises(AssertionError):
        state.apply(Tick(), T0 - 1)


def test_terminal_reservations_are_purged_after_retention() -> None:
    """A terminal reservation is kept terminal_retention_ms, then forgotten (id reusable)."""
    state = stocked_state(Limits(terminal_retention_ms=5_000))
    reserve(state, "r1", ("sku-a", "paris", 2))
    release(state, "r1", now_ms=T0 + 100)
    state.apply(Tick(), T0 + 5_099)
    assert "r1" in state.reservations
    state.apply(Tick(), T0 + 5_100)
    assert "r1" not in state.reservations
    with pytest.raises(NotFound):
        state.reservation("r1")
    again = reserve(state, "r1", ("sku-a", "paris", 2))
    assert again.outcome is Outcome.OK and not again.replayed
    assert again.reservation is not None
    assert again.reservation.status is ReservationStatus.HELD
    state.check_invariants()


def test_expired_reservation_retention_counts_from_expiry() -> None:
    """An expired hold is forgotten retention_ms after expires_at, even if noticed late."""
    state = stocked_state(Limits(terminal_retention_ms=5_000))
    reserve(state, "r1", ("sku-a", "paris", 2), ttl_ms=1_000)
    state.apply(Tick(), T0 + 1_000 + 4_999)
    assert state.reservation("r1").status is ReservationStatus.EXPIRED
    state.apply(Tick(), T0 + 1_000 + 5_000)
    assert "r1" not in state.reservations


def test_tick_that_only_purges_reports_a_change() -> None:
    """A Tick that forgets an aged terminal reservation, expiring nothing, reports changed."""
    state = stocked_state(Limits(terminal_retention_ms=5_000))
    reserve(state, "r1", ("sku-a", "paris", 2))
    release(state, "r1")
    result = state.apply(Tick(), T0 + 5_000)
    assert result.expired == ()
    assert result.changed
    assert "r1" not in state.reservations
    assert not state.apply(Tick(), T0 + 5_001).changed


def test_expiry_and_purge_due_in_one_step_leave_nothing_behind() -> None:
    """A jump past expires_at + retention expires and forgets the hold in the same command."""
    state = stocked_state(Limits(terminal_retention_ms=5_000))
    reserve(state, "r1", ("sku-a", "paris", 2), ttl_ms=1_000)
    result = state.apply(Tick(), T0 + 1_000 + 5_000)
    assert result.expired == ("r1",)
    assert "r1" not in state.reservations


# ---------------------------------------------------------------- confirm


def test_confirm_stops_expiry(state: AtpState) -> None:
    """A confirmed hold never expires and keeps its stock reserved."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = confirm(state, "r1", T0 + 10)
    assert result.outcome is Outcome.OK and result.changed
    reservation = result.reservation
    assert reservation.status is ReservationStatus.CONFIRMED
    assert reservation.expires_at_ms == 0
    assert reservation.updated_at_ms == T0 + 10
    assert state.next_expiry_ms() is None
    state.apply(Tick(), T0 + 100 * TTL_MS)
    assert state.reservation("r1").status is ReservationStatus.CONFIRMED
    assert reserved(state, "sku-a", "paris") == 4
    state.check_invariants()


def test_confirm_twice_is_ok_and_unchanged(state: AtpState) -> None:
    """Confirming a confirmed reservation answers OK without a change."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    confirm(state, "r1")
    result = confirm(state, "r1")
    assert result.outcome is Outcome.OK
    assert not result.changed


def test_confirm_at_expiry_time_is_expired(state: AtpState) -> None:
    """A Confirm arriving exactly at expires_at finds the hold EXPIRED."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = confirm(state, "r1", T0 + TTL_MS)
    assert result.outcome is Outcome.EXPIRED
    assert result.reservation.status is ReservationStatus.EXPIRED
    assert reserved(state, "sku-a", "paris") == 0


def test_confirm_one_ms_before_expiry_wins(state: AtpState) -> None:
    """A Confirm at expires_at - 1 confirms the hold."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    assert confirm(state, "r1", T0 + TTL_MS - 1).outcome is Outcome.OK
    state.apply(Tick(), T0 + TTL_MS)
    assert state.reservation("r1").status is ReservationStatus.CONFIRMED


@pytest.mark.parametrize("end", ["released", "fulfilled"])
def test_confirm_of_closed_reservation_is_invalid_state(state: AtpState, end: str) -> None:
    """Confirming a released or fulfilled reservation answers INVALID_STATE, no change."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    if end == "released":
        release(state, "r1")
    else:
        fulfil(state, "r1")
    before = state.digest()
    result = confirm(state, "r1")
    assert result.outcome is Outcome.INVALID_STATE
    assert not result.changed
    assert state.digest() == before


def test_confirm_of_unknown_reservation_is_not_found(state: AtpState) -> None:
    """Confirm, Release and Fulfil of an unknown id raise NotFound."""
    for command in (Confirm("nope"), Release("nope"), Fulfil("nope")):
        with pytest.raises(NotFound, match="reservation_id"):
            state.apply(command, T0)


# ---------------------------------------------------------------- release


@pytest.mark.parametrize("confirmed", [False, True])
def test_release_frees_the_stock(state: AtpState, confirmed: bool) -> None:
    """Releasing a held or confirmed reservation frees every line and closes it."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 1))
    if confirmed:
        confirm(state, "r1")
    result = release(state, "r1", T0 + 5)
    assert result.outcome is Outcome.OK and result.changed
    assert result.reservation.status is ReservationStatus.RELEASED
    assert result.reservation.held == [0, 0]
    assert result.reservation.updated_at_ms == T0 + 5
    assert reserved(state, "sku-a", "paris") == reserved(state, "sku-b", "berlin") == 0
    assert state.open_reservations == 0
    assert state.next_expiry_ms() is None
    state.check_invariants()


def test_release_twice_is_ok_and_unchanged(state: AtpState) -> None:
    """A second Release answers OK without a change."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    release(state, "r1")
    before = state.digest()
    result = release(state, "r1")
    assert result.outcome is Outcome.OK and not result.changed
    assert state.digest() == before


def test_release_of_expired_is_ok_and_unchanged(state: AtpState) -> None:
    """Releasing an expired hold answers OK; it stays EXPIRED."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = release(state, "r1", T0 + TTL_MS)
    assert result.outcome is Outcome.OK and not result.changed
    assert result.reservation.status is ReservationStatus.EXPIRED


def test_release_of_fulfilled_is_invalid_state(state: AtpState) -> None:
    """The goods left: a fulfilled reservation cannot be released."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    fulfil(state, "r1")
    result = release(state, "r1")
    assert result.outcome is Outcome.INVALID_STATE
    assert state.position("sku-a", "paris").on_hand == 6


def test_release_after_partial_fulfil_frees_only_the_rest(state: AtpState) -> None:
    """Release after a partial fulfilment frees what is still held; what left stays gone."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 2))
    fulfil(state, "r1", ("sku-a", "paris", 1))
    result = release(state, "r1")
    assert result.reservation.status is ReservationStatus.RELEASED
    assert result.reservation.fulfilled == [1, 0]
    assert state.position("sku-a", "paris").on_hand == 9
    assert atp(state, "sku-a", "paris") == 9
    assert atp(state, "sku-b", "berlin") == 3
    state.check_invariants()


# ---------------------------------------------------------------- fulfil


@pytest.mark.parametrize("confirmed", [False, True])
def test_fulfil_everything_held(state: AtpState, confirmed: bool) -> None:
    """Fulfil without lines takes out everything held: on_hand and reserved drop, FULFILLED."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 3))
    if confirmed:
        confirm(state, "r1")
    result = fulfil(state, "r1", now_ms=T0 + 7)
    assert result.outcome is Outcome.OK and result.changed
    reservation = result.reservation
    assert reservation.status is ReservationStatus.FULFILLED
    assert reservation.held == [0, 0]
    assert reservation.fulfilled == [4, 3]
    assert reservation.updated_at_ms == T0 + 7
    paris = state.position("sku-a", "paris")
    berlin = state.position("sku-b", "berlin")
    assert (paris.on_hand, paris.reserved, paris.atp) == (6, 0, 6)
    assert (berlin.on_hand, berlin.reserved, berlin.atp) == (0, 0, 0)
    assert state.open_reservations == 0
    assert state.next_expiry_ms() is None
    state.check_invariants()


def test_fulfil_a_subset_keeps_the_rest_held(state: AtpState) -> None:
    """Fulfilling some lines (or part of one) keeps the remainder held and expiring."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 3))
    result = fulfil(state, "r1", ("sku-a", "paris", 3))
    reservation = result.reservation
    assert result.outcome is Outcome.OK
    assert reservation.status is ReservationStatus.HELD
    assert reservation.held == [1, 3]
    assert reservation.fulfilled == [3, 0]
    position = state.position("sku-a", "paris")
    assert (position.on_hand, position.reserved, position.atp) == (7, 1, 6)
    assert state.next_expiry_ms() == T0 + TTL_MS
    state.check_invariants()
    # The rest expires at the original time; what left stays gone.
    state.apply(Tick(), T0 + TTL_MS)
    reservation = state.reservation("r1")  # a result is a copy as of its command
    assert reservation.status is ReservationStatus.EXPIRED
    assert reservation.fulfilled == [3, 0]
    assert state.position("sku-a", "paris").on_hand == 7
    assert atp(state, "sku-b", "berlin") == 3
    state.check_invariants()


def test_fulfil_all_lines_piecewise_ends_fulfilled(state: AtpState) -> None:
    """When partial fulfilments leave nothing held, the reservation is FULFILLED."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 3))
    fulfil(state, "r1", ("sku-b", "berlin", 3), ("sku-a", "paris", 1))
    result = fulfil(state, "r1", ("sku-a", "paris", 3))
    assert result.reservation.status is ReservationStatus.FULFILLED
    assert result.reservation.fulfilled == [4, 3]
    assert state.open_reservations == 0
    state.check_invariants()


def test_fulfil_with_release_remainder_frees_the_rest(state: AtpState) -> None:
    """release_remainder takes out the given lines and frees everything else held."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 3))
    result = fulfil(state, "r1", ("sku-a", "paris", 1), release_remainder=True)
    reservation = result.reservation
    assert reservation.status is ReservationStatus.FULFILLED
    assert reservation.held == [0, 0]
    assert reservation.fulfilled == [1, 0]
    assert state.position("sku-a", "paris").on_hand == 9
    assert atp(state, "sku-a", "paris") == 9
    assert atp(state, "sku-b", "berlin") == 3
    assert state.open_reservations == 0
    state.check_invariants()


def test_fulfil_more_than_held_is_refused(state: AtpState) -> None:
    """A line above what is still held answers EXCEEDS_HELD and changes nothing."""
    reserve(state, "r1", ("sku-a", "paris", 4), ("sku-b", "berlin", 3))
    fulfil(state, "r1", ("sku-a", "paris", 3))
    before = state.digest()
    result = fulfil(state, "r1", ("sku-b", "berlin", 1), ("sku-a", "paris", 2))
    assert result.outcome is Outcome.EXCEEDS_HELD
    assert not result.changed
    assert state.digest() == before


def test_fulfil_of_a_foreign_line_is_invalid(state: AtpState) -> None:
    """A fulfil line that is not a line of the reservation raises InvalidCommand."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    before = state.digest()
    with pytest.raises(InvalidCommand, match=r"lines\[0\]"):
        fulfil(state, "r1", ("sku-a", "lyon", 1))
    assert state.digest() == before


def test_fulfil_at_expiry_time_is_expired(state: AtpState) -> None:
    """A Fulfil arriving exactly at expires_at answers EXPIRED; nothing leaves."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    result = fulfil(state, "r1", now_ms=T0 + TTL_MS)
    assert result.outcome is Outcome.EXPIRED
    assert state.position("sku-a", "paris").on_hand == 10


def test_fulfil_again_is_ok_and_unchanged(state: AtpState) -> None:
    """A retried whole Fulfil of a fulfilled reservation answers OK without a change."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    fulfil(state, "r1")
    before = state.digest()
    result = fulfil(state, "r1")
    assert result.outcome is Outcome.OK and not result.changed
    assert state.digest() == before


def test_fulfil_lines_of_fulfilled_is_invalid_state(state: AtpState) -> None:
    """A Fulfil naming lines of an already fulfilled reservation answers INVALID_STATE."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    fulfil(state, "r1")
    assert fulfil(state, "r1", ("sku-a", "paris", 1)).outcome is Outcome.INVALID_STATE


def test_fulfil_of_released_is_invalid_state(state: AtpState) -> None:
    """A released reservation cannot be fulfilled."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    release(state, "r1")
    assert fulfil(state, "r1").outcome is Outcome.INVALID_STATE
    assert state.position("sku-a", "paris").on_hand == 10


def test_fulfil_after_recount_below_held_clamps_on_hand_at_zero(state: AtpState) -> None:
    """If a recount put on_hand below what is held, fulfilment leaves on_hand at 0, not below."""
    reserve(state, "r1", ("sku-a", "paris", 6))
    state.apply(SetStock("sku-a", "paris", 2, 50), T0)
    fulfil(state, "r1")
    position = state.position("sku-a", "paris")
    assert (position.on_hand, position.reserved, position.atp) == (0, 0, 0)
    state.check_invariants()


def test_fulfil_on_disabled_node_still_works(state: AtpState) -> None:
    """Disabling a node does not block taking out goods already held there."""
    reserve(state, "r1", ("sku-a", "paris", 4))
    set_node_enabled(state, "paris", False, T0)
    assert fulfil(state, "r1").reservation.status is ReservationStatus.FULFILLED
    assert state.position("sku-a", "paris").on_hand == 6


@pytest.mark.parametrize("line_count", [1, 3])
def test_the_answer_of_a_reserve_is_the_stored_reservation(
    state: AtpState, line_count: int
) -> None:
    """Reserve answers with a view built from the command, not read back from the table: it
    equals the view read back (every field), for one line and several, with a maker."""
    put_stock(state, "sku-b", "paris", 5)
    lines = (Line("sku-a", "paris", 2), Line("sku-b", "berlin", 1), Line("sku-b", "paris", 3))
    maker = Maker("terminal-7", "store")
    command = Reserve("r1", lines[:line_count], 90_000, channel="web", segment="gold", maker=maker)
    result = state.apply(command, T0 + 5)
    assert result.outcome is Outcome.OK
    stored = state.reservations["r1"]
    assert result.reservation == stored
    assert result.reservation is not None and result.reservation.lines == lines[:line_count]
    assert stored.maker == maker and stored.expires_at_ms == T0 + 5 + 90_000
