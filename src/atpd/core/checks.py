"""Checks over the whole state: invariants (tests, recovery) and the digest (state equality)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from atpd.core.plan_holds import plan_hold_problems
from atpd.core.reservation_columns import line_columns, line_indexes, row_columns
from atpd.core.reservations import ReservationStatus
from atpd.core.state_fields import StateFields
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED
from atpd.core.transfers import transfer_problems


def check_invariants(state: StateFields) -> None:
    """Recompute reserved from open holds and compare; O(state), for tests and recovery."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    table = state.reservations
    rows = table.live_rows()
    status = np.frombuffer(table.status, np.int8)[rows]
    is_open = (status == ReservationStatus.HELD) | (status == ReservationStatus.CONFIRMED)
    lines = line_indexes(table, rows)
    columns = line_columns(table, lines)
    held = columns["line_held"].astype(np.int64)
    counts = np.frombuffer(table.line_count, np.int32)[rows]
    assert not held[~np.repeat(is_open, counts)].any(), "a finished reservation holds units"
    assert (held >= 0).all() and (columns["line_fulfilled"] >= 0).all(), "negative line"
    expected = np.zeros((sku_count, node_count), np.int64)
    np.add.at(expected, (columns["line_sku"], columns["line_node"]), held)
    # Transfer orders not yet shipped hold their units in the same column.
    for transfer in state.transfers.open.values():
        for line in transfer.lines:
            expected[line.sku_index, transfer.from_index] += line.held
    cells = state.stock.cells[:sku_count, :, :node_count]
    assert np.array_equal(cells[:, FIELD_RESERVED, :], expected), "reserved != sum of holds"
    assert (cells[:, FIELD_ON_HAND, :] >= 0).all(), "negative on_hand"
    open_count = int(np.count_nonzero(is_open))
    assert open_count == state.open_reservations, (open_count, state.open_reservations)
    assert len(rows) == len(table) == len(table.ids), (len(rows), len(table), len(table.ids))
    held_rows = rows[status == ReservationStatus.HELD]
    assert len(held_rows) == len(state.expiry), (len(held_rows), len(state.expiry))
    keys, expiry_rows = state.expiry.entries()
    assert np.array_equal(np.sort(expiry_rows), held_rows), "expiry heap != HELD rows"
    expires = np.frombuffer(table.expires_ms, np.int64)
    assert np.array_equal(keys, expires[expiry_rows]), "expiry heap keys != expiry times"
    finished_rows = rows[~is_open]
    _, retained_rows = state.retention.entries()
    assert np.array_equal(np.sort(retained_rows), finished_rows), "retention != finished rows"
    assert len(finished_rows) <= state.limits.max_retained_reservations
    for row in rows.tolist():
        assert table.find(table.id_of(row)) == row, row
    problems = state.carrier_capacity.problems()
    assert not problems, problems
    problems = state.pick_capacity.problems() + plan_hold_problems(state)
    assert not problems, problems
    problems = transfer_problems(state.transfers, state.supply.by_id)
    assert not problems, problems


def digest(state: StateFields) -> str:
    """A hash of everything that defines the state (for recovery equality tests)."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    h = hashlib.sha256()
    h.update(repr((state.skus.names, state.node_ids.names, state.now_ms)).encode())
    h.update(
        repr(
            [(n.kind, n.geo_path, n.ships, n.pickup, n.enabled, n.tags) for n in state.nodes]
        ).encode()
    )
    h.update(np.ascontiguousarray(state.stock.cells[:sku_count, :, :node_count]).tobytes())
    h.update(np.ascontiguousarray(state.stock.source_seq[:sku_count, :node_count]).tobytes())
    h.update(np.ascontiguousarray(state.stock.present[:sku_count, :node_count]).tobytes())
    h.update(state.rules.text.encode())
    for supply_id in sorted(state.supply.by_id):
        x = state.supply.by_id[supply_id]
        h.update(b"open")
        h.update(
            repr((supply_id, x.sku, x.node_id, x.quantity, x.eta_ms, x.kind, x.received)).encode()
        )
    for x in state.supply.closed.values():
        h.update(repr((x.supply_id, x.quantity, x.received, x.eta_ms)).encode())
    reservations_digest(state, h)
    h.update(state.loads.to_json())
    # Only once a network or capacity exists, so digests of states without them stay as before.
    if state.network.text or len(state.carrier_capacity):
        h.update(b"network")
        h.update(repr((state.network.source, state.network.text)).encode())
        h.update(repr(state.carrier_capacity.rows()).encode())
    if len(state.pick_capacity):
        h.update(b"picks")
        h.update(repr(state.pick_capacity.rows()).encode())
    if state.store:
        h.update(b"store")
        h.update(state.store.to_json())
    # Transfers and demand: only once there are some, so older digests stay as they were.
    if len(state.transfers) or state.transfers.closed:
        h.update(b"transfers")
        for transfer in state.transfers.all():
            h.update(repr(transfer).encode())
    if len(state.demand):
        h.update(b"demand")
        h.update(repr(state.demand.entries()).encode())
    return h.hexdigest()


def reservations_digest(state: StateFields, h: Any) -> None:
    """Every reservation in id order, from the columns (row numbers and the order of interned
    callers and principals differ between a live state and a restored one: not hashed)."""
    table = state.reservations
    rows = table.live_rows()
    ids = [table.id_of(row) for row in rows.tolist()]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    rows = rows[np.array(order, np.int64)] if order else rows
    h.update(b"reservations")
    h.update("\n".join(ids[i] for i in order).encode())
    columns = row_columns(table, rows)
    for name in (
        "status",
        "kind",
        "ttl_ms",
        "created_ms",
        "updated_ms",
        "expires_ms",
        "line_count",
    ):
        h.update(columns[name].astype(np.int64).tobytes())
    callers = table.callers
    h.update(repr([callers[c] for c in columns["caller"].tolist()]).encode())
    makers = table.makers
    h.update(repr([makers[m] if m >= 0 else None for m in columns["maker"].tolist()]).encode())
    lines = line_columns(table, line_indexes(table, rows))
    for values in lines.values():
        h.update(values.astype(np.int64).tobytes())  # whatever width a column is stored in
    # Closed holds have given every protected unit back: [[]] is None.
    extras = {row for row, records in table.protected.items() if any(records)} | set(table.plans)
    for reservation_id, row in sorted((table.id_of(row), row) for row in extras):
        records = table.protected.get(row)
        h.update(repr((reservation_id, records if records and any(records) else None)).encode())
        h.update(repr(table.plans.get(row)).encode())
