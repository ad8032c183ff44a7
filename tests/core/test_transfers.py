"""Transfer orders in the core: hold, ship, receive with discrepancies, cancel, idempotence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.results import (
    AlreadyExists,
    FailedPrecondition,
    InvalidCommand,
    NotFound,
    Outcome,
)
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND
from atpd.core.supply import SupplyKind
from atpd.core.transfer_commands import (
    CancelTransfer,
    CreateTransfer,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
    TransferItem,
)
from atpd.core.transfers import DAY_MS, TransferStatus

from .support import make_state, put_stock

NOW_MS = 20_000 * DAY_MS  # 2024-10-04
TODAY = "2024-10-04"


def world() -> AtpState:
    state = make_state()
    put_stock(state, "bag", "paris", 10, now_ms=NOW_MS)
    put_stock(state, "hat", "paris", 4, now_ms=NOW_MS)
    return state


def create(state: AtpState, transfer_id: str = "T-1", bag: int = 3, hat: int = 0) -> Outcome:
    lines = tuple(TransferItem(s, q) for s, q in (("bag", bag), ("hat", hat)) if q)
    result = state.apply(CreateTransfer(transfer_id, "paris", "lyon", lines, TODAY), NOW_MS)
    return result.outcome


def on_hand(state: AtpState, sku: str, node_id: str) -> int:
    return int(state.stock.cells[state.skus.get(sku), FIELD_ON_HAND, state.node_ids.get(node_id)])


def test_create_holds_at_source_and_announces_at_destination() -> None:
    """CreateTransfer takes the units out of the source's ATP and adds TRANSFER supply at the
    destination, due a lane's lead time (the rules' default: 2 days) after the ship date."""
    state = world()
    assert create(state, bag=3) is Outcome.OK
    assert state.position("bag", "paris").reserved == 3
    assert state.position("bag", "paris").atp == 7
    supply = state.supply.by_id["T-1#1"]
    assert (supply.node_id, supply.quantity, supply.kind) == ("lyon", 3, SupplyKind.TRANSFER)
    assert supply.eta_ms == (20_000 + 2 + 1) * DAY_MS - 1
    state.check_invariants()


def test_create_short_is_a_value_and_changes_nothing() -> None:
    """More than the source's free units: INSUFFICIENT_STOCK naming the line, no trace."""
    state = world()
    before = state.digest()
    result = state.apply(
        CreateTransfer("T-1", "paris", "lyon", (TransferItem("bag", 11),), TODAY), NOW_MS
    )
    assert result.outcome is Outcome.INSUFFICIENT_STOCK
    assert result.shortages[0].available == 10
    assert state.digest() == before


def test_create_is_idempotent_and_refuses_other_content() -> None:
    """Same id and content: the same answer, unchanged; other content: ALREADY_EXISTS."""
    state = world()
    create(state, bag=3)
    again = state.apply(
        CreateTransfer("T-1", "paris", "lyon", (TransferItem("bag", 3),), TODAY), NOW_MS
    )
    assert again.outcome is Outcome.OK and not again.changed
    with pytest.raises(AlreadyExists, match="T-1"):
        create(state, bag=4)
    assert state.position("bag", "paris").reserved == 3


@pytest.mark.parametrize(
    ("command", "error", "field"),
    [
        (
            CreateTransfer("T", "paris", "paris", (TransferItem("bag", 1),), TODAY),
            InvalidCommand,
            "to_node_id",
        ),
        (
            CreateTransfer("T", "nowhere", "lyon", (TransferItem("bag", 1),), TODAY),
            NotFound,
            "from_node_id",
        ),
        (CreateTransfer("T", "paris", "lyon", (), TODAY), InvalidCommand, "lines"),
        (
            CreateTransfer("T", "paris", "lyon", (TransferItem("bag", 1),), "2024-10-03"),
            InvalidCommand,
            "ship_date",
        ),
        (
            CreateTransfer("T", "paris", "lyon", (TransferItem("bag", 1),), "04/10/2024"),
            InvalidCommand,
            "ship_date",
        ),
        (
            CreateTransfer(
                "T", "paris", "lyon", (TransferItem("bag", 1), TransferItem("bag", 1)), TODAY
            ),
            InvalidCommand,
            "lines",
        ),
        (ShipTransfer("nope"), NotFound, "transfer_id"),
        (CancelTransfer("nope"), NotFound, "transfer_id"),
    ],
)
def test_bad_commands_name_the_field(command: object, error: type[Exception], field: str) -> None:
    """Each bad transfer command is refused naming its field, leaving the state as it was."""
    state = world()
    before = state.digest()
    with pytest.raises(error, match=field):
        state.apply(command, NOW_MS)  # type: ignore[arg-type]
    assert state.digest() == before


