"""Bad rule files: each is refused whole with InvalidCommand naming the source and the key path
(or the line, for TOML syntax errors) and the problem, and the rules in force, the state and
every caller's answers stay exactly as they were."""

from __future__ import annotations

import pytest

from atpd.core.commands import SetRules
from atpd.core.results import InvalidCommand
from atpd.core.rules import RulesError, parse_rules
from atpd.core.state import AtpState

from .support import SOURCE, atp_by_node, make_world, reserve_as, rules_text, set_rules, stock

GOOD_PROTECTION = 'name = "flag"\nnodes = { tags = ["flagship"] }\nunits = 2\nfor = ["*/vip"]'


def protection(body: str) -> str:
    return rules_text(protections=(body,))


# (rule text, what the message must name besides the source)
BAD_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "toml syntax": ('version = "v2"\n[channels.web\nbuffer = 1\n', ("line 2",)),
    "unknown top-level key": ("colour = 1\n" + rules_text(), ("top level", "colour")),
    "unknown policy key": (
        rules_text({"channels.web": "bufer = 1"}),
        ("channels.web", "bufer"),
    ),
    "unknown selector key": (
        rules_text({"policy": 'nodes = { kind = ["STORE"] }'}),
        ("policy.nodes", "kind"),
    ),
    "wrong type": (
        rules_text({"channels.web": 'buffer = "two"'}),
        ("channels.web.buffer", "int"),
    ),
    "negative count": (
        rules_text({"segments.vip": "max_per_line = -1"}),
        ("segments.vip.max_per_line", "-1"),
    ),
    "wrong type in a list": (
        rules_text({"channels.web": "nodes = { tags = [1] }"}),
        ("channels.web.nodes.tags[0]",),
    ),
    "missing version": (rules_text().replace('version = "v1"', ""), ("version",)),
    "unknown node kind": (
        rules_text({"policy": 'nodes = { kinds = ["WAREHOUSE", "SHOP"] }'}),
        ("policy.nodes.kinds[1]", "SHOP"),
    ),
    "unknown node kind in safety": (
        rules_text({"channels.store": "safety = { kinds = { KIOSK = 1 } }"}),
        ("channels.store.safety.kinds", "KIOSK"),
    ),
    "unknown supply kind": (
        rules_text({"segments.vip": 'supply = { kinds = ["PURCHASE_ORDER", "GIFT"] }'}),
        ("segments.vip.supply.kinds[1]", "GIFT"),
    ),
    "negative horizon": (
        rules_text({"segments.vip": 'supply = { kinds = ["TRANSFER"], horizon_hours = -1 }'}),
        ("segments.vip.supply.horizon_hours",),
    ),
    "unknown node id in a channel": (
        rules_text({"channels.web": 'nodes = { include = ["st-par", "ghost"] }'}),
        ("channels.web.nodes.include", "ghost"),
    ),
    "unknown node id in the base policy": (
        rules_text({"policy": 'nodes = { exclude = ["ghost"] }'}),
        ("policy.nodes.exclude", "ghost"),
    ),
    "unknown node id in safety": (
        rules_text({"channels.store": "safety = { nodes = { ghost = 1 } }"}),
        ("channels.store.safety.nodes", "ghost"),
    ),
    "unknown geo prefix": (
        rules_text({"channels.web": 'nodes = { geo = ["EU/IT"] }'}),
        ("channels.web.nodes.geo", "EU/IT"),
    ),
    "unknown node id in a protection": (
        protection('name = "p"\nnodes = { include = ["ghost"] }\nunits = 1\nfor = ["*/vip"]'),
        ("protections[0].nodes.include", "ghost"),
    ),
    "protection for an unknown channel": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = ["shop/*"]'),
        ("protections[0].for[0]", "shop"),
    ),
    "protection for an unknown segment": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = ["*/gold"]'),
        ("protections[0].for[0]", "gold"),
    ),
    "protection with units and percent": (
        protection(
            'name = "p"\nnodes = { tags = ["flagship"] }\nunits = 1\npercent = 10\nfor = ["*/vip"]'
        ),
        ("protections[0]", "units", "percent"),
    ),
    "protection with neither units nor percent": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\nfor = ["*/vip"]'),
        ("protections[0]", "units", "percent"),
    ),
    "protection over 100 percent": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\npercent = 101\nfor = ["*/vip"]'),
        ("protections[0].percent", "101"),
    ),
    "protection without beneficiaries": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = []'),
        ("protections[0].for",),
    ),
    "bad beneficiary pattern": (
        protection('name = "p"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = ["web"]'),
        ("protections[0].for[0]", "CHANNEL/SEGMENT"),
    ),
    "protection without nodes": (
        protection('name = "p"\nunits = 1\nfor = ["*/vip"]'),
        ("protections[0].nodes",),
    ),
    "empty version": (rules_text(version=""), ("version", "empty")),
    "bad channel name": (rules_text({"channels.Web": ""}), ("'Web'", "channel")),
    "duplicate protection name": (
        rules_text(protections=(GOOD_PROTECTION, GOOD_PROTECTION)),
        ("protections[1].name", "flag"),
    ),
}


