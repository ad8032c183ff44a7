"""Plain frozen dataclasses for what the server answers, built from the protobuf messages.

Each class mirrors one message field for field (same names); enums become their short names
("OK", "HELD", "CART"), repeated fields tuples, an absent sub-message None. The top-level
results keep the message they were made from in `raw` (not compared, not shown) for anything
this module does not lift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Line:
    sku: str = ""
    node_id: str = ""
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class ReservationPrincipal:
    name: str = ""
    role: str = ""
    node_ids: tuple[str, ...] = ()
    geo_prefixes: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReservedShipment:
    node_id: str = ""
    service: str = ""
    ship_date: str = ""
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: str = ""
    status: str = ""  # HELD, CONFIRMED, FULFILLED, RELEASED, EXPIRED
    kind: str = ""  # CART, ORDER, POS_SALE
    lines: tuple[Line, ...] = ()
    fulfilled: tuple[Line, ...] = ()
    created_at_ms: int = 0
    expires_at_ms: int = 0
    updated_at_ms: int = 0
    channel: str = ""
    segment: str = ""
    principal: ReservationPrincipal | None = None
    shipments: tuple[ReservedShipment, ...] = ()
    destination: str = ""


@dataclass(frozen=True, slots=True)
class LineShortage:
    sku: str = ""
    node_id: str = ""
    requested: int = 0
    available: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PromiseChange:
    shipment: int = 0
    resource: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PromiseShipmentLine:
    sku: str = ""
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class PromiseShipment:
    node_id: str = ""
    service: str = ""
    ship_date: str = ""
    delivery_earliest_date: str = ""
    delivery_latest_date: str = ""
    lines: tuple[PromiseShipmentLine, ...] = ()
    cost_minor: int = 0
    co2_grams: int = 0


@dataclass(frozen=True, slots=True)
class PromiseOption:
    shipments: tuple[PromiseShipment, ...] = ()
    delivery_earliest_date: str = ""
    delivery_latest_date: str = ""
    cost_minor: int = 0
    co2_grams: int = 0
    shipment_count: int = 0
    reasons: tuple[str, ...] = ()
    option_token: str = ""


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """Reserve's answer: `outcome` OK with the reservation, or why not (shortages...)."""

    outcome: str = ""
    reservation: Reservation | None = None
    shortages: tuple[LineShortage, ...] = ()
    replayed: bool = False
    disabled_node_id: str = ""
    changes: tuple[PromiseChange, ...] = ()
    best_option_token: str = ""
    best_option: PromiseOption | None = None
    no_option_reason: str = ""
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "OK"


@dataclass(frozen=True, slots=True)
class ReservationResult:
    """Confirm, Release, Fulfil and GetReservation: the outcome and the reservation after it."""

    outcome: str = ""
    reservation: Reservation | None = None
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "OK"


@dataclass(frozen=True, slots=True)
class Position:
    sku: str = ""
    node_id: str = ""
    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    atp: int = 0
    last_source_sequence: int = 0


@dataclass(frozen=True, slots=True)
class StockResult:
    """SetStock and AdjustStock: the outcome (OK, STALE, NEGATIVE_ON_HAND...) and the position."""

    outcome: str = ""
    position: Position | None = None
    last_source_sequence: int = 0
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "OK"


@dataclass(frozen=True, slots=True)
class NodeAvailability:
    node_id: str = ""
    atp: int = 0
    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    buffer: int = 0
    supply: int = 0
    protected_for_others: int = 0


@dataclass(frozen=True, slots=True)
class GeoAvailability:
    geo: str = ""
    level: int = 0
    atp: int = 0


@dataclass(frozen=True, slots=True)
class SkuAvailability:
    sku: str = ""
    known: bool = False
    total_atp: int = 0
    geo: tuple[GeoAvailability, ...] = ()
    nodes: tuple[NodeAvailability, ...] = ()


