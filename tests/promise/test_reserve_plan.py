"""Reserving a promised plan in the core: stock, carrier slots and pick capacity held together,
PROMISE_CHANGED holding nothing, give-backs on release and expiry, fulfilment spending them,
idempotency, and the holds through the journal codec and a snapshot with an equal digest."""

from __future__ import annotations

import dataclasses

import pytest
from network.support import NOW_MS

from atpd.core.checks import digest
from atpd.core.commands import Fulfil, Line, Release, ReservationKind, SetCarrierCapacity, Tick
from atpd.core.handlers_network import capacity_calendar, slots_left
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.core.results import AlreadyExists, ChangedResource, InvalidCommand, Outcome
from atpd.persistence.codec import UndecodableRecord, decode_command, encode_command
from atpd.persistence.state_snapshot import export_state, import_state

from .reserve_plan_support import (
    SHIP_DATE,
    SHIP_DAY,
    TTL_MS,
    pickup_plan,
    plan_world,
    reserve_plan,
    reserve_plan_command,
    two_shipment_plan,
)


def test_reserve_plan_holds_stock_slots_and_picks() -> None:
    """An OK reserve of a 2-shipment plan holds its lines, one slot and one pick per shipment."""
    state = plan_world(slots=3)
    result = reserve_plan(state, "r1", two_shipment_plan(2))
    assert result.outcome is Outcome.OK and result.reservation is not None
    assert result.reservation.plan == two_shipment_plan(2)
    assert state.position("A", "WH-1").reserved == 2 and state.position("C", "ST-PAR").reserved == 2
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 2
    assert state.carrier_capacity.get("courier", "ST-PAR", SHIP_DAY) is not None
    assert state.pick_capacity.rows() == [("ST-PAR", SHIP_DAY, 1, 0), ("WH-1", SHIP_DAY, 1, 0)]
    state.check_invariants()


def test_pickup_holds_no_slot() -> None:
    """A pickup shipment holds the store's pick capacity but no carrier slot."""
    state = plan_world()
    assert reserve_plan(state, "r1", pickup_plan()).outcome is Outcome.OK
    assert len(state.carrier_capacity) == 0
    assert state.pick_capacity.rows() == [("ST-PAR", SHIP_DAY, 1, 0)]
    state.check_invariants()


def test_default_slots_are_counted() -> None:
    """On a date the TMS never set, holds count against the service's default slots."""
    state = plan_world()
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 10
    assert reserve_plan(state, "r1", two_shipment_plan()).outcome is Outcome.OK
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 9
    row = capacity_calendar(state, "express", "WH-1", SHIP_DATE, SHIP_DATE)[0]
    assert (row.slots, row.held, row.left, row.explicit) == (10, 1, 9, False)
    state.apply(SetCarrierCapacity("express", "WH-1", SHIP_DATE, 4), NOW_MS)
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 3
    state.check_invariants()


def test_last_slot_taken_gives_promise_changed_and_holds_nothing() -> None:
    """With the last slot taken, a second plan gets PROMISE_CHANGED naming the slot; the
    state (digest) is unchanged."""
    state = plan_world(slots=1)
    assert reserve_plan(state, "r1", two_shipment_plan()).outcome is Outcome.OK
    before = digest(state)
    result = reserve_plan(state, "r2", two_shipment_plan())
    assert result.outcome is Outcome.PROMISE_CHANGED and result.reservation is None
    assert [(c.shipment, c.resource) for c in result.changes] == [(0, ChangedResource.CARRIER_SLOT)]
    assert "'express' at 'WH-1'" in result.changes[0].detail
    assert digest(state) == before and "r2" not in state.reservations
    state.check_invariants()


def test_pick_capacity_exhausted_gives_promise_changed() -> None:
    """A node whose pick capacity of the day is taken refuses the next plan, naming it."""
    state = plan_world(pick_capacity=1)
    assert reserve_plan(state, "r1", pickup_plan()).outcome is Outcome.OK
    before = digest(state)
    result = reserve_plan(state, "r2", two_shipment_plan())
    assert result.outcome is Outcome.PROMISE_CHANGED
    assert [(c.shipment, c.resource) for c in result.changes] == [
        (1, ChangedResource.PICK_CAPACITY)
    ]
    assert digest(state) == before


def test_stock_moved_gives_promise_changed_with_shortages() -> None:
    """Too little stock now: PROMISE_CHANGED with the short line, and no slot held."""
    state = plan_world(slots=2)
    before = digest(state)
    result = reserve_plan(state, "r1", two_shipment_plan(101))
    assert result.outcome is Outcome.PROMISE_CHANGED
    assert {c.resource for c in result.changes} == {ChangedResource.STOCK}
    assert {s.sku for s in result.shortages} == {"A", "B", "C"}
    assert digest(state) == before


def test_network_moved_gives_promise_changed() -> None:
    """An unknown service or a past ship day is a network change, not an error."""
    state = plan_world()
    plan = two_shipment_plan()
    gone = dataclasses.replace(
        plan, shipments=(dataclasses.replace(plan.shipments[0], service="teleport"),)
    )
    result = reserve_plan(state, "r1", gone)
    assert [c.resource for c in result.changes] == [ChangedResource.NETWORK]
    past = dataclasses.replace(
        plan, shipments=(dataclasses.replace(plan.shipments[0], ship_day=SHIP_DAY - 5),)
    )
    assert reserve_plan(state, "r2", past).changes[0].resource is ChangedResource.NETWORK


