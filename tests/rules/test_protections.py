"""Per-rule unit tests on AtpState: supply protections by units and by percent, who may
consume them, in what order, and how releases, expiries and fulfilments give them back."""

from __future__ import annotations

from atpd.core.commands import Confirm, Fulfil, Line, NodeKind, Release, ReservationKind, UpsertNode
from atpd.core.reservations import ReservationStatus
from atpd.core.results import Outcome, Shortage
from atpd.core.state import AtpState

from .support import (
    TTL_MS,
    Caller,
    advance,
    atp_as,
    consumed,
    make_world,
    reserve_as,
    rules_text,
    set_rules,
    stock,
)

FLAGSHIP = """name = "flagship-bags"
skus = ["BAG-"]
nodes = { tags = ["flagship"] }
units = 3
for = ["store/*", "*/vip"]"""

WATCHES = """name = "watches-vip"
skus = ["WCH-"]
nodes = { kinds = ["WAREHOUSE"] }
percent = 50
for = ["*/vip"]"""

BAG, WATCH = "BAG-1", "WCH-1"
WEB: Caller = {"channel": "web", "segment": "standard"}
VIP: Caller = {"channel": "web", "segment": "vip"}
STORE: Caller = {"channel": "store", "segment": "standard"}


def protected_world(*extra: str) -> AtpState:
    """10 bags and 10 watches everywhere, the two protections above (plus `extra`)."""
    state = make_world()
    for sku in (BAG, WATCH):
        for node_id in ("wh-par", "wh-nyc", "st-par", "st-lyo", "st-ber"):
            stock(state, sku, node_id, 10)
    set_rules(state, rules_text(protections=(FLAGSHIP, WATCHES, *extra)))
    return state


def test_units_protection_is_hidden_from_non_beneficiaries_only() -> None:
    """Protected units are missing from non-beneficiaries' ATP only, at matching nodes."""
    state = protected_world()
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    assert atp_as(state, BAG, "st-ber", **WEB) == 7
    assert atp_as(state, BAG, "st-lyo", **WEB) == 10  # not a flagship
    assert atp_as(state, BAG, "wh-par", **WEB) == 10
    assert atp_as(state, BAG, "st-par", **VIP) == 10
    assert atp_as(state, BAG, "st-par", **STORE) == 10
    assert atp_as(state, BAG, "st-par", channel="store", segment="vip") == 10
    policy = state.policy("web", "standard")
    assert policy is not None
    terms = state.explain_position(policy, state.skus.get(BAG), state.node_ids.get("st-par"))
    assert terms["protected_for_others"] == 3


def test_protection_covers_only_its_sku_prefixes() -> None:
    """A protection limited to SKU prefixes holds nothing back of other SKUs at its nodes."""
    state = protected_world()
    assert atp_as(state, WATCH, "st-par", **WEB) == 10
    assert atp_as(state, BAG, "wh-par", **WEB) == 10


def test_percent_protection_holds_back_a_share_of_on_hand() -> None:
    """P % of on_hand (rounded down) is held back from non-beneficiaries at matching nodes."""
    state = protected_world()
    assert atp_as(state, WATCH, "wh-par", **WEB) == 5
    assert atp_as(state, WATCH, "wh-par", **STORE) == 5  # store is no beneficiary of it
    assert atp_as(state, WATCH, "wh-par", **VIP) == 10
    stock(state, WATCH, "wh-par", 9)
    assert atp_as(state, WATCH, "wh-par", **WEB) == 9 - 4
    stock(state, WATCH, "wh-par", 1)
    assert atp_as(state, WATCH, "wh-par", **WEB) == 1


def test_non_beneficiary_cannot_reserve_protected_units() -> None:
    """A non-beneficiary can reserve only ATP minus the remaining protected units."""
    state = protected_world()
    short = reserve_as(state, "w1", (BAG, "st-par", 8), **WEB)
    assert short.outcome is Outcome.INSUFFICIENT_STOCK
    assert short.shortages == (Shortage(BAG, "st-par", 8, 7),)
    assert reserve_as(state, "w2", (BAG, "st-par", 7), **WEB).outcome is Outcome.OK
    assert atp_as(state, BAG, "st-par", **WEB) == 0
    assert atp_as(state, BAG, "st-par", **VIP) == 3
    assert atp_as(state, BAG, "st-par", **STORE) == 3
    assert reserve_as(state, "w3", (BAG, "st-par", 1), **WEB).outcome is (
        Outcome.INSUFFICIENT_STOCK
    )
    assert reserve_as(state, "v1", (BAG, "st-par", 3), **VIP).outcome is Outcome.OK
    assert atp_as(state, BAG, "st-par", **VIP) == 0
    state.check_invariants()


