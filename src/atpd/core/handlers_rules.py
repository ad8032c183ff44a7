"""The handler of SetRules: swap the availability rules atomically."""

from __future__ import annotations

from atpd.core.commands import SetRules
from atpd.core.protections import rebuild_protection_consumption
from atpd.core.results import InvalidCommand, Outcome, RulesResult
from atpd.core.rules import Known, RulesError, parse_rules
from atpd.core.state_fields import StateFields


def set_rules(state: StateFields, command: SetRules, now_ms: int) -> RulesResult:
    known = Known(frozenset(state.node_ids.names), frozenset(state.geo.geo_ids.names))
    try:
        rules = parse_rules(command.text, command.source, known, command.document)
    except RulesError as error:
        raise InvalidCommand(f"rules: {error}") from None
    previous = state.rules
    state.rules = rules
    state.compiled_cache = None
    rebuild_protection_consumption(state)
    return RulesResult(Outcome.OK, rules.version, previous.version)
