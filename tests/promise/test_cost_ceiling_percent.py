"""A cost ceiling as a percentage of the order value: `cost_ceiling = "15%"` in a sourcing
table, the order valued by the rule file's `[catalogue]` (unit values by SKU prefix)."""

from __future__ import annotations

import pytest
from network.support import NOW_MS

from atpd.core.promise import promise
from atpd.core.rules import RulesError, parse_rules
from atpd.core.rules_catalogue import order_value, parse_catalogue, percent_ceiling

from .promise_support import RULES, world


def cheapest_cost() -> int:
    """The cheapest option's cost for one BAG-1 to Paris, standard customer."""
    state = world({("BAG-1", "WH-1"): 5})
    return min(o.cost_minor for o in promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008").options)


def rules_with(unit_value: int, sourcing: str) -> str:
    return (
        f"{RULES}[segments.capped]\nsourcing = {{ {sourcing} }}\n"
        f'[catalogue]\n"BAG-" = {unit_value}\n"BAG-GOLD-" = {unit_value * 100}\n'
    )


def test_percent_ceiling_bounds_options_by_order_value() -> None:
    """An order valued at exactly the cheapest cost: "100%" keeps it, "99%" leaves no option
    (saying the ceiling); a SKU with no catalogued value is not bounded by a percentage."""
    cost = cheapest_cost()
    stock = {("BAG-1", "WH-1"): 5, ("TOY-1", "WH-1"): 5}
    at_cost = world(stock, rules_with(cost, 'cost_ceiling = "100%"'))
    kept = promise(at_cost, [("BAG-1", 1)], NOW_MS, "FR", "75008", segment="capped")
    assert kept.options and all(o.cost_minor <= cost for o in kept.options)
    below = world(stock, rules_with(cost, 'cost_ceiling = "99%"'))
    refused = promise(below, [("BAG-1", 1)], NOW_MS, "FR", "75008", segment="capped")
    assert not refused.options and "cost ceiling" in refused.no_option_reason
    unvalued = promise(below, [("TOY-1", 1)], NOW_MS, "FR", "75008", segment="capped")
    assert unvalued.options


def test_absolute_override_replaces_an_inherited_percentage() -> None:
    """A segment's absolute cost_ceiling replaces the policy's percentage (and vice versa)."""
    text = rules_with(1, "cost_ceiling = 1000000").replace(
        "[policy.sourcing]\n", '[policy.sourcing]\ncost_ceiling = "1%"\n'
    )
    rules = parse_rules(text)
    standard = rules.policies[("web", "standard")].sourcing
    capped = rules.policies[("web", "capped")].sourcing
    assert (standard.cost_ceiling, standard.cost_ceiling_percent) == (None, 1.0)
    assert (capped.cost_ceiling, capped.cost_ceiling_percent) == (1_000_000, None)
    state = world({("BAG-1", "WH-1"): 5}, text)
    assert not promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008").options
    assert promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008", segment="capped").options


def test_catalogue_values_by_longest_prefix() -> None:
    """The longest matching prefix values a SKU; the ceiling is rounded down; an unvalued
    line makes the order value unknown."""
    catalogue = parse_catalogue({"BAG-": 1000, "BAG-GOLD-": 50_000})
    assert order_value(catalogue, [("BAG-1", 2), ("BAG-GOLD-7", 1)]) == 52_000
    assert order_value(catalogue, [("BAG-1", 1), ("TOY", 1)]) is None
    assert percent_ceiling(catalogue, [("BAG-1", 3)], 12.5) == 375
    assert percent_ceiling(catalogue, [("BAG-1", 1)], 0.05) == 0


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        (
            '[segments.bad]\nsourcing = { cost_ceiling = "15" }\n',
            "segments.bad.sourcing.cost_ceiling",
        ),
        (
            '[segments.bad]\nsourcing = { cost_ceiling = "x%" }\n',
            "segments.bad.sourcing.cost_ceiling",
        ),
        ('[segments.bad]\nsourcing = { cost_ceiling = "1001%" }\n', "0..1000%"),
        (
            '[segments.bad]\nsourcing = { cost_ceiling = "-1%" }\n',
            "segments.bad.sourcing.cost_ceiling",
        ),
        ('[catalogue]\n"BAG-" = -1\n', "catalogue.BAG-"),
        ('[catalogue]\n"BAG-" = 1.5\n', "catalogue.BAG-"),
        ('[catalogue]\n"" = 1\n', "catalogue"),
        ("catalogue = 5\n", "catalogue: expected a table"),
    ],
)
def test_bad_percent_ceiling_or_catalogue_refused(addition: str, message: str) -> None:
    """A bad percentage or catalogue entry is refused naming its key."""
    text = addition + RULES if addition.startswith("catalogue =") else RULES + addition
    with pytest.raises(RulesError, match=message):
        parse_rules(text)
