"""AmendReservation in the core: all-or-nothing against a model, retries, states, expiry,
protections put back exactly, and replay of the journal records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules.support import consumed, make_world, reserve_as, rules_text, set_rules, stock

from atpd.core.commands import Confirm, Line, Reserve, SetStock, Tick
from atpd.core.commands_amend import AmendReservation, AmendResult
from atpd.core.reservations import ReservationStatus
from atpd.core.results import InvalidCommand, NotFound, Outcome
from atpd.core.state import AtpState
from atpd.persistence.codec import decode_command, encode_command
from atpd.persistence.state_snapshot import export_state, import_state

from .support import TTL_MS, make_state, put_stock, reserve, set_node_enabled

SKUS = ("bag", "belt")
NODES = ("paris", "lyon")
POSITIONS = [(s, n) for s in SKUS for n in NODES]


WATCHES = """name = "watches-vip"
skus = ["WCH-"]
nodes = { kinds = ["WAREHOUSE"] }
percent = 50
for = ["*/vip"]"""


def amend(
    state: AtpState, reservation_id: str, *lines: tuple[str, str, int], ttl_ms: int = 0
) -> AmendResult:
    command = AmendReservation(reservation_id, tuple(Line(*x) for x in lines), ttl_ms)
    return state.apply(command, state.now_ms + 1)


lines_strategy = st.dictionaries(
    st.sampled_from(POSITIONS), st.integers(1, 6), min_size=1, max_size=len(POSITIONS)
)


@settings(max_examples=80, deadline=None)
@given(
    stock=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    carts=st.lists(lines_strategy, min_size=1, max_size=3),
    amendments=st.lists(st.tuples(st.integers(0, 2), lines_strategy), min_size=1, max_size=6),
)
def test_amendments_are_all_or_nothing(
    stock: list[int],
    carts: list[dict[tuple[str, str], int]],
    amendments: list[tuple[int, dict[tuple[str, str], int]]],
) -> None:
    """Property: an amendment is OK exactly when every new line fits the stock left by the
    other carts; then the cart holds exactly the new lines, else the state is unchanged."""
    state = make_state()
    on_hand = dict(zip(POSITIONS, stock, strict=True))
    for (sku, node), units in on_hand.items():
        put_stock(state, sku, node, units)
    model: dict[str, dict[tuple[str, str], int]] = {}
    for i, cart in enumerate(carts):
        placed = reserve(state, f"c{i}", *((s, n, q) for (s, n), q in cart.items()))
        if placed.outcome is Outcome.OK:
            model[f"c{i}"] = dict(cart)
    for which, lines in amendments:
        cart_id = f"c{which}"
        if cart_id not in model:
            with pytest.raises(NotFound):
                amend(state, cart_id, *((s, n, q) for (s, n), q in lines.items()))
            continue
        others = {
            p: sum(c.get(p, 0) for rid, c in model.items() if rid != cart_id) for p in POSITIONS
        }
        fits = all(q <= on_hand[p] - others[p] for p, q in lines.items())
        digest = state.digest()
        result = amend(state, cart_id, *((s, n, q) for (s, n), q in lines.items()))
        if fits:
            assert result.outcome is Outcome.OK, result
            model[cart_id] = dict(lines)
            held = {(x.sku, x.node_id): x.quantity for x in result.reservation.lines}
            assert held == lines
        else:
            assert result.outcome is Outcome.INSUFFICIENT_STOCK
            assert result.shortages
            assert state.digest() == digest
        state.check_invariants()
        for p in POSITIONS:
            assert state.position(*p).reserved == sum(c.get(p, 0) for c in model.values())


def test_refused_amendment_keeps_the_hold_and_retry_is_replayed() -> None:
    """A refused amendment keeps the cart as it was; one applied twice is replayed (no line
    change) and only moves the expiry later."""
    state = make_state()
    put_stock(state, "bag", "paris", 3)
    reserve(state, "cart", ("bag", "paris", 2), now_ms=1_000)
    digest = state.digest()
    refused = amend(state, "cart", ("bag", "paris", 4))
    assert refused.outcome is Outcome.INSUFFICIENT_STOCK
    assert refused.shortages[0].available == 3
    assert state.digest() == digest
    done = amend(state, "cart", ("bag", "paris", 3), ttl_ms=TTL_MS * 2)
    assert done.outcome is Outcome.OK and done.changed
    expires = done.reservation.expires_at_ms
    assert expires == state.now_ms + TTL_MS * 2
    again = state.apply(
        AmendReservation("cart", (Line("bag", "paris", 3),), TTL_MS * 2), state.now_ms + 5
    )
    assert again.replayed and again.reservation.expires_at_ms == expires + 5
    assert state.position("bag", "paris").reserved == 3
    state.check_invariants()


def test_amend_states_and_bad_input() -> None:
    """Confirmed: INVALID_STATE; expired: EXPIRED; a line needing more at a disabled node:
    NODE_DISABLED; unknown node, repeated line or a TTL out of range: refused, naming it."""
    state = make_state()
    put_stock(state, "bag", "paris", 5)
    put_stock(state, "bag", "lyon", 5)
    reserve(state, "a", ("bag", "paris", 1))
    reserve(state, "b", ("bag", "paris", 1))
    state.apply(Confirm("a"), state.now_ms)
    assert amend(state, "a", ("bag", "paris", 2)).outcome is Outcome.INVALID_STATE
    with pytest.raises(NotFound, match=r"lines\[0\].node_id"):
        amend(state, "b", ("bag", "oslo", 1))
    with pytest.raises(NotFound, match="reservation_id"):
        amend(state, "none", ("bag", "paris", 1))
    with pytest.raises(InvalidCommand, match="same"):
        amend(state, "b", ("bag", "lyon", 1), ("bag", "lyon", 2))
    with pytest.raises(InvalidCommand, match="ttl_ms"):
        amend(state, "b", ("bag", "lyon", 1), ttl_ms=1)
    set_node_enabled(state, "lyon", False, state.now_ms)
    disabled = amend(state, "b", ("bag", "paris", 1), ("bag", "lyon", 1))
    assert disabled.outcome is Outcome.NODE_DISABLED and disabled.disabled_node_id == "lyon"
    reserve(state, "c", ("bag", "paris", 1), ttl_ms=1_000)
    late = AmendReservation("c", (Line("bag", "paris", 2),))
    assert state.apply(late, state.now_ms + 5_000).outcome is Outcome.EXPIRED


def test_refused_amendment_puts_protected_units_back() -> None:
    """A VIP cart holding protected units, refused an amendment, holds them exactly as before;
    an accepted one takes protected units first again."""
    state = make_world()
    stock(state, "WCH-1", "wh-par", 10)
    set_rules(state, rules_text(protections=(WATCHES,)))
    placed = reserve_as(state, "vip-cart", ("WCH-1", "wh-par", 4), channel="web", segment="vip")
    assert placed.outcome is Outcome.OK
    assert consumed(state, "watches-vip", "WCH-1", "wh-par") == 4
    digest = state.digest()
    assert amend(state, "vip-cart", ("WCH-1", "wh-par", 11)).outcome is Outcome.INSUFFICIENT_STOCK
    assert state.digest() == digest
    assert consumed(state, "watches-vip", "WCH-1", "wh-par") == 4
    assert amend(state, "vip-cart", ("WCH-1", "wh-par", 7)).outcome is Outcome.OK
    assert consumed(state, "watches-vip", "WCH-1", "wh-par") == 5
    state.check_invariants()


def test_amendments_replay_and_snapshot_to_the_same_state() -> None:
    """Journal records of amendments replay to an equal digest; a snapshot round trip too."""
    state = make_state()
    records: list[tuple[object, int]] = []

    def run(command: object, now_ms: int) -> None:
        state.apply(command, now_ms)  # type: ignore[arg-type]
        records.append((command, now_ms))

    for sku, node in POSITIONS:
        put_stock(state, sku, node, 5, now_ms=0)
    replay = make_state()
    for sku, node in POSITIONS:
        replay.apply(SetStock(sku, node, 5, 1), 0)
    run(Reserve("cart", (Line("bag", "paris", 1),), TTL_MS), 10)
    run(AmendReservation("cart", (Line("bag", "lyon", 2), Line("belt", "paris", 1)), TTL_MS), 20)
    run(AmendReservation("cart", (Line("bag", "lyon", 1),), 0), 30)
    for command, now_ms in records:
        replay.apply(decode_command(encode_command(command)), now_ms)  # type: ignore[arg-type]
    assert replay.digest() == state.digest()
    restored = import_state(*export_state(state))
    assert restored.digest() == state.digest()
    restored.check_invariants()


def test_amended_expiry_is_rekeyed_and_the_answer_is_a_copy() -> None:
    """An amendment with a TTL moves the hold in the expiry heap (it outlives the old expiry and
    expires at the new one, giving back the new lines); its answer does not follow the row."""
    state = make_state()
    put_stock(state, "bag", "paris", 5)
    put_stock(state, "belt", "lyon", 5)
    reserve(state, "cart", ("bag", "paris", 1), now_ms=1_000, ttl_ms=10_000)
    done = state.apply(
        AmendReservation("cart", (Line("belt", "lyon", 2), Line("bag", "paris", 3)), 30_000),
        2_000,
    )
    assert done.outcome is Outcome.OK and done.reservation.expires_at_ms == 32_000
    assert state.next_expiry_ms() == 32_000
    state.apply(Tick(), 20_000)  # past the first expiry (11_000): still held
    assert state.reservation("cart").status is ReservationStatus.HELD
    state.check_invariants()
    assert state.apply(Tick(), 32_000).expired == ("cart",)
    assert state.position("bag", "paris").reserved == 0
    assert state.position("belt", "lyon").reserved == 0
    assert done.reservation.status is ReservationStatus.HELD  # the answer taken then
    assert done.reservation.held == [2, 3]
    state.check_invariants()
