"""Transfer orders, restock applications and demand velocity survive the journal codec and
snapshots: a replay and a snapshot round-trip give the same digest."""

from __future__ import annotations

from typing import Any

import pytest

from atpd.core.commands import Fulfil, Line, Reserve
from atpd.core.state import AtpState
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    PositionCheck,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
    TransferItem,
)
from atpd.core.transfers import DAY_MS
from atpd.persistence.codec import UndecodableRecord, decode_command, encode_command
from atpd.persistence.state_snapshot import export_state, import_state
from atpd.v1 import journal_pb2

from .support import make_state, put_stock

NOW_MS = 20_000 * DAY_MS
TODAY = "2024-10-04"


def history() -> list[tuple[object, int]]:
    """A mixed history: transfers in every status, a restock application, sales."""
    return [
        (CreateTransfer("T-1", "paris", "lyon", (TransferItem("bag", 2),), TODAY), NOW_MS),
        (CreateTransfer("T-2", "paris", "berlin", (TransferItem("bag", 1),), TODAY), NOW_MS),
        (CreateTransfer("T-3", "paris", "soho", (TransferItem("bag", 1),), TODAY), NOW_MS),
        (ShipTransfer("T-1"), NOW_MS + 1),
        (ReceiveTransfer("T-1", "R-1", (ReceivedItem("bag", 1, 0),)), NOW_MS + 2),
        (ShipTransfer("T-2"), NOW_MS + 3),
        (ReceiveTransfer("T-2", "R-1", (), final=True), NOW_MS + 4),
        (CancelTransfer("T-3"), NOW_MS + 5),
        (
            ApplyRestock(
                "P-1",
                (
                    CreateTransfer(
                        "P-1-1", "paris", "lyon", (TransferItem("bag", 1),), TODAY, "P-1"
                    ),
                ),
                (PositionCheck("bag", "paris", 7, 0, 0),),
            ),
            NOW_MS + 6,
        ),
        (Reserve("sale-1", (Line("bag", "lyon", 1),), 60_000), NOW_MS + 7),
        (Fulfil("sale-1"), NOW_MS + 8),
    ]


def built() -> tuple[AtpState, list[tuple[bytes, int]]]:
    state = make_state()
    put_stock(state, "bag", "paris", 10, now_ms=NOW_MS)
    journal = []
    for command, now_ms in history():
        result: Any = state.apply(command, now_ms)  # type: ignore[arg-type]
        assert result.changed, command
        journal.append((encode_command(command), now_ms))  # type: ignore[arg-type]
    state.check_invariants()
    return state, journal


def test_replay_reproduces_transfers_and_demand() -> None:
    """Replaying the encoded commands gives a state with the same digest."""
    state, journal = built()
    replayed = make_state()
    put_stock(replayed, "bag", "paris", 10, now_ms=NOW_MS)
    for payload, now_ms in journal:
        replayed.apply(decode_command(payload), now_ms)
    assert replayed.digest() == state.digest()
    assert len(state.demand) == 1


def test_snapshot_round_trip_keeps_transfers_and_demand() -> None:
    """export_state then import_state: same digest, same open transfers and supply links."""
    state, _ = built()
    arrays, blobs = export_state(state)
    loaded = import_state(arrays, blobs)
    assert loaded.digest() == state.digest()
    loaded.check_invariants()
    assert set(loaded.transfers.by_supply) == set(state.transfers.by_supply)
    # The loaded state goes on exactly like the original.
    command = ShipTransfer("P-1-1")
    assert loaded.apply(command, NOW_MS + 2 * DAY_MS).changed
    assert state.apply(command, NOW_MS + 2 * DAY_MS).changed
    assert loaded.digest() == state.digest()


@pytest.mark.parametrize(
    ("fill", "message"),
    [
        (lambda e: e.create_transfer.SetInParent(), "transfer_id"),
        (lambda e: setattr(e.ship_transfer, "transfer_id", "bad#id"), "transfer_id"),
        (lambda e: e.receive_transfer.MergeFrom(_receive_without_receipt()), "receipt_id"),
        (lambda e: setattr(e.apply_restock, "plan_id", ""), "plan_id"),
    ],
)
def test_bad_transfer_records_are_refused(fill: object, message: str) -> None:
    """A journal record with an invalid id is refused at decode, naming the field."""
    entry = journal_pb2.JournalCommand()
    fill(entry)  # type: ignore[operator]
    with pytest.raises(UndecodableRecord, match=message):
        decode_command(entry.SerializeToString())


def _receive_without_receipt() -> object:
    from atpd.v1 import transfers_pb2

    return transfers_pb2.ReceiveTransferRequest(transfer_id="T-1")
