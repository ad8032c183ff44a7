"""Proto requests to core commands, checking every field at the edge.

Bad input never reaches the core: each check raises `InvalidArgument` with the field path and
what is wrong, which the servicer turns into gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Sequence

from atpd.core.commands import (
    AddSupply,
    AdjustStock,
    CancelSupply,
    Confirm,
    Fulfil,
    Line,
    Maker,
    NodeKind,
    ReceiveSupply,
    Release,
    ReservationKind,
    Reserve,
    SetCarrierCapacity,
    SetNetwork,
    SetRules,
    SetStock,
    UpsertNode,
)
from atpd.core.geo import parse_geo_path
from atpd.core.ids import (
    ID_PATTERN,
    NAME_PATTERN,
    NODE_ID_PATTERN,
    RESERVATION_ID_PATTERN,
    TAG_PATTERN,
)
from atpd.core.limits import MAX_QUANTITY, Limits
from atpd.core.network import UNLIMITED_SLOTS, parse_date
from atpd.core.supply import SupplyKind
from atpd.core.text import shown
from atpd.v1 import (
    availability_pb2,
    inventory_pb2,
    network_pb2,
    reservations_pb2,
    rules_pb2,
    supply_pb2,
)

__all__ = ["NAME_PATTERN", "RESERVATION_ID_PATTERN", "TAG_PATTERN", "InvalidArgument"]
MAX_TAGS = 16
MAX_REASON_CHARS = 128
MAX_RULES_BYTES = 1 << 20
MAX_SOURCE_CHARS = 256


class InvalidArgument(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NodelessLine(InvalidArgument):
    """A reservation line with no node_id: a Reserve of such lines is sourced by the server
    (service/sourced_reserve.py), anything else refuses it as any invalid argument."""


# Ids and names already found valid (bounded; emptied when full): most calls name SKUs, nodes,
# channels and segments seen before, and a set lookup costs a fraction of a regex match.
VALID_NAMES_CACHE_MAX = 65_536
remembered_sku_ids: set[str] = set()
remembered_node_ids: set[str] = set()
remembered_names: set[str] = set()


def remember(valid: set[str], value: str) -> None:
    if len(valid) >= VALID_NAMES_CACHE_MAX:
        valid.clear()
    valid.add(value)


def sku_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is empty")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field, f"{shown(value)} is not 1-64 characters of letters, digits and . _ : / -"
        )
    return value


def node_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is empty")
    if not NODE_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field, f"{shown(value)} is not 1-64 characters of letters, digits, . _ -"
        )
    return value


def reservation_id(value: str, field: str = "reservation_id") -> str:
    if not value:
        raise InvalidArgument(field, "is empty")
    if not RESERVATION_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field, f"{shown(value)} is not 1-128 characters of letters, digits and . _ : / @ # -"
        )
    return value


def name(value: str, field: str) -> str:
    """A channel or segment name ('' means the default)."""
    if value and value not in remembered_names:
        if not NAME_PATTERN.fullmatch(value):
            raise InvalidArgument(
                field, f"{shown(value)} is not 1-32 lowercase letters, digits, _ -"
            )
        remember(remembered_names, value)
    return value


def quantity(value: int, field: str, *, minimum: int = 1) -> int:
    if value < minimum:
        raise InvalidArgument(field, f"must be >= {minimum}, got {value}")
    if value > MAX_QUANTITY:
        raise InvalidArgument(field, f"must be <= {MAX_QUANTITY}, got {value}")
    return value


def geo_prefix(value: str, field: str = "geo_prefix") -> str:
    if not value:
        return value
    try:
        parse_geo_path(value)
    except ValueError as error:
        raise InvalidArgument(field, f"{shown(value)} {error}") from None
    return value


def lines(
    values: Sequence[reservations_pb2.ReservationLine], limits: Limits, *, allow_empty: bool
) -> tuple[Line, ...]:
    count = len(values)
    if count == 1:
        # Most carts and every till sale: no list, no duplicate check.
        value = values[0]
        sku, node, amount = value.sku, value.node_id, value.quantity
        if sku not in remembered_sku_ids:
            remember(remembered_sku_ids, sku_id(sku, "lines[0].sku"))
        if node not in remembered_node_ids:
            if not node:
                raise NodelessLine("lines[0].node_id", "is empty")
            remember(remembered_node_ids, node_id(node, "lines[0].node_id"))
        if not 1 <= amount <= MAX_QUANTITY:
            quantity(amount, "lines[0].quantity")
        return (Line(sku, node, amount),)
    if not count and not allow_empty:
        raise InvalidArgument("lines", "is empty: a reservation needs at least one line")
    if count > limits.max_lines_per_reservation:
        raise InvalidArgument(
            "lines",
            f"has {len(values)} lines, max_lines_per_reservation is "
            f"{limits.max_lines_per_reservation}",
        )
    result: list[Line] = []
    for i, value in enumerate(values):
        # Field names are formatted only for an error: this runs for every line of every call.
        sku, node, amount = value.sku, value.node_id, value.quantity
        if sku not in remembered_sku_ids:
            remember(remembered_sku_ids, sku_id(sku, f"lines[{i}].sku"))
        if node not in remembered_node_ids:
            if not node:
                raise NodelessLine(f"lines[{i}].node_id", "is empty")
            remember(remembered_node_ids, node_id(node, f"lines[{i}].node_id"))
        if not 1 <= amount <= MAX_QUANTITY:
            quantity(amount, f"lines[{i}].quantity")
        result.append(Line(sku, node, amount))
    if len(result) > 1:
        seen: set[tuple[str, str]] = set()
        for i, line in enumerate(result):
            key = (line.sku, line.node_id)
            if key in seen:
                raise InvalidArgument(
                    f"lines[{i}]", f"duplicate line for sku {line.sku!r} at node {line.node_id!r}"
                )
            seen.add(key)
    return tuple(result)


# A request's kind number -> the kind (0, unset, is a cart); a dict lookup, not an enum call.
_RESERVATION_KINDS = {0: ReservationKind.CART} | {kind.value: kind for kind in ReservationKind}


def reserve(
    request: reservations_pb2.ReserveRequest, limits: Limits, maker: Maker | None = None
) -> Reserve:
    """The Reserve command; `maker` is the calling principal's record (None: auth off)."""
    kind = _RESERVATION_KINDS.get(request.kind)
    if kind is None:
        raise InvalidArgument("kind", f"unknown reservation kind {request.kind}")
    ttl_ms = request.ttl_ms
    if kind is not ReservationKind.POS_SALE and not (
        limits.min_ttl_ms <= ttl_ms <= limits.max_ttl_ms
    ):
        raise InvalidArgument(
            "ttl_ms", f"{ttl_ms} is outside [{limits.min_ttl_ms}, {limits.max_ttl_ms}]"
        )
    return Reserve(
        reservation_id(request.reservation_id),
        lines(request.lines, limits, allow_empty=False),
        ttl_ms if kind is not ReservationKind.POS_SALE else 0,
        kind,
        name(request.channel, "channel"),
        name(request.segment, "segment"),
        maker,
    )