def loaded_world() -> AtpState:
    """Rules v1 in force (web sees warehouses and flagships, a protection for VIPs) and holds
    taken under them, protected units included."""
    state = make_world()
    for node_id in ("wh-par", "st-par", "st-lyo"):
        stock(state, "BAG-1", node_id, 10)
    tables = {"channels.web": 'nodes = { kinds = ["WAREHOUSE"], tags = [] }\nbuffer = 1'}
    set_rules(state, rules_text(tables, (GOOD_PROTECTION,), version="v1"))
    reserve_as(state, "v", ("BAG-1", "st-par", 1), channel="web", segment="vip")
    reserve_as(state, "w", ("BAG-1", "wh-par", 2), channel="web", segment="standard")
    return state


def answers(state: AtpState) -> dict[tuple[str, str], dict[str, int]]:
    return {
        (channel, segment): atp_by_node(state, "BAG-1", channel, segment)
        for channel in ("web", "store")
        for segment in ("standard", "vip")
    }


@pytest.mark.parametrize("case", sorted(BAD_RULES))
def test_bad_rule_file_is_refused_naming_source_and_key(case: str) -> None:
    """A bad rule file is refused naming source, key path (or line) and problem; nothing changes."""
    text, named = BAD_RULES[case]
    state = loaded_world()
    before_digest, before_answers = state.digest(), answers(state)
    before_consumed = {row: table.copy() for row, table in state.protection_consumed.items()}
    with pytest.raises(InvalidCommand) as refused:
        state.apply(SetRules(text, SOURCE), state.now_ms + 5)
    message = str(refused.value)
    assert SOURCE in message, message
    for part in named:
        assert part in message, (part, message)
    assert state.rules.version == "v1"
    assert state.digest() == before_digest
    assert answers(state) == before_answers
    assert state.protection_consumed.keys() == before_consumed.keys()
    for row, table in before_consumed.items():
        assert (state.protection_consumed[row] == table).all()


@pytest.mark.parametrize(
    "case",
    sorted(
        case
        for case in BAD_RULES
        if "unknown node id" not in case and "geo" not in case and "protection for" not in case
    ),
)
def test_parse_errors_need_no_state(case: str) -> None:
    """Errors found by parsing alone are RulesError from parse_rules, naming the source."""
    text, named = BAD_RULES[case]
    with pytest.raises(RulesError) as refused:
        parse_rules(text, SOURCE)
    message = str(refused.value)
    assert message.startswith(f"{SOURCE}: "), message
    for part in named:
        assert part in message, (part, message)


def test_good_rules_after_a_refusal_apply_normally() -> None:
    """After a refusal the next good rule set applies and names the version it replaced."""
    state = loaded_world()
    with pytest.raises(InvalidCommand):
        set_rules(state, rules_text({"channels.web": "bufer = 1"}, version="v2"))
    result = set_rules(state, rules_text(version="v3"))
    assert (result.version, result.previous_version) == ("v3", "v1")
    state.check_invariants()
