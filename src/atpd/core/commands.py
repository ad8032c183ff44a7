"""Commands: everything that changes state, as small frozen values.

Commands carry string ids exactly as the caller sent them (already validated at the edge), so
that a journaled command replays identically whatever the dense id assignment was. Time is not
part of a command: the engine passes `now_ms` to `AtpState.apply` next to it. Each command
class is a `CommandOf[its result]`, so `apply` and `Engine.execute` are typed by the command
they are given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from atpd.core.command_base import CommandOf
from atpd.core.commands_amend import AmendReservation
from atpd.core.commands_store import StoreCommand
from atpd.core.load_command import BulkLoad
from atpd.core.plan import Plan
from atpd.core.results import (
    CarrierCapacityResult,
    GroupResult,
    NetworkResult,
    NodeResult,
    ReservationResult,
    ReserveResult,
    RulesResult,
    StockResult,
    SupplyResult,
    TickResult,
)
from atpd.core.supply import SupplyKind
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    ReceiveTransfer,
    ShipTransfer,
)


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
class Maker:
    """The principal that made a reservation, as the access gate authenticated it: enough to
    decide later whether another principal may confirm, release or fulfil it (same role and a
    scope that covers this one). Empty tuples mean "no limit" (whole network, any channel)."""

    name: str
    role: str
    node_ids: tuple[str, ...] = ()
    geo_prefixes: tuple[str, ...] = ()  # "EU/FR", whole geo segments
    channels: tuple[str, ...] = ()

    def same_principal(self, other: Maker | None) -> bool:
        """The same principal (name and role): a retry of its own Reserve, say."""
        return other is self or (
            other is not None and other.name == self.name and other.role == self.role
        )


@dataclass(frozen=True, slots=True)
class UpsertNode(CommandOf[NodeResult]):
    node_id: str
    kind: NodeKind
    geo_path: tuple[str, ...]
    ships: bool = True
    pickup: bool = False
    enabled: bool = True
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetStock(CommandOf[StockResult]):
    sku: str
    node_id: str
    on_hand: int
    source_sequence: int
    safety_stock: int | None = None


@dataclass(frozen=True, slots=True)
class AdjustStock(CommandOf[StockResult]):
    sku: str
    node_id: str
    delta: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reserve(CommandOf[ReserveResult]):
    reservation_id: str
    lines: tuple[Line, ...]
    ttl_ms: int
    kind: ReservationKind = ReservationKind.CART
    channel: str = ""
    segment: str = ""
    # Who asks; None with authentication off (and in journals written before it existed).
    maker: Maker | None = None
    # A promised option to reserve whole (core/plan_holds.py): `lines` are then the plan's
    # lines, and its carrier slots and pick capacity are held with the stock.
    plan: Plan | None = None


@dataclass(frozen=True, slots=True)
class Confirm(CommandOf[ReservationResult]):
    reservation_id: str


@dataclass(frozen=True, slots=True)
class Fulfil(CommandOf[ReservationResult]):
    reservation_id: str
    # Empty: everything still held.
    lines: tuple[Line, ...] = ()
    release_remainder: bool = False


@dataclass(frozen=True, slots=True)
class Release(CommandOf[ReservationResult]):
    reservation_id: str


@dataclass(frozen=True, slots=True)
class Tick(CommandOf[TickResult]):
    """Expire every hold due at `now_ms` (the clock moving is a command too, for replay)."""


@dataclass(frozen=True, slots=True)
class SetRules(CommandOf[RulesResult]):
    """Replace the availability rules (TOML text) atomically; refused whole if anything in it
    is wrong, the previous rules staying in force."""

    text: str
    source: str = "<rules>"
    # `rules.read_rules_document(text)` when already computed off the event loop (the service
    # does so in a worker thread); never journaled: replay derives it from the text again.
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AddSupply(CommandOf[SupplyResult]):
    supply_id: str
    sku: str
    node_id: str
    quantity: int
    eta_ms: int
    kind: SupplyKind


@dataclass(frozen=True, slots=True)
class ReceiveSupply(CommandOf[SupplyResult]):
    """Move supply into on_hand: all that is still expected, or `quantity` of it."""

    supply_id: str
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class CancelSupply(CommandOf[SupplyResult]):
    supply_id: str


@dataclass(frozen=True, slots=True)
class SetNetwork(CommandOf[NetworkResult]):
    """Replace the fulfilment network (TOML text) atomically; refused whole if anything in it
    is wrong, the previous network staying in force."""

    text: str
    source: str = "<network>"
    # `network_parse.read_network_document(text)` when already computed off the event loop;
    # never journaled: replay derives it from the text again.
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SetCarrierCapacity(CommandOf[CarrierCapacityResult]):
    """The slots a carrier service has at one origin node on one date (absolute; 0 allowed)."""

    service: str
    node_id: str
    date: str  # YYYY-MM-DD, the pickup date at the origin
    slots: int


# The commands a CommandGroup may hold: the reservation lifecycle, which never needs the stock
# table to grow (service/batch_commands.py groups them; the others of a batch get records of
# their own).
GroupedCommand = Reserve | Confirm | Fulfil | Release
GROUPED_TYPES = (Reserve, Confirm, Fulfil, Release)


@dataclass(frozen=True, slots=True)
class CommandGroup(CommandOf[GroupResult]):
    """Commands of one CommandBatch applied at the same time and journaled as one record, in
    the order they were applied. Only commands that changed the state are in it (a refused or
    replayed one leaves no trace, as a unary call would). Replayed in order, each after the
    expiries due at the record's time, exactly as `AtpState.apply` applied them live."""

    commands: tuple[GroupedCommand, ...]


# Any command: what the journal codec and the engine handle.
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
    | SetNetwork
    | SetCarrierCapacity
    | StoreCommand
    | AmendReservation
    | CreateTransfer
    | ShipTransfer
    | ReceiveTransfer
    | CancelTransfer
    | ApplyRestock
    | CommandGroup
)
