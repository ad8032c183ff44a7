"""Commands: everything that changes state, as small frozen values.

Commands carry string ids exactly as the caller sent them (already validated at the edge), so
that a journaled command replays identically whatever the dense id assignment was. Time is not
part of a command: the engine passes `now_ms` to `AtpState.apply` next to it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class NodeKind(enum.IntEnum):
    STORE = 1
    WAREHOUSE = 2
    DISTRIBUTION_CENTER = 3
    DARK_STORE = 4
    OUTLET = 5


class ReservationKind(enum.IntEnum):
    CART = 1
    ORDER = 2
    POS_SALE = 3


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    node_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class UpsertNode:
    node_id: str
    kind: NodeKind
    geo_path: tuple[str, ...]
    ships: bool = True
    pickup: bool = False
    enabled: bool = True
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetStock:
    sku: str
    node_id: str
    on_hand: int
    source_sequence: int
    safety_stock: int | None = None


@dataclass(frozen=True, slots=True)
class AdjustStock:
    sku: str
    node_id: str
    delta: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reserve:
    reservation_id: str
    lines: tuple[Line, ...]
    ttl_ms: int
    kind: ReservationKind = ReservationKind.CART
    channel: str = ""
    segment: str = ""


@dataclass(frozen=True, slots=True)
class Confirm:
    reservation_id: str


@dataclass(frozen=True, slots=True)
class Fulfil:
    reservation_id: str
    # Empty: everything still held.
    lines: tuple[Line, ...] = ()
    release_remainder: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    reservation_id: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Expire every hold due at `now_ms` (the clock moving is a command too, for replay)."""


@dataclass(frozen=True, slots=True)
class SetRules:
    """Replace the availability rules (TOML text) atomically; refused whole if anything in it
    is wrong, the previous rules staying in force."""

    text: str
    source: str = "<rules>"
    # `rules.read_rules_document(text)` when already computed off the event loop (the service
    # does so in a worker thread); never journaled: replay derives it from the text again.
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AddSupply:
    supply_id: str
    sku: str
    node_id: str
    quantity: int
    eta_ms: int
    kind: int  # SupplyKind


@dataclass(frozen=True, slots=True)
class ReceiveSupply:
    """Move supply into on_hand: all that is still expected, or `quantity` of it."""

    supply_id: str
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class CancelSupply:
    supply_id: str


# Imported last: bulk.py imports results -> reservations -> this module's Line.
from atpd.core.load_command import BulkLoad  # noqa: E402

Command = (
    UpsertNode
    | SetStock
    | AdjustStock
    | Reserve
    | Confirm
    | Fulfil
    | Release
    | Tick
    | SetRules
    | AddSupply
    | ReceiveSupply
    | CancelSupply
    | BulkLoad
)