@dataclass(frozen=True, slots=True)
class Availability:
    items: tuple[SkuAvailability, ...] = ()
    as_of_ms: int = 0
    channel: str = ""
    segment: str = ""
    rules_version: str = ""
    max_per_line: int = 0
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str = ""
    kind: str = ""
    geo_path: str = ""
    ships: bool = False
    pickup: bool = False
    enabled: bool = False
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpsertNodeResult:
    outcome: str = ""
    created: bool = False
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Supply:
    supply_id: str = ""
    sku: str = ""
    node_id: str = ""
    quantity: int = 0
    eta_ms: int = 0
    kind: str = ""
    received: int = 0
    counted: bool = False


@dataclass(frozen=True, slots=True)
class SupplyResult:
    outcome: str = ""
    supply: Supply | None = None
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RulesResult:
    outcome: str = ""
    version: str = ""
    previous_version: str = ""
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Rules:
    version: str = ""
    text: str = ""
    channels: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    default_channel: str = ""
    default_segment: str = ""
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Status:
    nodes: int = 0
    skus: int = 0
    positions: int = 0
    open_reservations: int = 0
    now_ms: int = 0
    version: str = ""
    journal_sequence: int = 0
    durable_sequence: int = 0
    fsync_policy: str = ""
    journal_failure: str = ""
    last_snapshot_sequence: int = 0
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    last_sequence: int = 0
    path: str = ""
    bytes: int = 0
    seconds: float = 0.0
    segments_removed: int = 0
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    sequence: int = 0
    kind: str = ""  # SYNC, CHANGED, LOW_STOCK, OUT_OF_STOCK, BACK_IN_STOCK, RESYNC_REQUIRED
    sku: str = ""
    node_id: str = ""
    old_atp: int = 0
    new_atp: int = 0
    time_ms: int = 0
    epoch: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PickupOption:
    store_id: str = ""
    source_node_id: str = ""
    transfer_lead_days: int = 0
    ready_by_ms: int = 0
    ready_by: str = ""
    option_token: str = ""


@dataclass(frozen=True, slots=True)
class PromiseResult:
    destination: str = ""
    options: tuple[PromiseOption, ...] = ()
    pickup_options: tuple[PickupOption, ...] = ()
    no_option_reason: str = ""
    exhaustive: bool = False
    channel: str = ""
    segment: str = ""
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PromiseBatchItem:
    sku: str = ""
    available: bool = False
    earliest_delivery_date: str = ""
    node_id: str = ""


