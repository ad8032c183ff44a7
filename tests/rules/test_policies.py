"""Per-rule unit tests on AtpState: visibility, safety overrides, buffer, max_per_line, defaults
and unknown callers, and the open policy when no rules are loaded."""

from __future__ import annotations

import pytest

from atpd.core.commands import UpsertNode
from atpd.core.results import InvalidCommand, Outcome, Shortage, ShortageReason
from atpd.core.state import AtpState

from .support import (
    ALL_NODES,
    NODES,
    STORES,
    WAREHOUSES,
    atp_as,
    atp_by_node,
    make_world,
    reserve_as,
    rules_text,
    set_rules,
    stock,
    visible_nodes,
)

SKU = "BAG-1"


def stocked_world(on_hand: int = 10, safety: int | None = None) -> AtpState:
    state = make_world()
    for node_id in NODES:
        stock(state, SKU, node_id, on_hand, safety)
    return state


# ----------------------------------------------------------------------------- visibility


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ('{ kinds = ["WAREHOUSE"] }', WAREHOUSES),
        ('{ kinds = ["STORE", "OUTLET"] }', STORES | {"out-ber"}),
        ('{ geo = ["EU/FR"] }', {"wh-par", "st-par", "st-lyo"}),
        ('{ geo = ["EU/DE", "NA"] }', {"st-ber", "out-ber", "wh-nyc"}),
        ('{ geo = ["EU/FR/Paris"] }', {"wh-par", "st-par"}),
        ('{ tags = ["flagship"] }', {"st-par", "st-ber"}),
        ('{ tags = ["flagship", "east"] }', {"st-par", "st-ber", "out-ber"}),
        ('{ include = ["st-lyo", "wh-nyc"] }', {"st-lyo", "wh-nyc"}),
        ('{ kinds = ["WAREHOUSE"], include = ["st-par"] }', WAREHOUSES | {"st-par"}),
        ('{ kinds = ["STORE"], exclude = ["st-lyo"] }', {"st-par", "st-ber"}),
        ('{ include = ["st-lyo"], exclude = ["st-lyo"] }', set()),
        ('{ kinds = ["STORE"], geo = ["EU/FR"] }', {"st-par", "st-lyo"}),
        ('{ kinds = ["STORE"], tags = ["east"] }', {"st-ber"}),
        ("{ }", ALL_NODES),
    ],
)
def test_visibility_by_selector(selector: str, expected: set[str]) -> None:
    """A caller sees exactly the nodes its kinds/geo/tags/include/exclude selector matches."""
    state = stocked_world()
    set_rules(state, rules_text({"channels.web": f"nodes = {selector}"}))
    assert visible_nodes(state, "web", "standard") == expected
    assert set(atp_by_node(state, SKU, "web", "standard")) == expected
    # The other channel keeps the base policy: every node.
    assert set(atp_by_node(state, SKU, "store", "standard")) == ALL_NODES


def test_visibility_overrides_merge_base_channel_segment_channel_segment() -> None:
    """Node selectors merge base, channel, segment, channel.segment; the last one wins."""
    state = stocked_world()
    tables = {
        "policy": 'nodes = { kinds = ["WAREHOUSE"] }',
        "channels.store": 'nodes = { kinds = ["STORE"] }',
        "segments.vip": 'nodes = { kinds = ["WAREHOUSE", "STORE"] }',
        "channels.store.segments.vip": 'nodes = { kinds = ["OUTLET"] }',
    }
    set_rules(state, rules_text(tables))
    assert visible_nodes(state, "web", "standard") == WAREHOUSES
    assert visible_nodes(state, "store", "standard") == STORES
    assert visible_nodes(state, "web", "vip") == WAREHOUSES | STORES
    assert visible_nodes(state, "store", "vip") == {"out-ber"}


def test_disabled_node_is_invisible_even_when_selected() -> None:
    """A disabled node is seen by nobody, whatever the rules select."""
    state = stocked_world()
    set_rules(state, rules_text({"channels.web": 'nodes = { include = ["st-lyo", "st-par"] }'}))
    kind, geo, tags = NODES["st-lyo"]
    state.apply(UpsertNode("st-lyo", kind, geo, enabled=False, tags=tags), 0)
    assert visible_nodes(state, "web", "standard") == {"st-par"}
    assert atp_by_node(state, SKU, "web", "standard") == {"st-par": 10}


