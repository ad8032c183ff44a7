"""Handlers of the reservation lifecycle: Reserve, Confirm, Release, Fulfil, and the
bookkeeping of holds (unhold, take out) and of terminal reservations (retention).
"""

from __future__ import annotations

from collections.abc import Sequence

from atpd.core.caller_atp import caller_atp, caller_policy
from atpd.core.change_capture import touch
from atpd.core.commands import Confirm, Fulfil, Line, Release, ReservationKind, Reserve
from atpd.core.demand import record_units_sold
from atpd.core.limits import MAX_QUANTITY
from atpd.core.plan_holds import (
    check_plan_command,
    give_back_plan,
    hold_plan,
    plan_changes,
    stock_changes,
)
from atpd.core.protections import protection_index, take_protected
from atpd.core.reservation_table import HELD, NOT_READ, OPEN_STATUSES
from atpd.core.reservations import ReservationStatus, ReservationView
from atpd.core.reservations import fingerprint as reservation_fingerprint
from atpd.core.results import (
    AlreadyExists,
    InvalidCommand,
    LimitExceeded,
    Outcome,
    ReservationResult,
    ReserveResult,
    Shortage,
    ShortageReason,
)
from atpd.core.rules_compile import CompiledPolicy
from atpd.core.state_fields import StateFields, find_row, node_index
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY

# Statuses as plain ints, as the table stores them: compared and written on every Release
# without going through the enum.
RELEASED = int(ReservationStatus.RELEASED)
EXPIRED = int(ReservationStatus.EXPIRED)
FULFILLED = int(ReservationStatus.FULFILLED)


def reserve_plan(state: StateFields, command: Reserve, now_ms: int) -> ReserveResult:
    """Reserve a promised option: its stock, carrier slots and pick capacity, all or nothing;
    PROMISE_CHANGED (nothing held) if any of them moved since the promise."""
    plan = command.plan
    assert plan is not None
    if state.reservations.find(command.reservation_id) >= 0:
        # Idempotent retry (or a clash): as Reserve.
        return reserve(state, command, now_ms, plan_checked=True)
    check_plan_command(command, plan)
    changes = plan_changes(state, plan, now_ms)
    if changes:
        return ReserveResult(Outcome.PROMISE_CHANGED, changes=tuple(changes))
    result = reserve(state, command, now_ms, plan_checked=True)  # holds the plan too
    if result.outcome is Outcome.OK:
        return result
    # Short or disabled stock: nothing was held.
    return ReserveResult(
        Outcome.PROMISE_CHANGED,
        shortages=result.shortages,
        disabled_node_id=result.disabled_node_id,
        changes=stock_changes(plan, result.shortages),
    )