def test_beneficiary_reservation_consumes_protected_units_first() -> None:
    """A beneficiary's hold takes protected units first; others' ATP does not drop."""
    state = protected_world()
    result = reserve_as(state, "v1", (BAG, "st-par", 2), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("flagship-bags", 2)]]
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    assert atp_as(state, BAG, "st-par", **WEB) == 7  # unchanged: 10 - 2 held - 1 still protected
    assert atp_as(state, BAG, "st-par", **VIP) == 8
    result = reserve_as(state, "v2", (BAG, "st-par", 4), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("flagship-bags", 1)]]  # 3 from the general pool
    assert consumed(state, "flagship-bags", BAG, "st-par") == 3
    assert atp_as(state, BAG, "st-par", **WEB) == 4
    assert atp_as(state, BAG, "st-par", **VIP) == 4


def test_percent_protection_consumed_by_its_beneficiary() -> None:
    """Reservations by beneficiaries of a percent protection consume it like a units one."""
    state = protected_world()
    result = reserve_as(state, "v", (WATCH, "wh-par", 3), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("watches-vip", 3)]]
    assert atp_as(state, WATCH, "wh-par", **WEB) == 10 - 3 - (5 - 3)
    assert reserve_as(state, "w", (WATCH, "wh-par", 5), **WEB).outcome is Outcome.OK
    assert atp_as(state, WATCH, "wh-par", **VIP) == 2
    state.check_invariants()


