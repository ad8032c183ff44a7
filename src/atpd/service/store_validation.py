"""StoreService requests to store commands (core/commands_store.py), checking every field at
the edge: each problem raises `InvalidArgument` naming the field."""

from __future__ import annotations

from collections.abc import Sequence

from atpd.core.commands_store import (
    Exchange,
    NodeLoad,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    ReturnLine,
    SaleLine,
    SupplyLoad,
)
from atpd.core.ids import LOAD_ID_PATTERN
from atpd.core.limits import Limits
from atpd.core.text import shown
from atpd.service import validation
from atpd.service.validation import (
    InvalidArgument,
    name,
    node_id,
    quantity,
    reservation_id,
    sku_id,
)
from atpd.v1 import inventory_pb2, store_pb2

MAX_LIST_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 1_000


def _count(values: Sequence[object], field: str, limits: Limits) -> None:
    if not values:
        raise InvalidArgument(field, "is empty: give at least one line")
    if len(values) > limits.max_lines_per_reservation:
        raise InvalidArgument(
            field,
            f"has {len(values)} lines, max_lines_per_reservation is "
            f"{limits.max_lines_per_reservation}",
        )


def _distinct(skus: list[str], field: str) -> None:
    seen: set[str] = set()
    for i, sku in enumerate(skus):
        if sku in seen:
            raise InvalidArgument(f"{field}[{i}].sku", f"{sku!r} is on another line already")
        seen.add(sku)


def sale_lines(
    values: Sequence[store_pb2.SaleLine], field: str, limits: Limits
) -> tuple[SaleLine, ...]:
    _count(values, field, limits)
    lines = tuple(
        SaleLine(sku_id(x.sku, f"{field}[{i}].sku"), quantity(x.quantity, f"{field}[{i}].quantity"))
        for i, x in enumerate(values)
    )
    _distinct([x.sku for x in lines], field)
    return lines


def return_lines(
    values: Sequence[store_pb2.ReturnLine], field: str, limits: Limits
) -> tuple[ReturnLine, ...]:
    _count(values, field, limits)
    lines = tuple(
        ReturnLine(
            sku_id(x.sku, f"{field}[{i}].sku"),
            quantity(x.quantity, f"{field}[{i}].quantity"),
            x.inspect,
        )
        for i, x in enumerate(values)
    )
    _distinct([x.sku for x in lines], field)
    return lines