def reserve(
    state: StateFields, command: Reserve, now_ms: int, plan_checked: bool = False
) -> ReserveResult:
    # The hot path of checkout: one pass to resolve ids, one to check, one to hold; error
    # messages are only formatted when there is an error.
    if command.plan is not None and not plan_checked:
        return reserve_plan(state, command, now_ms)
    lines = command.lines
    pos_sale = command.kind is ReservationKind.POS_SALE
    ttl_ms = 0 if pos_sale else command.ttl_ms
    table = state.reservations
    existing_row = table.find(command.reservation_id)
    if existing_row >= 0:
        existing = table.view(existing_row)
        asked = reservation_fingerprint(
            command.kind, command.channel, command.segment, ttl_ms, lines, command.plan
        )
        same_maker = existing.maker is command.maker or (
            existing.maker is not None and existing.maker.same_principal(command.maker)
        )
        if not same_maker:
            # Never answer another principal's stored reservation as the caller's own.
            raise AlreadyExists(
                f"reservation_id: {command.reservation_id!r} exists, made by another "
                "principal; choose another id"
            )
        if existing.fingerprint() == asked:
            return ReserveResult(Outcome.OK, existing, replayed=True)
        raise AlreadyExists(
            f"reservation_id: {command.reservation_id!r} exists with different content"
        )
    assert 1 <= len(lines) <= state.limits.max_lines_per_reservation
    node_get = state.node_ids.getter()
    sku_get = state.skus.getter()
    skus: list[int] = []
    nodes: list[int] = []
    quantities: list[int] = []
    for line in lines:
        node = node_get(line.node_id, -1)
        if node < 0:
            node_index(state, line.node_id, f"lines[{lines.index(line)}].node_id")
        nodes.append(node)
        skus.append(sku_get(line.sku, -1))
        quantities.append(line.quantity)
    if state.open_reservations >= state.limits.max_open_reservations:
        raise LimitExceeded(
            f"max_open_reservations: {state.open_reservations} reservations are open"
        )
    all_nodes = state.nodes
    for node in nodes:
        if not all_nodes[node].enabled:
            return refuse_disabled(state, lines, nodes)
    policy = (
        caller_policy(state, command.channel, command.segment) if state.rules.policies else None
    )
    cells = state.stock.cells
    item = cells.item
    shortages: list[Shortage] | None = None
    # Without rules, the reserved units read for the check, one per line, reused to hold
    # (positions are distinct, nothing changes the stock in between, and an unknown SKU, the
    # only line not read, is always short: the command stops before holding).
    reserved_before: list[int] = []
    for line, sku, node in zip(lines, skus, nodes, strict=False):  # built together
        assert line.quantity > 0, line  # the edge refuses it; never let it lower reserved
        if sku < 0:
            available = 0
        elif policy is None:
            # atp.atp with no rules, inlined on purpose: a call per line costs ~75 ns, 2-3% of
            # a checkout. Not clamped at 0: only compared with a quantity > 0 (and a shortage
            # reports max(available, 0)), so it decides exactly as atp.atp would.
            reserved = item(sku, FIELD_RESERVED, node)
            reserved_before.append(reserved)
            available = item(sku, FIELD_ON_HAND, node) - reserved - item(sku, FIELD_SAFETY, node)
        else:
            available = caller_atp(state, policy, sku, node)
            cap = policy.policy.max_per_line
            if cap and available > cap:
                available = cap
            # Counted supply can lift ATP above on_hand: bound what a position holds.
            if line.quantity <= available:
                check_reserved_bound(state, lines, line, sku, node)
        if line.quantity > available:
            if shortages is None:
                shortages = []
            shortages.append(shortage(state, policy, line, sku, node, available))
    if shortages is not None:
        return ReserveResult(Outcome.INSUFFICIENT_STOCK, shortages=tuple(shortages))
    # The edge refuses these; the core must never oversell even if a caller skipped it.
    # (strict=False: the lists were built together; the strict check costs a third of this.)
    assert len(lines) == 1 or len(set(zip(skus, nodes, strict=False))) == len(lines), lines
    # Every line was checked above; from here on nothing can refuse the command.
    watching = bool(state.watched) or state.stock.dirty_rows is not None  # resize: touch
    for index, (quantity, sku, node) in enumerate(zip(quantities, skus, nodes, strict=False)):
        if watching:
            touch(state, sku, node)
        reserved = (
            reserved_before[index] if policy is None else item(sku, FIELD_RESERVED, node)
        ) + quantity
        assert reserved <= MAX_QUANTITY, (lines[index], reserved)
        cells[sku, FIELD_RESERVED, node] = reserved
    protected = (
        take_protected(state, policy, lines, skus, nodes)
        if policy is not None and policy.mine
        else None
    )
    maker = table.intern_maker(command.maker)
    row = table.insert(
        command.reservation_id,
        command.kind,
        table.intern_caller(command.channel, command.segment),
        maker,
        ttl_ms,
        now_ms,
        skus,
        nodes,
        quantities,
    )
    state.open_reservations += 1
    if protected is not None:
        table.protected[row] = protected
        state.protected_reservations.add(command.reservation_id)
    if pos_sale:
        # A POS sale is a reserve and a fulfilment in one step: the goods left the store.
        # It never waits in the expiry heap, so it passes through CONFIRMED, not HELD.
        table.status[row] = ReservationStatus.CONFIRMED
        table.expires_ms[row] = 0
        take_out(state, row, quantities, now_ms)
    else:
        table.expiry.push(now_ms + ttl_ms, row)
        if command.plan is not None:
            hold_plan(state, row, command.plan, now_ms)
        return ReserveResult(
            Outcome.OK,
            table.new_view(
                row,
                command.reservation_id,
                command.kind,
                command.channel,
                command.segment,
                maker,
                ttl_ms,
                now_ms,
                lines,
                skus,
                nodes,
                quantities,
            )
            if table.answering
            else NOT_READ,
        )
    return ReserveResult(Outcome.OK, table.answer(row))


def check_reserved_bound(
    state: StateFields, lines: tuple[Line, ...], line: Line, sku: int, node: int
) -> None:
    """Refuse a line that would make the position's reserved units exceed MAX_QUANTITY
    (quantities are int32 in the stock table)."""
    reserved = state.stock.cells.item(sku, FIELD_RESERVED, node)
    if reserved + line.quantity > MAX_QUANTITY:
        raise LimitExceeded(
            f"lines[{lines.index(line)}].quantity: {reserved} units of {line.sku!r} are "
            f"already reserved at {line.node_id!r}; {line.quantity} more would pass the "
            f"bound of {MAX_QUANTITY} reserved units per position (MAX_QUANTITY)"
        )


