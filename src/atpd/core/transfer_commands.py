"""Commands of transfer orders and restocking (see core/transfers.py, core/restock.py).

Separate from core/commands.py so the transfer family can grow without touching the
reservation commands; `Command` there includes these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from atpd.core.command_base import CommandOf
from atpd.core.results import RestockResult, TransferResult


class TransferItem(NamedTuple):
    """One line of a transfer order: a SKU and how many units (a tuple: plans make 100,000s)."""

    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class CreateTransfer(CommandOf[TransferResult]):
    """Hold `lines` at `from_node_id` and announce them at `to_node_id`, shipping on
    `ship_date` (YYYY-MM-DD, UTC); ETA = ship date + the lane's lead time."""

    transfer_id: str
    from_node_id: str
    to_node_id: str
    lines: tuple[TransferItem, ...]
    ship_date: str
    # Set when an ApplyRestock made it: the plan's id.
    plan_id: str = ""


@dataclass(frozen=True, slots=True)
class ShipTransfer(CommandOf[TransferResult]):
    transfer_id: str


@dataclass(frozen=True, slots=True)
class ReceivedItem:
    """What arrived of one line in one receipt: good units and damaged ones."""

    sku: str
    received: int
    damaged: int = 0


@dataclass(frozen=True, slots=True)
class ReceiveTransfer(CommandOf[TransferResult]):
    """Record a receipt. No lines: everything outstanding arrived in good order (and the
    transfer closes). `final`: nothing more will come; what is missing is recorded short."""

    transfer_id: str
    receipt_id: str
    lines: tuple[ReceivedItem, ...] = ()
    final: bool = False


@dataclass(frozen=True, slots=True)
class CancelTransfer(CommandOf[TransferResult]):
    transfer_id: str


class PositionCheck(NamedTuple):
    """A position a restock plan relied on, as it was then: the plan is stale once it moved
    (a tuple: plans make 100,000s)."""

    sku: str
    node_id: str
    on_hand: int
    reserved: int
    inbound: int
    safety: int = 0


@dataclass(frozen=True, slots=True)
class ApplyRestock(CommandOf[RestockResult]):
    """Create a restock plan's transfers in one step, unless a position it used moved."""

    plan_id: str
    transfers: tuple[CreateTransfer, ...]
    checks: tuple[PositionCheck, ...]
