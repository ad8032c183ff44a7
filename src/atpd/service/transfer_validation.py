"""Transfer and restock requests to core commands, checking every field at the edge (the
rules of service/validation.py: `InvalidArgument` naming the field and the problem)."""

from __future__ import annotations

from atpd.core.ids import ID_PATTERN
from atpd.core.limits import Limits
from atpd.core.network import parse_date
from atpd.core.restock import MAX_HORIZON_DAYS
from atpd.core.text import shown
from atpd.core.transfer_commands import (
    CancelTransfer,
    CreateTransfer,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
    TransferItem,
)
from atpd.core.transfers import TransferStatus, is_transfer_id
from atpd.service.validation import InvalidArgument, node_id, quantity, reservation_id, sku_id
from atpd.v1 import restock_pb2, transfers_pb2

DEFAULT_HORIZON_DAYS = 7
DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 10_000


def transfer_id(value: str, field: str = "transfer_id") -> str:
    if not value:
        raise InvalidArgument(field, "is empty")
    if not is_transfer_id(value):
        raise InvalidArgument(
            field, f"{shown(value)} is not 1-100 characters of letters, digits and . _ : / @ -"
        )
    return value


def ship_date(value: str, field: str = "ship_date") -> str:
    try:
        parse_date(value)
    except ValueError as error:
        raise InvalidArgument(field, str(error)) from None
    return value


def create_transfer(request: transfers_pb2.CreateTransferRequest, limits: Limits) -> CreateTransfer:
    if request.plan_id:
        raise InvalidArgument("plan_id", "is set by ApplyRestock only; leave it empty")
    if not request.lines:
        raise InvalidArgument("lines", "a transfer needs at least one line")
    if len(request.lines) > limits.max_lines_per_transfer:
        raise InvalidArgument(
            "lines",
            f"{len(request.lines)} lines, more than max_lines_per_transfer "
            f"({limits.max_lines_per_transfer})",
        )
    source = node_id(request.from_node_id, "from_node_id")
    destination = node_id(request.to_node_id, "to_node_id")
    if source == destination:
        raise InvalidArgument("to_node_id", f"{shown(destination)} is also the source")
    seen: set[str] = set()
    lines = []
    for i, line in enumerate(request.lines):
        sku = sku_id(line.sku, f"lines[{i}].sku")
        if sku in seen:
            raise InvalidArgument(f"lines[{i}].sku", f"{shown(sku)} is on two lines")
        seen.add(sku)
        lines.append(TransferItem(sku, quantity(line.quantity, f"lines[{i}].quantity")))
    return CreateTransfer(
        transfer_id(request.transfer_id),
        source,
        destination,
        tuple(lines),
        ship_date(request.ship_date),
    )


def ship_transfer(request: transfers_pb2.ShipTransferRequest) -> ShipTransfer:
    return ShipTransfer(transfer_id(request.transfer_id))


def cancel_transfer(request: transfers_pb2.CancelTransferRequest) -> CancelTransfer:
    return CancelTransfer(transfer_id(request.transfer_id))


def _count(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(field, f"must be >= 0, got {value}")
    if value > 1_000_000_000:
        raise InvalidArgument(field, f"{value} is more than 1000000000")
    return value


def receive_transfer(
    request: transfers_pb2.ReceiveTransferRequest, limits: Limits
) -> ReceiveTransfer:
    if len(request.lines) > limits.max_lines_per_transfer:
        raise InvalidArgument("lines", "more lines than max_lines_per_transfer")
    items = []
    for i, line in enumerate(request.lines):
        received = _count(line.received, f"lines[{i}].received")
        damaged = _count(line.damaged, f"lines[{i}].damaged")
        if received + damaged == 0:
            raise InvalidArgument(f"lines[{i}]", "receives nothing (received and damaged are 0)")
        items.append(ReceivedItem(sku_id(line.sku, f"lines[{i}].sku"), received, damaged))
    return ReceiveTransfer(
        transfer_id(request.transfer_id),
        reservation_id(request.receipt_id, "receipt_id"),
        tuple(items),
        request.final,
    )


def list_transfers(
    request: transfers_pb2.ListTransfersRequest,
) -> tuple[str, TransferStatus | None, int]:
    node = node_id(request.node_id, "node_id") if request.node_id else ""
    status: TransferStatus | None = None
    if request.status:
        try:
            status = TransferStatus(request.status)
        except ValueError:
            raise InvalidArgument("status", f"unknown transfer status {request.status}") from None
    limit = request.limit or DEFAULT_LIST_LIMIT
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument("limit", f"{request.limit} is not in 0..{MAX_LIST_LIMIT}")
    return node, status, limit


def sku_prefix(value: str) -> str:
    if value and not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "sku_prefix", f"{shown(value)} is not 1-64 characters of letters, digits and . _ : / -"
        )
    return value


def horizon_days(request: restock_pb2.PlanRestockRequest) -> int:
    days = request.horizon_days or DEFAULT_HORIZON_DAYS
    if not 1 <= days <= MAX_HORIZON_DAYS:
        raise InvalidArgument(
            "horizon_days", f"{request.horizon_days} is not in 0..{MAX_HORIZON_DAYS}"
        )
    return days


def plan_id(value: str) -> str:
    return reservation_id(value, "plan_id")
