"""Journal encoding of the transfer and restock commands (JournalCommand fields 32-36), with
the same checks on decode as the service applies to callers (without the limits)."""

from __future__ import annotations

from atpd.core.ids import is_node_id, is_reservation_id, is_sku_id
from atpd.core.limits import MAX_QUANTITY
from atpd.core.network import parse_date
from atpd.core.text import shown
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
from atpd.core.transfers import is_transfer_id
from atpd.v1 import journal_pb2, restock_pb2, transfers_pb2

TransferCommand = CreateTransfer | ShipTransfer | ReceiveTransfer | CancelTransfer | ApplyRestock
ONEOF_FIELDS = (
    "create_transfer",
    "ship_transfer",
    "receive_transfer",
    "cancel_transfer",
    "apply_restock",
)


def fill_create(message: transfers_pb2.CreateTransferRequest, command: CreateTransfer) -> None:
    message.transfer_id = command.transfer_id
    message.from_node_id = command.from_node_id
    message.to_node_id = command.to_node_id
    for line in command.lines:
        message.lines.add(sku=line.sku, quantity=line.quantity)
    message.ship_date = command.ship_date
    message.plan_id = command.plan_id


def create_of(message: transfers_pb2.CreateTransferRequest) -> CreateTransfer:
    return CreateTransfer(
        message.transfer_id,
        message.from_node_id,
        message.to_node_id,
        tuple(TransferItem(x.sku, x.quantity) for x in message.lines),
        message.ship_date,
        message.plan_id,
    )


def encode_transfer_command(entry: journal_pb2.JournalCommand, command: TransferCommand) -> None:
    match command:
        case CreateTransfer():
            fill_create(entry.create_transfer, command)
        case ShipTransfer():
            entry.ship_transfer.transfer_id = command.transfer_id
        case ReceiveTransfer():
            receive = entry.receive_transfer
            receive.transfer_id = command.transfer_id
            receive.receipt_id = command.receipt_id
            for item in command.lines:
                receive.lines.add(sku=item.sku, received=item.received, damaged=item.damaged)
            receive.final = command.final
        case CancelTransfer():
            entry.cancel_transfer.transfer_id = command.transfer_id
        case ApplyRestock():
            record = entry.apply_restock
            record.plan_id = command.plan_id
            for transfer in command.transfers:
                fill_create(record.transfers.add(), transfer)
            for check in command.checks:
                record.checks.add(
                    sku=check.sku,
                    node_id=check.node_id,
                    on_hand=check.on_hand,
                    reserved=check.reserved,
                    inbound=check.inbound,
                    safety=check.safety,
                )


def decode_transfer_command(entry: journal_pb2.JournalCommand, which: str) -> TransferCommand:
    if which == "create_transfer":
        return create_of(entry.create_transfer)
    if which == "ship_transfer":
        return ShipTransfer(entry.ship_transfer.transfer_id)
    if which == "receive_transfer":
        r = entry.receive_transfer
        return ReceiveTransfer(
            r.transfer_id,
            r.receipt_id,
            tuple(ReceivedItem(x.sku, x.received, x.damaged) for x in r.lines),
            r.final,
        )
    if which == "cancel_transfer":
        return CancelTransfer(entry.cancel_transfer.transfer_id)
    assert which == "apply_restock", which
    a: restock_pb2.ApplyRestockRecord = entry.apply_restock
    return ApplyRestock(
        a.plan_id,
        tuple(create_of(x) for x in a.transfers),
        tuple(
            PositionCheck(x.sku, x.node_id, x.on_hand, x.reserved, x.inbound, x.safety)
            for x in a.checks
        ),
    )


def _quantity(value: int, field: str, minimum: int) -> str | None:
    if minimum <= value <= MAX_QUANTITY:
        return None
    return f"{field} {value} is outside {minimum}..{MAX_QUANTITY}"


def _transfer_id(value: str) -> str | None:
    return None if is_transfer_id(value) else f"transfer_id {shown(value)} is not a valid id"


def create_problem(command: CreateTransfer) -> str | None:
    problem = _transfer_id(command.transfer_id)
    for field, node_id in (
        ("from_node_id", command.from_node_id),
        ("to_node_id", command.to_node_id),
    ):
        if problem is None and not is_node_id(node_id):
            problem = f"{field} {shown(node_id)} is not a valid node id"
    for i, line in enumerate(command.lines):
        if problem is None and not is_sku_id(line.sku):
            problem = f"lines[{i}].sku {shown(line.sku)} is not a valid SKU"
        problem = problem or _quantity(line.quantity, f"lines[{i}].quantity", 1)
    if problem is None:
        try:
            parse_date(command.ship_date)
        except ValueError as error:
            problem = f"ship_date {error}"
    if problem is None and command.plan_id and not is_reservation_id(command.plan_id):
        problem = f"plan_id {shown(command.plan_id)} is not a valid id"
    return problem


def transfer_command_problem(command: TransferCommand) -> str | None:
    """What is wrong with a decoded transfer or restock command (None: nothing)."""
    match command:
        case CreateTransfer():
            return create_problem(command)
        case ShipTransfer() | CancelTransfer():
            return _transfer_id(command.transfer_id)
        case ReceiveTransfer():
            problem = _transfer_id(command.transfer_id)
            if problem is None and not is_reservation_id(command.receipt_id):
                problem = f"receipt_id {shown(command.receipt_id)} is not a valid id"
            for i, item in enumerate(command.lines):
                if problem is None and not is_sku_id(item.sku):
                    problem = f"lines[{i}].sku {shown(item.sku)} is not a valid SKU"
                problem = (
                    problem
                    or _quantity(item.received, f"lines[{i}].received", 0)
                    or _quantity(item.damaged, f"lines[{i}].damaged", 0)
                )
            return problem
        case ApplyRestock():
            if not is_reservation_id(command.plan_id):
                return f"plan_id {shown(command.plan_id)} is not a valid id"
            for i, transfer in enumerate(command.transfers):
                problem = create_problem(transfer)
                if problem is not None:
                    return f"transfers[{i}]: {problem}"
            for i, check in enumerate(command.checks):
                if not (is_sku_id(check.sku) and is_node_id(check.node_id)):
                    return f"checks[{i}]: invalid SKU or node id"
            return None
