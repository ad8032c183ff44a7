"""Transfer orders: stock moved from one node to another, as one record from hold to receipt.

A transfer is not a reservation: its units are held at the source in the stock table's
`reserved` column (so they leave the source's ATP at once, for every caller) and show up at
the destination as incoming supply of kind TRANSFER (one `Supply` per line, id
`<transfer_id>#<line number>`), so callers whose rules count transfers see them before they
arrive. Life cycle:

    CREATED --ShipTransfer--> SHIPPED --ReceiveTransfer (final)--> RECEIVED
       \\--CancelTransfer--> CANCELLED

Shipping takes the units off the source's on_hand (and its hold); receiving adds the good
units to the destination's on_hand and records what did not arrive as it should (short, over,
damaged). Conservation, checked by `transfer_problems`: for every line of a closed transfer,
shipped == received + damaged + short - over.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from atpd.core.supply import Supply

DAY_MS = 86_400_000
# Like reservation ids but without '#' (it separates the line number in supply ids) and 100
# characters at most, so every supply id it makes is a valid supply id.
TRANSFER_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}\Z")
# A transfer's inbound supply id: the transfer id, '#' and the line number (1-based). Transfer
# ids cannot contain '#', so no two transfers can produce the same supply id.
SUPPLY_ID_SEPARATOR = "#"


class TransferStatus(enum.IntEnum):
    # Numbers match atpd.v1.TransferStatus.
    CREATED = 1
    SHIPPED = 2
    RECEIVED = 3
    CANCELLED = 4

    @property
    def is_open(self) -> bool:
        return self in (TransferStatus.CREATED, TransferStatus.SHIPPED)


@dataclass(slots=True)
class TransferLine:
    sku: str
    quantity: int  # ordered
    sku_index: int
    held: int = 0  # held at the source (CREATED only)
    shipped: int = 0  # taken off the source's on_hand
    received: int = 0  # good units added at the destination
    damaged: int = 0  # arrived damaged: recorded, not added to on_hand
    short: int = 0  # never arrived (set when the transfer closes)
    over: int = 0  # arrived beyond what was shipped (good or damaged)
    # Units the source could not give when shipping because its count was below them (a
    # recount set on_hand under the hold): on_hand floors at 0 and the gap is recorded here.
    source_shortfall: int = 0


@dataclass(frozen=True, slots=True)
class Receipt:
    """One ReceiveTransfer, kept so that a retried receipt is answered, not counted twice."""

    receipt_id: str
    # (sku, received, damaged) per line received in this receipt.
    lines: tuple[tuple[str, int, int], ...]
    final: bool
    at_ms: int


@dataclass(slots=True)
class Transfer:
    transfer_id: str
    from_node_id: str
    to_node_id: str
    from_index: int
    to_index: int
    ship_day: int  # days since 1970-01-01 (UTC), as asked
    lead_days: int  # of the lane at creation
    eta_ms: int  # when the destination expects it (end of the arrival day, UTC)
    lines: list[TransferLine]
    status: TransferStatus
    created_at_ms: int
    updated_at_ms: int
    # The restock plan this transfer came from ("" for one made by a caller).
    plan_id: str = ""
    receipts: list[Receipt] = field(default_factory=list)

    def supply_id(self, line: int) -> str:
        return supply_id_of(self.transfer_id, line)

    def content(self) -> tuple[object, ...]:
        """What a CreateTransfer retry must repeat to be the same request."""
        return (
            self.from_node_id,
            self.to_node_id,
            tuple((x.sku, x.quantity) for x in self.lines),
            self.ship_day,
        )


def is_transfer_id(value: str) -> bool:
    return TRANSFER_ID_PATTERN.fullmatch(value) is not None


def supply_id_of(transfer_id: str, line: int) -> str:
    return f"{transfer_id}{SUPPLY_ID_SEPARATOR}{line + 1}"


def eta_for(ship_day: int, lead_days: int) -> int:
    """Expected during the arrival day: counted as incoming until that day (UTC) is over."""
    return (ship_day + lead_days + 1) * DAY_MS - 1


class TransferBook:
    """Transfers by id: open ones, and the newest closed ones (for idempotent retries)."""

    __slots__ = ("by_supply", "closed", "max_closed", "open")

    def __init__(self, max_closed: int) -> None:
        assert max_closed >= 1
        self.open: dict[str, Transfer] = {}
        self.closed: OrderedDict[str, Transfer] = OrderedDict()
        self.max_closed = max_closed
        # Open supply ids owned by open transfers (the supply API may not receive or cancel them).
        self.by_supply: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.open)

    def find(self, transfer_id: str) -> Transfer | None:
        return self.open.get(transfer_id) or self.closed.get(transfer_id)

    def add(self, transfer: Transfer) -> None:
        assert transfer.transfer_id not in self.open and transfer.status.is_open
        self.open[transfer.transfer_id] = transfer
        for i in range(len(transfer.lines)):
            self.by_supply[transfer.supply_id(i)] = transfer.transfer_id

    def close(self, transfer: Transfer) -> None:
        assert not transfer.status.is_open, transfer
        del self.open[transfer.transfer_id]
        for i in range(len(transfer.lines)):
            self.by_supply.pop(transfer.supply_id(i), None)
        self.closed[transfer.transfer_id] = transfer
        if len(self.closed) > self.max_closed:
            self.closed.popitem(last=False)

    def add_closed(self, transfer: Transfer) -> None:
        """Snapshot loading: a closed transfer, in the order they were closed."""
        assert not transfer.status.is_open
        self.closed[transfer.transfer_id] = transfer

    def all(self) -> list[Transfer]:
        """Open then closed, each in the order they were created / closed."""
        return [*self.open.values(), *self.closed.values()]

    def held_at(self, sku_index: int, node_index: int) -> int:
        """Units held for transfers at one position (O(open transfers): checks, explain)."""
        return sum(
            line.held
            for transfer in self.open.values()
            if transfer.from_index == node_index
            for line in transfer.lines
            if line.sku_index == sku_index
        )


def inbound_at(
    book: TransferBook, supplies: dict[str, Supply], sku_index: int, node_index: int
) -> list[tuple[Transfer, int]]:
    """(transfer, units still expected) of open transfers due at one position (explain)."""
    found = []
    for transfer in book.open.values():
        if transfer.to_index != node_index:
            continue
        for i, line in enumerate(transfer.lines):
            supply = supplies.get(transfer.supply_id(i))
            if line.sku_index == sku_index and supply is not None:
                found.append((transfer, supply.quantity))
    return found


def inbound_of(transfer: Transfer, supplies: dict[str, Supply]) -> list[tuple[int, Supply]]:
    """(line, open supply) of a transfer's lines still expected at the destination."""
    found = []
    for i in range(len(transfer.lines)):
        supply = supplies.get(transfer.supply_id(i))
        if supply is not None:
            found.append((i, supply))
    return found


def transfer_problems(book: TransferBook, supplies: dict[str, Supply]) -> list[str]:
    """Broken invariants of the transfer records (empty: none)."""
    problems = []
    for transfer in book.all():
        status = transfer.status
        for i, line in enumerate(transfer.lines):
            where = f"transfer {transfer.transfer_id!r} line {i}"
            if line.held and status is not TransferStatus.CREATED:
                problems.append(f"{where}: {line.held} held while {status.name}")
            if status is TransferStatus.CREATED and line.held != line.quantity:
                problems.append(f"{where}: holds {line.held} of {line.quantity}")
            supply = supplies.get(transfer.supply_id(i))
            if status.is_open:
                expected = max(line.quantity if not line.shipped else line.shipped, 0)
                outstanding = max(expected - line.received - line.damaged, 0)
                have = 0 if supply is None else supply.quantity
                if have != outstanding:
                    problems.append(f"{where}: supply expects {have}, outstanding {outstanding}")
            elif supply is not None:
                problems.append(f"{where}: closed with supply {supply.supply_id!r} still open")
            if status is TransferStatus.RECEIVED and (
                line.shipped != line.received + line.damaged + line.short - line.over
            ):
                problems.append(f"{where}: shipped {line.shipped} is not accounted for")
    return problems
