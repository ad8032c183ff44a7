"""Handlers of the store operations: RecordSale, RecordOfflineSales, RecordReturn, Exchange and
ReleaseInspection (commands in core/commands_store.py, records in core/store_book.py).

Each handler checks everything first and raises `CommandRejected` (nothing changed) or
returns a refusal value; only then does it write. A forced sale is the record of goods that
already left: it is never refused for stock, on_hand floors at 0 and what the system did not
know of becomes a Discrepancy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from atpd.core.caller_atp import caller_atp, caller_policy, stock_atp
from atpd.core.change_capture import touch
from atpd.core.commands_store import (
    Exchange,
    OfflineSaleOutcome,
    OfflineSalesResult,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    ReturnLine,
    SaleLine,
    SaleResult,
    StoreResult,
)
from atpd.core.demand import record_units_sold
from atpd.core.limits import MAX_QUANTITY
from atpd.core.results import (
    AlreadyExists,
    InvalidCommand,
    Outcome,
    Shortage,
    ShortageReason,
)
from atpd.core.state_fields import StateFields, node_index, register_sku
from atpd.core.stock import FIELD_ON_HAND
from atpd.core.store_book import (
    RECEIPT_EXCHANGE,
    RECEIPT_RELEASE,
    RECEIPT_RETURN,
    RECEIPT_SALE,
    Discrepancy,
    Receipt,
    fingerprint,
)

# ---------------------------------------------------------------------------- checks


def till_time(state: StateFields, at_ms: int, field: str, now_ms: int) -> int:
    """The till's time of an event (0: now); refused if the till runs ahead of the server."""
    if at_ms == 0:
        return now_ms
    if at_ms < 0:
        raise InvalidCommand(f"{field}: {at_ms} is negative")
    skew_ms = state.limits.max_till_clock_skew_ms
    if at_ms > now_ms + skew_ms:
        raise InvalidCommand(
            f"{field}: {at_ms} is {at_ms - now_ms} ms ahead of the server's clock "
            f"(max_till_clock_skew_ms = {skew_ms}); check the till's clock"
        )
    return at_ms


def replayed(
    state: StateFields, receipt_id: str, kind: str, command: object, field: str
) -> Receipt | None:
    """The receipt when `receipt_id` was recorded by this very command (a retry);
    AlreadyExists when it was recorded by something else; None when it is new."""
    receipt = state.store.receipts.get(receipt_id)
    if receipt is None:
        return None
    if receipt.kind == kind and receipt.fingerprint == fingerprint(command):
        return receipt
    raise AlreadyExists(
        f"{field}: {receipt_id!r} was already recorded ({receipt.kind}) with different "
        "content; choose another id"
    )


def check_distinct_skus(lines: Sequence[SaleLine | ReturnLine], field: str) -> None:
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.sku in seen:
            raise InvalidCommand(f"{field}[{i}].sku: {line.sku!r} is on another line already")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidCommand(
                f"{field}[{i}].quantity: {line.quantity} is not in 1..{MAX_QUANTITY}"
            )
        seen.add(line.sku)


def on_hand_of(state: StateFields, sku_id: str, node: int) -> int:
    sku = state.skus.get(sku_id)
    return int(state.stock.cells[sku, FIELD_ON_HAND, node]) if sku >= 0 else 0


def check_return(
    state: StateFields, node: int, node_id: str, lines: tuple[ReturnLine, ...]
) -> None:
    """Refuse a return whose units would pass MAX_QUANTITY at a position (or in inspection)."""
    check_distinct_skus(lines, "lines")
    for i, line in enumerate(lines):
        if line.inspect:
            total = state.store.inspection.get((line.sku, node_id), 0) + line.quantity
            what = "units to inspect"
        else:
            total = on_hand_of(state, line.sku, node) + line.quantity
            what = "on_hand"
        if total > MAX_QUANTITY:
            raise InvalidCommand(
                f"lines[{i}].quantity: {what} of {line.sku!r} at {node_id!r} would be {total}, "
                f"above {MAX_QUANTITY}"
            )


def sale_shortages(
    state: StateFields,
    command: RecordSale | Exchange,
    lines: tuple[SaleLine, ...],
    node: int,
    returned: Mapping[str, int],
) -> SaleResult | None:
    """An unforced sale's refusal (NODE_DISABLED or INSUFFICIENT_STOCK), None if it fits the
    caller's ATP (plus `returned` sellable units of the same call)."""
    node_id = state.nodes[node].node_id
    if not state.nodes[node].enabled:
        return SaleResult(
            Outcome.NODE_DISABLED,
            tuple(
                Shortage(x.sku, node_id, x.quantity, 0, ShortageReason.NODE_DISABLED) for x in lines
            ),
        )
    policy = caller_policy(state, command.channel, command.segment)
    shortages = []
    for line in lines:
        sku = state.skus.get(line.sku)
        extra = returned.get(line.sku, 0)
        if sku < 0:
            available, reason = extra, ShortageReason.UNKNOWN_SKU
        elif policy is None:
            available, reason = stock_atp(state, sku, node) + extra, ShortageReason.STOCK
        elif not policy.visible[node]:
            available, reason = extra, ShortageReason.NOT_VISIBLE
        else:
            available, reason = caller_atp(state, policy, sku, node) + extra, ShortageReason.STOCK
        if line.quantity > available:
            shortages.append(Shortage(line.sku, node_id, line.quantity, max(available, 0), reason))
    if shortages:
        return SaleResult(Outcome.INSUFFICIENT_STOCK, tuple(shortages))
    return None


