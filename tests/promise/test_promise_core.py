"""The promise assembled end to end on a small network: options against a brute force over
every assignment, the caller's rules (visibility, ATP, sourcing), dates, pickups, listing."""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from network.support import NOW_MS, make_world

from atpd.core.calendar import (
    CarrierSchedule,
    NodeCalendar,
    date_of,
    delivery_epoch_days,
    local_instant_ms,
)
from atpd.core.commands import AddSupply, Line, Release, Reserve, SetCarrierCapacity
from atpd.core.handlers_network import compiled_network
from atpd.core.network_compile import epoch_day
from atpd.core.plan import Plan
from atpd.core.promise import promise
from atpd.core.promise_context import NoNetwork
from atpd.core.promise_listing import earliest_deliveries
from atpd.core.promise_pickup import associate
from atpd.core.reads import availability
from atpd.core.results import InvalidCommand, NotFound, Outcome
from atpd.core.rules import RulesError, parse_rules
from atpd.core.sourcing import Objective
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind

from .promise_support import RULES, world

DAY_MS = 86_400_000
NODES = ("WH-1", "ST-PAR", "ST-NYC")
SKUS = ("BAG-1", "SHOE-1", "BELT-1")
# Every-kind, many-parcel, cheapest-first rules: the brute force's setting.
OPEN_RULES = """\
version = "open"
[defaults]
channel = "web"
segment = "standard"
[policy]
nodes = { kinds = ["WAREHOUSE", "STORE"], exclude = ["ST-LON"] }
sourcing = { max_shipments = 3 }
[channels.web]
[segments.standard]
"""


def brute_force(state: AtpState, lines: list[tuple[str, int]]) -> tuple[int, int] | None:
    """(least cost, least delivery day) over every assignment of lines to (node, service)
    origins able to deliver to fr-paris, computed from the calendar functions directly."""
    network = compiled_network(state)
    zone = network.zone_index("fr-paris")
    view = availability(state, [sku for sku, _ in lines])
    choices: list[list[tuple[int, int, int]]] = []  # per line: (node, service, day)
    for line, (_, quantity) in enumerate(lines):
        found = []
        for node_id in NODES:
            node = state.node_ids.get(node_id)
            if view.matrix[line, node] < quantity or not network.ships[node]:
                continue
            logistics = network.network.node_by_id[node_id]
            calendar = NodeCalendar(
                logistics.time_zone,
                logistics.cutoff_minutes,
                logistics.processing_minutes,
                frozenset(logistics.open_weekdays),
                frozenset(logistics.closed_dates),
            )
            for service, model in enumerate(network.network.services):
                transit = int(network.transit_days[service, zone])
                if not network.origin[service, node] or transit < 0:
                    continue
                carrier = CarrierSchedule(
                    frozenset(model.pickup_weekdays), model.pickup_cutoff_minutes, transit
                )
                found.append((node, service, delivery_epoch_days(calendar, carrier, NOW_MS)[0]))
        choices.append(found)
    best: tuple[int, int] | None = None
    for assignment in itertools.product(*choices):
        groups: dict[tuple[int, int], int] = {}
        for (node, service, _), (_, quantity) in zip(assignment, lines, strict=True):
            groups[(node, service)] = groups.get((node, service), 0) + quantity
        if len(groups) > 3:
            continue
        cost = 0
        for (node, service), count in groups.items():
            distance = float(network.distance_km[node, zone])
            cost += round(
                (network.cost_base[service] + network.cost_per_km[service] * distance) * 100
            )
            cost += round(network.cost_per_item[service] * 100) * count
        day = max(day for _, _, day in assignment)
        best = (cost, day) if best is None else (min(best[0], cost), min(best[1], day))
    return best


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stock=st.dictionaries(
        st.tuples(st.sampled_from(SKUS), st.sampled_from(NODES)), st.integers(0, 4), max_size=9
    ),
    quantities=st.lists(st.integers(1, 3), min_size=1, max_size=3),
)
def test_options_match_brute_force(
    stock: dict[tuple[str, str], int], quantities: list[int]
) -> None:
    """The cheapest and fastest options are the least cost and delivery day over every
    assignment (dates from the calendar functions), or there is no option when none exists;
    no option ships more than the caller's ATP at a node."""
    lines = list(zip(SKUS, quantities, strict=False))
    for sku, _ in lines:
        stock.setdefault((sku, "ST-LON"), 0)  # every SKU known, so the search always runs
    state = world(stock, OPEN_RULES)
    answer = promise(state, lines, NOW_MS, "FR", "75008")
    expected = brute_force(state, lines)
    if expected is None:
        assert not answer.options, answer
        return
    assert answer.options, answer.no_option_reason
    by_reason = {reason: option for option in answer.options for reason in option.reasons}
    assert by_reason[Objective.CHEAPEST].cost_minor == expected[0]
    assert by_reason[Objective.FASTEST].delivery_earliest_day == expected[1]
    view = availability(state, [sku for sku, _ in lines])
    for option in answer.options:
        for sku, node_id, quantity in option.plan.lines():
            row = [s for s, _ in lines].index(sku)
            assert quantity <= view.matrix[row, state.node_ids.get(node_id)]
            assert node_id != "ST-LON"  # excluded from the caller's view