def test_reserve_at_an_invisible_node_is_short_with_nothing_available() -> None:
    """A line at a node the caller cannot see is short with available 0."""
    state = stocked_world()
    set_rules(state, rules_text({"channels.web": 'nodes = { kinds = ["WAREHOUSE"] }'}))
    result = reserve_as(state, "r1", (SKU, "st-par", 1), channel="web", segment="standard")
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages == (Shortage(SKU, "st-par", 1, 0, ShortageReason.NOT_VISIBLE),)
    assert state.position(SKU, "st-par").reserved == 0
    ok = reserve_as(state, "r2", (SKU, "st-par", 1), channel="store", segment="standard")
    assert ok.outcome is Outcome.OK


def test_node_upsert_recompiles_visibility() -> None:
    """A node whose kind or tags change is seen (or not) under the new ones at once."""
    state = stocked_world()
    set_rules(state, rules_text({"channels.web": 'nodes = { tags = ["flagship"] }'}))
    assert visible_nodes(state, "web", "standard") == {"st-par", "st-ber"}
    kind, geo, _ = NODES["st-lyo"]
    state.apply(UpsertNode("st-lyo", kind, geo, tags=("flagship",)), 0)
    assert visible_nodes(state, "web", "standard") == {"st-par", "st-ber", "st-lyo"}
    assert atp_as(state, SKU, "st-lyo", "web", "standard") == 10


# ----------------------------------------------------------------------------- safety


def test_without_override_the_positions_own_safety_applies() -> None:
    """No safety override: the position's own safety stock is subtracted."""
    state = stocked_world(10, safety=2)
    set_rules(state, rules_text())
    assert atp_by_node(state, SKU, "web", "standard") == dict.fromkeys(NODES, 8)


def test_safety_override_by_kind_replaces_the_positions_own() -> None:
    """A kind safety override replaces the position's own there, even when lower."""
    state = stocked_world(10, safety=2)
    set_rules(state, rules_text({"channels.web": "safety = { kinds = { STORE = 1 } }"}))
    expected = {n: 9 if n in STORES else 8 for n in NODES}
    assert atp_by_node(state, SKU, "web", "standard") == expected
    assert atp_by_node(state, SKU, "store", "standard") == dict.fromkeys(NODES, 8)


def test_safety_zero_override_ignores_the_positions_own() -> None:
    """An override of 0 is an override: the position's safety no longer counts there."""
    state = stocked_world(10, safety=3)
    set_rules(state, rules_text({"segments.vip": "safety = { kinds = { STORE = 0 } }"}))
    expected = {n: 10 if n in STORES else 7 for n in NODES}
    assert atp_by_node(state, SKU, "web", "vip") == expected


def test_safety_strictest_of_kind_node_and_sku_prefix_wins() -> None:
    """Where several overrides apply (node kind, node, SKU prefix), the strictest one wins."""
    state = make_world()
    for sku in ("BAG-1", "WCH-1"):
        for node_id in NODES:
            stock(state, sku, node_id, 10, safety=2)
    safety = (
        'safety = { kinds = { STORE = 1 }, nodes = { st-par = 4 }, sku_prefixes = { "WCH-" = 3 } }'
    )
    set_rules(state, rules_text({"policy": safety}))
    bags = atp_by_node(state, "BAG-1", "web", "standard")
    watches = atp_by_node(state, "WCH-1", "web", "standard")
    assert bags == {
        "wh-par": 8,  # the position's own 2
        "wh-nyc": 8,
        "st-par": 6,  # max(kind 1, node 4)
        "st-lyo": 9,  # kind 1
        "st-ber": 9,
        "out-ber": 8,
    }
    assert watches == {
        "wh-par": 7,  # SKU prefix 3 replaces the position's 2
        "wh-nyc": 7,
        "st-par": 6,  # max(1, 4, 3)
        "st-lyo": 7,  # max(1, 3)
        "st-ber": 7,
        "out-ber": 7,
    }
    policy = state.policy("web", "standard")
    assert policy is not None
    row, node = state.skus.get("WCH-1"), state.node_ids.get("st-par")
    assert state.explain_position(policy, row, node)["safety_stock"] == 4


def test_segment_safety_table_replaces_the_channels_whole_table() -> None:
    """A segment's `safety` table replaces the channel's whole safety table."""
    state = make_world()
    stock(state, "WCH-1", "st-lyo", 10, safety=0)
    tables = {
        "channels.web": 'safety = { sku_prefixes = { "WCH-" = 3 } }',
        "segments.vip": "safety = { kinds = { STORE = 1 } }",
    }
    set_rules(state, rules_text(tables))
    assert atp_as(state, "WCH-1", "st-lyo", "web", "standard") == 7
    assert atp_as(state, "WCH-1", "st-lyo", "web", "vip") == 9


