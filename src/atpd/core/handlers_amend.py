"""The AmendReservation handler: a HELD cart's lines replaced and its expiry moved, all or
nothing.

Exact, not approximate: the reservation's holds are given back (reserved units and the
protected units it took), the new lines are checked exactly as Reserve checks a cart of the
same channel and segment, and then either held or, when refused, the saved holds are put back
as they were (reserved counts, protection consumption, per-line records, change capture), so
a refused amendment leaves no trace.

The Reservation object is touched only through the helpers of the "reservation access" section
below (`saved_holds`, `restore_holds`, `replace_lines`, `move_expiry`): the reservation table
is being rewritten into columns, and these are what a port has to redo.
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
from atpd.core.reservations import Reservation, ReservationStatus
from atpd.core.results import InvalidCommand, Outcome, Shortage
from atpd.core.state_fields import StateFields, find_reservation, node_index
from atpd.core.stock import FIELD_RESERVED

# ---------------------------------------------------------------------------- reservation access


@dataclass(slots=True)
class SavedHolds:
    """What `free_held` changes, to put back exactly when the amendment is refused."""

    reserved: dict[tuple[int, int], int]
    consumed: dict[int, npt.NDArray[np.int32]]
    held: list[int]
    protected: list[list[tuple[str, int]]] | None
    in_protected_set: bool
    captured: frozenset[tuple[int, int]]


def saved_holds(state: StateFields, reservation: Reservation) -> SavedHolds:
    cells = state.stock.cells
    return SavedHolds(
        {cell: int(cells[cell[0], FIELD_RESERVED, cell[1]]) for cell in reservation.cells},
        {
            sku: state.protection_consumed[sku].copy()
            for sku, _ in reservation.cells
            if sku in state.protection_consumed
        },
        list(reservation.held),
        None if reservation.protected is None else [list(x) for x in reservation.protected],
        reservation.reservation_id in state.protected_reservations,
        frozenset(state.changes),
    )


def restore_holds(state: StateFields, reservation: Reservation, saved: SavedHolds) -> None:
    cells = state.stock.cells
    for (sku, node), reserved in saved.reserved.items():
        cells[sku, FIELD_RESERVED, node] = reserved
    for sku, consumed in saved.consumed.items():
        state.protection_consumed[sku] = consumed
    reservation.held = saved.held
    reservation.protected = saved.protected
    if saved.in_protected_set:
        state.protected_reservations.add(reservation.reservation_id)
    # Positions first touched by this refused command did not change: no Watch event.
    for key in set(state.changes) - saved.captured:
        del state.changes[key]


def replace_lines(
    reservation: Reservation,
    lines: tuple[Line, ...],
    cells: tuple[tuple[int, int], ...],
    protected: list[list[tuple[str, int]]] | None,
    now_ms: int,
) -> None:
    reservation.lines = lines
    reservation.cells = cells
    reservation.held = [line.quantity for line in lines]
    reservation.fulfilled = [0] * len(lines)
    reservation.protected = protected
    reservation.updated_at_ms = now_ms


def move_expiry(state: StateFields, reservation: Reservation, ttl_ms: int, now_ms: int) -> None:
    assert reservation.status is ReservationStatus.HELD
    state.expiry.remove(reservation.expires_at_ms, reservation.reservation_id)
    reservation.expires_at_ms = now_ms + ttl_ms
    reservation.ttl_ms = ttl_ms
    reservation.updated_at_ms = now_ms
    state.expiry.add(reservation.expires_at_ms, reservation.reservation_id)


# ---------------------------------------------------------------------------- the handler


def amend_reservation(state: StateFields, command: AmendReservation, now_ms: int) -> AmendResult:
    reservation = find_reservation(state, command.reservation_id)
    if reservation.plan is not None:
        raise InvalidCommand(
            f"reservation_id: {command.reservation_id!r} holds a promised option (carrier "
            "slots, pick capacity): release it and reserve the new option instead"
        )
    if reservation.status is ReservationStatus.EXPIRED:
        return AmendResult(Outcome.EXPIRED, reservation)
    if reservation.status is not ReservationStatus.HELD or any(reservation.fulfilled):
        return AmendResult(Outcome.INVALID_STATE, reservation)
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
    nodes = [node_index(state, x.node_id, f"lines[{i}].node_id") for i, x in enumerate(lines)]
    if len({(x.sku, x.node_id) for x in lines}) != len(lines):
        raise InvalidCommand("lines: two lines name the same (sku, node)")
    if sorted((x.sku, x.node_id, x.quantity) for x in reservation.lines) == sorted(
        (x.sku, x.node_id, x.quantity) for x in lines
    ):
        # A retry of an amendment already applied (or no change of lines).
        if command.ttl_ms and now_ms + command.ttl_ms > reservation.expires_at_ms:
            move_expiry(state, reservation, command.ttl_ms, now_ms)
            return AmendResult(Outcome.OK, reservation, replayed=True, changed=True)
        return AmendResult(Outcome.OK, reservation, replayed=True)
    held_before = {
        (line.sku, line.node_id): held
        for line, held in zip(reservation.lines, reservation.held, strict=True)
    }
    needing_more = [
        i
        for i, line in enumerate(lines)
        if line.quantity > held_before.get((line.sku, line.node_id), 0)
    ]
    if any(not state.nodes[nodes[i]].enabled for i in needing_more):
        more = tuple(lines[i] for i in needing_more)
        refused = refuse_disabled(state, more, [nodes[i] for i in needing_more])
        return AmendResult(
            Outcome.NODE_DISABLED,
            reservation,
            refused.shortages,
            disabled_node_id=refused.disabled_node_id,
        )
    policy = (
        caller_policy(state, reservation.channel, reservation.segment)
        if state.rules.policies
        else None
    )
    saved = saved_holds(state, reservation)
    free_held(state, reservation)
    skus = [state.skus.get(line.sku) for line in lines]
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
            check_bound(state, saved, reservation, lines, line, sku, node)
    if shortages:
        restore_holds(state, reservation, saved)
        return AmendResult(Outcome.INSUFFICIENT_STOCK, reservation, tuple(shortages))
    cells = state.stock.cells
    for line, sku, node in zip(lines, skus, nodes, strict=True):
        touch(state, sku, node)
        reserved = int(cells[sku, FIELD_RESERVED, node]) + line.quantity
        assert reserved <= MAX_QUANTITY, (line, reserved)
        cells[sku, FIELD_RESERVED, node] = reserved
    protected = (
        take_protected(state, policy, lines, skus, nodes)
        if policy is not None and policy.mine
        else None
    )
    replace_lines(reservation, lines, tuple(zip(skus, nodes, strict=True)), protected, now_ms)
    if protected is not None:
        state.protected_reservations.add(reservation.reservation_id)
    if command.ttl_ms:
        move_expiry(state, reservation, command.ttl_ms, now_ms)
    return AmendResult(Outcome.OK, reservation, changed=True)


def check_bound(
    state: StateFields,
    saved: SavedHolds,
    reservation: Reservation,
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
        restore_holds(state, reservation, saved)
        raise