def test_standard_and_vip_differ_as_the_rules_say() -> None:
    """A standard customer gets one parcel from the warehouse only (so a cart split between
    the warehouse and a store has no option); a VIP gets it in two parcels."""
    state = world({("BAG-1", "WH-1"): 2, ("SHOE-1", "ST-PAR"): 1})
    cart = [("BAG-1", 1), ("SHOE-1", 1)]
    standard = promise(state, cart, NOW_MS, "FR", "75008")
    assert not standard.options and "SHOE-1" not in standard.no_option_reason
    assert standard.no_option_reason
    vip = promise(state, cart, NOW_MS, "FR", "75008", segment="vip")
    assert vip.options
    nodes = {shipment.node_id for shipment in vip.options[0].shipments}
    assert nodes == {"WH-1", "ST-PAR"}
    assert vip.options[0].plan.segment == "vip" and vip.options[0].plan.channel == "web"
    alone = promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008")
    assert [s.node_id for s in alone.options[0].shipments] == ["WH-1"]


def test_cutoff_moves_the_ship_day() -> None:
    """An order after the warehouse's 15:30 cut-off (Paris time) ships a working day later;
    a Friday evening order ships on Monday (the warehouse is closed at weekends)."""
    state = world({("BAG-1", "WH-1"): 3})
    monday = epoch_day(date_of(NOW_MS // DAY_MS))
    before = local_instant_ms("Europe/Paris", monday, 9 * 60)
    after = local_instant_ms("Europe/Paris", monday, 16 * 60)
    friday_evening = local_instant_ms("Europe/Paris", monday + 4, 16 * 60)
    days = [
        promise(state, [("BAG-1", 1)], when, "FR", "75008").options[0].shipments[0].ship_day
        for when in (before, after, friday_evening)
    ]
    assert days == [monday, monday + 1, monday + 7]


def test_supply_by_eta_delays_the_delivery() -> None:
    """Stock arriving by a purchase order in 3 days is promised after its ETA, not before."""
    state = world({("BAG-1", "WH-1"): 0})
    eta_ms = NOW_MS + 3 * DAY_MS
    state.apply(AddSupply("PO-1", "BAG-1", "WH-1", 2, eta_ms, SupplyKind.PURCHASE_ORDER), NOW_MS)
    answer = promise(state, [("BAG-1", 2)], NOW_MS, "FR", "75008")
    ship_day = answer.options[0].shipments[0].ship_day
    assert ship_day >= eta_ms // DAY_MS
    too_many = promise(state, [("BAG-1", 3)], NOW_MS, "FR", "75008")
    assert not too_many.options


def test_no_slot_left_means_no_option_from_there() -> None:
    """A carrier with no slot on the ship day is not offered from that origin."""
    state = world({("BAG-1", "WH-1"): 3})
    first = promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008").options[0].shipments[0]
    state.apply(
        SetCarrierCapacity(first.service_id, "WH-1", date_of(first.ship_day).isoformat(), 0),
        NOW_MS,
    )
    again = promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008")
    assert all(
        (s.service_id, s.ship_day) != (first.service_id, first.ship_day)
        for option in again.options
        for s in option.shipments
    )


def test_pickup_local_and_by_transfer() -> None:
    """At a store: its own stock is ready first; the warehouse's comes by the 2-day lane;
    a caller without transfers gets only the local option."""
    state = world({("BAG-1", "WH-1"): 5, ("BAG-1", "ST-PAR"): 1})
    answer = promise(state, [("BAG-1", 1)], NOW_MS, pickup_node_id="ST-PAR")
    sources = [(o.source_node_id, o.transfer_lead_days) for o in answer.pickup_options]
    assert sources == [("ST-PAR", 0), ("WH-1", 2)]
    assert answer.pickup_options[0].ready_by_ms < answer.pickup_options[1].ready_by_ms
    assert answer.pickup_options[0].plan.shipments[0].is_pickup
    assert answer.destination == "pickup:ST-PAR"
    two = promise(state, [("BAG-1", 2)], NOW_MS, pickup_node_id="ST-PAR", segment="nostore")
    assert not two.pickup_options and "transfers are not allowed" in two.no_option_reason


def test_unknown_sku_answers_no_option_with_a_reason() -> None:
    """An unknown SKU is no error: no option, and the reason names it."""
    state = world({("BAG-1", "WH-1"): 5})
    answer = promise(state, [("BAG-1", 1), ("NOPE", 1)], NOW_MS, "FR", "75008")
    assert not answer.options and "NOPE" in answer.no_option_reason


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"country": "FR", "postal_code": "75008", "lines": []}, InvalidCommand, "lines"),
        ({"country": "FR", "lines": [("A", 0)]}, InvalidCommand, "lines[0].quantity"),
        ({"country": "FR", "lines": [("A", 1), ("A", 1)]}, InvalidCommand, "lines[1].sku"),
        ({"country": "ZZ", "lines": [("A", 1)]}, InvalidCommand, "destination"),
        ({"country": "FRA", "lines": [("A", 1)]}, InvalidCommand, "destination.country"),
        ({"lines": [("A", 1)]}, InvalidCommand, "destination"),
        ({"pickup_node_id": "NOPE", "lines": [("A", 1)]}, NotFound, "pickup_node_id"),
        ({"pickup_node_id": "WH-1", "lines": [("A", 1)]}, InvalidCommand, "pickup_node_id"),
        ({"country": "FR", "lines": [("A", 1)], "segment": "x"}, InvalidCommand, "segment"),
    ],
)
def test_bad_input_names_the_field(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Bad promise input is refused with an error naming the field."""
    state = world({("BAG-1", "WH-1"): 5})
    lines = arguments.pop("lines")
    with pytest.raises(error, match=re.escape(message)):
        promise(state, lines, NOW_MS, **arguments)


def test_no_network_is_a_precondition() -> None:
    """Without a network a promise is refused with a message saying how to load one."""
    state = make_world()
    with pytest.raises(NoNetwork, match="network"):
        promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008")


def test_listing_matches_the_fastest_promise() -> None:
    """PromiseBatch's earliest day per SKU is the fastest option's delivery day for one unit."""
    state = world({("BAG-1", "WH-1"): 5, ("SHOE-1", "ST-PAR"): 1, ("BELT-1", "ST-NYC"): 1})
    skus = ["BAG-1", "SHOE-1", "BELT-1", "NOPE"]
    listing = earliest_deliveries(state, skus, NOW_MS, "FR", "75008", segment="vip")
    for index, sku in enumerate(skus[:3]):
        answer = promise(state, [(sku, 1)], NOW_MS, "FR", "75008", segment="vip")
        fastest = [o for o in answer.options if Objective.FASTEST in o.reasons]
        expected = fastest[0].delivery_earliest_day if fastest else -1
        assert listing.earliest_day[index] == expected, sku
    assert listing.earliest_day[3] == -1


def test_associate_view_lists_nodes_with_lead_times() -> None:
    """From a store: the store itself (lead 0), the warehouse by its lane (lead 2) and a
    store with no lane to it (lead -1, no pickup)."""
    state = world({("BAG-1", "WH-1"): 5, ("BAG-1", "ST-PAR"): 1, ("BAG-1", "ST-NYC"): 2})
    zone, rows = associate(
        state, "BAG-1", "ST-PAR", NOW_MS, segment="vip", country="FR", postal_code="75008"
    )
    assert zone == "fr-paris"
    leads = {row.node_id: row.transfer_lead_days for row in rows}
    assert leads == {"ST-PAR": 0, "WH-1": 2, "ST-NYC": -1}
    assert next(row for row in rows if row.node_id == "ST-NYC").pickup_ready_ms == -1
    assert all(row.delivery_earliest_day > 0 for row in rows)


@pytest.mark.parametrize(
    ("sourcing", "message"),
    [
        ("max_shipments = 0", "sourcing.max_shipments"),
        ("max_shipments = 17", "sourcing.max_shipments"),
        ("weights = { speed = 1 }", "sourcing.weights.speed"),
        ("weights = { cost = -1 }", "sourcing.weights.cost"),
        ('ship_from_kinds = ["SHED"]', r"sourcing.ship_from_kinds\[0\]"),
        ("cost_ceiling = -5", "sourcing.cost_ceiling"),
        ('pickup_transfers = "yes"', "sourcing.pickup_transfers"),
        ("colour = 1", "sourcing.colour"),
    ],
)
def test_bad_sourcing_rules_refused(sourcing: str, message: str) -> None:
    """A bad sourcing table is refused, naming its key path."""
    text = f"{RULES}[segments.bad]\nsourcing = {{ {sourcing} }}\n"
    with pytest.raises(RulesError, match=f"segments.bad.{message}"):
        parse_rules(text)


def test_line_over_max_per_line_has_no_option() -> None:
    """A line over the caller's max_per_line (which Reserve refuses) answers no option and
    says so, for delivery and pickup."""
    capped = RULES.replace("[channels.web]\n", "[channels.web]\nmax_per_line = 2\n")
    state = world({("BAG-1", "WH-1"): 5, ("BAG-1", "ST-PAR"): 5}, capped)
    answer = promise(state, [("BAG-1", 3)], NOW_MS, "FR", "75008")
    assert not answer.options and "max_per_line (2): BAG-1 x3" in answer.no_option_reason
    pickup = promise(state, [("BAG-1", 3)], NOW_MS, pickup_node_id="ST-PAR")
    assert not pickup.pickup_options and "max_per_line" in pickup.no_option_reason
    assert promise(state, [("BAG-1", 2)], NOW_MS, "FR", "75008").options


def test_excluded_node_sends_no_transfer_for_pickup() -> None:
    """A node the caller's sourcing excludes is no transfer source for a pickup either."""
    state = world({("BAG-1", "WH-1"): 5})
    assert promise(state, [("BAG-1", 1)], NOW_MS, pickup_node_id="ST-PAR").pickup_options
    excluded = promise(
        state, [("BAG-1", 1)], NOW_MS, pickup_node_id="ST-PAR", segment="nowarehouse"
    )
    assert not excluded.pickup_options


def test_a_reserved_option_takes_its_slot_out_of_later_promises() -> None:
    """Once a reservation of an option holds the last carrier slot of its service, origin and
    day, a new promise no longer offers that slot (the counts the writer re-checks), and
    releasing the reservation offers it again."""
    state = world({("BAG-1", "WH-1"): 3})
    option = promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008").options[0]
    first = option.shipments[0]
    state.apply(
        SetCarrierCapacity(first.service_id, "WH-1", date_of(first.ship_day).isoformat(), 1),
        NOW_MS,
    )
    plan = option.plan
    lines = tuple(Line(sku, node, quantity) for sku, node, quantity in plan.lines())
    reserve = Reserve("cart-1", lines, 600_000, channel=plan.channel, segment=plan.segment)
    result = state.apply(dataclasses.replace(reserve, plan=plan), NOW_MS)
    assert result.outcome is Outcome.OK, result

    def offered() -> bool:
        again = promise(state, [("BAG-1", 1)], NOW_MS, "FR", "75008")
        return any(
            (s.service_id, s.ship_day) == (first.service_id, first.ship_day)
            for candidate in again.options
            for s in candidate.shipments
        )

    assert not offered()
    state.apply(Release("cart-1"), NOW_MS)
    assert offered()


def test_a_plan_whose_ship_day_can_no_longer_be_met_is_promise_changed() -> None:
    """A plan promised just before the node's cut-off, reserved just after it, would promise a
    pickup that has already left: the writer answers PROMISE_CHANGED and holds nothing."""
    state = world({("A", "WH-1"): 50})

    def best(now_ms: int) -> Plan | None:
        answer = promise(state, [("A", 1)], now_ms, "FR", "75008")
        return answer.options[0].plan if answer.options else None

    minute_ms = 60_000
    previous = best(NOW_MS)
    for step in range(1, 24 * 60):
        now_ms = NOW_MS + step * minute_ms
        current = best(now_ms)
        if (
            previous is not None
            and current is not None
            and current.shipments[0].ship_day != previous.shipments[0].ship_day
        ):
            break
        previous = current
    else:
        raise AssertionError("the ship day never moved within a day")
    assert previous is not None
    digest_before = state.digest()
    lines = tuple(Line(sku, node, quantity) for sku, node, quantity in previous.lines())
    command = Reserve("late", lines, 600_000, channel=previous.channel, segment=previous.segment)
    result = state.apply(dataclasses.replace(command, plan=previous), now_ms)
    assert result.outcome is Outcome.PROMISE_CHANGED
    assert state.digest() == digest_before