def test_reserve_honours_the_callers_safety() -> None:
    """Reserve checks against the caller's safety overrides, not the position's."""
    state = stocked_world(5, safety=0)
    set_rules(
        state,
        rules_text(
            {
                "channels.web": "safety = { kinds = { STORE = 2 } }",
                "channels.store": "safety = { kinds = { STORE = 0 } }",
            }
        ),
    )
    short = reserve_as(state, "w", ("BAG-1", "st-lyo", 4), channel="web", segment="standard")
    assert short.outcome is Outcome.INSUFFICIENT_STOCK
    assert short.shortages == (Shortage("BAG-1", "st-lyo", 4, 3),)
    ok = reserve_as(state, "s", ("BAG-1", "st-lyo", 5), channel="store", segment="standard")
    assert ok.outcome is Outcome.OK


# ----------------------------------------------------------------------------- buffer and cap


def test_buffer_keeps_the_last_units_of_each_node_back() -> None:
    """A buffer of N hides each node's last N units from the caller; ATP stays >= 0."""
    state = stocked_world(10, safety=1)
    state_rules = rules_text({"channels.web": "buffer = 3"})
    set_rules(state, state_rules)
    stock(state, SKU, "st-lyo", 3, safety=1)
    assert reserve_as(state, "r", (SKU, "wh-par", 4), channel="store").outcome is Outcome.OK
    by_node = atp_by_node(state, SKU, "web", "standard")
    assert by_node["wh-par"] == 10 - 4 - 1 - 3
    assert by_node["st-par"] == 10 - 1 - 3
    assert "st-lyo" not in by_node  # 3 - 1 - 3 < 0
    assert atp_as(state, SKU, "st-lyo", "store", "standard") == 2
    short = reserve_as(state, "w", (SKU, "st-par", 7), channel="web", segment="standard")
    assert short.shortages == (Shortage(SKU, "st-par", 7, 6),)


def test_max_per_line_caps_a_line_but_not_availability() -> None:
    """A line above max_per_line is short with available = cap; availability is uncapped."""
    state = stocked_world(10)
    set_rules(state, rules_text({"channels.web": "max_per_line = 3"}))
    assert atp_as(state, SKU, "wh-par", "web", "standard") == 10
    short = reserve_as(state, "a", (SKU, "wh-par", 4), channel="web", segment="standard")
    assert short.outcome is Outcome.INSUFFICIENT_STOCK
    assert short.shortages == (Shortage(SKU, "wh-par", 4, 3, ShortageReason.LINE_CAP),)
    assert state.position(SKU, "wh-par").reserved == 0
    ok = reserve_as(state, "b", (SKU, "wh-par", 3), channel="web", segment="standard")
    assert ok.outcome is Outcome.OK
    # Every line is capped on its own.
    two = reserve_as(
        state, "c", (SKU, "wh-par", 3), (SKU, "wh-nyc", 3), channel="web", segment="standard"
    )
    assert two.outcome is Outcome.OK


def test_max_per_line_reports_atp_when_atp_is_below_the_cap() -> None:
    """Under the cap, a short line reports the caller's ATP as available."""
    state = stocked_world(2)
    set_rules(state, rules_text({"channels.web": "max_per_line = 3"}))
    short = reserve_as(state, "a", (SKU, "wh-par", 3), channel="web", segment="standard")
    assert short.shortages == (Shortage(SKU, "wh-par", 3, 2),)


def test_segment_cap_zero_lifts_the_channel_cap() -> None:
    """max_per_line = 0 in a later override means no cap."""
    state = stocked_world(10)
    set_rules(
        state, rules_text({"channels.web": "max_per_line = 1", "segments.vip": "max_per_line = 0"})
    )
    assert reserve_as(
        state, "a", (SKU, "wh-par", 2), channel="web", segment="standard"
    ).outcome is (Outcome.INSUFFICIENT_STOCK)
    assert reserve_as(state, "b", (SKU, "wh-par", 9), channel="web", segment="vip").outcome is (
        Outcome.OK
    )


# ----------------------------------------------------------------------------- callers


