"""Per-rule unit tests on AtpState: incoming supply (kinds, horizon, ETA passing), receipts,
cancellations, idempotent AddSupply, and the explain terms of the ATP formula."""

from __future__ import annotations

import contextlib

import pytest

from atpd.core.commands import CancelSupply, ReceiveSupply, Release
from atpd.core.results import AlreadyExists, InvalidCommand, NotFound, Outcome, Shortage
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind

from .support import (
    HOUR_MS,
    Caller,
    add_supply,
    advance,
    atp_as,
    make_world,
    reserve_as,
    rules_text,
    set_rules,
    stock,
)

PO, TRANSFER, RETURN = (
    SupplyKind.PURCHASE_ORDER,
    SupplyKind.TRANSFER,
    SupplyKind.RETURN_IN_TRANSIT,
)
SUPPLY_TABLES = {
    "channels.web": 'supply = { kinds = ["PURCHASE_ORDER"], horizon_hours = 48 }',
    "channels.store": 'supply = { kinds = ["TRANSFER"] }',
    "segments.vip": (
        'supply = { kinds = ["PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT"], '
        "horizon_hours = 72 }"
    ),
}
BAG = "BAG-1"
WEB: Caller = {"channel": "web", "segment": "standard"}
VIP: Caller = {"channel": "web", "segment": "vip"}
STORE: Caller = {"channel": "store", "segment": "standard"}


def supply_world(on_hand: int = 5) -> AtpState:
    state = make_world()
    stock(state, BAG, "wh-par", on_hand)
    set_rules(state, rules_text(SUPPLY_TABLES))
    return state


def test_supply_counts_only_for_callers_counting_its_kind() -> None:
    """Supply is added to the ATP of callers whose rules count its kind, and of no other."""
    state = supply_world()
    add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    add_supply(state, "tr", BAG, "wh-par", 2, 24 * HOUR_MS, TRANSFER)
    add_supply(state, "ret", BAG, "wh-par", 4, 24 * HOUR_MS, RETURN)
    assert atp_as(state, BAG, "wh-par", **WEB) == 5 + 3
    assert atp_as(state, BAG, "wh-par", **VIP) == 5 + 3 + 2 + 4
    assert atp_as(state, BAG, "wh-par", **STORE) == 5 + 2
    assert atp_as(state, BAG, "wh-nyc", **VIP) == 0  # supply counts at its own node only


def test_supply_counts_only_within_the_callers_horizon() -> None:
    """Supply counts only up to now + horizon (inclusive); no horizon means any ETA."""
    state = supply_world()
    add_supply(state, "po-48", BAG, "wh-par", 1, 48 * HOUR_MS, PO)
    add_supply(state, "po-60", BAG, "wh-par", 2, 60 * HOUR_MS, PO)
    add_supply(state, "tr-far", BAG, "wh-par", 4, 1000 * HOUR_MS, TRANSFER)
    assert atp_as(state, BAG, "wh-par", **WEB) == 5 + 1
    assert atp_as(state, BAG, "wh-par", **VIP) == 5 + 1 + 2
    assert atp_as(state, BAG, "wh-par", **STORE) == 5 + 4


def test_supply_enters_the_horizon_as_time_passes_and_stops_counting_after_its_eta() -> None:
    """Supply enters the horizon as time passes and stops counting once its ETA passed."""
    state = supply_world()
    add_supply(state, "po", BAG, "wh-par", 2, 60 * HOUR_MS, PO)
    assert atp_as(state, BAG, "wh-par", **WEB) == 5
    advance(state, 12 * HOUR_MS)
    assert atp_as(state, BAG, "wh-par", **WEB) == 7
    advance(state, 60 * HOUR_MS)
    assert atp_as(state, BAG, "wh-par", **WEB) == 7
    assert atp_as(state, BAG, "wh-par", **VIP) == 7
    advance(state, 60 * HOUR_MS + 1)
    assert atp_as(state, BAG, "wh-par", **WEB) == 5
    assert atp_as(state, BAG, "wh-par", **VIP) == 5
    assert "po" in state.supply.by_id  # still listed for operators
    result = reserve_as(state, "r", (BAG, "wh-par", 6), **VIP)
    assert result.shortages == (Shortage(BAG, "wh-par", 6, 5),)


def test_reserve_may_promise_counted_supply() -> None:
    """A caller counting supply may reserve up to on_hand + that supply; others may not."""
    state = supply_world()
    add_supply(state, "ret", BAG, "wh-par", 3, 24 * HOUR_MS, RETURN)
    short = reserve_as(state, "w", (BAG, "wh-par", 6), **WEB)
    assert short.shortages == (Shortage(BAG, "wh-par", 6, 5),)
    assert reserve_as(state, "v", (BAG, "wh-par", 8), **VIP).outcome is Outcome.OK
    assert state.position(BAG, "wh-par").reserved == 8
    assert atp_as(state, BAG, "wh-par", **VIP) == 0
    assert atp_as(state, BAG, "wh-par", **WEB) == 0
    state.check_invariants()


