"""Model-based test of the core: a Hypothesis state machine drives `AtpState` and a plain-Python
reference model with the same commands, and checks after every step that both agree.

The reference model is written from the specification, not from the implementation: a dict of
positions, a dict of reservations with lists of held and fulfilled quantities, and a clock.
Reserved stock is never stored in the model; it is recomputed as the sum of open holds, so
"reserved equals the sum of open holds" is checked by comparing the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from atpd.core.commands import (
    AdjustStock,
    Command,
    Confirm,
    Fulfil,
    Line,
    NodeKind,
    Release,
    ReservationKind,
    Reserve,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.core.reservations import ReservationStatus
from atpd.core.results import (
    AlreadyExists,
    CommandRejected,
    InvalidCommand,
    NodeResult,
    NotFound,
    Outcome,
    PositionView,
    ReservationResult,
    ReserveResult,
    Shortage,
    ShortageReason,
    StockResult,
    TickResult,
)
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

RETENTION_MS = 4_000
WORLD_NODES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("paris", ("EU", "FR", "Paris")),
    ("lyon", ("EU", "FR", "Lyon")),
    ("berlin", ("EU", "DE")),
    ("soho", ("NA", "US", "NYC", "SoHo")),
    ("toronto", ("NA", "CA")),
)
WORLD_SKUS = ("s0", "s1", "s2", "s3")
UNKNOWN_NODE = "ghost"
HELD, CONFIRMED, FULFILLED, RELEASED, EXPIRED = (
    ReservationStatus.HELD,
    ReservationStatus.CONFIRMED,
    ReservationStatus.FULFILLED,
    ReservationStatus.RELEASED,
    ReservationStatus.EXPIRED,
)
OPEN = (HELD, CONFIRMED)

# ------------------------------------------------------------------------- reference model


@dataclass
class ModelReservation:
    reservation_id: str
    lines: tuple[tuple[str, str, int], ...]
    fingerprint: tuple[object, ...]
    created_at_ms: int
    expires_at_ms: int
    status: ReservationStatus = HELD
    held: list[int] = field(default_factory=list)
    fulfilled: list[int] = field(default_factory=list)
    updated_at_ms: int = 0
    closed_at_ms: int | None = None

    def close(self, status: ReservationStatus, at_ms: int) -> None:
        self.status = status
        self.held = [0] * len(self.lines)
        self.updated_at_ms = at_ms
        self.closed_at_ms = at_ms


@dataclass
class Expected:
    """What the model says a command answers: an outcome, or the exception type raised."""

    outcome: Outcome | None = None
    raises: type[CommandRejected] | None = None
    changed: bool = False
    replayed: bool = False
    shortages: tuple[Shortage, ...] = ()
    disabled_node_id: str = ""


def fingerprint(command: Reserve) -> tuple[object, ...]:
    """Two Reserves are "the same" when all of their content matches, lines in any order."""
    pos_sale = command.kind is ReservationKind.POS_SALE
    lines = tuple(sorted((line.sku, line.node_id, line.quantity) for line in command.lines))
    ttl_ms = 0 if pos_sale else command.ttl_ms
    return (command.kind, command.channel, command.segment, ttl_ms, lines)


class Model:
    def __init__(self, node_ids: Sequence[str], retention_ms: int) -> None:
        self.enabled = dict.fromkeys(node_ids, True)
        self.retention_ms = retention_ms
        self.on_hand: dict[tuple[str, str], int] = {}
        self.safety: dict[tuple[str, str], int] = {}
        self.sequence: dict[tuple[str, str], int] = {}
        self.skus: set[str] = set()
        self.reservations: dict[str, ModelReservation] = {}
        self.now_ms = 0

    # ---- reads

    def reserved(self, sku: str, node_id: str) -> int:
        return sum(
            held
            for r in self.reservations.values()
            if r.status in OPEN
            for (s, n, _), held in zip(r.lines, r.held, strict=True)
            if (s, n) == (sku, node_id)
        )

    def atp(self, sku: str, node_id: str) -> int:
        key = (sku, node_id)
        free = self.on_hand.get(key, 0) - self.reserved(sku, node_id) - self.safety.get(key, 0)
        return max(0, free)

    def position(self, sku: str, node_id: str) -> PositionView:
        key = (sku, node_id)
        return PositionView(
            sku,
            node_id,
            self.on_hand.get(key, 0),
            self.reserved(sku, node_id),
            self.safety.get(key, 0),
            self.atp(sku, node_id),
            self.sequence.get(key, 0),
        )

    def next_expiry_ms(self) -> int | None:
        due = [r.expires_at_ms for r in self.reservations.values() if r.status is HELD]
        return min(due) if due else None

    # ---- the clock: every command first expires what is due, then forgets what aged out

    def advance(self, now_ms: int) -> tuple[tuple[str, ...], bool]:
        """Expire what is due at now_ms, then forget what aged out; (expired ids, changed?)."""
        assert now_ms >= self.now_ms
        self.now_ms = now_ms
        due = sorted(
            (r.expires_at_ms, r.reservation_id)
            for r in self.reservations.values()
            if r.status is HELD and r.expires_at_ms <= now_ms
        )
        for expires_at_ms, reservation_id in due:
            self.reservations[reservation_id].close(EXPIRED, expires_at_ms)
        aged = [
            reservation_id
            for reservation_id, r in self.reservations.items()
            if r.closed_at_ms is not None and r.closed_at_ms + self.retention_ms <= now_ms
        ]
        for reservation_id in aged:
            del self.reservations[reservation_id]
        return tuple(reservation_id for _, reservation_id in due), bool(due or aged)

    # ---- commands: each returns what the core must answer, and applies it to the model

    def set_stock(self, command: SetStock) -> Expected:
        key = (command.sku, command.node_id)
        if command.node_id not in self.enabled:
            return Expected(raises=NotFound)
        if command.source_sequence <= self.sequence.get(key, 0):
            return Expected(Outcome.STALE)
        self.skus.add(command.sku)
        self.on_hand[key] = command.on_hand
        if command.safety_stock is not None:
            self.safety[key] = command.safety_stock
        self.sequence[key] = command.source_sequence
        return Expected(Outcome.OK, changed=True)

    def adjust_stock(self, command: AdjustStock) -> Expected:
        key = (command.sku, command.node_id)
        if command.node_id not in self.enabled:
            return Expected(raises=NotFound)
        on_hand = self.on_hand.get(key, 0) + command.delta
        if on_hand < 0:
            return Expected(Outcome.NEGATIVE_ON_HAND)
        self.skus.add(command.sku)
        self.on_hand[key] = on_hand
        return Expected(Outcome.OK, changed=True)

    def reserve(self, command: Reserve) -> Expected:
        existing = self.reservations.get(command.reservation_id)
        if existing is not None:
            if existing.fingerprint == fingerprint(command):
                return Expected(Outcome.OK, replayed=True)
            return Expected(raises=AlreadyExists)
        if any(line.node_id not in self.enabled for line in command.lines):
            return Expected(raises=NotFound)
        disabled = tuple(
            Shortage(line.sku, line.node_id, line.quantity, 0, ShortageReason.NODE_DISABLED)
            for line in command.lines
            if not self.enabled[line.node_id]
        )
        if disabled:
            return Expected(
                Outcome.NODE_DISABLED, shortages=disabled, disabled_node_id=disabled[0].node_id
            )
        shortages = tuple(
            Shortage(
                line.sku,
                line.node_id,
                line.quantity,
                self.atp(line.sku, line.node_id),
                ShortageReason.STOCK if line.sku in self.skus else ShortageReason.UNKNOWN_SKU,
            )
            for line in command.lines
            if line.quantity > self.atp(line.sku, line.node_id)
        )
        if shortages:
            return Expected(Outcome.INSUFFICIENT_STOCK, shortages=shortages)
        pos_sale = command.kind is ReservationKind.POS_SALE
        lines = tuple((line.sku, line.node_id, line.quantity) for line in command.lines)
        reservation = ModelReservation(
            command.reservation_id,
            lines,
            fingerprint(command),
            self.now_ms,
            0 if pos_sale else self.now_ms + command.ttl_ms,  # a sale never expires
            held=[quantity for _, _, quantity in lines],
            fulfilled=[0] * len(lines),
            updated_at_ms=self.now_ms,
        )
        self.reservations[command.reservation_id] = reservation
        if pos_sale:
            self._take_out(reservation, list(reservation.held), release_remainder=False)
        return Expected(Outcome.OK, changed=True)

    def confirm(self, command: Confirm) -> Expected:
        reservation = self.reservations.get(command.reservation_id)
        if reservation is None:
            return Expected(raises=NotFound)
        if reservation.status is CONFIRMED:
            return Expected(Outcome.OK)
        if reservation.status is EXPIRED:
            return Expected(Outcome.EXPIRED)
        if reservation.status is not HELD:
            return Expected(Outcome.INVALID_STATE)
        reservation.status = CONFIRMED
        reservation.expires_at_ms = 0
        reservation.updated_at_ms = self.now_ms
        return Expected(Outcome.OK, changed=True)

    def release(self, command: Release) -> Expected:
        reservation = self.reservations.get(command.reservation_id)
        if reservation is None:
            return Expected(raises=NotFound)
        if reservation.status in (RELEASED, EXPIRED):
            return Expected(Outcome.OK)
        if reservation.status is FULFILLED:
            return Expected(Outcome.INVALID_STATE)
        reservation.close(RELEASED, self.now_ms)
        return Expected(Outcome.OK, changed=True)

    def fulfil(self, command: Fulfil) -> Expected:
        reservation = self.reservations.get(command.reservation_id)
        if reservation is None:
            return Expected(raises=NotFound)
        if reservation.status is EXPIRED:
            return Expected(Outcome.EXPIRED)
        if reservation.status is FULFILLED and not command.lines:
            return Expected(Outcome.OK)
        if reservation.status not in OPEN:
            return Expected(Outcome.INVALID_STATE)
        if not command.lines:
            quantities = list(reservation.held)
        else:
            quantities = [0] * len(reservation.lines)
            index = {(s, n): i for i, (s, n, _) in enumerate(reservation.lines)}
            for line in command.lines:
                i = index.get((line.sku, line.node_id))
                if i is None:
                    return Expected(raises=InvalidCommand)
                if line.quantity > reservation.held[i]:
                    return Expected(Outcome.EXCEEDS_HELD)
                quantities[i] = line.quantity
        self._take_out(reservation, quantities, command.release_remainder)
        return Expected(Outcome.OK, changed=True)

    def _take_out(
        self, reservation: ModelReservation, quantities: list[int], release_remainder: bool
    ) -> None:
        for i, ((sku, node_id, _), quantity) in enumerate(
            zip(reservation.lines, quantities, strict=True)
        ):
            key = (sku, node_id)
            self.on_hand[key] = max(0, self.on_hand.get(key, 0) - quantity)
            reservation.held[i] -= quantity
            reservation.fulfilled[i] += quantity
        if release_remainder:
            reservation.held = [0] * len(reservation.lines)
        reservation.updated_at_ms = self.now_ms
        if not any(reservation.held):
            reservation.close(FULFILLED if any(reservation.fulfilled) else RELEASED, self.now_ms)

    def upsert_node(self, node_id: str, enabled: bool) -> Expected:
        """Only the enabled flag ever changes here; re-sending the same node changes nothing."""
        changed = self.enabled[node_id] is not enabled
        self.enabled[node_id] = enabled
        return Expected(Outcome.OK, changed=changed)


# ------------------------------------------------------------------------- the machine

NODE_INDEX = st.integers(0, len(WORLD_NODES) - 1)
SKU_INDEX = st.integers(0, len(WORLD_SKUS) - 1)
QUANTITY = st.integers(1, 6)
TTL_MS = st.sampled_from([1_000, 1_500, 2_000, 3_000, 6_000])
KIND = st.sampled_from(
    [ReservationKind.CART, ReservationKind.CART, ReservationKind.ORDER, ReservationKind.POS_SALE]
)
LINE_PICKS = st.lists(st.tuples(SKU_INDEX, NODE_INDEX, QUANTITY), min_size=1, max_size=3)
# See CoreMachine.reservation_id: mostly fresh ids for Reserve, mostly known ones otherwise.
NEW_ID_PICK = st.integers(-12, 4)
ID_PICK = st.integers(-1, 30)


class CoreMachine(RuleBasedStateMachine):
    """Commands go to the core and to the model at the same time and must get the same answer."""

    def __init__(self) -> None:
        super().__init__()
        self.state = AtpState(Limits(terminal_retention_ms=RETENTION_MS))
        self.model = Model((), RETENTION_MS)
        self.node_ids: list[str] = []
        self.skus: list[str] = []
        self.toggle_node = ""
        self.clock_ms = 0  # the time the next command carries (the model's now lags behind)
        self.used_ids: list[str] = []
        self.sent_reserves: list[Reserve] = []
        self.expected_expired: tuple[str, ...] = ()
        self.expected_time_moved = False

    # ---- helpers

    def node(self, pick: int) -> str:
        return self.node_ids[pick % len(self.node_ids)]

    def sku(self, pick: int) -> str:
        return self.skus[pick % len(self.skus)]

    def reservation_id(self, pick: int) -> str:
        """Negative: a fresh id; 0: an id never used; positive: one the model holds (or held)."""
        if pick < 0:
            reservation_id = f"r{len(self.used_ids)}"
            self.used_ids.append(reservation_id)
            return reservation_id
        if pick == 0:
            return "never-used"
        known = list(self.model.reservations) or self.used_ids or ["never-used"]
        return known[pick % len(known)]

    def advance_model(self) -> None:
        """Bring the model to the next command's time; remember what that should change."""
        self.expected_expired, self.expected_time_moved = self.model.advance(self.clock_ms)

    def apply(self, command: Command) -> object:
        """Apply to the core at clock_ms; check the expiries it saw against the model's."""
        digest_before = self.state.digest()
        try:
            result: object = self.state.apply(command, self.clock_ms)
        except CommandRejected as rejected:
            result = rejected
        answer = getattr(result, "outcome", None)
        event(f"{type(command).__name__}: {answer.name if answer else type(result).__name__}")
        if self.expected_expired:
            event("expired on this command")
        if isinstance(result, CommandRejected) and not self.expected_time_moved:
            # A refused command that found no time-driven change leaves no trace, not even
            # the clock.
            assert self.state.digest() == digest_before, command
        assert self.state.last_expired == self.expected_expired, (
            self.state.last_expired,
            self.expected_expired,
        )
        return result

    def step(
        self, command: Command, model_step: Callable[[Any], Expected]
    ) -> tuple[object, Expected]:
        """Advance the model's clock, let it predict, then apply the command to the core."""
        self.advance_model()
        expected = model_step(command)
        return self.apply(command), expected

    @staticmethod
    def check_outcome(result: object, expected: Expected) -> None:
        """The core raised what the model raises, or answered its outcome and change flag."""
        if expected.raises is not None:
            assert isinstance(result, expected.raises), (result, expected)
            return
        assert not isinstance(result, CommandRejected), (result, expected)
        assert getattr(result, "outcome", None) is expected.outcome, (result, expected)
        assert getattr(result, "changed", None) is expected.changed, (result, expected)

    # ---- world

    @initialize(
        node_count=st.integers(3, len(WORLD_NODES)),
        sku_count=st.integers(2, len(WORLD_SKUS)),
        stock=st.lists(st.integers(0, 8), min_size=20, max_size=20),
    )
    def world(self, node_count: int, sku_count: int, stock: list[int]) -> None:
        """3-5 nodes over geo depths 2-4 (the last one gets toggled), 2-4 SKUs, all stocked."""
        self.node_ids = [node_id for node_id, _ in WORLD_NODES[:node_count]]
        self.skus = list(WORLD_SKUS[:sku_count])
        self.toggle_node = self.node_ids[-1]
        self.model = Model(self.node_ids, RETENTION_MS)
        for node_id, geo_path in WORLD_NODES[:node_count]:
            result = self.state.apply(UpsertNode(node_id, NodeKind.STORE, geo_path), 0)
            assert result.created
        # Every position starts stocked (2-10), so that reserves mostly have something to take.
        quantities = iter(stock)
        for sku in self.skus:
            for node_id in self.node_ids:
                self.send_set_stock(SetStock(sku, node_id, 2 + next(quantities), 1))

    # ---- stock

    def send_set_stock(self, command: SetStock) -> None:
        result, expected = self.step(command, self.model.set_stock)
        self.check_outcome(result, expected)
        if isinstance(result, StockResult):
            assert result.position == self.model.position(command.sku, command.node_id)
            assert result.last_source_sequence == self.model.sequence.get(
                (command.sku, command.node_id), 0
            )

    @rule(
        sku=SKU_INDEX,
        node=NODE_INDEX,
        on_hand=st.integers(0, 12),
        sequence_step=st.integers(-1, 2),
        safety_stock=st.none() | st.integers(0, 3),
    )
    def set_stock(
        self, sku: int, node: int, on_hand: int, sequence_step: int, safety_stock: int | None
    ) -> None:
        """An absolute count with a fresh, repeated or older source sequence."""
        sku_id, node_id = self.sku(sku), self.node(node)
        last = self.model.sequence.get((sku_id, node_id), 0)
        self.send_set_stock(SetStock(sku_id, node_id, on_hand, last + sequence_step, safety_stock))

    @rule(sku=SKU_INDEX, node=NODE_INDEX, delta=st.integers(-6, 6))
    def adjust_stock(self, sku: int, node: int, delta: int) -> None:
        """A delta, sometimes taking on_hand below 0 (refused) or below reserved (allowed)."""
        command = AdjustStock(self.sku(sku), self.node(node), delta)
        result, expected = self.step(command, self.model.adjust_stock)
        self.check_outcome(result, expected)
        assert isinstance(result, StockResult)
        assert result.position == self.model.position(command.sku, command.node_id)

    @rule(sku=SKU_INDEX, kind=st.sampled_from(["set", "adjust", "reserve"]))
    def write_at_unknown_node(self, sku: int, kind: str) -> None:
        """Any write naming an unknown node is NotFound and changes nothing itself."""
        command: Command
        if kind == "set":
            command = SetStock(self.sku(sku), UNKNOWN_NODE, 5, 1)
            result, expected = self.step(command, self.model.set_stock)
        elif kind == "adjust":
            command = AdjustStock(self.sku(sku), UNKNOWN_NODE, 1)
            result, expected = self.step(command, self.model.adjust_stock)
        else:
            lines = (Line(self.sku(sku), self.node_ids[0], 1), Line(self.sku(sku), UNKNOWN_NODE, 1))
            command = Reserve(self.reservation_id(-1), lines, 1_000)
            result, expected = self.step(command, self.model.reserve)
        assert expected.raises is NotFound
        self.check_outcome(result, expected)

    # ---- nodes

    @rule(enabled=st.booleans())
    def toggle_node_enabled(self, enabled: bool) -> None:
        """Disable or enable one node (re-sending the same state is a no-op)."""
        geo_path = dict(WORLD_NODES)[self.toggle_node]
        command = UpsertNode(self.toggle_node, NodeKind.STORE, geo_path, enabled=enabled)
        result, expected = self.step(
            command, lambda _: self.model.upsert_node(self.toggle_node, enabled)
        )
        self.check_outcome(result, expected)
        assert isinstance(result, NodeResult)
        assert not result.created

    # ---- reservations

    def send_reserve(self, command: Reserve) -> None:
        """Send a Reserve; on success check that no line took more than the ATP it saw."""
        self.sent_reserves.append(command)
        self.advance_model()
        atp_now = {
            (line.sku, line.node_id): self.model.atp(line.sku, line.node_id)
            for line in command.lines
            if line.node_id in self.model.enabled
        }
        expected = self.model.reserve(command)
        result = self.apply(command)
        self.check_outcome(result, expected)
        if expected.raises is not None:
            return
        assert isinstance(result, ReserveResult)
        assert result.replayed is expected.replayed
        assert result.shortages == expected.shortages
        assert result.disabled_node_id == expected.disabled_node_id
        if result.outcome is not Outcome.OK:
            assert result.reservation is None
            assert command.reservation_id not in self.state.reservations
            return
        assert result.reservation is not None
        assert result.reservation.reservation_id == command.reservation_id
        if result.replayed:
            return
        # No reservation ever succeeds beyond ATP: every line fitted in what was free, and the
        # cells it touched still have on_hand - reserved - safety >= 0.
        cells = self.state.stock.cells
        for line, (sku_row, node_index) in zip(
            command.lines, result.reservation.cells, strict=True
        ):
            assert line.quantity <= atp_now[(line.sku, line.node_id)]
            free = (
                int(cells[sku_row, FIELD_ON_HAND, node_index])
                - int(cells[sku_row, FIELD_RESERVED, node_index])
                - int(cells[sku_row, FIELD_SAFETY, node_index])
            )
            assert free >= 0, (line, free)

    def lines_from(self, picks: list[tuple[int, int, int]]) -> tuple[Line, ...]:
        lines: dict[tuple[str, str], Line] = {}
        for sku, node, quantity in picks:
            key = (self.sku(sku), self.node(node))
            lines.setdefault(key, Line(key[0], key[1], quantity))
        return tuple(lines.values())

    @rule(
        id_pick=NEW_ID_PICK,
        picks=LINE_PICKS,
        ttl_ms=TTL_MS,
        kind=KIND,
        channel=st.sampled_from(["", "web"]),
    )
    def reserve(
        self,
        id_pick: int,
        picks: list[tuple[int, int, int]],
        ttl_ms: int,
        kind: ReservationKind,
        channel: str,
    ) -> None:
        """1-3 lines, any kind (POS sales too), a fresh id or a reused one (AlreadyExists)."""
        command = Reserve(
            self.reservation_id(id_pick), self.lines_from(picks), ttl_ms, kind, channel
        )
        self.send_reserve(command)

    @rule(sku=SKU_INDEX, node=NODE_INDEX, quantity=st.integers(1, 3), ttl_ms=TTL_MS)
    def reserve_one_line(self, sku: int, node: int, quantity: int, ttl_ms: int) -> None:
        """A small one-line cart hold under a fresh id (usually succeeds)."""
        line = Line(self.sku(sku), self.node(node), quantity)
        self.send_reserve(Reserve(self.reservation_id(-1), (line,), ttl_ms))

    @rule(
        pick=st.integers(0, 1_000),
        variant=st.sampled_from(["as sent", "reordered", "channel", "ttl", "quantity", "kind"]),
    )
    def retry_reserve(self, pick: int, variant: str) -> None:
        """Resend an earlier Reserve as sent, reordered, or with one field changed."""
        if not self.sent_reserves:
            return
        sent = self.sent_reserves[pick % len(self.sent_reserves)]
        lines, ttl_ms, kind, channel = sent.lines, sent.ttl_ms, sent.kind, sent.channel
        if variant == "reordered":
            lines = lines[::-1]
        elif variant == "channel":
            channel = "app" if channel != "app" else "store"
        elif variant == "ttl":
            ttl_ms += 500
        elif variant == "quantity":
            first = lines[0]
            lines = (Line(first.sku, first.node_id, first.quantity + 1), *lines[1:])
        elif variant == "kind":
            kind = ReservationKind.ORDER if kind is ReservationKind.CART else ReservationKind.CART
        self.send_reserve(Reserve(sent.reservation_id, lines, ttl_ms, kind, channel))

    def check_reservation_result(
        self, result: object, expected: Expected, reservation_id: str
    ) -> None:
        self.check_outcome(result, expected)
        if isinstance(result, ReservationResult):
            assert result.reservation.reservation_id == reservation_id

    @rule(id_pick=ID_PICK)
    def confirm(self, id_pick: int) -> None:
        """Confirm a known, expired, closed or unknown reservation."""
        command = Confirm(self.reservation_id(id_pick))
        result, expected = self.step(command, self.model.confirm)
        self.check_reservation_result(result, expected, command.reservation_id)

    @rule(id_pick=ID_PICK)
    def release(self, id_pick: int) -> None:
        """Release a known, expired, closed or unknown reservation."""
        command = Release(self.reservation_id(id_pick))
        result, expected = self.step(command, self.model.release)
        self.check_reservation_result(result, expected, command.reservation_id)

    @rule(
        id_pick=ID_PICK,
        mode=st.sampled_from(["all", "lines", "lines", "foreign"]),
        line_picks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=3),
        release_remainder=st.booleans(),
    )
    def fulfil(
        self,
        id_pick: int,
        mode: str,
        line_picks: list[tuple[int, int]],
        release_remainder: bool,
    ) -> None:
        """Fulfil everything, some lines (quantities up to held + 1), or a foreign line."""
        reservation_id = self.reservation_id(id_pick)
        lines: tuple[Line, ...] = ()
        # The model's view at the command's time decides which lines exist and what is held.
        self.advance_model()
        stored = self.model.reservations.get(reservation_id)
        if mode == "lines" and stored is not None:
            chosen: dict[int, Line] = {}
            for index_pick, quantity_pick in line_picks:
                i = index_pick % len(stored.lines)
                sku, node_id, _ = stored.lines[i]
                quantity = max(1, min(quantity_pick, stored.held[i] + 1))
                chosen.setdefault(i, Line(sku, node_id, quantity))
            lines = tuple(chosen.values())
        elif mode == "foreign":
            lines = (Line("not-a-sku", self.node_ids[0], 1),)
        command = Fulfil(reservation_id, lines, release_remainder)
        expected = self.model.fulfil(command)
        result = self.apply(command)
        self.check_reservation_result(result, expected, reservation_id)

    # ---- time

    def tick(self) -> None:
        """Send a Tick: it reports exactly the expiries due and whether time changed anything."""
        result, _ = self.step(Tick(), lambda _: Expected())
        assert isinstance(result, TickResult)
        assert result.expired == self.expected_expired
        assert result.changed is self.expected_time_moved

    @rule(
        mode=st.sampled_from(["next_expiry", "just_before_next_expiry", "step", "past_retention"]),
        step_ms=st.integers(0, 2_500),
        tick=st.booleans(),
    )
    def advance_time(self, mode: str, step_ms: int, tick: bool) -> None:
        """Move the clock (onto the next expiry, 1 ms before it, or on); maybe send a Tick."""
        next_expiry = self.model.next_expiry_ms()
        if mode == "next_expiry" and next_expiry is not None:
            self.clock_ms = max(self.clock_ms, next_expiry)
        elif mode == "just_before_next_expiry" and next_expiry is not None:
            self.clock_ms = max(self.clock_ms, next_expiry - 1)
        elif mode == "past_retention":
            self.clock_ms += RETENTION_MS + step_ms
        else:
            self.clock_ms += step_ms
        if tick:
            self.tick()

    @rule(pick=st.integers(0, 100), offset_ms=st.sampled_from([0, -1, 1]), tick=st.booleans())
    def land_on_an_expiry(self, pick: int, offset_ms: int, tick: bool) -> None:
        """Move the clock to some hold's expiry time exactly, or 1 ms either side of it."""
        expiries = sorted(
            r.expires_at_ms for r in self.model.reservations.values() if r.status is HELD
        )
        if expiries:
            self.clock_ms = max(self.clock_ms, expiries[pick % len(expiries)] + offset_ms)
        if tick:
            self.tick()

    # ---- invariants

    @invariant()
    def core_self_check(self) -> None:
        """The core's own invariant check: reserved == sum of holds, on_hand >= 0, counters."""
        self.state.check_invariants()

    @invariant()
    def positions_match_model(self) -> None:
        """Every position (on_hand, reserved, safety, ATP, sequence) equals the model's."""
        assert set(self.state.skus.names) == self.model.skus
        for sku in self.skus:
            for node_id in self.node_ids:
                position = self.state.position(sku, node_id)
                assert position == self.model.position(sku, node_id), (
                    position,
                    self.model.position(sku, node_id),
                )
                assert position.atp >= 0
                assert position.on_hand >= 0

    @invariant()
    def reservations_match_model(self) -> None:
        """Same reservations, each with the same status, holds, fulfilments and times."""
        assert set(self.state.reservations) == set(self.model.reservations)
        for reservation_id, expected in self.model.reservations.items():
            actual = self.state.reservations[reservation_id]
            lines = tuple((line.sku, line.node_id, line.quantity) for line in actual.lines)
            assert lines == expected.lines
            assert actual.status is expected.status, (reservation_id, actual, expected)
            assert actual.held == expected.held, (reservation_id, actual.held, expected)
            assert actual.fulfilled == expected.fulfilled, (reservation_id, expected)
            assert actual.created_at_ms == expected.created_at_ms
            assert actual.expires_at_ms == expected.expires_at_ms
            assert actual.updated_at_ms == expected.updated_at_ms, (reservation_id, expected)
        open_count = sum(r.status in OPEN for r in self.model.reservations.values())
        assert self.state.open_reservations == open_count
        assert self.state.next_expiry_ms() == self.model.next_expiry_ms()

    @invariant()
    def expiries_are_exact(self) -> None:
        """No hold outlives its expiry time; every expired hold ended exactly at expires_at."""
        now_ms = self.state.now_ms
        for reservation in self.state.reservations.values():
            if reservation.status is HELD:
                assert reservation.expires_at_ms > now_ms, reservation
            elif reservation.status is EXPIRED:
                assert reservation.updated_at_ms == reservation.expires_at_ms
                assert not any(reservation.held)

    @invariant()
    def availability_totals_match_model(self) -> None:
        """The roll-up total per SKU is the model's ATP summed over enabled nodes."""
        if not self.skus:
            return
        view = self.state.availability(self.skus)
        for row, sku in enumerate(self.skus):
            expected = sum(
                self.model.atp(sku, node_id)
                for node_id in self.node_ids
                if self.model.enabled[node_id]
            )
            assert int(view.matrix[row, -1]) == expected


# Hypothesis builds TestCase per machine class at run time; mypy only sees the attribute.
class TestCoreAgainstModel(CoreMachine.TestCase):  # type: ignore[misc,valid-type]
    """The core answers every command like the reference model and keeps every invariant."""

    settings = settings(
        max_examples=200,
        stateful_step_count=50,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