def test_empty_channel_and_segment_mean_the_defaults() -> None:
    """Empty names resolve to the rule set's defaults, for reads and for Reserve."""
    state = stocked_world(10)
    tables = {
        "channels.web": 'nodes = { kinds = ["WAREHOUSE"] }',
        "segments.vip": 'nodes = { kinds = ["WAREHOUSE", "STORE"] }',
    }
    set_rules(state, rules_text(tables, defaults=("web", "standard")))
    assert atp_by_node(state, SKU) == atp_by_node(state, SKU, "web", "standard")
    assert atp_by_node(state, SKU, "", "vip") == atp_by_node(state, SKU, "web", "vip")
    assert atp_by_node(state, SKU, "store", "") == atp_by_node(state, SKU, "store", "standard")
    assert reserve_as(state, "r", (SKU, "st-par", 1)).outcome is Outcome.INSUFFICIENT_STOCK
    assert reserve_as(state, "v", (SKU, "st-par", 1), segment="vip").outcome is Outcome.OK


def test_without_defaults_the_first_names_are_the_defaults() -> None:
    """Without [defaults], empty names resolve to the first channel and segment by name."""
    state = stocked_world(10)
    set_rules(state, rules_text({"channels.store": "buffer = 4"}, defaults=None))
    assert state.rules.default_channel == "store"
    assert state.rules.default_segment == "standard"
    assert atp_by_node(state, SKU) == atp_by_node(state, SKU, "store", "standard")
    assert atp_as(state, SKU, "wh-par") == 6


@pytest.mark.parametrize(("channel", "segment"), [("shop", "standard"), ("web", "gold")])
def test_unknown_channel_or_segment_is_refused(channel: str, segment: str) -> None:
    """An undefined channel or segment is InvalidCommand everywhere and changes nothing."""
    state = stocked_world(10)
    set_rules(state, rules_text())
    before = state.digest()
    unknown = channel if channel != "web" else segment
    with pytest.raises(InvalidCommand, match=unknown):
        state.availability([SKU], channel=channel, segment=segment)
    with pytest.raises(InvalidCommand, match=unknown):
        state.policy(channel, segment)
    with pytest.raises(InvalidCommand, match=unknown):
        reserve_as(state, "r", (SKU, "wh-par", 1), channel=channel, segment=segment)
    with pytest.raises(InvalidCommand, match=unknown):
        state.catalogue(channel, segment)
    assert state.digest() == before
    assert "r" not in state.reservations


def test_no_rules_is_the_open_policy() -> None:
    """With no rule set every caller sees every enabled node with positions' own safety."""
    state = stocked_world(10, safety=1)
    assert state.policy("anything", "at-all") is None
    expected = dict.fromkeys(NODES, 9)
    for channel, segment in (("", ""), ("web", "vip"), ("marketplace", "standard")):
        view = state.availability([SKU], channel=channel, segment=segment)
        by_node = {n.node_id: int(view.matrix[0, n.index]) for n in state.nodes}
        assert by_node == expected
    ok = reserve_as(state, "r", (SKU, "wh-par", 9), channel="marketplace", segment="x")
    assert ok.outcome is Outcome.OK
    assert state.position(SKU, "wh-par").atp == 0


def test_reserve_records_the_callers_channel_and_segment() -> None:
    """The reservation keeps the channel and segment it was made for."""
    state = stocked_world(10)
    set_rules(state, rules_text())
    result = reserve_as(state, "r", (SKU, "wh-par", 1), channel="store", segment="vip")
    assert result.reservation is not None
    assert (result.reservation.channel, result.reservation.segment) == ("store", "vip")


def test_all_or_nothing_over_lines_under_the_callers_rules() -> None:
    """One short line under the caller's rules refuses all, listing every short line."""
    state = stocked_world(5)
    set_rules(
        state,
        rules_text({"channels.web": 'nodes = { kinds = ["WAREHOUSE"] }\nbuffer = 1'}),
    )
    result = reserve_as(
        state,
        "r",
        (SKU, "wh-par", 4),
        (SKU, "st-par", 1),
        (SKU, "wh-nyc", 5),
        channel="web",
        segment="standard",
    )
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages == (
        Shortage(SKU, "st-par", 1, 0, ShortageReason.NOT_VISIBLE),
        Shortage(SKU, "wh-nyc", 5, 4),
    )
    assert all(state.position(SKU, n).reserved == 0 for n in NODES)


def test_kind_names_are_case_insensitive_in_rules() -> None:
    """Node kinds in a rule file may be written in any case."""
    state = stocked_world(10)
    set_rules(state, rules_text({"channels.web": 'nodes = { kinds = ["warehouse"] }'}))
    assert visible_nodes(state, "web", "standard") == WAREHOUSES
