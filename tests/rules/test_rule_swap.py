"""Rule swaps on AtpState: open holds survive a swap untouched, protection consumption is
re-mapped by protection name, and the answer after a swap is exactly the new rules' answer."""

from __future__ import annotations

from atpd.core.commands import Fulfil, Line, Release
from atpd.core.reservations import ReservationStatus
from atpd.core.results import Outcome
from atpd.core.state import AtpState

from .support import (
    NODES,
    Caller,
    atp_as,
    atp_by_node,
    consumed,
    make_world,
    reserve_as,
    rules_text,
    set_rules,
    stock,
)

BAG = "BAG-1"
FLAGSHIP_3 = 'name = "flagship-bags"\nnodes = { tags = ["flagship"] }\nunits = 3\nfor = ["*/vip"]'
FLAGSHIP_4 = 'name = "flagship-bags"\nnodes = { tags = ["flagship"] }\nunits = 4\nfor = ["*/vip"]'
FLAGSHIP_1 = 'name = "flagship-bags"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = ["*/vip"]'
OTHER = 'name = "east"\nnodes = { tags = ["east"] }\nunits = 2\nfor = ["store/*"]'
WEB: Caller = {"channel": "web", "segment": "standard"}
VIP: Caller = {"channel": "web", "segment": "vip"}


def world() -> AtpState:
    state = make_world()
    for node_id in NODES:
        stock(state, BAG, node_id, 10)
    return state


def test_swap_keeps_open_holds_even_where_the_caller_no_longer_sees() -> None:
    """A swap keeps open holds whole, even at nodes their caller no longer sees."""
    state = world()
    set_rules(state, rules_text({"channels.web": 'nodes = { kinds = ["WAREHOUSE"] }'}))
    assert reserve_as(state, "a", (BAG, "wh-par", 4), **WEB).outcome is Outcome.OK
    assert reserve_as(state, "b", (BAG, "wh-nyc", 2), **WEB).outcome is Outcome.OK
    result = set_rules(
        state, rules_text({"channels.web": 'nodes = { kinds = ["STORE"] }'}, version="v2")
    )
    assert (result.version, result.previous_version) == ("v2", "v1")
    assert state.reservation("a").status is ReservationStatus.HELD
    assert state.position(BAG, "wh-par").reserved == 4
    assert atp_as(state, BAG, "wh-par", **WEB) == 0
    assert atp_as(state, BAG, "wh-par", channel="store") == 6
    state.apply(Fulfil("a", (Line(BAG, "wh-par", 1),)), state.now_ms)
    state.apply(Release("b"), state.now_ms)
    assert state.position(BAG, "wh-par").reserved == 3
    assert state.position(BAG, "wh-nyc").reserved == 0
    state.check_invariants()


def test_answers_after_a_swap_are_the_new_rules_answers() -> None:
    """After a swap answers equal a fresh state's under the new rules (no stale cache)."""
    state = world()
    old = rules_text({"channels.web": 'nodes = { kinds = ["WAREHOUSE"] }'}, (FLAGSHIP_3,))
    new = rules_text({"channels.web": 'nodes = { tags = ["flagship"] }\nbuffer = 2'}, (OTHER,))
    set_rules(state, old)
    for channel in ("web", "store"):
        for segment in ("standard", "vip"):
            atp_by_node(state, BAG, channel, segment)  # fill every cache
    set_rules(state, new)
    fresh = world()
    set_rules(fresh, new)
    for channel in ("web", "store"):
        for segment in ("standard", "vip"):
            assert atp_by_node(state, BAG, channel, segment) == atp_by_node(
                fresh, BAG, channel, segment
            )
    assert atp_by_node(state, BAG, **WEB) == {"st-par": 8, "st-ber": 6}  # east: 2 protected