@pytest.mark.parametrize("closing", ["release", "expire"])
def test_release_and_expiry_give_back(closing: str) -> None:
    """Release and expiry give the slots and picks back."""
    state = plan_world(slots=1)
    assert reserve_plan(state, "r1", two_shipment_plan()).outcome is Outcome.OK
    if closing == "release":
        state.apply(Release("r1"), NOW_MS + 1)
    else:
        state.apply(Tick(), NOW_MS + TTL_MS)
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 1
    assert state.pick_capacity.rows() == [("ST-PAR", SHIP_DAY, 0, 0), ("WH-1", SHIP_DAY, 0, 0)]
    state.check_invariants()
    assert reserve_plan(state, "r2", two_shipment_plan(), NOW_MS + TTL_MS).outcome is Outcome.OK


def test_fulfilment_spends_slots() -> None:
    """Fulfilment spends the slot and the pick (the carrier collected): not given back."""
    state = plan_world(slots=2)
    assert reserve_plan(state, "r1", two_shipment_plan()).outcome is Outcome.OK
    state.apply(Fulfil("r1"), NOW_MS + 1)
    entry = state.carrier_capacity.get("express", "WH-1", SHIP_DAY)
    assert entry is not None and (entry.held, entry.used, entry.left) == (0, 1, 1)
    assert state.pick_capacity.rows() == [("ST-PAR", SHIP_DAY, 0, 1), ("WH-1", SHIP_DAY, 0, 1)]
    state.check_invariants()


def test_idempotent_retry_and_clash() -> None:
    """Same id and plan: the stored reservation; same id, another plan: refused."""
    state = plan_world(slots=5)
    first = reserve_plan(state, "r1", two_shipment_plan())
    again = reserve_plan(state, "r1", two_shipment_plan())
    assert again.replayed and again.reservation == first.reservation
    assert slots_left(state, "express", "WH-1", SHIP_DAY) == 4
    with pytest.raises(AlreadyExists):
        reserve_plan(state, "r1", two_shipment_plan(2))


def test_bad_plan_commands_refused() -> None:
    """Lines not the plan's, a POS sale, or a position planned twice: refused, nothing held."""
    state = plan_world()
    plan = two_shipment_plan()
    command = reserve_plan_command("r1", plan)
    with pytest.raises(InvalidCommand, match="lines"):
        state.apply(dataclasses.replace(command, lines=command.lines[:1]), NOW_MS)
    with pytest.raises(InvalidCommand, match="POS"):
        state.apply(dataclasses.replace(command, kind=ReservationKind.POS_SALE), NOW_MS)
    twice = Plan(
        (
            Shipment("WH-1", "express", SHIP_DAY, (PlannedLine("A", 1),)),
            Shipment("WH-1", "", SHIP_DAY, (PlannedLine("A", 1),)),
        ),
        "fr",
        "web",
        "",
    )
    with pytest.raises(InvalidCommand, match="planned twice"):
        state.apply(reserve_plan_command("r2", twice), NOW_MS)
    assert not state.reservations and not len(state.pick_capacity)


def test_plan_through_codec() -> None:
    """A Reserve of a plan round-trips through the journal codec; a tampered one is refused."""
    command = reserve_plan_command("r1", two_shipment_plan())
    assert decode_command(encode_command(command)) == command
    bad = dataclasses.replace(command, lines=command.lines[:1])
    with pytest.raises(UndecodableRecord, match="plan"):
        decode_command(encode_command(bad))


def test_plan_holds_through_snapshot() -> None:
    """A snapshot carries the plans, slot holds, spent slots and picks; the digest is equal."""
    state = plan_world(slots=3)
    reserve_plan(state, "r1", two_shipment_plan())
    reserve_plan(state, "r2", pickup_plan())
    reserve_plan(state, "r3", two_shipment_plan())
    state.apply(Fulfil("r3"), NOW_MS + 1)
    loaded = import_state(*export_state(state))
    loaded.check_invariants()
    assert digest(loaded) == digest(state)
    assert loaded.reservations["r1"].plan == two_shipment_plan()
    loaded.apply(Release("r1"), NOW_MS + 2)
    state.apply(Release("r1"), NOW_MS + 2)
    assert digest(loaded) == digest(state)


@pytest.mark.parametrize("end", ["release", "expire"])
def test_a_shipment_that_left_keeps_its_slot_spent_when_the_rest_ends(end: str) -> None:
    """Fulfilling one shipment of a plan, then releasing (or letting expire) the rest, spends
    the shipped parcel's carrier slot and pick and gives back only the others: a second plan
    cannot book the slot the first parcel already used."""
    state = plan_world(slots=1)
    plan = two_shipment_plan(2)
    assert reserve_plan(state, "r1", plan).outcome is Outcome.OK
    shipped = plan.shipments[0]
    lines = tuple(Line(line.sku, shipped.node_id, line.quantity) for line in shipped.lines)
    assert state.apply(Fulfil("r1", lines), NOW_MS + 1_000).outcome is Outcome.OK
    if end == "release":
        state.apply(Release("r1"), NOW_MS + 2_000)
    else:
        state.apply(Tick(), NOW_MS + TTL_MS + 1)
    assert not state.reservations["r1"].status.is_open
    entry = state.carrier_capacity.get(shipped.service, shipped.node_id, shipped.ship_day)
    assert entry is not None and (entry.held, entry.used) == (0, 1)
    assert slots_left(state, shipped.service, shipped.node_id, shipped.ship_day) == 0
    assert (shipped.node_id, shipped.ship_day, 0, 1) in state.pick_capacity.rows()
    state.check_invariants()