def test_supply_at_an_invisible_node_counts_for_nothing() -> None:
    """Supply at a node the caller does not see adds nothing to what it sees."""
    state = make_world()
    tables = dict(SUPPLY_TABLES)
    tables["channels.web"] += '\nnodes = { kinds = ["STORE"] }'
    set_rules(state, rules_text(tables))
    add_supply(state, "po", BAG, "wh-par", 3, HOUR_MS, PO)
    assert atp_as(state, BAG, "wh-par", **WEB) == 0
    assert atp_as(state, BAG, "wh-par", **VIP) == 0
    assert atp_as(state, BAG, "wh-par", **STORE) == 0


def test_supply_of_a_new_sku_is_promised_before_any_stock() -> None:
    """AddSupply for a SKU never stocked registers it; callers counting it see the supply."""
    state = supply_world()
    add_supply(state, "po", "NEW-1", "wh-nyc", 4, HOUR_MS, PO)
    assert atp_as(state, "NEW-1", "wh-nyc", **WEB) == 4
    assert atp_as(state, "NEW-1", "wh-nyc", **STORE) == 0


def test_receive_all_moves_supply_into_on_hand() -> None:
    """ReceiveSupply moves all expected units into on_hand and closes the supply."""
    state = supply_world()
    add_supply(state, "ret", BAG, "wh-par", 3, 24 * HOUR_MS, RETURN)
    assert atp_as(state, BAG, "wh-par", **VIP) == 8
    result = state.apply(ReceiveSupply("ret"), state.now_ms)
    assert result.outcome is Outcome.OK
    assert (result.supply.quantity, result.supply.received) == (0, 3)
    assert state.position(BAG, "wh-par").on_hand == 8
    assert "ret" not in state.supply.by_id
    assert atp_as(state, BAG, "wh-par", **VIP) == 8
    assert atp_as(state, BAG, "wh-par", **WEB) == 8


def test_partial_receipt_moves_part_and_keeps_the_rest_expected() -> None:
    """ReceiveSupply with a quantity moves that much into on_hand; the rest stays expected."""
    state = supply_world()
    add_supply(state, "po", BAG, "wh-par", 5, 24 * HOUR_MS, PO)
    state.apply(ReceiveSupply("po", 2), state.now_ms)
    supply = state.supply.by_id["po"]
    assert (supply.quantity, supply.received) == (3, 2)
    assert state.position(BAG, "wh-par").on_hand == 7
    assert atp_as(state, BAG, "wh-par", **WEB) == 10
    assert atp_as(state, BAG, "wh-par", **STORE) == 7
    state.apply(ReceiveSupply("po", 3), state.now_ms)
    assert "po" not in state.supply.by_id
    assert state.position(BAG, "wh-par").on_hand == 10


def test_receipt_of_supply_held_by_a_reservation_keeps_the_hold_whole() -> None:
    """A hold promised against supply stays whole as the supply arrives into on_hand."""
    state = supply_world(0)
    add_supply(state, "po", BAG, "wh-par", 4, 24 * HOUR_MS, PO)
    assert reserve_as(state, "w", (BAG, "wh-par", 4), **WEB).outcome is Outcome.OK
    state.apply(ReceiveSupply("po"), state.now_ms)
    position = state.position(BAG, "wh-par")
    assert (position.on_hand, position.reserved) == (4, 4)
    assert atp_as(state, BAG, "wh-par", **VIP) == 0
    state.apply(Release("w"), state.now_ms)
    assert atp_as(state, BAG, "wh-par", **STORE) == 4
    state.check_invariants()


def test_receiving_more_than_expected_is_refused_and_changes_nothing() -> None:
    """ReceiveSupply beyond what is still expected is InvalidCommand; nothing moves."""
    state = supply_world()
    add_supply(state, "po", BAG, "wh-par", 2, 24 * HOUR_MS, PO)
    before = state.digest()
    with pytest.raises(InvalidCommand, match="quantity"):
        state.apply(ReceiveSupply("po", 3), state.now_ms)
    assert state.digest() == before


def test_cancel_supply_stops_counting_it() -> None:
    """CancelSupply removes the supply: nobody counts it any more, on_hand is unchanged."""
    state = supply_world()
    add_supply(state, "ret", BAG, "wh-par", 3, 24 * HOUR_MS, RETURN)
    result = state.apply(CancelSupply("ret"), state.now_ms)
    assert result.outcome is Outcome.OK
    assert "ret" not in state.supply.by_id
    assert atp_as(state, BAG, "wh-par", **VIP) == 5
    assert state.position(BAG, "wh-par").on_hand == 5


