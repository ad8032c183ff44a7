"""A Hypothesis state machine over the resources a reservation of a plan holds: random
reserve-plan, release, fulfil, expiry and SetCarrierCapacity; a model counts the open holds.
Always: held == the open reservations' shipments (per slot and per pick), a reserve never
takes a slot or pick beyond what was left, PROMISE_CHANGED changes nothing."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from network.support import NOW_MS

from atpd.core.commands import Fulfil, Release, SetCarrierCapacity, Tick
from atpd.core.handlers_network import slots_left
from atpd.core.plan import Plan, PlannedLine, Shipment
from atpd.core.results import Outcome

from .reserve_plan_support import SHIP_DATE, SHIP_DAY, plan_world, reserve_plan_command

PICKS = 3  # pick capacity per day of the stores (ST-PAR)
SHIPMENTS = {
    "express": ("WH-1", "express"),
    "courier": ("ST-PAR", "courier"),
    "pickup": ("ST-PAR", ""),
}


def make_plan(kinds: list[str], quantity: int) -> Plan:
    skus = iter("ABC")
    return Plan(
        tuple(
            Shipment(
                SHIPMENTS[kind][0],
                SHIPMENTS[kind][1],
                SHIP_DAY,
                (PlannedLine(next(skus), quantity),),
            )
            for kind in kinds
        ),
        "fr-paris",
        "web",
        "",
    )


plans = st.builds(
    make_plan,
    st.lists(st.sampled_from(sorted(SHIPMENTS)), min_size=1, max_size=3, unique=True),
    st.integers(1, 40),
)


class PlanMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = plan_world(pick_capacity=PICKS, slots=2)
        self.now_ms = NOW_MS
        self.open: dict[str, Plan] = {}
        self.count = 0

    def taken(self) -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, int], int]]:
        slots: dict[tuple[str, str, int], int] = {}
        picks: dict[tuple[str, int], int] = {}
        for plan in self.open.values():
            for s in plan.shipments:
                if s.service:
                    key = (s.service, s.node_id, s.ship_day)
                    slots[key] = slots.get(key, 0) + 1
                picks[(s.node_id, s.ship_day)] = picks.get((s.node_id, s.ship_day), 0) + 1
        return slots, picks

    @rule(plan=plans, ttl_ms=st.integers(1_000, 100_000))
    def reserve(self, plan: Plan, ttl_ms: int) -> None:
        self.count += 1
        reservation_id = f"r{self.count}"
        left = {
            s.node_id: slots_left(self.state, s.service, s.node_id, s.ship_day)
            for s in plan.shipments
            if s.service
        }
        picks_left = PICKS - self.state.pick_capacity.taken("ST-PAR", SHIP_DAY)
        before = self.state.digest()
        result = self.state.apply(reserve_plan_command(reservation_id, plan, ttl_ms), self.now_ms)
        if result.outcome is Outcome.OK:
            assert all(count >= 1 for count in left.values()), left
            at_store = sum(1 for s in plan.shipments if s.node_id == "ST-PAR")
            assert at_store <= picks_left
            self.open[reservation_id] = plan
        else:
            assert result.outcome is Outcome.PROMISE_CHANGED and result.changes
            assert self.state.digest() == before

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.open:
            reservation_id = data.draw(st.sampled_from(sorted(self.open)))
            self.state.apply(Release(reservation_id), self.now_ms)
            del self.open[reservation_id]

    @rule(data=st.data())
    def fulfil(self, data: st.DataObject) -> None:
        if self.open:
            reservation_id = data.draw(st.sampled_from(sorted(self.open)))
            self.state.apply(Fulfil(reservation_id), self.now_ms)
            del self.open[reservation_id]

    @rule(delta_ms=st.integers(0, 60_000))
    def tick(self, delta_ms: int) -> None:
        self.now_ms += delta_ms
        expired = self.state.apply(Tick(), self.now_ms).expired
        for reservation_id in expired:
            del self.open[reservation_id]

    @rule(slots=st.integers(0, 4))
    def set_capacity(self, slots: int) -> None:
        self.state.apply(SetCarrierCapacity("express", "WH-1", SHIP_DATE, slots), self.now_ms)

    @invariant()
    def holds_match_model(self) -> None:
        self.state.check_invariants()
        slots, picks = self.taken()
        for key, entry in self.state.carrier_capacity.entries.items():
            assert entry.held == slots.get(key, 0), key
        for pick_key, pick_entry in self.state.pick_capacity.entries.items():
            assert pick_entry.held == picks.get(pick_key, 0), pick_key
            if pick_key[0] == "ST-PAR":
                assert pick_entry.held + pick_entry.used <= PICKS


# Hypothesis builds TestCase per machine class at run time; mypy only sees the attribute.
class TestPlanHolds(PlanMachine.TestCase):  # type: ignore[misc,valid-type]
    """Slot and pick holds always equal the open reservations' shipments, never overbooked."""

    settings = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
