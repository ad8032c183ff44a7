"""A Hypothesis state machine interleaving transfer orders with counts, reservations and sales:
after every step the core's invariants hold (reserved = holds of reservations and transfers,
each open transfer's supply = what it still expects, closed ones conserve units), and the
journal of what was applied replays to the same digest."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atpd.core.commands import Fulfil, Line, NodeKind, Reserve, SetStock, UpsertNode
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.core.transfer_commands import (
    CancelTransfer,
    CreateTransfer,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
    TransferItem,
)
from atpd.core.transfers import DAY_MS, TransferStatus
from atpd.persistence.codec import decode_command, encode_command

NOW_MS = 20_000 * DAY_MS
TODAY = "2024-10-04"
NODES = ("a", "b", "c")
SKUS = ("x", "y")
PICK_NODE = st.integers(0, len(NODES) - 1)
PICK_SKU = st.integers(0, len(SKUS) - 1)
PICK_TRANSFER = st.integers(0, 5)


class TransferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = AtpState()
        self.now_ms = NOW_MS
        self.journal: list[tuple[bytes, int]] = []
        self.sequence = 0
        self.sales = 0
        for node_id in NODES:
            self.apply(UpsertNode(node_id, NodeKind.STORE, ("EU", node_id.upper())))

    def apply(self, command: object) -> None:
        self.now_ms += 1000
        try:
            result: object = self.state.apply(command, self.now_ms)  # type: ignore[arg-type]
        except CommandRejected:
            return
        if getattr(result, "changed", False) or self.state.time_moved:
            self.journal.append((encode_command(command), self.now_ms))  # type: ignore[arg-type]

    @rule(sku=PICK_SKU, node=PICK_NODE, on_hand=st.integers(0, 20))
    def count(self, sku: int, node: int, on_hand: int) -> None:
        self.sequence += 1
        self.apply(SetStock(SKUS[sku], NODES[node], on_hand, self.sequence))

    @rule(sku=PICK_SKU, node=PICK_NODE, quantity=st.integers(1, 4))
    def sell(self, sku: int, node: int, quantity: int) -> None:
        self.sales += 1
        reservation_id = f"r{self.sales}"
        self.apply(Reserve(reservation_id, (Line(SKUS[sku], NODES[node], quantity),), 60_000))
        self.apply(Fulfil(reservation_id))

    @rule(
        pick=PICK_TRANSFER,
        source=PICK_NODE,
        shift=st.integers(1, len(NODES) - 1),
        x=st.integers(0, 5),
        y=st.integers(0, 5),
    )
    def create(self, pick: int, source: int, shift: int, x: int, y: int) -> None:
        lines = tuple(TransferItem(s, q) for s, q in zip(SKUS, (x, y), strict=True) if q)
        destination = NODES[(source + shift) % len(NODES)]
        self.apply(CreateTransfer(f"T{pick}", NODES[source], destination, lines, TODAY))

    @rule(pick=PICK_TRANSFER)
    def ship(self, pick: int) -> None:
        self.apply(ShipTransfer(f"T{pick}"))

    @rule(pick=PICK_TRANSFER)
    def cancel(self, pick: int) -> None:
        self.apply(CancelTransfer(f"T{pick}"))

    @rule(
        pick=PICK_TRANSFER,
        receipt=st.integers(0, 3),
        sku=PICK_SKU,
        good=st.integers(0, 6),
        damaged=st.integers(0, 2),
        final=st.booleans(),
    )
    def receive(
        self, pick: int, receipt: int, sku: int, good: int, damaged: int, final: bool
    ) -> None:
        lines = (ReceivedItem(SKUS[sku], good, damaged),) if good + damaged else ()
        self.apply(ReceiveTransfer(f"T{pick}", f"R{receipt}", lines, final))

    @invariant()
    def invariants_hold(self) -> None:
        self.state.check_invariants()

    @precondition(lambda self: len(self.journal) % 7 == 0)
    @invariant()
    def replay_matches(self) -> None:
        replayed = AtpState()
        for payload, now_ms in self.journal:
            replayed.apply(decode_command(payload), now_ms)
        assert replayed.digest() == self.state.digest()

    def teardown(self) -> None:
        statuses = {t.status for t in self.state.transfers.all()}
        assert statuses <= set(TransferStatus)


TestTransferMachine = TransferMachine.TestCase
TestTransferMachine.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