@pytest.mark.parametrize("command", [ReceiveSupply("nope"), CancelSupply("nope")])
def test_unknown_supply_is_not_found(command: ReceiveSupply | CancelSupply) -> None:
    """Receiving or cancelling an unknown supply id is NotFound, changing nothing."""
    state = supply_world()
    before = state.digest()
    with pytest.raises(NotFound, match="nope"):
        state.apply(command, state.now_ms)
    assert state.digest() == before


def test_add_supply_at_an_unknown_node_is_not_found() -> None:
    """AddSupply naming an unknown node is NotFound and registers nothing."""
    state = supply_world()
    before = state.digest()
    with pytest.raises(NotFound, match="ghost"):
        add_supply(state, "po", BAG, "ghost", 1, HOUR_MS, PO)
    assert state.digest() == before


def test_add_supply_is_idempotent_on_its_id() -> None:
    """AddSupply is idempotent on its id; different content is AlreadyExists."""
    state = supply_world()
    first = add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    assert first.changed
    again = add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    assert again.outcome is Outcome.OK and not again.changed
    assert len(state.supply) == 1
    assert atp_as(state, BAG, "wh-par", **WEB) == 8
    for different in (
        ("po", BAG, "wh-par", 4, 24 * HOUR_MS, PO),
        ("po", BAG, "wh-nyc", 3, 24 * HOUR_MS, PO),
        ("po", "BAG-2", "wh-par", 3, 24 * HOUR_MS, PO),
        ("po", BAG, "wh-par", 3, 25 * HOUR_MS, PO),
        ("po", BAG, "wh-par", 3, 24 * HOUR_MS, TRANSFER),
    ):
        with pytest.raises(AlreadyExists, match="po"):
            add_supply(state, *different)
    state.apply(ReceiveSupply("po", 1), state.now_ms)
    retry = add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    assert retry.outcome is Outcome.OK and not retry.changed
    assert atp_as(state, BAG, "wh-par", **WEB) == 8


@pytest.mark.parametrize("close", [ReceiveSupply("po"), CancelSupply("po")])
def test_add_supply_retried_after_it_closed_is_not_counted_again(
    close: ReceiveSupply | CancelSupply,
) -> None:
    """A retried AddSupply after receipt or cancel must not bring the supply back."""
    state = supply_world()
    add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    state.apply(close, state.now_ms)
    expected = atp_as(state, BAG, "wh-par", **WEB)
    with contextlib.suppress(AlreadyExists):
        add_supply(state, "po", BAG, "wh-par", 3, 24 * HOUR_MS, PO)
    assert atp_as(state, BAG, "wh-par", **WEB) == expected
    assert "po" not in state.supply.by_id


# ----------------------------------------------------------------------------- explain


def test_explain_terms_sum_to_the_callers_atp() -> None:
    """explain_position's terms, floored at 0, give the ATP the kernel reports."""
    state = make_world()
    stock(state, BAG, "st-par", 20, safety=2)
    tables = dict(SUPPLY_TABLES)
    tables["channels.web"] += "\nbuffer = 1\nsafety = { kinds = { STORE = 1 } }"
    protection = 'name = "flag"\nnodes = { tags = ["flagship"] }\nunits = 3\nfor = ["*/vip"]'
    set_rules(state, rules_text(tables, (protection,)))
    add_supply(state, "po", BAG, "st-par", 4, HOUR_MS, PO)
    reserve_as(state, "s", (BAG, "st-par", 3), **STORE)
    policy = state.policy("web", "standard")
    assert policy is not None
    row, node = state.skus.get(BAG), state.node_ids.get("st-par")
    terms = state.explain_position(policy, row, node)
    assert terms == {
        "on_hand": 20,
        "reserved": 3,
        "safety_stock": 1,
        "buffer": 1,
        "supply": 4,
        "protected_for_others": 3,
        "atp": 16,
    }
    assert atp_as(state, BAG, "st-par", **WEB) == 16
    vip = state.policy("web", "vip")
    assert vip is not None
    vip_terms = state.explain_position(vip, row, node)
    assert vip_terms["protected_for_others"] == 0
    assert vip_terms["safety_stock"] == 1  # web's override, which the segment keeps
    assert vip_terms["buffer"] == 1
    assert vip_terms["atp"] == 20 - 3 - 1 - 1 + 4
    # Below zero the terms are still all given, and ATP is 0.
    stock(state, BAG, "st-par", 2, safety=2)
    terms = state.explain_position(policy, row, node)
    assert terms["atp"] == 0
    formula = (
        terms["on_hand"]
        - terms["reserved"]
        - terms["safety_stock"]
        - terms["buffer"]
        + terms["supply"]
        - terms["protected_for_others"]
    )
    assert formula < 0
