"""Results: expected outcomes are values; caller mistakes are exceptions raised before any
mutation (so a failed command never leaves a trace in state or journal)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: keeps results importable from anywhere in the core
    from atpd.core.reservations import ReservationView
    from atpd.core.supply import Supply
    from atpd.core.transfers import Transfer


class Outcome(enum.IntEnum):
    # Numbers match atpd.v1.Outcome.
    OK = 1
    INSUFFICIENT_STOCK = 2
    STALE = 3
    NEGATIVE_ON_HAND = 4
    NODE_DISABLED = 5
    INVALID_STATE = 6
    EXPIRED = 7
    EXCEEDS_HELD = 8
    PROMISE_CHANGED = 9


class CommandRejected(Exception):
    """Base of caller mistakes found by the core; nothing was changed."""


class NotFound(CommandRejected):
    pass


class AlreadyExists(CommandRejected):
    pass


class InvalidCommand(CommandRejected):
    pass


class LimitExceeded(CommandRejected):
    pass


class ShortageReason(enum.IntEnum):
    """Why a Reserve line cannot be held, so a storefront can act on it (numbers match
    atpd.v1.ShortageReason)."""

    STOCK = 1  # the caller's ATP at the node is below the quantity
    LINE_CAP = 2  # the caller's rules cap a line (max_per_line) below the quantity
    NOT_VISIBLE = 3  # the caller's rules do not let it take stock from this node
    NODE_DISABLED = 4  # the node is disabled
    UNKNOWN_SKU = 5  # the SKU never had stock or supply written anywhere


@dataclass(frozen=True, slots=True)
class Shortage:
    sku: str
    node_id: str
    requested: int
    available: int
    reason: ShortageReason = ShortageReason.STOCK


class ChangedResource(enum.IntEnum):
    """What of a promised plan no longer holds (numbers match atpd.v1.ChangedResource)."""

    STOCK = 1  # a line's caller ATP is below its quantity (see the shortages)
    CARRIER_SLOT = 2  # the shipment's carrier service has no slot left on its ship day
    PICK_CAPACITY = 3  # the shipment's node has no pick capacity left on its ship day
    NETWORK = 4  # the service or the node's logistics are gone, or the ship day is past


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One thing that moved since a plan was promised."""

    shipment: int  # index in the plan's shipments
    resource: ChangedResource
    detail: str  # for people: which resource, what is left


@dataclass(frozen=True, slots=True)
class PositionView:
    sku: str
    node_id: str
    on_hand: int
    reserved: int
    safety_stock: int
    atp: int
    last_source_sequence: int


@dataclass(frozen=True, slots=True)
class StockResult:
    outcome: Outcome
    position: PositionView
    last_source_sequence: int = 0
    changed: bool = False


@dataclass(frozen=True, slots=True)
class NodeResult:
    outcome: Outcome
    created: bool
    changed: bool = True


@dataclass(slots=True)  # not frozen: built on every reserve, and frozen __init__ is 2x slower
class ReserveResult:
    outcome: Outcome
    reservation: ReservationView | None = None
    shortages: tuple[Shortage, ...] = ()
    replayed: bool = False
    disabled_node_id: str = ""
    # PROMISE_CHANGED: what moved since the plan was promised.
    changes: tuple[PlanChange, ...] = ()

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.OK and not self.replayed


@dataclass(slots=True)
class ReservationResult:
    outcome: Outcome
    reservation: ReservationView
    changed: bool = False


@dataclass(frozen=True, slots=True)
class TickResult:
    expired: tuple[str, ...] = field(default=())
    # Expiries or purges of old terminal reservations happened.
    time_moved: bool = False

    @property
    def changed(self) -> bool:
        return self.time_moved


@dataclass(frozen=True, slots=True)
class GroupResult:
    """A CommandGroup replayed: how many commands it held (a group is journaled only when it
    holds at least one)."""

    count: int

    @property
    def changed(self) -> bool:
        return self.count > 0


class GroupMemberRejected(Exception):
    """A command of a journaled group was refused on replay. Not a CommandRejected: the
    commands of the group before it are applied, so the state holds part of the record and
    must be rebuilt (recovery stops; a follower rebuilds from its durable records)."""

    def __init__(self, index: int, kind: str, error: CommandRejected) -> None:
        super().__init__(f"commands[{index}] ({kind}) was rejected: {error}")
        self.index = index


@dataclass(frozen=True, slots=True)
class RulesResult:
    outcome: Outcome
    version: str
    previous_version: str
    changed: bool = True


@dataclass(frozen=True, slots=True)
class SupplyResult:
    outcome: Outcome
    supply: Supply
    changed: bool = True


@dataclass(frozen=True, slots=True)
class NetworkResult:
    outcome: Outcome
    version: str
    previous_version: str
    changed: bool = True


@dataclass(frozen=True, slots=True)
class CarrierCapacityResult:
    outcome: Outcome
    service: str
    node_id: str
    date: str
    slots: int
    held: int
    previous_slots: int | None  # None: the date had no slots set (its default applied)
    changed: bool = True


class FailedPrecondition(CommandRejected):
    """The command is valid but the record is not in a state that allows it (a shipped
    transfer cancelled, a stale restock plan applied): gRPC FAILED_PRECONDITION."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    outcome: Outcome
    transfer: Transfer | None
    shortages: tuple[Shortage, ...] = ()
    changed: bool = False


@dataclass(frozen=True, slots=True)
class RestockResult:
    outcome: Outcome
    plan_id: str
    transfer_ids: tuple[str, ...]
    changed: bool = False