def test_release_gives_protected_units_back() -> None:
    """Releasing a beneficiary's hold returns its protected units to the protection."""
    state = protected_world()
    reserve_as(state, "v", (BAG, "st-par", 2), **VIP)
    state.apply(Release("v"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    assert atp_as(state, BAG, "st-par", **VIP) == 10
    assert not state.protected_reservations
    state.check_invariants()


def test_expiry_gives_protected_units_back() -> None:
    """An expired beneficiary's hold returns its protected units to the protection."""
    state = protected_world()
    reserve_as(state, "v", (BAG, "st-par", 3), **VIP)
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    advance(state, TTL_MS)
    assert state.reservation("v").status is ReservationStatus.EXPIRED
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    assert atp_as(state, BAG, "st-par", **VIP) == 10
    state.check_invariants()


def test_fulfilment_gives_protected_units_back() -> None:
    """Fulfilment gives protected units back: the protection holds back its full size again."""
    state = protected_world()
    reserve_as(state, "v", (BAG, "st-par", 2), **VIP)
    state.apply(Confirm("v"), state.now_ms)
    state.apply(Fulfil("v"), state.now_ms)
    assert state.position(BAG, "st-par").on_hand == 8
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 8 - 3
    assert atp_as(state, BAG, "st-par", **VIP) == 8
    state.check_invariants()


def test_partial_fulfilment_gives_back_the_general_pool_part_first() -> None:
    """A partial fulfilment gives back general units before protected ones."""
    state = protected_world()
    result = reserve_as(state, "v", (BAG, "st-par", 5), **VIP)  # 3 protected + 2 general
    assert result.reservation is not None
    state.apply(Fulfil("v", (Line(BAG, "st-par", 2),)), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 3
    assert atp_as(state, BAG, "st-par", **WEB) == 8 - 3
    state.apply(Fulfil("v", (Line(BAG, "st-par", 1),)), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    assert atp_as(state, BAG, "st-par", **WEB) == 7 - 2 - 1
    state.apply(Fulfil("v", (Line(BAG, "st-par", 1),), release_remainder=True), state.now_ms)
    assert state.reservation("v").status is ReservationStatus.FULFILLED
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 6 - 3
    state.check_invariants()


def test_pos_sale_by_a_beneficiary_leaves_the_protection_whole() -> None:
    """A POS sale by a beneficiary is held and fulfilled at once: nothing stays consumed."""
    state = protected_world()
    result = reserve_as(state, "pos", (BAG, "st-par", 2), kind=ReservationKind.POS_SALE, **STORE)
    assert result.outcome is Outcome.OK
    assert state.position(BAG, "st-par").on_hand == 8
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 5
    state.check_invariants()


def test_beneficiary_gets_nothing_extra_where_the_protection_does_not_hold() -> None:
    """Where a protection does not hold, its beneficiary gets nothing extra."""
    state = protected_world()
    assert atp_as(state, BAG, "st-lyo", **VIP) == atp_as(state, BAG, "st-lyo", **WEB) == 10
    result = reserve_as(state, "v", (BAG, "st-lyo", 10), **VIP)
    assert result.outcome is Outcome.OK
    assert result.reservation is not None
    assert result.reservation.protected is None
    assert "v" not in state.protected_reservations
    assert reserve_as(state, "v2", (BAG, "st-lyo", 1), **VIP).outcome is (
        Outcome.INSUFFICIENT_STOCK
    )
    # A store-channel beneficiary of the bags is no beneficiary of the watches.
    assert atp_as(state, WATCH, "wh-par", **STORE) == 5
    result = reserve_as(state, "s", (WATCH, "wh-par", 5), **STORE)
    assert result.reservation is not None
    assert result.reservation.protected is None
    assert consumed(state, "watches-vip", WATCH, "wh-par") == 0


def test_multi_line_records_protected_units_per_line() -> None:
    """A reservation over several lines records, per line, the protected units it took."""
    state = protected_world()
    result = reserve_as(
        state, "v", (BAG, "st-par", 2), (BAG, "st-lyo", 2), (WATCH, "wh-nyc", 6), **VIP
    )
    assert result.reservation is not None
    assert result.reservation.protected == [
        [("flagship-bags", 2)],
        [],
        [("watches-vip", 5)],
    ]
    assert consumed(state, "watches-vip", WATCH, "wh-nyc") == 5
    assert atp_as(state, WATCH, "wh-nyc", **WEB) == 4


def test_overlapping_protections_add_up_for_outsiders() -> None:
    """Overlapping protections add up for outsiders and are consumed in rule order."""
    extra = """name = "vip-par"
nodes = { include = ["st-par"] }
units = 2
for = ["*/vip"]"""
    state = protected_world(extra)
    assert atp_as(state, BAG, "st-par", **WEB) == 5
    assert atp_as(state, BAG, "st-par", **STORE) == 8
    assert atp_as(state, BAG, "st-par", **VIP) == 10
    result = reserve_as(state, "v", (BAG, "st-par", 4), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("flagship-bags", 3), ("vip-par", 1)]]
    assert atp_as(state, BAG, "st-par", **WEB) == 10 - 4 - 1
    assert atp_as(state, BAG, "st-par", **STORE) == 10 - 4 - 1
    state.apply(Release("v"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert consumed(state, "vip-par", BAG, "st-par") == 0


def test_protection_larger_than_stock_leaves_outsiders_nothing() -> None:
    """A protection above on_hand leaves outsiders 0 and beneficiaries what there is."""
    state = protected_world()
    stock(state, BAG, "st-par", 2)
    assert atp_as(state, BAG, "st-par", **WEB) == 0
    assert atp_as(state, BAG, "st-par", **VIP) == 2
    assert reserve_as(state, "w", (BAG, "st-par", 1), **WEB).outcome is (Outcome.INSUFFICIENT_STOCK)


def test_protection_consumption_survives_node_growth() -> None:
    """Adding nodes past the arrays' capacity keeps what beneficiaries hold, everywhere."""
    state = protected_world()
    reserve_as(state, "v1", (BAG, "st-par", 2), **VIP)
    for i in range(70):  # past the initial node capacity of 64
        state.apply(
            UpsertNode(f"st-{i}", NodeKind.STORE, ("EU", "IT", f"c{i}"), tags=("flagship",)), 0
        )
    stock(state, BAG, "st-69", 10)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    assert atp_as(state, BAG, "st-69", **WEB) == 7
    result = reserve_as(state, "v2", (BAG, "st-69", 4), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("flagship-bags", 3)]]
    assert atp_as(state, BAG, "st-69", **WEB) == 6
    state.apply(Release("v1"), state.now_ms)
    state.apply(Release("v2"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-69") == 0
    assert atp_as(state, BAG, "st-69", **WEB) == 7
    state.check_invariants()