# ---------------------------------------------------------------------------- writes


def units_sold(state: StateFields, sku: int, node: int, quantity: int, sold_at_ms: int) -> None:
    """Every unit sold at the till passes here, once, at the till's time: the demand that
    restocking plans from (core/demand.py)."""
    assert quantity > 0 and sold_at_ms >= 0, (sku, node, quantity, sold_at_ms)
    record_units_sold(state.demand, sku, node, quantity, sold_at_ms)


def take_sold(
    state: StateFields,
    receipt_id: str,
    node: int,
    lines: tuple[SaleLine, ...],
    sold_at_ms: int,
    terminal_id: str,
    now_ms: int,
) -> tuple[Discrepancy, ...]:
    """The goods left the store: on_hand drops by each line (floored at 0); a line that sold
    more than on_hand leaves a Discrepancy."""
    node_id = state.nodes[node].node_id
    cells = state.stock.cells
    found: list[Discrepancy] = []
    for line in lines:
        sku = register_sku(state, line.sku)
        touch(state, sku, node)
        on_hand = int(cells[sku, FIELD_ON_HAND, node])
        cells[sku, FIELD_ON_HAND, node] = max(on_hand - line.quantity, 0)
        state.stock.mark_present(sku, node)
        units_sold(state, sku, node, line.quantity, sold_at_ms)
        if line.quantity > on_hand:
            found.append(
                state.store.add_discrepancy(
                    receipt_id,
                    line.sku,
                    node_id,
                    on_hand,
                    line.quantity,
                    sold_at_ms,
                    now_ms,
                    terminal_id,
                    state.limits.max_retained_discrepancies,
                )
            )
    return tuple(found)


def put_back(state: StateFields, node: int, lines: tuple[ReturnLine, ...]) -> None:
    """Returned units: on the shelf (on_hand) or aside until inspected."""
    node_id = state.nodes[node].node_id
    cells = state.stock.cells
    for line in lines:
        if line.inspect:
            state.store.add_inspection(line.sku, node_id, line.quantity)
            continue
        sku = register_sku(state, line.sku)
        touch(state, sku, node)
        on_hand = int(cells[sku, FIELD_ON_HAND, node]) + line.quantity
        assert on_hand <= MAX_QUANTITY, (line, on_hand)
        cells[sku, FIELD_ON_HAND, node] = on_hand
        state.stock.mark_present(sku, node)


def remember(state: StateFields, receipt_id: str, kind: str, command: object, now_ms: int) -> None:
    receipt = Receipt(kind, fingerprint(command), now_ms)
    state.store.remember(receipt_id, receipt, state.limits.max_retained_receipts)


# ---------------------------------------------------------------------------- handlers


def record_sale(state: StateFields, command: RecordSale, now_ms: int) -> SaleResult:
    node = node_index(state, command.node_id, "node_id")
    check_distinct_skus(command.lines, "lines")
    sold_at_ms = till_time(state, command.sold_at_ms, "sold_at_ms", now_ms)
    content = sale_content(command)
    earlier = replayed(state, command.receipt_id, RECEIPT_SALE, content, "receipt_id")
    if earlier is not None:
        return SaleResult(Outcome.OK, replayed=True, recorded_at_ms=earlier.recorded_at_ms)
    if not command.force:
        refusal = sale_shortages(state, command, command.lines, node, {})
        if refusal is not None:
            return refusal
    found = take_sold(
        state, command.receipt_id, node, command.lines, sold_at_ms, command.terminal_id, now_ms
    )
    remember(state, command.receipt_id, RECEIPT_SALE, content, now_ms)
    return SaleResult(Outcome.OK, discrepancies=found, recorded_at_ms=now_ms)


