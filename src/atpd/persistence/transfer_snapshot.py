"""Transfer orders and demand velocity in snapshots (entries "transfers", "demand_*").

Both are written only once there are some, and read with `.get`, so snapshots without them
load as before. Loading checks every id and index like the rest of state_snapshot.py.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core.ids import is_reservation_id, is_sku_id
from atpd.core.state_fields import StateFields
from atpd.core.text import shown
from atpd.core.transfers import Receipt, Transfer, TransferLine, TransferStatus, is_transfer_id

Arrays = dict[str, npt.NDArray[Any]]
Blobs = dict[str, bytes]


def _transfer_row(t: Transfer) -> list[Any]:
    return [
        t.transfer_id,
        t.from_node_id,
        t.to_node_id,
        t.ship_day,
        t.lead_days,
        t.eta_ms,
        int(t.status),
        t.created_at_ms,
        t.updated_at_ms,
        t.plan_id,
        [
            [
                x.sku,
                x.quantity,
                x.held,
                x.shipped,
                x.received,
                x.damaged,
                x.short,
                x.over,
                x.source_shortfall,
            ]
            for x in t.lines
        ],
        [[r.receipt_id, [list(x) for x in r.lines], r.final, r.at_ms] for r in t.receipts],
    ]


def export_transfers(state: StateFields, arrays: Arrays, blobs: Blobs) -> None:
    book = state.transfers
    if len(book) or book.closed:
        blobs["transfers"] = json.dumps(
            {
                "open": [_transfer_row(t) for t in book.open.values()],
                "closed": [_transfer_row(t) for t in book.closed.values()],
            }
        ).encode()
    entries = state.demand.entries()
    if entries:
        arrays["demand_positions"] = np.array([(s, n) for s, n, _, _ in entries], np.int64)
        arrays["demand_rate"] = np.array([r for _, _, r, _ in entries], np.float64)
        arrays["demand_last_ms"] = np.array([t for _, _, _, t in entries], np.int64)


def _transfer(state: StateFields, row: list[Any]) -> Transfer:
    (transfer_id, source, destination, ship_day, lead_days, eta_ms, status, created, updated) = row[
        :9
    ]
    plan_id, lines, receipts = row[9:]
    if not is_transfer_id(transfer_id):
        raise ValueError(f"transfer id {shown(transfer_id)} is not valid")
    if plan_id and not is_reservation_id(plan_id):
        raise ValueError(f"transfer {transfer_id!r}: plan id {shown(plan_id)} is not valid")
    from_index, to_index = state.node_ids.get(source), state.node_ids.get(destination)
    if from_index < 0 or to_index < 0:
        raise ValueError(f"transfer {transfer_id!r} names an unknown node")
    parsed_lines = []
    for sku, *numbers in lines:
        sku_index = state.skus.get(sku) if is_sku_id(sku) else -1
        if sku_index < 0 or len(numbers) != 8:
            raise ValueError(f"transfer {transfer_id!r}: bad line for {shown(sku)}")
        if not all(isinstance(x, int) and x >= 0 for x in numbers):
            raise ValueError(f"transfer {transfer_id!r}: negative or non-integer count")
        quantity, held, shipped, received, damaged, short, over, shortfall = numbers
        parsed_lines.append(
            TransferLine(
                sku, quantity, sku_index, held, shipped, received, damaged, short, over, shortfall
            )
        )
    parsed_receipts = []
    for receipt_id, items, final, at_ms in receipts:
        if not is_reservation_id(receipt_id):
            raise ValueError(f"transfer {transfer_id!r}: receipt id {shown(receipt_id)} invalid")
        parsed_receipts.append(
            Receipt(receipt_id, tuple((s, r, d) for s, r, d in items), bool(final), int(at_ms))
        )
    return Transfer(
        transfer_id,
        source,
        destination,
        from_index,
        to_index,
        int(ship_day),
        int(lead_days),
        int(eta_ms),
        parsed_lines,
        TransferStatus(status),
        int(created),
        int(updated),
        plan_id,
        parsed_receipts,
    )


def import_transfers(state: StateFields, arrays: Arrays, blobs: Blobs) -> None:
    """After nodes, SKUs and supply are in (open transfers point at their supply)."""
    if "transfers" in blobs:
        document = json.loads(blobs["transfers"])
        for row in document["open"]:
            transfer = _transfer(state, row)
            if not transfer.status.is_open or state.transfers.find(transfer.transfer_id):
                raise ValueError(f"transfer {transfer.transfer_id!r}: listed open twice or closed")
            state.transfers.add(transfer)
        for row in document["closed"]:
            transfer = _transfer(state, row)
            if transfer.status.is_open or state.transfers.find(transfer.transfer_id):
                raise ValueError(f"transfer {transfer.transfer_id!r}: listed closed twice or open")
            state.transfers.add_closed(transfer)
    if "demand_positions" in arrays:
        positions = arrays["demand_positions"]
        rates, lasts = arrays["demand_rate"], arrays["demand_last_ms"]
        count = len(rates)
        if positions.shape != (count, 2) or lasts.shape != (count,):
            raise ValueError("demand arrays disagree on their length")
        if count and (
            int(positions[:, 0].min()) < 0
            or int(positions[:, 0].max()) >= len(state.skus)
            or int(positions[:, 1].min()) < 0
            or int(positions[:, 1].max()) >= len(state.nodes)
        ):
            raise ValueError("a demand position is out of range")
        for (sku, node), rate, last in zip(
            positions.tolist(), rates.tolist(), lasts.tolist(), strict=True
        ):
            rate_row, last_row = state.demand.row(sku, node + 1)
            rate_row[node] = rate
            last_row[node] = last
