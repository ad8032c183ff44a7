"""Handlers of the transfer commands: CreateTransfer, ShipTransfer, ReceiveTransfer,
CancelTransfer, and ApplyRestock (a restock plan's transfers, created in one step).

Every check runs before the first write, so a refused command leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from atpd.core.change_capture import touch
from atpd.core.handlers_network import compiled_network
from atpd.core.limits import MAX_QUANTITY
from atpd.core.network import parse_date
from atpd.core.results import (
    AlreadyExists,
    FailedPrecondition,
    InvalidCommand,
    LimitExceeded,
    NotFound,
    Outcome,
    RestockResult,
    Shortage,
    ShortageReason,
    TransferResult,
)
from atpd.core.state_fields import StateFields, check_quantity, node_index, register_sku
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
from atpd.core.supply import Supply, SupplyKind
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    ReceivedItem,
    ReceiveTransfer,
    ShipTransfer,
)
from atpd.core.transfers import (
    DAY_MS,
    Receipt,
    Transfer,
    TransferLine,
    TransferStatus,
    eta_for,
    supply_id_of,
)

EPOCH_ORDINAL = 719_163  # datetime.date(1970, 1, 1).toordinal()


def lane_of(state: StateFields, source: int, destination: int) -> tuple[int, float] | None:
    """(lead_days, cost per shipment) of the network's transfer lane between two nodes, or
    None when the network has none (the rules' `[restock]` defaults apply then)."""
    network = compiled_network(state)
    lane_from, lane_to = network.lane_from, network.lane_to
    for i in range(len(lane_from)):
        if lane_from[i] == source and lane_to[i] == destination:
            return int(network.lane_lead_days[i]), float(network.lane_cost[i])
    return None


def lead_days_of(state: StateFields, source: int, destination: int) -> int:
    lane = lane_of(state, source, destination)
    return lane[0] if lane is not None else state.rules.restock.default_lead_days


def ship_day_of(state: StateFields, ship_date: str, now_ms: int) -> int:
    try:
        day = parse_date(ship_date).toordinal() - EPOCH_ORDINAL
    except ValueError as error:
        raise InvalidCommand(f"ship_date: {error}") from None
    today = now_ms // DAY_MS
    if day < today:
        raise InvalidCommand(f"ship_date: {ship_date} is before today (UTC)")
    ahead = state.limits.max_transfer_days_ahead
    if day > today + ahead:
        raise InvalidCommand(
            f"ship_date: {ship_date} is more than {ahead} days ahead (max_transfer_days_ahead)"
        )
    return day


def find_transfer(state: StateFields, transfer_id: str) -> Transfer:
    transfer = state.transfers.find(transfer_id)
    if transfer is None:
        raise NotFound(f"transfer_id: unknown transfer {transfer_id!r}")
    return transfer


@dataclass(slots=True)
class _Prepared:
    """A CreateTransfer checked and ready to write (or its shortages)."""

    command: CreateTransfer
    source: int
    destination: int
    ship_day: int
    lead_days: int
    shortages: tuple[Shortage, ...]


def _prepare(
    state: StateFields, command: CreateTransfer, now_ms: int, pending: dict[tuple[int, int], int]
) -> _Prepared:
    """Check a new transfer against the state plus `pending` ((sku row, node) -> units held or
    announced by transfers of the same command not yet written). Raises on caller mistakes."""
    lines = command.lines
    if not lines:
        raise InvalidCommand("lines: a transfer needs at least one line")
    if len(lines) > state.limits.max_lines_per_transfer:
        raise LimitExceeded(
            f"lines: {len(lines)} lines, more than max_lines_per_transfer "
            f"({state.limits.max_lines_per_transfer})"
        )
    if command.from_node_id == command.to_node_id:
        raise InvalidCommand(f"to_node_id: {command.to_node_id!r} is also the source")
    source = node_index(state, command.from_node_id, "from_node_id")
    destination = node_index(state, command.to_node_id, "to_node_id")
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.quantity < 1:
            raise InvalidCommand(f"lines[{i}].quantity: {line.quantity} is not at least 1")
        check_quantity(line.quantity, f"lines[{i}].quantity")
        if line.sku in seen:
            raise InvalidCommand(f"lines[{i}].sku: {line.sku!r} is on two lines")
        seen.add(line.sku)
    ship_day = ship_day_of(state, command.ship_date, now_ms)
    for i in range(len(lines)):
        supply_id = supply_id_of(command.transfer_id, i)
        if state.supply.find(supply_id) is not None:
            raise AlreadyExists(
                f"transfer_id: {command.transfer_id!r} would announce supply {supply_id!r}, "
                "which exists already"
            )
    cells = state.stock.cells
    shortages = []
    for line in lines:
        sku = state.skus.get(line.sku)
        if sku < 0:
            shortages.append(
                Shortage(
                    line.sku, command.from_node_id, line.quantity, 0, ShortageReason.UNKNOWN_SKU
                )
            )
            continue
        free = (
            int(cells[sku, FIELD_ON_HAND, source])
            - int(cells[sku, FIELD_RESERVED, source])
            - int(cells[sku, FIELD_SAFETY, source])
            - pending.get((sku, source), 0)
        )
        if free < line.quantity:
            shortages.append(Shortage(line.sku, command.from_node_id, line.quantity, max(free, 0)))
            continue
        inbound = state.supply.expected_at(sku, destination) + pending.get(
            (sku, -1 - destination), 0
        )
        if inbound + line.quantity > MAX_QUANTITY:
            raise LimitExceeded(
                f"lines: {inbound} units of {line.sku!r} are already expected at "
                f"{command.to_node_id!r}; {line.quantity} more would pass {MAX_QUANTITY}"
            )
    lead_days = lead_days_of(state, source, destination)
    return _Prepared(command, source, destination, ship_day, lead_days, tuple(shortages))


def _write(state: StateFields, prepared: _Prepared, now_ms: int) -> Transfer:
    command = prepared.command
    source, destination = prepared.source, prepared.destination
    cells = state.stock.cells
    eta_ms = eta_for(prepared.ship_day, prepared.lead_days)
    lines = []
    for i, item in enumerate(command.lines):
        sku = register_sku(state, item.sku)
        cells = state.stock.cells
        touch(state, sku, source)
        cells[sku, FIELD_RESERVED, source] += item.quantity
        touch(state, sku, destination)
        state.supply.add(
            Supply(
                supply_id_of(command.transfer_id, i),
                item.sku,
                command.to_node_id,
                sku,
                destination,
                item.quantity,
                eta_ms,
                SupplyKind.TRANSFER,
            )
        )
        lines.append(TransferLine(item.sku, item.quantity, sku, held=item.quantity))
    transfer = Transfer(
        command.transfer_id,
        command.from_node_id,
        command.to_node_id,
        source,
        destination,
        prepared.ship_day,
        prepared.lead_days,
        eta_ms,
        lines,
        TransferStatus.CREATED,
        now_ms,
        now_ms,
        command.plan_id,
    )
    state.transfers.add(transfer)
    return transfer


def _existing(state: StateFields, command: CreateTransfer) -> TransferResult | None:
    existing = state.transfers.find(command.transfer_id)
    if existing is None:
        return None
    asked = (
        command.from_node_id,
        command.to_node_id,
        tuple((x.sku, x.quantity) for x in command.lines),
    )
    same = existing.content()[:3] == asked
    if same:
        try:
            same = ship_day_of_text(command.ship_date) == existing.ship_day
        except ValueError:
            same = False
    if not same:
        raise AlreadyExists(f"transfer_id: {command.transfer_id!r} exists with different content")
    return TransferResult(Outcome.OK, existing)


def ship_day_of_text(ship_date: str) -> int:
    return parse_date(ship_date).toordinal() - EPOCH_ORDINAL


def create_transfer(state: StateFields, command: CreateTransfer, now_ms: int) -> TransferResult:
    answered = _existing(state, command)
    if answered is not None:
        return answered
    if len(state.transfers) >= state.limits.max_open_transfers:
        raise LimitExceeded(f"max_open_transfers: already {len(state.transfers)} open transfers")
    prepared = _prepare(state, command, now_ms, {})
    if prepared.shortages:
        return TransferResult(Outcome.INSUFFICIENT_STOCK, None, prepared.shortages)
    return TransferResult(Outcome.OK, _write(state, prepared, now_ms), changed=True)


def ship_transfer(state: StateFields, command: ShipTransfer, now_ms: int) -> TransferResult:
    transfer = find_transfer(state, command.transfer_id)
    if transfer.status is TransferStatus.CANCELLED:
        raise FailedPrecondition(f"transfer_id: {command.transfer_id!r} was cancelled")
    if transfer.status is not TransferStatus.CREATED:
        return TransferResult(Outcome.OK, transfer)  # shipped already: a retry
    source, destination = transfer.from_index, transfer.to_index
    # Leaving later than planned: the goods arrive a lead time after today.
    eta_ms = max(transfer.eta_ms, eta_for(now_ms // DAY_MS, transfer.lead_days))
    for i, line in enumerate(transfer.lines):
        cells = state.stock.cells
        sku = line.sku_index
        touch(state, sku, source)
        cells[sku, FIELD_RESERVED, source] -= line.held
        on_hand = int(cells[sku, FIELD_ON_HAND, source])
        # A recount may have set on_hand below the hold: never negative, the gap recorded.
        line.source_shortfall = max(line.quantity - on_hand, 0)
        cells[sku, FIELD_ON_HAND, source] = max(on_hand - line.quantity, 0)
        line.held = 0
        line.shipped = line.quantity
        supply = state.supply.by_id[transfer.supply_id(i)]
        if supply.eta_ms != eta_ms:
            touch(state, sku, destination)
            supply.eta_ms = eta_ms
    transfer.eta_ms = eta_ms
    transfer.status = TransferStatus.SHIPPED
    transfer.updated_at_ms = now_ms
    return TransferResult(Outcome.OK, transfer, changed=True)


def _receipt_lines(
    transfer: Transfer, command: ReceiveTransfer
) -> tuple[tuple[ReceivedItem, ...], dict[int, ReceivedItem]]:
    if not command.lines:
        items = tuple(
            ReceivedItem(line.sku, max(line.shipped - line.received - line.damaged, 0))
            for line in transfer.lines
        )
    else:
        items = command.lines
    index_of = {line.sku: i for i, line in enumerate(transfer.lines)}
    by_line: dict[int, ReceivedItem] = {}
    for i, item in enumerate(items):
        index = index_of.get(item.sku)
        if index is None:
            raise InvalidCommand(
                f"lines[{i}].sku: {item.sku!r} is not a line of transfer {transfer.transfer_id!r}"
            )
        if index in by_line:
            raise InvalidCommand(f"lines[{i}].sku: {item.sku!r} is received twice")
        check_quantity(item.received, f"lines[{i}].received")
        check_quantity(item.damaged, f"lines[{i}].damaged")
        if command.lines and item.received + item.damaged == 0:
            raise InvalidCommand(f"lines[{i}]: receives nothing (received and damaged are 0)")
        by_line[index] = item
    return items, by_line


def receive_transfer(state: StateFields, command: ReceiveTransfer, now_ms: int) -> TransferResult:
    transfer = find_transfer(state, command.transfer_id)
    for receipt in transfer.receipts:
        if receipt.receipt_id == command.receipt_id:
            asked = tuple((x.sku, x.received, x.damaged) for x in command.lines)
            if (not command.lines or asked == receipt.lines) and (
                command.final == receipt.final or not command.lines
            ):
                return TransferResult(Outcome.OK, transfer)
            raise AlreadyExists(
                f"receipt_id: {command.receipt_id!r} was recorded with different content"
            )
    status = transfer.status
    if status is TransferStatus.CREATED:
        raise FailedPrecondition(
            f"transfer_id: {command.transfer_id!r} is not shipped yet (ShipTransfer first)"
        )
    if status is not TransferStatus.SHIPPED:
        raise FailedPrecondition(
            f"transfer_id: {command.transfer_id!r} is {status.name.lower()}: nothing to receive"
        )
    if len(transfer.receipts) >= state.limits.max_receipts_per_transfer:
        raise LimitExceeded(
            f"receipt_id: transfer {command.transfer_id!r} has "
            f"{len(transfer.receipts)} receipts (max_receipts_per_transfer)"
        )
    items, by_line = _receipt_lines(transfer, command)
    destination = transfer.to_index
    cells = state.stock.cells
    for index, item in by_line.items():
        sku = transfer.lines[index].sku_index
        if int(cells[sku, FIELD_ON_HAND, destination]) + item.received > MAX_QUANTITY:
            raise InvalidCommand(f"lines: on_hand of {item.sku!r} would exceed {MAX_QUANTITY}")
    final = command.final or not command.lines
    for index, item in by_line.items():
        line = transfer.lines[index]
        sku = line.sku_index
        touch(state, sku, destination)
        if item.received:
            cells[sku, FIELD_ON_HAND, destination] += item.received
            state.stock.mark_present(sku, destination)
        line.received += item.received
        line.damaged += item.damaged
        arrived = line.received + line.damaged
        line.over = max(arrived - line.shipped, 0)
        supply = state.supply.by_id.get(transfer.supply_id(index))
        if supply is not None:
            outstanding = max(line.shipped - arrived, 0)
            supply.received += supply.quantity - outstanding
            supply.quantity = outstanding
            if outstanding == 0:
                state.supply.remove(supply)
    transfer.receipts.append(
        Receipt(
            command.receipt_id,
            tuple((x.sku, x.received, x.damaged) for x in items if x.received or x.damaged),
            final,
            now_ms,
        )
    )
    transfer.updated_at_ms = now_ms
    complete = all(x.received + x.damaged >= x.shipped for x in transfer.lines)
    if final or complete:
        _close_received(state, transfer)
    return TransferResult(Outcome.OK, transfer, changed=True)


def _close_received(state: StateFields, transfer: Transfer) -> None:
    for i, line in enumerate(transfer.lines):
        arrived = line.received + line.damaged
        line.short = max(line.shipped - arrived, 0)
        line.over = max(arrived - line.shipped, 0)
        supply = state.supply.by_id.get(transfer.supply_id(i))
        if supply is not None:
            touch(state, line.sku_index, transfer.to_index)
            state.supply.remove(supply)
    transfer.status = TransferStatus.RECEIVED
    state.transfers.close(transfer)


def cancel_transfer(state: StateFields, command: CancelTransfer, now_ms: int) -> TransferResult:
    transfer = find_transfer(state, command.transfer_id)
    if transfer.status is TransferStatus.CANCELLED:
        return TransferResult(Outcome.OK, transfer)
    if transfer.status is not TransferStatus.CREATED:
        raise FailedPrecondition(
            f"transfer_id: {command.transfer_id!r} has shipped: its units are in transit and "
            "can no longer be given back at the source; record what arrives with "
            "ReceiveTransfer (final=true records the rest as short)"
        )
    cells = state.stock.cells
    for i, line in enumerate(transfer.lines):
        touch(state, line.sku_index, transfer.from_index)
        cells[line.sku_index, FIELD_RESERVED, transfer.from_index] -= line.held
        line.held = 0
        touch(state, line.sku_index, transfer.to_index)
        state.supply.remove(state.supply.by_id[transfer.supply_id(i)])
    transfer.status = TransferStatus.CANCELLED
    transfer.updated_at_ms = now_ms
    state.transfers.close(transfer)
    return TransferResult(Outcome.OK, transfer, changed=True)


def apply_restock(state: StateFields, command: ApplyRestock, now_ms: int) -> RestockResult:
    ids = tuple(x.transfer_id for x in command.transfers)
    found = [state.transfers.find(x) for x in ids]
    if ids and all(x is not None and x.plan_id == command.plan_id for x in found):
        return RestockResult(Outcome.OK, command.plan_id, ids)  # applied already: a retry
    if any(x is not None for x in found):
        taken = next(i for i, x in zip(ids, found, strict=True) if x is not None)
        raise AlreadyExists(f"plan_id: transfer {taken!r} of plan {command.plan_id!r} exists")
    cells = state.stock.cells
    for check in command.checks:
        sku = state.skus.get(check.sku)
        node = state.node_ids.get(check.node_id)
        now = (
            (
                int(cells[sku, FIELD_ON_HAND, node]),
                int(cells[sku, FIELD_RESERVED, node]),
                state.supply.expected_at(sku, node),
                int(cells[sku, FIELD_SAFETY, node]),
            )
            if sku >= 0 and node >= 0
            else (-1, -1, -1, -1)
        )
        then = (check.on_hand, check.reserved, check.inbound, check.safety)
        if now != then:
            raise FailedPrecondition(
                f"plan_id: plan {command.plan_id!r} is stale: {check.sku} at {check.node_id} "
                f"moved (on_hand, reserved, inbound, safety) {then} -> {now}; plan again"
            )
    if not ids:
        return RestockResult(Outcome.OK, command.plan_id, ())
    for transfer in command.transfers:
        try:
            late = ship_day_of_text(transfer.ship_date) < now_ms // DAY_MS
        except ValueError:
            late = False  # _prepare names the bad date
        if late:
            raise FailedPrecondition(
                f"plan_id: plan {command.plan_id!r} is stale: its ship date "
                f"{transfer.ship_date} has passed; plan again"
            )
    if len(state.transfers) + len(ids) > state.limits.max_open_transfers:
        raise LimitExceeded(f"max_open_transfers: already {len(state.transfers)} open transfers")
    pending: dict[tuple[int, int], int] = {}
    prepared = []
    for transfer in command.transfers:
        ready = _prepare(state, transfer, now_ms, pending)
        if ready.shortages:
            shortage = ready.shortages[0]
            raise FailedPrecondition(
                f"plan_id: plan {command.plan_id!r} is stale: {shortage.sku} at "
                f"{shortage.node_id} has {shortage.available} free, the plan moves "
                f"{shortage.requested}; plan again"
            )
        for item in transfer.lines:
            sku = state.skus.get(item.sku)
            pending[(sku, ready.source)] = pending.get((sku, ready.source), 0) + item.quantity
            key = (sku, -1 - ready.destination)
            pending[key] = pending.get(key, 0) + item.quantity
        prepared.append(ready)
    for ready in prepared:
        _write(state, ready, now_ms)
    return RestockResult(Outcome.OK, command.plan_id, ids, changed=True)
