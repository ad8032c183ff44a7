"""Checks over the whole state: invariants (tests, recovery) and the digest (state equality)."""

from __future__ import annotations

import hashlib

import numpy as np

from atpd.core.plan_holds import plan_hold_problems
from atpd.core.reservations import ReservationStatus
from atpd.core.state_fields import StateFields
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED
from atpd.core.transfers import transfer_problems


def check_invariants(state: StateFields) -> None:
    """Recompute reserved from open holds and compare; O(state), for tests and recovery."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    expected = np.zeros((sku_count, node_count), np.int64)
    open_count = 0
    for reservation in state.reservations.values():
        if reservation.status.is_open:
            open_count += 1
        else:
            assert not any(reservation.held), reservation
        for (sku, node), held in zip(reservation.cells, reservation.held, strict=True):
            expected[sku, node] += held
    # Transfer orders not yet shipped hold their units in the same column.
    for transfer in state.transfers.open.values():
        for line in transfer.lines:
            expected[line.sku_index, transfer.from_index] += line.held
    cells = state.stock.cells[:sku_count, :, :node_count]
    assert np.array_equal(cells[:, FIELD_RESERVED, :], expected), "reserved != sum of holds"
    assert (cells[:, FIELD_ON_HAND, :] >= 0).all(), "negative on_hand"
    assert open_count == state.open_reservations, (open_count, state.open_reservations)
    held_count = sum(1 for r in state.reservations.values() if r.status is ReservationStatus.HELD)
    assert held_count == len(state.expiry), (held_count, len(state.expiry))
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
    for reservation_id in sorted(state.reservations):
        r = state.reservations[reservation_id]
        h.update(
            repr(
                (
                    reservation_id,
                    r.status,
                    r.lines,
                    r.held,
                    r.fulfilled,
                    r.created_at_ms,
                    r.expires_at_ms,
                    r.updated_at_ms,
                    r.kind,
                    r.channel,
                    r.segment,
                    # Closed holds have given every protected unit back: [[]] is None.
                    r.protected if r.protected and any(r.protected) else None,
                    r.maker,
                    *(() if r.plan is None else (r.plan,)),
                )
            ).encode()
        )
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