@dataclass(frozen=True, slots=True)
class PromiseBatchResult:
    zone: str = ""
    items: tuple[PromiseBatchItem, ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------------- conversion

# Message type (full name) -> the dataclass its sub-messages become.
NESTED: dict[str, type[Any]] = {
    "atpd.v1.ReservationLine": Line,
    "atpd.v1.ReservationPrincipal": ReservationPrincipal,
    "atpd.v1.ReservedShipment": ReservedShipment,
    "atpd.v1.Reservation": Reservation,
    "atpd.v1.LineShortage": LineShortage,
    "atpd.v1.PromiseChange": PromiseChange,
    "atpd.v1.PromiseShipmentLine": PromiseShipmentLine,
    "atpd.v1.PromiseShipment": PromiseShipment,
    "atpd.v1.PromiseOption": PromiseOption,
    "atpd.v1.Position": Position,
    "atpd.v1.NodeAvailability": NodeAvailability,
    "atpd.v1.GeoAvailability": GeoAvailability,
    "atpd.v1.SkuAvailability": SkuAvailability,
    "atpd.v1.Node": Node,
    "atpd.v1.Supply": Supply,
    "atpd.v1.PickupOption": PickupOption,
    "atpd.v1.PromiseBatchItem": PromiseBatchItem,
}
# Per (dataclass, message type): how to read each field, worked out once.
_PLANS: dict[tuple[type[Any], str], list[tuple[str, int, Any]]] = {}
_SCALAR, _ENUM, _MESSAGE, _REPEATED_SCALAR, _REPEATED_ENUM, _REPEATED_MESSAGE, _RAW = range(7)


def _enum_names(descriptor: Any) -> dict[int, str]:
    """Number -> short name: OUTCOME_OK -> OK, RESERVATION_STATUS_HELD -> HELD."""
    enum = descriptor.enum_type
    assert enum is not None
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return {value.number: value.name.removeprefix(prefix) for value in enum.values}


def _plan(cls: type[Any], descriptor: Descriptor) -> list[tuple[str, int, Any]]:
    plan: list[tuple[str, int, Any]] = []
    for item in dataclasses.fields(cls):
        if item.name == "raw":
            plan.append((item.name, _RAW, None))
            continue
        proto_field = descriptor.fields_by_name.get(item.name)
        if proto_field is None:
            continue  # a field this message lacks (AdjustStock's last_source_sequence): default
        repeated = bool(proto_field.is_repeated)
        if proto_field.type == FieldDescriptor.TYPE_ENUM:
            names = _enum_names(proto_field)
            plan.append((item.name, _REPEATED_ENUM if repeated else _ENUM, names))
        elif proto_field.type == FieldDescriptor.TYPE_MESSAGE:
            message_type = proto_field.message_type
            assert message_type is not None
            nested = NESTED[message_type.full_name]
            plan.append((item.name, _REPEATED_MESSAGE if repeated else _MESSAGE, nested))
        else:
            plan.append((item.name, _REPEATED_SCALAR if repeated else _SCALAR, None))
    return plan


def _lines(lines: Any) -> tuple[Line, ...]:
    return tuple([Line(x.sku, x.node_id, x.quantity) for x in lines])


def _reservation(message: Any) -> Reservation:
    """Reservation by hand: it is in every answer of the hot path (a third of the generic
    conversion's cost)."""
    principal = message.principal if message.HasField("principal") else None
    return Reservation(
        message.reservation_id,
        _STATUS_NAMES.get(message.status, str(message.status)),
        _KIND_NAMES.get(message.kind, str(message.kind)),
        _lines(message.lines),
        _lines(message.fulfilled),
        message.created_at_ms,
        message.expires_at_ms,
        message.updated_at_ms,
        message.channel,
        message.segment,
        None if principal is None else from_message(ReservationPrincipal, principal),
        tuple([from_message(ReservedShipment, x) for x in message.shipments]),
        message.destination,
    )


def from_message(cls: type[T], message: Any) -> T:
    """`cls` filled from the protobuf `message` (see the module docstring)."""
    if cls is Reservation:
        return _reservation(message)  # type: ignore[return-value]
    key = (cls, message.DESCRIPTOR.full_name)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(cls, message.DESCRIPTOR)
    values: dict[str, Any] = {}
    for name, how, extra in plan:
        if how == _SCALAR:
            values[name] = getattr(message, name)
        elif how == _ENUM:
            number = getattr(message, name)
            values[name] = extra.get(number, str(number))
        elif how == _MESSAGE:
            if message.HasField(name):
                values[name] = from_message(extra, getattr(message, name))
        elif how == _REPEATED_MESSAGE and extra is Line:
            values[name] = _lines(getattr(message, name))
        elif how == _REPEATED_MESSAGE:
            values[name] = tuple(from_message(extra, x) for x in getattr(message, name))
        elif how == _REPEATED_ENUM:
            values[name] = tuple(extra.get(x, str(x)) for x in getattr(message, name))
        elif how == _REPEATED_SCALAR:
            values[name] = tuple(getattr(message, name))
        else:
            values[name] = message
    return cls(**values)


_STATUS_NAMES: dict[int, str] = {}
_KIND_NAMES: dict[int, str] = {}


def _load_enum_names() -> None:
    from atpd.v1 import reservations_pb2

    fields = reservations_pb2.Reservation.DESCRIPTOR.fields_by_name
    _STATUS_NAMES.update(_enum_names(fields["status"]))
    _KIND_NAMES.update(_enum_names(fields["kind"]))


_load_enum_names()
