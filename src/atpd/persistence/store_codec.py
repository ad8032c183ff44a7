"""Store operation commands (core/commands_store.py) to journal entries and back, and the
content checks decoding applies (the same rules as the edge's, without the limits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from atpd.core.commands import AddSupply, NodeKind, UpsertNode
from atpd.core.commands_store import (
    Exchange,
    NodeLoad,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    ReturnLine,
    SaleLine,
    StoreCommand,
    SupplyLoad,
)
from atpd.core.ids import is_name, is_node_id, is_reservation_id, is_sku_id
from atpd.core.limits import MAX_QUANTITY
from atpd.core.supply import SupplyKind
from atpd.core.text import shown
from atpd.v1 import inventory_pb2, journal_pb2, store_pb2, supply_pb2

STORE_ENTRIES = frozenset(
    {
        "record_sale",
        "offline_sales",
        "record_return",
        "exchange",
        "release_inspection",
        "node_load",
        "supply_load",
    }
)
_SUPPLY_KINDS = frozenset(int(kind) for kind in SupplyKind)
_OUTCOMES = {
    store_pb2.INSPECTION_OUTCOME_RESTOCK: True,
    store_pb2.INSPECTION_OUTCOME_WRITE_OFF: False,
}


class StoreRecordError(ValueError):
    pass


def _fill_sale(message: store_pb2.RecordSaleRequest, command: RecordSale) -> None:
    message.receipt_id = command.receipt_id
    message.node_id = command.node_id
    for line in command.lines:
        message.lines.add(sku=line.sku, quantity=line.quantity)
    message.force = command.force
    message.sold_at_ms = command.sold_at_ms
    message.channel = command.channel
    message.segment = command.segment
    message.terminal_id = command.terminal_id


def _sale(message: store_pb2.RecordSaleRequest) -> RecordSale:
    return RecordSale(
        message.receipt_id,
        message.node_id,
        tuple(SaleLine(x.sku, x.quantity) for x in message.lines),
        message.force,
        message.sold_at_ms,
        message.channel,
        message.segment,
        message.terminal_id,
    )


def _returns(values: object) -> tuple[ReturnLine, ...]:
    return tuple(ReturnLine(x.sku, x.quantity, x.inspect) for x in values)  # type: ignore[attr-defined]


def fill_node(node: inventory_pb2.Node, command: UpsertNode) -> None:
    node.node_id = command.node_id
    node.kind = int(command.kind)  # type: ignore[assignment]
    node.geo_path = "/".join(command.geo_path)
    node.ships = command.ships
    node.pickup = command.pickup
    node.enabled = command.enabled
    node.tags.extend(command.tags)


def fill_supply(add: supply_pb2.AddSupplyRequest, command: AddSupply) -> None:
    add.supply_id = command.supply_id
    add.sku = command.sku
    add.node_id = command.node_id
    add.quantity = command.quantity
    add.eta_ms = command.eta_ms
    add.kind = command.kind  # type: ignore[assignment]


def node_of(n: inventory_pb2.Node) -> UpsertNode:
    return UpsertNode(
        n.node_id,
        NodeKind(n.kind),
        tuple(n.geo_path.split("/")),
        n.ships,
        n.pickup,
        n.enabled,
        tuple(n.tags),
    )


def supply_of(add: supply_pb2.AddSupplyRequest) -> AddSupply:
    # An unknown kind stays a plain int for command_problem to name (the record is refused).
    kind = SupplyKind(add.kind) if add.kind in _SUPPLY_KINDS else cast(SupplyKind, add.kind)
    return AddSupply(add.supply_id, add.sku, add.node_id, add.quantity, add.eta_ms, kind)


def encode_store(command: StoreCommand, entry: journal_pb2.JournalCommand) -> None:
    match command:
        case NodeLoad():
            entry.node_load.load_id = command.load_id
            for node in command.nodes:
                fill_node(entry.node_load.nodes.add(), node)
        case SupplyLoad():
            entry.supply_load.load_id = command.load_id
            for row in command.rows:
                fill_supply(entry.supply_load.rows.add(), row)
        case RecordSale():
            _fill_sale(entry.record_sale, command)
        case RecordOfflineSales():
            for sale in command.sales:
                _fill_sale(entry.offline_sales.sales.add(), sale)
        case RecordReturn():
            r = entry.record_return
            r.return_id = command.return_id
            r.node_id = command.node_id
            for line in command.lines:
                r.lines.add(sku=line.sku, quantity=line.quantity, inspect=line.inspect)
            r.returned_at_ms = command.returned_at_ms
            r.receipt_id = command.receipt_id
            r.terminal_id = command.terminal_id
        case Exchange():
            x = entry.exchange
            x.exchange_id = command.exchange_id
            x.node_id = command.node_id
            for back in command.returned:
                x.returned.add(sku=back.sku, quantity=back.quantity, inspect=back.inspect)
            for sold in command.sold:
                x.sold.add(sku=sold.sku, quantity=sold.quantity)
            x.force = command.force
            x.at_ms = command.at_ms
            x.channel = command.channel
            x.segment = command.segment
            x.terminal_id = command.terminal_id
        case ReleaseInspection():
            release = entry.release_inspection
            release.release_id = command.release_id
            release.sku = command.sku
            release.node_id = command.node_id
            release.quantity = command.quantity
            release.outcome = (
                store_pb2.INSPECTION_OUTCOME_RESTOCK
                if command.restock
                else store_pb2.INSPECTION_OUTCOME_WRITE_OFF
            )


def decode_store(entry: journal_pb2.JournalCommand, which: str) -> StoreCommand:
    if which == "node_load":
        nodes = tuple(node_of(n) for n in entry.node_load.nodes)
        return NodeLoad(entry.node_load.load_id, nodes)
    if which == "supply_load":
        rows = tuple(supply_of(x) for x in entry.supply_load.rows)
        return SupplyLoad(entry.supply_load.load_id, rows)
    if which == "record_sale":
        return _sale(entry.record_sale)
    if which == "offline_sales":
        return RecordOfflineSales(tuple(_sale(x) for x in entry.offline_sales.sales))
    if which == "record_return":
        r = entry.record_return
        return RecordReturn(
            r.return_id,
            r.node_id,
            _returns(r.lines),
            r.returned_at_ms,
            r.receipt_id,
            r.terminal_id,
        )
    if which == "exchange":
        x = entry.exchange
        return Exchange(
            x.exchange_id,
            x.node_id,
            _returns(x.returned),
            tuple(SaleLine(line.sku, line.quantity) for line in x.sold),
            x.force,
            x.at_ms,
            x.channel,
            x.segment,
            x.terminal_id,
        )
    assert which == "release_inspection", which
    release = entry.release_inspection
    if release.outcome not in _OUTCOMES:
        raise StoreRecordError(f"release_inspection outcome {release.outcome} unknown")
    return ReleaseInspection(
        release.release_id,
        release.sku,
        release.node_id,
        release.quantity,
        _OUTCOMES[release.outcome],
    )


def _lines_problem(lines: Sequence[SaleLine | ReturnLine], field: str) -> str | None:
    if not lines:
        return f"{field} is empty"
    for i, line in enumerate(lines):
        if not is_sku_id(line.sku):
            return f"{field}[{i}].sku {shown(line.sku)} is not a valid id"
        if not 1 <= line.quantity <= MAX_QUANTITY:
            return f"{field}[{i}].quantity {line.quantity} is outside 1..{MAX_QUANTITY}"
    return None


def _common_problem(
    record_id: str, field: str, node_id: str, at_ms: int, terminal_id: str
) -> str | None:
    if not is_reservation_id(record_id):
        return f"{field} {shown(record_id)} is not a valid id"
    if not is_node_id(node_id):
        return f"node_id {shown(node_id)} is not a valid id"
    if at_ms < 0:
        return f"time {at_ms} is negative"
    if terminal_id and not is_node_id(terminal_id):
        return f"terminal_id {shown(terminal_id)} is not a valid id"
    return None


def _names_problem(channel: str, segment: str) -> str | None:
    for field, value in (("channel", channel), ("segment", segment)):
        if value and not is_name(value):
            return f"{field} {shown(value)} is not a valid name"
    return None


def _sale_problem(sale: RecordSale) -> str | None:
    return (
        _common_problem(
            sale.receipt_id, "receipt_id", sale.node_id, sale.sold_at_ms, sale.terminal_id
        )
        or _lines_problem(sale.lines, "lines")
        or _names_problem(sale.channel, sale.segment)
    )


def store_problem(command: StoreCommand) -> str | None:
    """What is wrong with a decoded store command (None: nothing)."""
    match command:
        case RecordSale():
            return _sale_problem(command)
        case RecordOfflineSales():
            if not command.sales:
                return "sales is empty"
            for i, sale in enumerate(command.sales):
                problem = _sale_problem(sale)
                if problem is not None:
                    return f"sales[{i}]: {problem}"
            return None
        case RecordReturn():
            return _common_problem(
                command.return_id,
                "return_id",
                command.node_id,
                command.returned_at_ms,
                command.terminal_id,
            ) or _lines_problem(command.lines, "lines")
        case Exchange():
            return (
                _common_problem(
                    command.exchange_id,
                    "exchange_id",
                    command.node_id,
                    command.at_ms,
                    command.terminal_id,
                )
                or _lines_problem(command.returned, "returned")
                or _lines_problem(command.sold, "sold")
                or _names_problem(command.channel, command.segment)
            )
        case ReleaseInspection():
            return (
                _common_problem(command.release_id, "release_id", command.node_id, 0, "")
                or (
                    None
                    if is_sku_id(command.sku)
                    else f"sku {shown(command.sku)} is not a valid id"
                )
                or (
                    None
                    if 1 <= command.quantity <= MAX_QUANTITY
                    else f"quantity {command.quantity} is outside 1..{MAX_QUANTITY}"
                )
            )
    # NodeLoad and SupplyLoad rows are commands of their own: codec.command_problem checks them.
    raise AssertionError(f"no check for {type(command).__name__}")