def test_swap_remaps_protection_consumption_by_name() -> None:
    """A swap re-maps consumption by protection name, whatever its new index and size."""
    state = world()
    set_rules(state, rules_text(protections=(FLAGSHIP_3,)))
    reserve_as(state, "v", (BAG, "st-par", 2), **VIP)
    assert atp_as(state, BAG, "st-par", **WEB) == 10 - 2 - 1
    set_rules(state, rules_text(protections=(OTHER, FLAGSHIP_4), version="v2"))
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    assert consumed(state, "east", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 10 - 2 - (4 - 2)
    assert atp_as(state, BAG, "st-par", **VIP) == 8
    # Further holds and releases under the new rules account in the new index.
    result = reserve_as(state, "v2", (BAG, "st-par", 3), **VIP)
    assert result.reservation is not None
    assert result.reservation.protected == [[("flagship-bags", 2)]]
    assert consumed(state, "flagship-bags", BAG, "st-par") == 4
    state.apply(Release("v"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    state.apply(Release("v2"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 6
    state.check_invariants()


def test_swap_to_a_smaller_protection_never_goes_negative() -> None:
    """A protection shrunk below its holds protects nothing more and never goes negative."""
    state = world()
    set_rules(state, rules_text(protections=(FLAGSHIP_3,)))
    reserve_as(state, "v", (BAG, "st-par", 3), **VIP)
    set_rules(state, rules_text(protections=(FLAGSHIP_1,), version="v2"))
    assert consumed(state, "flagship-bags", BAG, "st-par") == 3
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    state.apply(Release("v"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 9
    state.check_invariants()


def test_protection_dropped_then_restored_counts_its_holds_again() -> None:
    """Holds on a dropped protection stop counting, and count again when it returns."""
    state = world()
    set_rules(state, rules_text(protections=(FLAGSHIP_3,)))
    reserve_as(state, "v", (BAG, "st-par", 2), **VIP)
    set_rules(state, rules_text(version="v2"))
    assert atp_as(state, BAG, "st-par", **WEB) == 8
    assert not any(table.any() for table in state.protection_consumed.values())
    set_rules(state, rules_text(protections=(FLAGSHIP_3,), version="v3"))
    assert consumed(state, "flagship-bags", BAG, "st-par") == 2
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    state.apply(Release("v"), state.now_ms)
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    state.check_invariants()


def test_release_while_the_protection_is_gone_then_restored() -> None:
    """A hold released while its protection is gone leaves nothing when it returns."""
    state = world()
    set_rules(state, rules_text(protections=(FLAGSHIP_3,)))
    reserve_as(state, "v", (BAG, "st-par", 2), **VIP)
    set_rules(state, rules_text(version="v2"))
    state.apply(Release("v"), state.now_ms)
    set_rules(state, rules_text(protections=(FLAGSHIP_3,), version="v3"))
    assert consumed(state, "flagship-bags", BAG, "st-par") == 0
    assert atp_as(state, BAG, "st-par", **WEB) == 7
    assert atp_as(state, BAG, "st-par", **VIP) == 10


def test_swap_to_no_protections_then_back_keeps_reserved() -> None:
    """Whatever the swaps, reserved at every position is the sum of open holds."""
    state = world()
    texts = [
        rules_text(protections=(FLAGSHIP_3,), version="a"),
        rules_text({"channels.web": 'nodes = { kinds = ["STORE"] }'}, version="b"),
        rules_text(protections=(OTHER, FLAGSHIP_4), version="c"),
    ]
    callers: list[Caller] = [WEB, VIP, {"channel": "store", "segment": "standard"}]
    count = 0
    for round_ in range(6):
        set_rules(state, texts[round_ % 3])
        for caller in callers:
            for node_id in ("st-par", "st-ber", "wh-par"):
                count += 1
                reserve_as(state, f"r{count}", (BAG, node_id, 1), **caller)
        if round_ % 2:
            for reservation_id in list(state.reservations)[::3]:
                state.apply(Release(reservation_id), state.now_ms)
        state.check_invariants()