def test_ship_then_receive_with_discrepancies() -> None:
    """Ship takes units off the source; a receipt adds good units at the destination, and the
    final one records short and damaged units."""
    state = world()
    create(state, bag=5, hat=2)
    state.apply(ShipTransfer("T-1"), NOW_MS + 1)
    assert on_hand(state, "bag", "paris") == 5
    assert state.position("bag", "paris").reserved == 0
    receipt = ReceiveTransfer("T-1", "R-1", (ReceivedItem("bag", 3, 1),), final=False)
    state.apply(receipt, NOW_MS + 2)
    assert on_hand(state, "bag", "lyon") == 3
    assert state.supply.by_id["T-1#1"].quantity == 1
    again = state.apply(receipt, NOW_MS + 3)
    assert not again.changed  # a retried receipt is not counted twice
    state.apply(ReceiveTransfer("T-1", "R-2", (ReceivedItem("hat", 2),), final=True), NOW_MS + 4)
    transfer = state.transfers.find("T-1")
    assert transfer is not None and transfer.status is TransferStatus.RECEIVED
    bag = transfer.lines[0]
    assert (bag.received, bag.damaged, bag.short, bag.over) == (3, 1, 1, 0)
    assert "T-1#1" not in state.supply.by_id
    state.check_invariants()


def test_cancel_gives_units_back_only_before_shipping() -> None:
    """Cancelling a created transfer frees the hold and the supply; once shipped it is
    FAILED_PRECONDITION."""
    state = world()
    create(state, "T-1", bag=3)
    state.apply(CancelTransfer("T-1"), NOW_MS)
    assert state.position("bag", "paris").reserved == 0
    assert "T-1#1" not in state.supply.by_id
    assert not state.apply(CancelTransfer("T-1"), NOW_MS).changed
    create(state, "T-2", bag=3)
    state.apply(ShipTransfer("T-2"), NOW_MS)
    with pytest.raises(FailedPrecondition, match="in transit"):
        state.apply(CancelTransfer("T-2"), NOW_MS)
    with pytest.raises(FailedPrecondition, match="cancelled"):
        state.apply(ShipTransfer("T-1"), NOW_MS)
    state.check_invariants()


def test_receive_before_ship_is_refused() -> None:
    """A receipt on a transfer not shipped yet is FAILED_PRECONDITION."""
    state = world()
    create(state, bag=1)
    with pytest.raises(FailedPrecondition, match="not shipped"):
        state.apply(ReceiveTransfer("T-1", "R-1"), NOW_MS)


@settings(max_examples=40, deadline=None)
@given(
    quantity=st.integers(1, 10),
    receipts=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=4),
    final=st.booleans(),
)
def test_transfers_conserve_units(
    quantity: int, receipts: list[tuple[int, int]], final: bool
) -> None:
    """Source decrement == destination receipt + recorded discrepancy (short + damaged - over),
    whatever the receipts."""
    state = world()
    assert create(state, bag=quantity) is Outcome.OK
    state.apply(ShipTransfer("T-1"), NOW_MS)
    for i, (good, damaged) in enumerate(receipts):
        transfer = state.transfers.find("T-1")
        assert transfer is not None
        if transfer.status is not TransferStatus.SHIPPED or good + damaged == 0:
            continue
        state.apply(ReceiveTransfer("T-1", f"R-{i}", (ReceivedItem("bag", good, damaged),)), NOW_MS)
    transfer = state.transfers.find("T-1")
    assert transfer is not None
    if transfer.status is TransferStatus.SHIPPED and final:
        state.apply(ReceiveTransfer("T-1", "R-final", (), final=True), NOW_MS)
    line = transfer.lines[0]
    source_decrement = 10 - on_hand(state, "bag", "paris")
    arrived = on_hand(state, "bag", "lyon")
    assert arrived == line.received
    if transfer.status is TransferStatus.RECEIVED:
        assert source_decrement == arrived + line.damaged + line.short - line.over
    state.check_invariants()


def test_supply_api_cannot_receive_or_cancel_transfer_supply() -> None:
    """A transfer's inbound supply is moved by the transfer only: FAILED_PRECONDITION."""
    from atpd.core.commands import CancelSupply, ReceiveSupply

    state = world()
    create(state, bag=2)
    for command in (ReceiveSupply("T-1#1"), CancelSupply("T-1#1")):
        with pytest.raises(FailedPrecondition, match="ReceiveTransfer"):
            state.apply(command, NOW_MS)