def confirm(request: reservations_pb2.ConfirmRequest) -> Confirm:
    return Confirm(reservation_id(request.reservation_id))


def release(request: reservations_pb2.ReleaseRequest) -> Release:
    return Release(reservation_id(request.reservation_id))


def fulfil(request: reservations_pb2.FulfilRequest, limits: Limits) -> Fulfil:
    return Fulfil(
        reservation_id(request.reservation_id),
        lines(request.lines, limits, allow_empty=True),
        request.release_remainder,
    )


def upsert_node(request: inventory_pb2.UpsertNodeRequest, limits: Limits) -> UpsertNode:
    if not request.HasField("node"):
        raise InvalidArgument("node", "is missing")
    node = request.node
    try:
        kind = NodeKind(node.kind)
    except ValueError:
        raise InvalidArgument(
            "node.kind", f"unknown or unspecified node kind {node.kind}"
        ) from None
    try:
        path = parse_geo_path(node.geo_path)
    except ValueError as error:
        raise InvalidArgument("node.geo_path", f"{shown(node.geo_path)} {error}") from None
    if len(node.tags) > MAX_TAGS:
        raise InvalidArgument("node.tags", f"has {len(node.tags)} tags, at most {MAX_TAGS}")
    for i, tag in enumerate(node.tags):
        if not TAG_PATTERN.fullmatch(tag):
            raise InvalidArgument(
                f"node.tags[{i}]", f"{shown(tag)} is not 1-32 letters, digits, _ -"
            )
    return UpsertNode(
        node_id(node.node_id, "node.node_id"),
        kind,
        path,
        node.ships,
        node.pickup,
        node.enabled,
        tuple(sorted(set(node.tags))),
    )


def set_stock(request: inventory_pb2.SetStockRequest) -> SetStock:
    if request.source_sequence < 1:
        raise InvalidArgument("source_sequence", f"must be >= 1, got {request.source_sequence}")
    safety = None
    if request.HasField("safety_stock"):
        safety = quantity(request.safety_stock, "safety_stock", minimum=0)
    return SetStock(
        sku_id(request.sku, "sku"),
        node_id(request.node_id, "node_id"),
        quantity(request.on_hand, "on_hand", minimum=0),
        request.source_sequence,
        safety,
    )