def shortage(
    state: StateFields,
    policy: CompiledPolicy | None,
    line: Line,
    sku: int,
    node: int,
    available: int,
) -> Shortage:
    """A short line and why it is short (computed on the refusal path only)."""
    if sku < 0:
        reason = ShortageReason.UNKNOWN_SKU
    elif policy is None:
        reason = ShortageReason.STOCK
    elif not policy.visible[node]:
        reason = ShortageReason.NOT_VISIBLE
    elif (
        policy.policy.max_per_line
        and line.quantity > policy.policy.max_per_line
        and caller_atp(state, policy, sku, node) >= line.quantity
    ):
        # The stock is there: only the per-line cap of the caller's rules refuses it.
        reason = ShortageReason.LINE_CAP
    else:
        reason = ShortageReason.STOCK
    return Shortage(line.sku, line.node_id, line.quantity, max(available, 0), reason)


def refuse_disabled(state: StateFields, lines: tuple[Line, ...], nodes: list[int]) -> ReserveResult:
    """NODE_DISABLED, with a shortage entry for every line on a disabled node."""
    shortages = tuple(
        Shortage(line.sku, line.node_id, line.quantity, 0, ShortageReason.NODE_DISABLED)
        for line, node in zip(lines, nodes, strict=True)
        if not state.nodes[node].enabled
    )
    assert shortages
    return ReserveResult(
        Outcome.NODE_DISABLED, shortages=shortages, disabled_node_id=shortages[0].node_id
    )


def stop_expiry(state: StateFields, row: int) -> None:
    table = state.reservations
    if table.status[row] == HELD:
        table.expiry.discard(row)


def confirm(state: StateFields, command: Confirm, now_ms: int) -> ReservationResult:
    table = state.reservations
    row = find_row(state, command.reservation_id)
    status = table.status[row]
    if status == ReservationStatus.CONFIRMED:
        return ReservationResult(Outcome.OK, table.answer(row))
    if status == ReservationStatus.EXPIRED:
        return ReservationResult(Outcome.EXPIRED, table.answer(row))
    if status != ReservationStatus.HELD:
        return ReservationResult(Outcome.INVALID_STATE, table.answer(row))
    stop_expiry(state, row)
    table.status[row] = ReservationStatus.CONFIRMED
    table.expires_ms[row] = 0
    table.updated_ms[row] = now_ms
    return ReservationResult(Outcome.OK, table.answer(row), changed=True)


def release(state: StateFields, command: Release, now_ms: int) -> ReservationResult:
    table = state.reservations
    row = find_row(state, command.reservation_id)
    status = table.status[row]
    if status in (RELEASED, EXPIRED):
        return ReservationResult(Outcome.OK, table.answer(row))
    if status == FULFILLED:
        return ReservationResult(Outcome.INVALID_STATE, table.answer(row))
    if status == HELD:
        table.expiry.discard(row)  # stop_expiry, with the status in hand
    free_held(state, row)
    table.status[row] = RELEASED
    table.updated_ms[row] = now_ms
    # Before closing: closing may evict older finished rows. The id is the command's (the
    # row was found by it): no decoding of the stored one.
    view = table.answer(row, command.reservation_id)
    close_reservation(state, row, now_ms)
    return ReservationResult(Outcome.OK, view, changed=True)


def free_held(state: StateFields, row: int) -> None:
    table = state.reservations
    held = table.line_held
    first = table.first_line[row]
    count = table.line_count[row]
    if count == 1:
        quantity = held[first]
        if quantity:
            unhold(state, row, 0, quantity)
    else:
        for line in range(count):
            quantity = held[first + line]
            if quantity:
                unhold(state, row, line, quantity)
    if table.protected and row in table.protected:
        state.protected_reservations.discard(table.id_of(row))


def unhold(state: StateFields, row: int, line: int, quantity: int) -> None:
    """Line `line` of `row` holds `quantity` fewer units: reserved drops, and protected units
    it took go back to their protection (the last taken first)."""
    table = state.reservations
    at = table.first_line[row] + line
    sku, node = table.line_sku[at], table.line_node[at]
    stock = state.stock
    if state.watched or stock.dirty_rows is not None:
        touch(state, sku, node)  # as in reserve: only when someone looks
    cells = stock.cells
    # Python ints from `item`, one write: numpy scalar arithmetic and a read for the check
    # cost twice as much.
    reserved = cells.item(sku, FIELD_RESERVED, node) - quantity
    assert reserved >= 0
    cells[sku, FIELD_RESERVED, node] = reserved
    held = table.line_held[at] - quantity
    assert held >= 0
    table.line_held[at] = held
    protected = table.protected.get(row) if table.protected else None
    records = protected[line] if protected is not None else None
    if not records:
        return
    # Protected units are given back only once the general-pool part is gone.
    protected_units = sum(units for _, units in records)
    give_back = protected_units - min(protected_units, held)
    for _ in range(len(records)):
        if give_back <= 0:
            break
        name, units = records[-1]
        returned = min(units, give_back)
        give_back -= returned
        if returned == units:
            records.pop()
        else:
            records[-1] = (name, units - returned)
        index = protection_index(state, name)
        consumed = state.protection_consumed.get(sku)
        if index >= 0 and consumed is not None:
            consumed[index, node] -= returned
            assert consumed[index, node] >= 0