def record_offline_sales(
    state: StateFields, command: RecordOfflineSales, now_ms: int
) -> OfflineSalesResult:
    """Every sale is checked before any is applied, so a bad one refuses the call whole."""
    if not command.sales:
        raise InvalidCommand("sales: is empty")
    nodes: list[int] = []
    fresh: list[bool] = []
    in_call: dict[str, str] = {}
    for i, sale in enumerate(command.sales):
        field = f"sales[{i}]"
        nodes.append(node_index(state, sale.node_id, f"{field}.node_id"))
        check_distinct_skus(sale.lines, f"{field}.lines")
        till_time(state, sale.sold_at_ms, f"{field}.sold_at_ms", now_ms)
        content = sale_content(sale)
        digest = fingerprint(content)
        earlier = in_call.get(sale.receipt_id)
        if earlier is not None:
            if earlier != digest:
                raise AlreadyExists(
                    f"{field}.receipt_id: {sale.receipt_id!r} is sent twice with different content"
                )
            fresh.append(False)
            continue
        in_call[sale.receipt_id] = digest
        fresh.append(
            replayed(state, sale.receipt_id, RECEIPT_SALE, content, f"{field}.receipt_id") is None
        )
    results = []
    for sale, node, new in zip(command.sales, nodes, fresh, strict=True):
        if not new:
            results.append(OfflineSaleOutcome(sale.receipt_id, duplicate=True))
            continue
        sold_at_ms = sale.sold_at_ms or now_ms
        found = take_sold(
            state, sale.receipt_id, node, sale.lines, sold_at_ms, sale.terminal_id, now_ms
        )
        remember(state, sale.receipt_id, RECEIPT_SALE, sale_content(sale), now_ms)
        results.append(OfflineSaleOutcome(sale.receipt_id, duplicate=False, discrepancies=found))
    return OfflineSalesResult(tuple(results), now_ms)


def sale_content(sale: RecordSale) -> tuple[object, ...]:
    """What makes two sales under one receipt id the same sale: the store and the lines.
    Not the force flag, the channel or the time: a sale sent online (time 0, unforced) whose
    answer was lost and then resent from the offline queue (its till time, forced) is the
    same sale, recorded once."""
    return (sale.node_id, tuple(sorted((line.sku, line.quantity) for line in sale.lines)))


def record_return(state: StateFields, command: RecordReturn, now_ms: int) -> StoreResult:
    node = node_index(state, command.node_id, "node_id")
    till_time(state, command.returned_at_ms, "returned_at_ms", now_ms)
    check_return(state, node, command.node_id, command.lines)
    earlier = replayed(state, command.return_id, RECEIPT_RETURN, command, "return_id")
    if earlier is not None:
        return StoreResult(Outcome.OK, replayed=True, recorded_at_ms=earlier.recorded_at_ms)
    put_back(state, node, command.lines)
    remember(state, command.return_id, RECEIPT_RETURN, command, now_ms)
    return StoreResult(Outcome.OK, recorded_at_ms=now_ms)


def exchange(state: StateFields, command: Exchange, now_ms: int) -> SaleResult:
    """A return and a sale, all or nothing: a refused sale leg leaves the return unapplied."""
    node = node_index(state, command.node_id, "node_id")
    at_ms = till_time(state, command.at_ms, "at_ms", now_ms)
    check_return(state, node, command.node_id, command.returned)
    check_distinct_skus(command.sold, "sold")
    earlier = replayed(state, command.exchange_id, RECEIPT_EXCHANGE, command, "exchange_id")
    if earlier is not None:
        return SaleResult(Outcome.OK, replayed=True, recorded_at_ms=earlier.recorded_at_ms)
    if not command.force:
        sellable = {x.sku: x.quantity for x in command.returned if not x.inspect}
        refusal = sale_shortages(state, command, command.sold, node, sellable)
        if refusal is not None:
            return refusal
    put_back(state, node, command.returned)
    found = take_sold(
        state, command.exchange_id, node, command.sold, at_ms, command.terminal_id, now_ms
    )
    remember(state, command.exchange_id, RECEIPT_EXCHANGE, command, now_ms)
    return SaleResult(Outcome.OK, discrepancies=found, recorded_at_ms=now_ms)


def release_inspection(state: StateFields, command: ReleaseInspection, now_ms: int) -> StoreResult:
    node = node_index(state, command.node_id, "node_id")
    earlier = replayed(state, command.release_id, RECEIPT_RELEASE, command, "release_id")
    if earlier is not None:
        return StoreResult(Outcome.OK, replayed=True, recorded_at_ms=earlier.recorded_at_ms)
    waiting = state.store.inspection.get((command.sku, command.node_id), 0)
    if not 1 <= command.quantity <= waiting:
        raise InvalidCommand(
            f"quantity: {command.quantity} units of {command.sku!r} at {command.node_id!r} "
            f"asked, {waiting} are waiting for inspection there"
        )
    if command.restock:
        total = on_hand_of(state, command.sku, node) + command.quantity
        if total > MAX_QUANTITY:
            raise InvalidCommand(f"quantity: on_hand would be {total}, above {MAX_QUANTITY}")
    state.store.take_inspection(command.sku, command.node_id, command.quantity)
    if command.restock:
        put_back(state, node, (ReturnLine(command.sku, command.quantity),))
    remember(state, command.release_id, RECEIPT_RELEASE, command, now_ms)
    return StoreResult(Outcome.OK, recorded_at_ms=now_ms)