def adjust_stock(request: inventory_pb2.AdjustStockRequest) -> AdjustStock:
    if request.delta == 0:
        raise InvalidArgument("delta", "is 0: an adjustment must change on_hand")
    if abs(request.delta) > MAX_QUANTITY:
        raise InvalidArgument("delta", f"magnitude must be <= {MAX_QUANTITY}")
    if len(request.reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"is longer than {MAX_REASON_CHARS} characters")
    return AdjustStock(
        sku_id(request.sku, "sku"),
        node_id(request.node_id, "node_id"),
        request.delta,
        request.reason,
    )


def availability_query(
    request: availability_pb2.GetAvailabilityRequest, limits: Limits
) -> tuple[list[str], tuple[str, ...], str]:
    if not request.skus:
        raise InvalidArgument("skus", "is empty: ask for at least one SKU")
    if len(request.skus) > limits.max_skus_per_query:
        raise InvalidArgument(
            "skus",
            f"has {len(request.skus)} SKUs, max_skus_per_query is {limits.max_skus_per_query}",
        )
    skus = list(request.skus)
    for i, sku in enumerate(skus):
        if not sku or not ID_PATTERN.fullmatch(sku):
            sku_id(sku, f"skus[{i}]")
    node_ids = tuple(request.node_ids)
    for i, value in enumerate(node_ids):
        node_id(value, f"node_ids[{i}]")
    name(request.channel, "channel")
    name(request.segment, "segment")
    return skus, node_ids, geo_prefix(request.geo_prefix)


def set_rules(request: rules_pb2.SetRulesRequest) -> SetRules:
    if not request.text.strip():
        raise InvalidArgument("text", "is empty: send the whole rule set")
    if len(request.text.encode()) > MAX_RULES_BYTES:
        raise InvalidArgument("text", f"is larger than {MAX_RULES_BYTES} bytes")
    if len(request.source) > MAX_SOURCE_CHARS:
        raise InvalidArgument("source", f"is longer than {MAX_SOURCE_CHARS} characters")
    return SetRules(request.text, request.source or "<rules>")


def supply_id(value: str, field: str = "supply_id") -> str:
    return reservation_id(value, field)


def add_supply(request: supply_pb2.AddSupplyRequest) -> AddSupply:
    try:
        kind = SupplyKind(request.kind)
    except ValueError:
        raise InvalidArgument(
            "kind", f"unknown or unspecified supply kind {request.kind}"
        ) from None
    if request.eta_ms <= 0:
        raise InvalidArgument("eta_ms", f"must be epoch milliseconds > 0, got {request.eta_ms}")
    return AddSupply(
        supply_id(request.supply_id),
        sku_id(request.sku, "sku"),
        node_id(request.node_id, "node_id"),
        quantity(request.quantity, "quantity"),
        request.eta_ms,
        kind,
    )


def receive_supply(request: supply_pb2.ReceiveSupplyRequest) -> ReceiveSupply:
    amount = quantity(request.quantity, "quantity") if request.HasField("quantity") else None
    return ReceiveSupply(supply_id(request.supply_id), amount)


def cancel_supply(request: supply_pb2.CancelSupplyRequest) -> CancelSupply:
    return CancelSupply(supply_id(request.supply_id))


# ----------------------------------------------------------------------------- network


def set_network(request: network_pb2.SetNetworkRequest) -> SetNetwork:
    if not request.text.strip():
        raise InvalidArgument("text", "is empty: send the whole network")
    if len(request.text.encode()) > MAX_RULES_BYTES:
        raise InvalidArgument("text", f"is larger than {MAX_RULES_BYTES} bytes")
    if len(request.source) > MAX_SOURCE_CHARS:
        raise InvalidArgument("source", f"is longer than {MAX_SOURCE_CHARS} characters")
    return SetNetwork(request.text, request.source or "<network>")


def service_name(value: str, field: str = "service") -> str:
    if not value:
        raise InvalidArgument(field, "is empty: name a carrier service")
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(field, f"{shown(value)} is not 1-32 of a-z 0-9 _ -")
    return value


def date(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is empty: give a date like 2026-12-24")
    try:
        parse_date(value)
    except ValueError as error:
        raise InvalidArgument(field, str(error)) from None
    return value


def set_carrier_capacity(request: network_pb2.SetCarrierCapacityRequest) -> SetCarrierCapacity:
    if request.slots > UNLIMITED_SLOTS:
        raise InvalidArgument("slots", f"{request.slots} is more than {UNLIMITED_SLOTS}")
    return SetCarrierCapacity(
        service_name(request.service),
        node_id(request.node_id, "node_id"),
        date(request.date, "date"),
        request.slots,
    )


def carrier_capacity_query(
    request: network_pb2.GetCarrierCapacityRequest,
) -> tuple[str, str, str, str]:
    first = date(request.from_date, "from_date")
    last = date(request.to_date, "to_date") if request.to_date else first
    return service_name(request.service), node_id(request.node_id, "node_id"), first, last