def fulfil(state: StateFields, command: Fulfil, now_ms: int) -> ReservationResult:
    table = state.reservations
    row = find_row(state, command.reservation_id)
    status = table.status[row]
    if status == ReservationStatus.EXPIRED:
        return ReservationResult(Outcome.EXPIRED, table.answer(row))
    if status == ReservationStatus.FULFILLED and not command.lines:
        return ReservationResult(Outcome.OK, table.answer(row))
    if status not in OPEN_STATUSES:
        return ReservationResult(Outcome.INVALID_STATE, table.answer(row))
    if command.lines:
        reservation = table.view(row)  # read here: not an answer
        quantities = [0] * len(reservation.lines)
        positions = {(line.sku, line.node_id): i for i, line in enumerate(reservation.lines)}
        for i, line in enumerate(command.lines):
            index = positions.get((line.sku, line.node_id))
            if index is None:
                raise InvalidCommand(
                    f"lines[{i}]: ({line.sku!r}, {line.node_id!r}) is not a line of "
                    f"reservation {reservation.reservation_id!r}"
                )
            if line.quantity > reservation.held[index]:
                return ReservationResult(Outcome.EXCEEDS_HELD, reservation)
            quantities[index] = line.quantity
    else:
        first = table.first_line[row]
        quantities = table.line_held[first : first + table.line_count[row]].tolist()
    view = take_out(state, row, quantities, now_ms, command.release_remainder)
    return ReservationResult(Outcome.OK, view, changed=True)


def take_out(
    state: StateFields,
    row: int,
    quantities: Sequence[int],
    now_ms: int,
    release_remainder: bool = False,
) -> ReservationView:
    """The goods left: on_hand and reserved drop by `quantities` (per line). Returns the
    reservation as it is then (before closing it may evict older finished ones)."""
    table = state.reservations
    cells = state.stock.cells
    first = table.first_line[row]
    count = table.line_count[row]
    assert len(quantities) == count
    for line, quantity in enumerate(quantities):
        at = first + line
        assert 0 <= quantity <= table.line_held[at]
        if quantity == 0:
            continue
        unhold(state, row, line, quantity)
        sku, node = table.line_sku[at], table.line_node[at]
        # A recount may have set on_hand below what was held; on_hand never goes negative.
        on_hand = int(cells[sku, FIELD_ON_HAND, node]) - quantity
        cells[sku, FIELD_ON_HAND, node] = on_hand if on_hand > 0 else 0
        table.line_fulfilled[at] += quantity
        record_units_sold(state.demand, int(sku), int(node), quantity, now_ms)
    if release_remainder:
        free_held(state, row)
    table.updated_ms[row] = now_ms
    if any(table.line_held[first : first + count]):
        return table.answer(row)
    if table.protected and row in table.protected:
        state.protected_reservations.discard(table.id_of(row))
    stop_expiry(state, row)
    fulfilled_any = any(table.line_fulfilled[first : first + count])
    table.status[row] = ReservationStatus.FULFILLED if fulfilled_any else ReservationStatus.RELEASED
    view = table.answer(row)
    close_reservation(state, row, now_ms)
    return view


def close_reservation(state: StateFields, row: int, at_ms: int) -> None:
    """Bookkeeping for a reservation that just reached a terminal status."""
    table = state.reservations
    assert table.status[row] not in OPEN_STATUSES, row
    if table.plans and row in table.plans:
        give_back_plan(state, row)
    state.open_reservations -= 1
    assert state.open_reservations >= 0
    retention = table.retention
    # Evict before adding, so the reservation closing now is never the one forgotten
    # (several can close in the same millisecond, and ties sort by id).
    overflow = retention.live + 1 - state.limits.max_retained_reservations
    if overflow > 0:
        evict_retained(state, overflow)
    retention.push(at_ms + state.limits.terminal_retention_ms, row)
    assert retention.live <= state.limits.max_retained_reservations


def evict_retained(state: StateFields, count: int) -> None:
    """Forget the `count` oldest terminal reservations (retention order): a retry of one
    of their ids is then a new reservation."""
    table = state.reservations
    assert 0 < count <= len(table.retention), count
    for row in table.pop_oldest_retained(count):
        table.delete(row)
    state.evicted_total += count
