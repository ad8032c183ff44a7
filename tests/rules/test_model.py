"""Model-based test of rules, protections and supply: a Hypothesis state machine drives
`AtpState` in a small world (4 nodes, 3 SKUs, 2 channels x 2 segments, a units protection and
a percent protection, supply of every kind) as several callers, and checks every answer against
the README reference (tests/rules/generators.py) and, after every step:

- kernel, scalar and reference ATP agree for every caller and position;
- reserved equals the sum of open holds (and `check_invariants` passes);
- protection consumption equals what the open holds recorded, and only beneficiaries record any;
- after a non-beneficiary's reservation, every beneficiary of a protection it is kept from still
  sees at least the protection's remaining units there (nobody eats another's protected units);
- after any reservation, reserved never exceeds on_hand + open supply at its positions, and a
  drain by every caller in turn never takes more than exists.

The fixed rule sets A and B are chosen so that every beneficiary's terms (safety, buffer,
supply counted, visibility, protections held back) are at least as generous as those of any
caller a protection is kept from, which is what makes the protection invariant exact.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from atpd.core.commands import (
    AddSupply,
    CancelSupply,
    Command,
    Confirm,
    Fulfil,
    Line,
    NodeKind,
    ReceiveSupply,
    Release,
    Reserve,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.results import Outcome, Shortage, ShortageReason
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED
from atpd.core.supply import SupplyKind

from .generators import (
    NodeTable,
    RuleData,
    Table,
    benefits,
    recorded_consumption,
    reference_atp,
    selects,
)

MODEL_NODES: NodeTable = {
    "wh-a": (NodeKind.WAREHOUSE, ("EU", "FR", "Paris"), ()),
    "wh-b": (NodeKind.WAREHOUSE, ("NA", "US"), ("flagship",)),
    "st-f": (NodeKind.STORE, ("EU", "FR", "Paris"), ("flagship",)),
    "out-g": (NodeKind.OUTLET, ("EU", "DE"), ()),
}
SKUS = ("BAG-1", "BAG-2", "WCH-1")
CALLERS = (("web", "standard"), ("web", "vip"), ("store", "standard"), ("store", "vip"))
CLOCK_SKU = "zz-clock"
HOUR_MS = 3_600_000

FLAGSHIP = {
    "name": "flagship",
    "nodes": {"tags": ["flagship"]},
    "units": 2,
    "for": ["store/*", "*/vip"],
}
WATCHES = {
    "name": "wh-watches",
    "skus": ["WCH-"],
    "nodes": {"kinds": ["WAREHOUSE"]},
    "percent": 50,
    "for": ["*/vip"],
}


def rule_set(version: str, web_buffer: int, flagship_units: int, reverse: bool) -> RuleData:
    flagship = {**FLAGSHIP, "units": flagship_units}
    protections = [WATCHES, flagship] if reverse else [flagship, WATCHES]
    return RuleData(
        version,
        base={"nodes": {"kinds": ["WAREHOUSE", "STORE"]}},
        channels={
            "web": {
                "safety": {"kinds": {"STORE": 1}},
                "buffer": web_buffer,
                "max_per_line": 4,
                "supply": {"kinds": ["PURCHASE_ORDER"], "horizon_hours": 48},
            },
            "store": {
                "nodes": {"kinds": ["WAREHOUSE", "STORE", "OUTLET"]},
                "safety": {"kinds": {"STORE": 0}},
                "supply": {"kinds": ["PURCHASE_ORDER", "TRANSFER"]},
            },
        },
        segments={
            "standard": {},
            "vip": {
                "safety": {"kinds": {"STORE": 0}},
                "buffer": 0,
                "max_per_line": 0,
                "supply": {"kinds": ["PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT"]},
            },
        },
        specific={},
        protections=protections,
    )


RULES_A = rule_set("A", web_buffer=1, flagship_units=2, reverse=False)
RULES_B = rule_set("B", web_buffer=2, flagship_units=3, reverse=True)

quantities = st.integers(1, 5)
skus = st.sampled_from(SKUS)
node_ids = st.sampled_from(tuple(MODEL_NODES))


class RulesMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.state = AtpState()
        self.now = 0
        self.rule_set = RULES_A
        for node_id, (kind, geo, tags) in MODEL_NODES.items():
            self.state.apply(UpsertNode(node_id, kind, geo, tags=tags), 0)
        self.reservation_ids: list[str] = []
        self.apply(SetRules(RULES_A.text(), "model.toml"))
        self.sequence: dict[tuple[str, str], int] = {}
        for sku in SKUS:
            for node_id in MODEL_NODES:
                self._set_stock(sku, node_id, 8, None)
        self.supply_ids: list[str] = []
        self.counter = 0

    # ------------------------------------------------------------------ helpers

    def apply(self, command: Command) -> Any:
        result = self.state.apply(command, self.now)
        # Terminal reservations are forgotten after their retention period.
        self.reservation_ids = [r for r in self.reservation_ids if r in self.state.reservations]
        return result

    def _set_stock(self, sku: str, node_id: str, on_hand: int, safety: int | None) -> None:
        sequence = self.sequence.get((sku, node_id), 0) + 1
        self.sequence[(sku, node_id)] = sequence
        result = self.apply(SetStock(sku, node_id, on_hand, sequence, safety))
        assert result.outcome is Outcome.OK

    def resolve(self, channel: str, segment: str) -> tuple[str, str]:
        return channel or self.rule_set.defaults[0], segment or self.rule_set.defaults[1]

    def reference(self, caller: tuple[str, str], sku: str, node_id: str) -> int:
        return reference_atp(self.state, self.rule_set, *caller, sku, node_id, None, MODEL_NODES)

    def cap(self, caller: tuple[str, str]) -> int:
        return int(self.rule_set.policy(*self.resolve(*caller)).get("max_per_line", 0))

    def open_supply(self, sku: str, node_id: str) -> int:
        return sum(
            x.quantity
            for x in self.state.supply.by_id.values()
            if (x.sku, x.node_id) == (sku, node_id) and x.eta_ms >= self.state.now_ms
        )

    def remaining(self, protection: Table, sku: str, node_id: str) -> int:
        """Units a protection still holds back at a position (0 where it does not apply)."""
        prefixes = tuple(protection.get("skus", ()))
        if prefixes and not sku.startswith(prefixes):
            return 0
        if not selects(protection["nodes"], node_id, MODEL_NODES):
            return 0
        row, node = self.state.skus.get(sku), self.state.node_ids.get(node_id)
        on_hand = int(self.state.stock.cells[row, FIELD_ON_HAND, node])
        units = int(protection.get("units") or on_hand * protection["percent"] // 100)
        used = recorded_consumption(self.state, protection["name"], sku, node_id)
        return max(0, units - used)

    def check_protected_for_beneficiaries(
        self, caller: tuple[str, str], sku: str, node_id: str
    ) -> None:
        """After `caller` reserved at a position: for every protection kept from it there, each
        beneficiary who sees the node can still take at least what the protection holds."""
        for protection in self.rule_set.protections:
            if benefits(protection, *caller):
                continue
            remaining = self.remaining(protection, sku, node_id)
            if remaining == 0:
                continue
            for beneficiary in CALLERS:
                if not benefits(protection, *beneficiary):
                    continue
                policy = self.state.policy(*beneficiary)
                assert policy is not None
                node = self.state.node_ids.get(node_id)
                if not policy.visible[node]:
                    continue
                atp = self.state.caller_atp(policy, self.state.skus.get(sku), node)
                assert atp >= remaining, (protection["name"], caller, beneficiary, sku, node_id)

    def check_within_existing(self, sku: str, node_id: str, reserved_before: int) -> None:
        """Reserving never promises beyond on_hand + open supply (unless the position was
        already over it, after a recount, and then nothing was added)."""
        row, node = self.state.skus.get(sku), self.state.node_ids.get(node_id)
        cells = self.state.stock.cells
        reserved = int(cells[row, FIELD_RESERVED, node])
        exists = int(cells[row, FIELD_ON_HAND, node]) + self.open_supply(sku, node_id)
        assert reserved <= max(reserved_before, exists), (sku, node_id, reserved, exists)

    # ------------------------------------------------------------------ rules

    @rule(
        caller=st.sampled_from((*CALLERS, ("", ""), ("", "vip"))),
        lines=st.lists(
            st.tuples(skus, node_ids, quantities),
            min_size=1,
            max_size=2,
            unique_by=lambda line: line[:2],
        ),
        ttl_ms=st.sampled_from([30_000, 90_000, 2 * HOUR_MS]),
    )
    def reserve(
        self, caller: tuple[str, str], lines: list[tuple[str, str, int]], ttl_ms: int
    ) -> None:
        self.apply(Tick())  # expire what is due now, so the expectation sees the same holds
        resolved = self.resolve(*caller)
        cap = self.cap(caller)
        expected = []
        visible_nodes = self.rule_set.policy(*resolved).get("nodes", {})
        for sku, node_id, quantity in lines:
            stock_atp = reference_atp(
                self.state, self.rule_set, *resolved, sku, node_id, self.now, MODEL_NODES
            )
            available = min(stock_atp, cap) if cap else stock_atp
            if quantity > available:
                if self.state.skus.get(sku) < 0:
                    reason = ShortageReason.UNKNOWN_SKU
                elif not selects(visible_nodes, node_id, MODEL_NODES):
                    reason = ShortageReason.NOT_VISIBLE
                elif cap and quantity > cap and stock_atp >= quantity:
                    reason = ShortageReason.LINE_CAP
                else:
                    reason = ShortageReason.STOCK
                expected.append(Shortage(sku, node_id, quantity, available, reason))
        before = {
            (sku, node_id): self.state.position(sku, node_id).reserved for sku, node_id, _ in lines
        }
        self.counter += 1
        reservation_id = f"r{self.counter}"
        command = Reserve(
            reservation_id,
            tuple(Line(*line) for line in lines),
            ttl_ms,
            channel=caller[0],
            segment=caller[1],
        )
        result = self.apply(command)
        if expected:
            assert result.outcome is Outcome.INSUFFICIENT_STOCK, result
            assert result.shortages == tuple(expected)
            return
        assert result.outcome is Outcome.OK, (result, lines)
        self.reservation_ids.append(reservation_id)
        for sku, node_id, _ in lines:
            self.check_within_existing(sku, node_id, before[(sku, node_id)])
            self.check_protected_for_beneficiaries(resolved, sku, node_id)

    @precondition(lambda self: self.reservation_ids)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.apply(Release(data.draw(st.sampled_from(self.reservation_ids))))

    @precondition(lambda self: self.reservation_ids)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        self.apply(Confirm(data.draw(st.sampled_from(self.reservation_ids))))

    @precondition(lambda self: self.reservation_ids)
    @rule(data=st.data(), partial=st.booleans(), release_remainder=st.booleans())
    def fulfil(self, data: st.DataObject, partial: bool, release_remainder: bool) -> None:
        reservation_id = data.draw(st.sampled_from(self.reservation_ids))
        reservation = self.state.reservation(reservation_id)
        lines: tuple[Line, ...] = ()
        if partial and reservation.held[0]:
            line = reservation.lines[0]
            lines = (Line(line.sku, line.node_id, 1),)
        self.apply(Fulfil(reservation_id, lines, release_remainder))

    @rule(
        sku=skus, node_id=node_ids, on_hand=st.integers(0, 12), safety=st.none() | st.integers(0, 2)
    )
    def set_stock(self, sku: str, node_id: str, on_hand: int, safety: int | None) -> None:
        self._set_stock(sku, node_id, on_hand, safety)

    @rule(
        sku=skus,
        node_id=node_ids,
        quantity=quantities,
        eta_hours=st.integers(0, 100),
        kind=st.sampled_from(list(SupplyKind)),
    )
    def add_supply(
        self, sku: str, node_id: str, quantity: int, eta_hours: int, kind: SupplyKind
    ) -> None:
        self.counter += 1
        supply_id = f"s{self.counter}"
        eta_ms = self.now + eta_hours * HOUR_MS
        result = self.apply(AddSupply(supply_id, sku, node_id, quantity, eta_ms, kind))
        assert result.outcome is Outcome.OK
        self.supply_ids.append(supply_id)

    @precondition(lambda self: self.supply_ids)
    @rule(data=st.data(), whole=st.booleans())
    def receive_supply(self, data: st.DataObject, whole: bool) -> None:
        supply_id = data.draw(st.sampled_from(self.supply_ids))
        supply = self.state.supply.by_id[supply_id]
        row, node = supply.sku_index, supply.node_index
        on_hand = int(self.state.stock.cells[row, FIELD_ON_HAND, node])
        quantity = None if whole else data.draw(st.integers(1, supply.quantity))
        moved = supply.quantity if quantity is None else quantity
        self.apply(ReceiveSupply(supply_id, quantity))
        assert int(self.state.stock.cells[row, FIELD_ON_HAND, node]) == on_hand + moved
        if supply.quantity == 0:
            self.supply_ids.remove(supply_id)
            assert supply_id not in self.state.supply.by_id

    @precondition(lambda self: self.supply_ids)
    @rule(data=st.data())
    def cancel_supply(self, data: st.DataObject) -> None:
        supply_id = data.draw(st.sampled_from(self.supply_ids))
        self.apply(CancelSupply(supply_id))
        self.supply_ids.remove(supply_id)

    @rule(delta_ms=st.sampled_from([1_000, 40_000, 100_000, HOUR_MS, 30 * HOUR_MS]))
    def advance(self, delta_ms: int) -> None:
        """Time passes (holds expire, supply nears or passes its ETA); a changing command
        brings the core's read clock along."""
        self.now += delta_ms
        self.apply(Tick())
        self._set_stock(CLOCK_SKU, "wh-a", self.now % 7, None)

    @rule()
    def swap_rules(self) -> None:
        """Swap between A and B (same protection names, in the other order, other sizes)."""
        new = RULES_B if self.rule_set is RULES_A else RULES_A
        result = self.apply(SetRules(new.text(), "model.toml"))
        assert (result.version, result.previous_version) == (new.version, self.rule_set.version)
        self.rule_set = new

    @rule(sku=skus, node_id=node_ids, order=st.permutations(CALLERS))
    def drain(self, sku: str, node_id: str, order: list[tuple[str, str]]) -> None:
        """Every caller in turn reserves all it may at one position: together they never take
        more than exists; releasing it all gives everyone back exactly what they saw."""
        row, node = self.state.skus.get(sku), self.state.node_ids.get(node_id)
        seen = {caller: self.reference(caller, sku, node_id) for caller in CALLERS}
        position = self.state.position(sku, node_id)
        room = max(0, position.on_hand + self.open_supply(sku, node_id) - position.reserved)
        taken: list[str] = []
        for caller in order:
            policy = self.state.policy(*caller)
            assert policy is not None
            for _ in range(50):
                available = self.state.caller_atp(policy, row, node)
                if self.cap(caller):
                    available = min(available, self.cap(caller))
                if available == 0:
                    break
                self.counter += 1
                reservation_id = f"d{self.counter}"
                command = Reserve(
                    reservation_id,
                    (Line(sku, node_id, available),),
                    60_000,
                    channel=caller[0],
                    segment=caller[1],
                )
                result = self.apply(command)
                assert result.outcome is Outcome.OK, result
                taken.append(reservation_id)
                self.check_protected_for_beneficiaries(caller, sku, node_id)
            assert self.state.caller_atp(policy, row, node) == 0
        total = self.state.position(sku, node_id).reserved - position.reserved
        assert total <= room, (sku, node_id, total, room)
        for reservation_id in taken:
            self.apply(Release(reservation_id))
        assert {caller: self.reference(caller, sku, node_id) for caller in CALLERS} == seen

    # ------------------------------------------------------------------ invariants

    @invariant()
    def core_invariants(self) -> None:
        self.state.check_invariants()

    @invariant()
    def reserved_is_the_sum_of_open_holds(self) -> None:
        held: dict[tuple[str, str], int] = {}
        for reservation in self.state.reservations.values():
            if reservation.status.is_open:
                for line, quantity in zip(reservation.lines, reservation.held, strict=True):
                    key = (line.sku, line.node_id)
                    held[key] = held.get(key, 0) + quantity
        for sku in SKUS:
            for node_id in MODEL_NODES:
                assert self.state.position(sku, node_id).reserved == held.get((sku, node_id), 0)

    @invariant()
    def consumption_matches_the_holds_records(self) -> None:
        names = [p["name"] for p in self.rule_set.protections]
        for reservation in self.state.reservations.values():
            if reservation.protected is None:
                continue
            if not reservation.status.is_open:
                assert reservation.reservation_id not in self.state.protected_reservations
                continue
            caller = self.resolve(reservation.channel, reservation.segment)
            for records, held in zip(reservation.protected, reservation.held, strict=True):
                assert sum(units for _, units in records) <= held
                for name, units in records:
                    assert units > 0
                    protection = self.rule_set.protections[names.index(name)]
                    assert benefits(protection, *caller), (name, caller)
        for index, name in enumerate(names):
            for sku in SKUS:
                row = self.state.skus.get(sku)
                table = self.state.protection_consumed.get(row)
                for node_id in MODEL_NODES:
                    node = self.state.node_ids.get(node_id)
                    actual = 0 if table is None else int(table[index, node])
                    assert actual == recorded_consumption(self.state, name, sku, node_id)

    @invariant()
    def every_answer_matches_the_reference(self) -> None:
        for caller in (*CALLERS, ("", "")):
            view = self.state.availability(list(SKUS), channel=caller[0], segment=caller[1])
            policy = self.state.policy(*caller)
            assert policy is not None
            for k, sku in enumerate(SKUS):
                row = self.state.skus.get(sku)
                for node_id in MODEL_NODES:
                    node = self.state.node_ids.get(node_id)
                    expected = reference_atp(
                        self.state, self.rule_set, *caller, sku, node_id, None, MODEL_NODES
                    )
                    assert int(view.matrix[k, node]) == expected, (caller, sku, node_id)
                    assert self.state.caller_atp(policy, row, node) == expected

    def teardown(self) -> None:
        if hasattr(self, "state"):
            self.state.check_invariants()


RulesMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRulesModel = RulesMachine.TestCase
TestRulesModel.__doc__ = "Rules, protections and supply under random commands by several callers."
