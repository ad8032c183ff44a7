"""Handlers of the supply commands: AddSupply, ReceiveSupply, CancelSupply."""

from __future__ import annotations

from atpd.core.change_capture import touch
from atpd.core.commands import AddSupply, CancelSupply, ReceiveSupply
from atpd.core.limits import MAX_QUANTITY
from atpd.core.results import (
    AlreadyExists,
    FailedPrecondition,
    InvalidCommand,
    LimitExceeded,
    Outcome,
    SupplyResult,
)
from atpd.core.state_fields import (
    StateFields,
    check_quantity,
    find_supply,
    node_index,
    register_sku,
)
from atpd.core.stock import FIELD_ON_HAND
from atpd.core.supply import Supply, SupplyKind


def add_supply(state: StateFields, command: AddSupply, now_ms: int) -> SupplyResult:
    existing = state.supply.find(command.supply_id)
    node = node_index(state, command.node_id, "node_id")
    if existing is not None:
        same = (
            existing.sku,
            existing.node_id,
            existing.quantity + existing.received,
            existing.eta_ms,
            int(existing.kind),
        )
        if same == (
            command.sku,
            command.node_id,
            command.quantity,
            command.eta_ms,
            command.kind,
        ):
            return SupplyResult(Outcome.OK, existing, changed=False)
        raise AlreadyExists(f"supply_id: {command.supply_id!r} exists with different content")
    check_quantity(command.quantity, "quantity")
    sku = state.skus.get(command.sku)
    expected = state.supply.expected_at(sku, node) if sku >= 0 else 0
    if expected + command.quantity > MAX_QUANTITY:
        raise LimitExceeded(
            f"quantity: {expected} units of {command.sku!r} are already expected at "
            f"{command.node_id!r}; {command.quantity} more would pass the bound of "
            f"{MAX_QUANTITY} units of open supply per position (MAX_QUANTITY)"
        )
    sku = register_sku(state, command.sku)
    supply = Supply(
        command.supply_id,
        command.sku,
        command.node_id,
        sku,
        node,
        command.quantity,
        command.eta_ms,
        SupplyKind(command.kind),
    )
    touch(state, sku, node)
    state.supply.add(supply)
    return SupplyResult(Outcome.OK, supply, changed=True)


def _not_a_transfer(state: StateFields, supply_id: str) -> None:
    transfer_id = state.transfers.by_supply.get(supply_id)
    if transfer_id is not None:
        raise FailedPrecondition(
            f"supply_id: {supply_id!r} belongs to transfer {transfer_id!r}: use ReceiveTransfer "
            "or CancelTransfer"
        )


def receive_supply(state: StateFields, command: ReceiveSupply, now_ms: int) -> SupplyResult:
    supply = find_supply(state, command.supply_id)
    _not_a_transfer(state, command.supply_id)
    quantity = supply.quantity if command.quantity is None else command.quantity
    if quantity > supply.quantity:
        raise InvalidCommand(
            f"quantity: {quantity} is more than the {supply.quantity} still expected"
        )
    on_hand = int(state.stock.cells[supply.sku_index, FIELD_ON_HAND, supply.node_index])
    if on_hand + quantity > MAX_QUANTITY:
        raise InvalidCommand(f"quantity: on_hand would exceed {MAX_QUANTITY}")
    touch(state, supply.sku_index, supply.node_index)
    state.stock.cells[supply.sku_index, FIELD_ON_HAND, supply.node_index] = on_hand + quantity
    state.stock.mark_present(supply.sku_index, supply.node_index)
    supply.quantity -= quantity
    supply.received += quantity
    if supply.quantity == 0:
        state.supply.remove(supply)
    return SupplyResult(Outcome.OK, supply, changed=True)


def cancel_supply(state: StateFields, command: CancelSupply, now_ms: int) -> SupplyResult:
    supply = find_supply(state, command.supply_id)
    _not_a_transfer(state, command.supply_id)
    touch(state, supply.sku_index, supply.node_index)
    state.supply.remove(supply)
    return SupplyResult(Outcome.OK, supply, changed=True)