def till_time(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(field, f"must be >= 0 (epoch ms; 0: now), got {value}")
    return value


def terminal_id(value: str, field: str = "terminal_id") -> str:
    return node_id(value, field) if value else ""


def channel_of(value: str, default_channel: str, field: str = "channel") -> str:
    """The request's channel, else the calling token's default channel."""
    return name(value or default_channel, field)


def record_sale(
    request: store_pb2.RecordSaleRequest,
    limits: Limits,
    default_channel: str = "",
    field: str = "",
) -> RecordSale:
    return RecordSale(
        reservation_id(request.receipt_id, f"{field}receipt_id"),
        node_id(request.node_id, f"{field}node_id"),
        sale_lines(request.lines, f"{field}lines", limits),
        request.force,
        till_time(request.sold_at_ms, f"{field}sold_at_ms"),
        channel_of(request.channel, default_channel, f"{field}channel"),
        name(request.segment, f"{field}segment"),
        terminal_id(request.terminal_id, f"{field}terminal_id"),
    )


def record_offline_sales(
    request: store_pb2.RecordOfflineSalesRequest, limits: Limits, default_channel: str = ""
) -> RecordOfflineSales:
    if not request.sales:
        raise InvalidArgument("sales", "is empty: send at least one queued sale")
    if len(request.sales) > limits.max_offline_sales_per_call:
        raise InvalidArgument(
            "sales",
            f"has {len(request.sales)} sales, max_offline_sales_per_call is "
            f"{limits.max_offline_sales_per_call}: send the queue in several calls, oldest first",
        )
    return RecordOfflineSales(
        tuple(
            record_sale(sale, limits, default_channel, f"sales[{i}].")
            for i, sale in enumerate(request.sales)
        )
    )


def record_return(request: store_pb2.RecordReturnRequest, limits: Limits) -> RecordReturn:
    return RecordReturn(
        reservation_id(request.return_id, "return_id"),
        node_id(request.node_id, "node_id"),
        return_lines(request.lines, "lines", limits),
        till_time(request.returned_at_ms, "returned_at_ms"),
        reservation_id(request.receipt_id, "receipt_id") if request.receipt_id else "",
        terminal_id(request.terminal_id),
    )


def exchange(
    request: store_pb2.ExchangeRequest, limits: Limits, default_channel: str = ""
) -> Exchange:
    return Exchange(
        reservation_id(request.exchange_id, "exchange_id"),
        node_id(request.node_id, "node_id"),
        return_lines(request.returned, "returned", limits),
        sale_lines(request.sold, "sold", limits),
        request.force,
        till_time(request.at_ms, "at_ms"),
        channel_of(request.channel, default_channel),
        name(request.segment, "segment"),
        terminal_id(request.terminal_id),
    )


def release_inspection(request: store_pb2.ReleaseInspectionRequest) -> ReleaseInspection:
    if request.outcome not in (
        store_pb2.INSPECTION_OUTCOME_RESTOCK,
        store_pb2.INSPECTION_OUTCOME_WRITE_OFF,
    ):
        raise InvalidArgument(
            "outcome", f"{request.outcome} is not INSPECTION_OUTCOME_RESTOCK or _WRITE_OFF"
        )
    return ReleaseInspection(
        reservation_id(request.release_id, "release_id"),
        sku_id(request.sku, "sku"),
        node_id(request.node_id, "node_id"),
        quantity(request.quantity, "quantity"),
        request.outcome == store_pb2.INSPECTION_OUTCOME_RESTOCK,
    )


def load_id(value: str) -> str:
    if not value:
        raise InvalidArgument("load_id", "is empty")
    if not LOAD_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "load_id", f"{shown(value)} is not 1-128 characters of letters, digits and . _ -"
        )
    return value


def _rows(count: int, limits: Limits) -> None:
    if count == 0:
        raise InvalidArgument("rows", "is empty: a load needs at least one row")
    if count > limits.max_catalogue_load_rows:
        raise InvalidArgument(
            "rows",
            f"has {count} rows, max_catalogue_load_rows is {limits.max_catalogue_load_rows}: "
            "split the file",
        )


def _row_field(error: InvalidArgument, prefix: str) -> InvalidArgument:
    """The same problem, its field named inside the load (rows[3].node.kind)."""
    problem = str(error).removeprefix(f"{error.field}: ")
    return InvalidArgument(f"{prefix}.{error.field}", problem)


def node_load(request: store_pb2.LoadNodesRequest, limits: Limits) -> NodeLoad:
    identifier = load_id(request.load_id)
    _rows(len(request.nodes), limits)
    nodes = []
    for i, node in enumerate(request.nodes):
        try:
            nodes.append(validation.upsert_node(inventory_pb2.UpsertNodeRequest(node=node), limits))
        except InvalidArgument as error:
            raise _row_field(error, f"rows[{i}]") from None
    return NodeLoad(identifier, tuple(nodes))


def supply_load(request: store_pb2.LoadSupplyRequest, limits: Limits) -> SupplyLoad:
    identifier = load_id(request.load_id)
    _rows(len(request.rows), limits)
    rows = []
    for i, row in enumerate(request.rows):
        try:
            rows.append(validation.add_supply(row))
        except InvalidArgument as error:
            raise _row_field(error, f"rows[{i}]") from None
    return SupplyLoad(identifier, tuple(rows))


def list_limit(value: int) -> int:
    if value < 0 or value > MAX_LIST_LIMIT:
        raise InvalidArgument("limit", f"must be in 0..{MAX_LIST_LIMIT} (0: {DEFAULT_LIST_LIMIT})")
    return value or DEFAULT_LIST_LIMIT


def list_filter(node: str, sku: str) -> tuple[str, str]:
    return (node_id(node, "node_id") if node else "", sku_id(sku, "sku") if sku else "")
