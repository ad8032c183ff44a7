"""The AmendReservation handler: a HELD cart's lines replaced and its expiry moved, all or
nothing.

Exact, not approximate: the reservation's holds are given back (reserved units and the
protected units it took), the new lines are checked exactly as Reserve checks a cart of the
same channel and segment, and then either held or, when refused, the saved holds are put back
as they were (reserved counts, protection consumption, per-line records, change capture), so
a refused amendment leaves no trace.

The reservation is a row of the reservation table (core/reservation_table.py); the handler
touches it only through the helpers of the "reservation access" section below
(`saved_holds`, `restore_holds`, `replace_lines`, `move_expiry`). Answers are views (copies)
of the row taken after the change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.caller_atp import caller_atp, caller_policy, stock_atp
from atpd.core.change_capture import touch
from atpd.core.commands import Line
from atpd.core.commands_amend import AmendReservation, AmendResult
from atpd.core.handlers_reservations import (
    check_reserved_bound,
    free_held,
    refuse_disabled,
    shortage,
)
from atpd.core.limits import MAX_QUANTITY
from atpd.core.protections import take_protected
from atpd.core.reservation_table import HELD, ProtectedRecords
from atpd.core.reservations import ReservationStatus
from atpd.core.results import InvalidCommand, Outcome, Shortage
from atpd.core.state_fields import StateFields, find_row, node_index
from atpd.core.stock import FIELD_RESERVED

# ---------------------------------------------------------------------------- reservation access


@dataclass(slots=True)
class SavedHolds:
    """What `free_held` changes, to put back exactly when the amendment is refused."""

    reserved: dict[tuple[int, int], int]
    consumed: dict[int, npt.NDArray[np.int32]]
    held: list[int]
    protected: ProtectedRecords | None
    in_protected_set: bool
    captured: frozenset[tuple[int, int]]


def saved_holds(state: StateFields, row: int) -> SavedHolds:
    table = state.reservations
    cells = state.stock.cells
    lines = table.line_range(row)
    positions = [(table.line_sku[at], table.line_node[at]) for at in lines]
    records = table.protected.get(row) if table.protected else None
    return SavedHolds(
        {(sku, node): cells.item(sku, FIELD_RESERVED, node) for sku, node in positions},
        {
            sku: state.protection_consumed[sku].copy()
            for sku, _ in positions
            if sku in state.protection_consumed
        },
        table.line_held[lines.start : lines.stop].tolist(),
        # unhold pops and rewrites the records in place: copy each line's list.
        None if records is None else [list(line) for line in records],
        table.id_of(row) in state.protected_reservations,
        frozenset(state.changes),
    )


def restore_holds(state: StateFields, row: int, saved: SavedHolds) -> None:
    table = state.reservations
    cells = state.stock.cells
    for (sku, node), reserved in saved.reserved.items():
        cells[sku, FIELD_RESERVED, node] = reserved
    for sku, consumed in saved.consumed.items():
        state.protection_consumed[sku] = consumed
    first = table.first_line[row]
    for line, held in enumerate(saved.held):
        table.line_held[first + line] = held
    if saved.protected is None:
        table.protected.pop(row, None)
    else:
        table.protected[row] = saved.protected
    if saved.in_protected_set:
        state.protected_reservations.add(table.id_of(row))
    # Positions first touched by this refused command did not change: no Watch event.
    for key in set(state.changes) - saved.captured:
        del state.changes[key]


def replace_lines(
    state: StateFields,
    row: int,
    lines: tuple[Line, ...],
    skus: list[int],
    nodes: list[int],
    protected: ProtectedRecords | None,
    now_ms: int,
) -> None:
    table = state.reservations
    table.replace_lines(row, skus, nodes, [line.quantity for line in lines])
    if protected is None:
        table.protected.pop(row, None)
    else:
        table.protected[row] = protected
    table.updated_ms[row] = now_ms


def move_expiry(state: StateFields, row: int, ttl_ms: int, now_ms: int) -> None:
    table = state.reservations
    assert table.status[row] == HELD, row
    table.expiry.discard(row)
    table.expires_ms[row] = now_ms + ttl_ms
    table.ttl_ms[row] = ttl_ms
    table.updated_ms[row] = now_ms
    table.expiry.push(now_ms + ttl_ms, row)


# ---------------------------------------------------------------------------- the handler


def amend_reservation(state: StateFields, command: AmendReservation, now_ms: int) -> AmendResult:
    table = state.reservations
    row = find_row(state, command.reservation_id)
    if table.plans and row in table.plans:
        raise InvalidCommand(
            f"reservation_id: {command.reservation_id!r} holds a promised option (carrier "
            "slots, pick capacity): release it and reserve the new option instead"
        )
    status = table.status[row]
    if status == ReservationStatus.EXPIRED:
        return AmendResult(Outcome.EXPIRED, table.answer(row))
    old_lines = table.line_range(row)
    if status != HELD or any(table.line_fulfilled[old_lines.start : old_lines.stop]):
        return AmendResult(Outcome.INVALID_STATE, table.answer(row))
    limits = state.limits
    if command.ttl_ms and not limits.min_ttl_ms <= command.ttl_ms <= limits.max_ttl_ms:
        raise InvalidCommand(
            f"ttl_ms: {command.ttl_ms} is not in [{limits.min_ttl_ms}, {limits.max_ttl_ms}] "
            "(min_ttl_ms, max_ttl_ms)"
        )
    lines = command.lines
    if not 1 <= len(lines) <= limits.max_lines_per_reservation:
        raise InvalidCommand(
            f"lines: {len(lines)} lines, 1 to {limits.max_lines_per_reservation} allowed"
        )
    node_get = state.node_ids.get
    nodes = [node_get(line.node_id) for line in lines]
    for i, node in enumerate(nodes):
        if node < 0:  # the message is formatted only for an unknown node
            node_index(state, lines[i].node_id, f"lines[{i}].node_id")
    if len({(x.sku, x.node_id) for x in lines}) != len(lines):
        raise InvalidCommand("lines: two lines name the same (sku, node)")
    skus = [state.skus.get(line.sku) for line in lines]
    # Compared by index: the id maps are one to one, and an unknown SKU (-1) is on no line.
    held_before = {
        (table.line_sku[at], table.line_node[at]): table.line_held[at] for at in old_lines
    }
    if sorted(
        (table.line_sku[at], table.line_node[at], table.line_quantity[at]) for at in old_lines
    ) == sorted(zip(skus, nodes, (line.quantity for line in lines), strict=True)):
        # A retry of an amendment already applied (or no change of lines).
        if command.ttl_ms and now_ms + command.ttl_ms > table.expires_ms[row]:
            move_expiry(state, row, command.ttl_ms, now_ms)
            return AmendResult(Outcome.OK, table.answer(row), replayed=True, changed=True)
        return AmendResult(Outcome.OK, table.answer(row), replayed=True)
    needing_more = [
        i for i, line in enumerate(lines) if line.quantity > held_before.get((skus[i], nodes[i]), 0)
    ]
    if any(not state.nodes[nodes[i]].enabled for i in needing_more):
        more = tuple(lines[i] for i in needing_more)
        refused = refuse_disabled(state, more, [nodes[i] for i in needing_more])
        return AmendResult(
            Outcome.NODE_DISABLED,
            table.answer(row),
            refused.shortages,
            disabled_node_id=refused.disabled_node_id,
        )
    channel, segment = table.caller_of(row)
    policy = caller_policy(state, channel, segment) if state.rules.policies else None
    saved = saved_holds(state, row)
    free_held(state, row)
    shortages: list[Shortage] = []
    for line, sku, node in zip(lines, skus, nodes, strict=True):
        if sku < 0:
            available = 0
        elif policy is None:
            available = stock_atp(state, sku, node)
        else:
            available = caller_atp(state, policy, sku, node)
            cap = policy.policy.max_per_line
            if cap and available > cap:
                available = cap
        if line.quantity > available:
            shortages.append(shortage(state, policy, line, sku, node, available))
        else:
            check_bound(state, saved, row, lines, line, sku, node)
    if shortages:
        restore_holds(state, row, saved)
        return AmendResult(Outcome.INSUFFICIENT_STOCK, table.answer(row), tuple(shortages))
    cells = state.stock.cells
    for line, sku, node in zip(lines, skus, nodes, strict=True):
        touch(state, sku, node)
        reserved = cells.item(sku, FIELD_RESERVED, node) + line.quantity
        assert reserved <= MAX_QUANTITY, (line, reserved)
        cells[sku, FIELD_RESERVED, node] = reserved
    protected = (
        take_protected(state, policy, lines, skus, nodes)
        if policy is not None and policy.mine
        else None
    )
    replace_lines(state, row, lines, skus, nodes, protected, now_ms)
    if protected is not None:
        state.protected_reservations.add(command.reservation_id)
    if command.ttl_ms:
        move_expiry(state, row, command.ttl_ms, now_ms)
    return AmendResult(Outcome.OK, table.answer(row), changed=True)


def check_bound(
    state: StateFields,
    saved: SavedHolds,
    row: int,
    lines: tuple[Line, ...],
    line: Line,
    sku: int,
    node: int,
) -> None:
    """check_reserved_bound, with the old holds put back first if it refuses (LimitExceeded
    must leave nothing either)."""
    try:
        check_reserved_bound(state, lines, line, sku, node)
    except Exception:
        restore_holds(state, row, saved)
        raise
