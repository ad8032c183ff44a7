"""The whole core state as named arrays and blobs (for snapshot files), and back.

Stock travels as the used part of the numpy arrays; reservations travel columnar (one int64
row per reservation, one per line) with their string ids joined by newlines — none of the id
alphabets allows a newline — so 1M reservations load without a million small parses.

The principal that made each reservation travels as an index per reservation
("reservation_principal", -1 for none) into a JSON list of the distinct principals
("principals"): a few hundred terminals make a million reservations. Snapshots written before
principals were recorded lack both entries and load with no principal on any reservation.

Loading trusts the file's checksum but not its content: every id is checked against the same
rules as a caller's, and every count, shape and index against the rest, so a snapshot written
by a faulty build is refused with the entry and the reason (`SnapshotContentError`), never an
assertion deep in the core.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core.commands import Line, Maker, NodeKind, ReservationKind
from atpd.core.geo import parse_geo_path
from atpd.core.ids import (
    ID_PATTERN,
    NAME_PATTERN,
    NODE_ID_PATTERN,
    RESERVATION_ID_PATTERN,
    TAG_PATTERN,
    first_mismatch,
)
from atpd.core.limits import Limits
from atpd.core.load_registry import LoadRegistry
from atpd.core.network_parse import parse_network
from atpd.core.nodes import Node
from atpd.core.reservations import Reservation, ReservationStatus
from atpd.core.rules import parse_rules
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_COUNT
from atpd.core.store_book import StoreBook
from atpd.core.supply import Supply, SupplyKind
from atpd.core.text import shown
from atpd.persistence.codec import maker_problem
from atpd.persistence.plan_codec import load_picks, load_plans, plans_blob
from atpd.persistence.transfer_snapshot import export_transfers, import_transfers

STATE_FORMAT = 1

# Columns of the per-reservation table.
R_STATUS, R_KIND, R_CREATED, R_EXPIRES, R_UPDATED, R_TTL, R_FIRST_LINE, R_LINES, R_PURGE_AT = range(
    9
)
# Columns of the per-line table.
L_SKU, L_NODE, L_QUANTITY, L_HELD, L_FULFILLED = range(5)
# import_state reads line rows by these positions directly (its hot loop).
assert (L_SKU, L_NODE, L_QUANTITY, L_HELD, L_FULFILLED) == (0, 1, 2, 3, 4)

Arrays = dict[str, npt.NDArray[Any]]
Blobs = dict[str, bytes]


def _join(names: list[str]) -> bytes:
    return "\n".join(names).encode()


class SnapshotContentError(ValueError):
    """A snapshot entry whose content cannot be loaded (bad id, count, shape or index)."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


@contextlib.contextmanager
def _entry(name: str) -> Iterator[None]:
    """Report any failure while loading entry `name` as a SnapshotContentError naming it."""
    try:
        yield
    except SnapshotContentError:
        raise
    except Exception as error:
        reason = str(error) or type(error).__name__
        raise SnapshotContentError(name, f"{type(error).__name__}: {reason}") from error


def _split(blob: bytes, count: int) -> list[str]:
    if count == 0:
        return []
    names = blob.decode().split("\n")
    if len(names) != count:
        raise ValueError(f"holds {len(names)} newline-separated names, the meta says {count}")
    return names


def _check_names(names: list[str], pattern: Any, what: str, *, allow_empty: bool = False) -> None:
    bad = first_mismatch(pattern, names, allow_empty=allow_empty)
    if bad >= 0:
        raise ValueError(f"{what} [{bad}] {shown(names[bad])} is not a valid {what}")


def _supply_blob(supplies: Iterable[Supply]) -> bytes:
    return json.dumps(
        [
            [x.supply_id, x.sku, x.node_id, x.quantity, x.eta_ms, int(x.kind), x.received]
            for x in supplies
        ]
    ).encode()


def _supplies(state: AtpState, blob: bytes) -> list[Supply]:
    rows = json.loads(blob)
    for row in rows:
        supply_id, sku, node_id = row[0], row[1], row[2]
        if not RESERVATION_ID_PATTERN.fullmatch(supply_id):
            raise ValueError(f"supply id {shown(supply_id)} is not valid")
        if not ID_PATTERN.fullmatch(sku) or not NODE_ID_PATTERN.fullmatch(node_id):
            raise ValueError(f"supply {supply_id!r} names an invalid SKU or node id")
    return [
        Supply(
            supply_id,
            sku,
            node_id,
            state.skus.get(sku),
            state.node_ids.get(node_id),
            quantity,
            eta_ms,
            SupplyKind(kind),
            received,
        )
        for supply_id, sku, node_id, quantity, eta_ms, kind, received in rows
    ]


def _principal_columns(reservations: list[Reservation]) -> tuple[npt.NDArray[Any], bytes]:
    """Per reservation, the index of its principal in the list of distinct ones (-1: none)."""
    column = np.full(len(reservations), -1, np.int32)
    by_identity: dict[int, int] = {}  # most reservations share their principal's one object
    by_value: dict[Maker, int] = {}
    for i, r in enumerate(reservations):
        maker = r.maker
        if maker is None:
            continue
        index = by_identity.get(id(maker))
        if index is None:
            index = by_identity[id(maker)] = by_value.setdefault(maker, len(by_value))
        column[i] = index
    principals = [
        [m.name, m.role, list(m.node_ids), list(m.geo_prefixes), list(m.channels)] for m in by_value
    ]
    return column, json.dumps(principals).encode()


def _principals(arrays: Arrays, blobs: Blobs, count: int) -> list[Maker | None]:
    """Each reservation's principal (all None in a snapshot that has none)."""
    if "reservation_principal" not in arrays:
        return [None] * count
    makers: list[Maker] = []
    for i, (name, role, node_ids, geo_prefixes, channels) in enumerate(
        json.loads(blobs["principals"])
    ):
        maker = Maker(name, role, tuple(node_ids), tuple(geo_prefixes), tuple(channels))
        problem = maker_problem(maker)
        if problem is not None:
            raise ValueError(f"principals[{i}]: {problem}")
        makers.append(maker)
    column = arrays["reservation_principal"]
    if column.shape != (count,):
        raise ValueError(f"reservation_principal has shape {column.shape}, expected ({count},)")
    if count and (int(column.min()) < -1 or int(column.max()) >= len(makers)):
        raise ValueError("reservation_principal names a principal out of range")
    return [makers[index] if index >= 0 else None for index in column.tolist()]


def export_state(state: AtpState) -> tuple[Arrays, Blobs]:
    """A consistent copy of everything (arrays are copied, so the caller may write them out
    while the state moves on)."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    stock = state.stock
    reservations = list(state.reservations.values())
    purge_at = {reservation_id: at for at, reservation_id in state.retention}
    line_count = sum(len(r.lines) for r in reservations)
    table = np.zeros((len(reservations), 9), np.int64)
    lines = np.zeros((line_count, 5), np.int64)
    line_index = 0
    for i, r in enumerate(reservations):
        table[i] = (
            r.status,
            r.kind,
            r.created_at_ms,
            r.expires_at_ms,
            r.updated_at_ms,
            r.ttl_ms,
            line_index,
            len(r.lines),
            purge_at.get(r.reservation_id, 0),
        )
        for (sku, node), line, held, fulfilled in zip(
            r.cells, r.lines, r.held, r.fulfilled, strict=True
        ):
            lines[line_index] = (sku, node, line.quantity, held, fulfilled)
            line_index += 1
    principal_column, principals = _principal_columns(reservations)
    arrays: Arrays = {
        "reservation_principal": principal_column,
        "cells": np.ascontiguousarray(stock.cells[:sku_count, :, :node_count]),
        "source_seq": np.ascontiguousarray(stock.source_seq[:sku_count, :node_count]),
        "present": np.ascontiguousarray(stock.present[:sku_count, :node_count]),
        "reservations": table,
        "reservation_lines": lines,
    }
    nodes = [
        [n.node_id, int(n.kind), "/".join(n.geo_path), n.ships, n.pickup, n.enabled, list(n.tags)]
        for n in state.nodes
    ]
    meta = {
        "format": STATE_FORMAT,
        "now_ms": state.now_ms,
        "expired_total": state.expired_total,
        "skus": sku_count,
        "nodes": node_count,
        "reservations": len(reservations),
    }
    blobs: Blobs = {
        "meta": json.dumps(meta).encode(),
        "skus": _join(state.skus.names),
        "nodes": json.dumps(nodes).encode(),
        "reservation_ids": _join([r.reservation_id for r in reservations]),
        "reservation_channels": _join([r.channel for r in reservations]),
        "reservation_segments": _join([r.segment for r in reservations]),
        "rules": state.rules.text.encode(),
        "supply": _supply_blob(state.supply.by_id.values()),
        "supply_closed": _supply_blob(state.supply.closed.values()),
        "protected": json.dumps(
            {rid: state.reservations[rid].protected for rid in sorted(state.protected_reservations)}
        ).encode(),
        "loads": state.loads.to_json(),
        "principals": principals,
    }
    # The network and carrier capacity: only once there are some (older readers, and states
    # without them, see no new entries). Read back with `blobs.get`, so older snapshots load.
    if state.network.text:
        blobs["network"] = state.network.text.encode()
        blobs["network_source"] = state.network.source.encode()
    if len(state.carrier_capacity):
        blobs["carrier_capacity"] = json.dumps(state.carrier_capacity.rows()).encode()
    # Reservations of promised options: their plans (the slots and picks they hold) and the
    # pick capacity table; older snapshots have neither.
    if len(state.pick_capacity):
        blobs["reservation_plans"] = plans_blob(state)
        blobs["pick_capacity"] = json.dumps(state.pick_capacity.rows()).encode()
    if state.store:
        blobs["store"] = state.store.to_json()
    # Transfer orders and demand velocity (older snapshots have neither).
    export_transfers(state, arrays, blobs)
    return arrays, blobs


def import_state(arrays: Arrays, blobs: Blobs, limits: Limits | None = None) -> AtpState:
    """The state a snapshot holds; raises SnapshotContentError naming the entry at fault."""
    with _entry("meta"):
        meta = json.loads(blobs["meta"])
        if meta["format"] != STATE_FORMAT:
            raise ValueError(
                f"state format {meta['format']} is not supported (expected {STATE_FORMAT})"
            )
    state = AtpState(limits)
    with _entry("nodes"):
        for node_id, kind, geo, ships, pickup, enabled, tags in json.loads(blobs["nodes"]):
            if not NODE_ID_PATTERN.fullmatch(node_id) or node_id in state.node_ids:
                raise ValueError(f"node id {shown(node_id)} is invalid or repeated")
            _check_names(list(tags), TAG_PATTERN, "tag")
            index = state.node_ids.intern(node_id)
            state.nodes.append(
                Node(
                    node_id,
                    index,
                    NodeKind(kind),
                    parse_geo_path(geo),
                    bool(ships),
                    bool(pickup),
                    bool(enabled),
                    tuple(tags),
                )
            )
        if len(state.nodes) != meta["nodes"]:
            raise ValueError(f"{len(state.nodes)} nodes, the meta says {meta['nodes']}")
    with _entry("skus"):
        sku_names = _split(blobs["skus"], meta["skus"])
        _check_names(sku_names, ID_PATTERN, "sku")
        if len(set(sku_names)) != len(sku_names):
            raise ValueError("a SKU is listed twice")
        state.skus.intern_many(sku_names)
    sku_count, node_count = len(sku_names), len(state.nodes)
    stock = state.stock
    with _entry("cells"):
        cells = arrays["cells"]
        if cells.shape != (sku_count, FIELD_COUNT, node_count):
            raise ValueError(
                f"shape {cells.shape}, expected {(sku_count, FIELD_COUNT, node_count)}"
            )
        stock.ensure(max(sku_count, 1), max(node_count, 1))
        stock.cells[:sku_count, :, :node_count] = cells
    with _entry("source_seq"):
        if arrays["source_seq"].shape != (sku_count, node_count):
            raise ValueError(
                f"shape {arrays['source_seq'].shape}, expected {(sku_count, node_count)}"
            )
        stock.source_seq[:sku_count, :node_count] = arrays["source_seq"]
    with _entry("present"):
        if arrays["present"].shape != (sku_count, node_count):
            raise ValueError(f"shape {arrays['present'].shape}, expected {(sku_count, node_count)}")
        stock.present[:sku_count, :node_count] = arrays["present"]
        stock.position_count = int(np.count_nonzero(arrays["present"]))

    count = meta["reservations"]
    with _entry("reservation_ids"):
        ids = _split(blobs["reservation_ids"], count)
        _check_names(ids, RESERVATION_ID_PATTERN, "reservation id")
        if len(set(ids)) != len(ids):
            raise ValueError("a reservation id is listed twice")
    with _entry("reservation_channels"):
        channels = _split(blobs["reservation_channels"], count)
        _check_names(channels, NAME_PATTERN, "channel", allow_empty=True)
    with _entry("reservation_segments"):
        segments = _split(blobs["reservation_segments"], count)
        _check_names(segments, NAME_PATTERN, "segment", allow_empty=True)
    with _entry("reservation_principal"):
        makers = _principals(arrays, blobs, count)
    with _entry("reservations"):
        table_array = arrays["reservations"]
        if table_array.shape != (count, 9):
            raise ValueError(f"shape {table_array.shape}, expected {(count, 9)}")
        line_array = arrays["reservation_lines"]
        if line_array.ndim != 2 or line_array.shape[1] != 5:
            raise ValueError(f"reservation_lines has shape {line_array.shape}, expected (n, 5)")
        if count:
            first_lines = table_array[:, R_FIRST_LINE]
            ends = first_lines + table_array[:, R_LINES]
            if int(first_lines.min()) < 0 or int(ends.max()) > line_array.shape[0]:
                raise ValueError("a reservation's lines are outside reservation_lines")
        if line_array.shape[0]:
            sku_column, node_column = line_array[:, L_SKU], line_array[:, L_NODE]
            if int(sku_column.min()) < 0 or int(sku_column.max()) >= sku_count:
                raise ValueError("a reservation line names a SKU index out of range")
            if int(node_column.min()) < 0 or int(node_column.max()) >= node_count:
                raise ValueError("a reservation line names a node index out of range")
        table = table_array.tolist()
        line_rows = line_array.tolist()
        _load_reservations(state, ids, channels, segments, makers, table, line_rows, sku_names)
    with _entry("rules"):
        if blobs.get("rules"):
            state.rules = parse_rules(blobs["rules"].decode(), "<snapshot>")
    with _entry("supply"):
        for supply in _supplies(state, blobs.get("supply", b"[]")):
            state.supply.add(supply)
    with _entry("supply_closed"):
        for supply in _supplies(state, blobs.get("supply_closed", b"[]")):
            state.supply.closed[supply.supply_id] = supply
    with _entry("protected"):
        for reservation_id, records in json.loads(blobs.get("protected", b"{}")).items():
            state.reservations[reservation_id].protected = [
                [(name, units) for name, units in line] for line in records
            ]
            state.protected_reservations.add(reservation_id)
        # Geography, enabled mask and protection consumption follow from what was read.
        state.rebuild_derived()
    with _entry("loads"):
        if "loads" in blobs:
            state.loads = LoadRegistry.from_json(blobs["loads"])
    with _entry("network"):
        if blobs.get("network"):
            source = blobs.get("network_source", b"<snapshot>").decode()
            state.network = parse_network(blobs["network"].decode(), source)
    with _entry("carrier_capacity"):
        _load_capacity(state, blobs.get("carrier_capacity", b"[]"))
    with _entry("reservation_plans"):
        load_plans(state, blobs.get("reservation_plans", b"{}"))
    with _entry("pick_capacity"):
        load_picks(state, blobs.get("pick_capacity", b"[]"))
    with _entry("store"):
        if "store" in blobs:
            state.store = StoreBook.from_json(blobs["store"])
    with _entry("transfers"):
        import_transfers(state, arrays, blobs)
    with _entry("meta"):
        state.now_ms = int(meta["now_ms"])
        state.expired_total = int(meta["expired_total"])
    return state


def _load_capacity(state: AtpState, blob: bytes) -> None:
    capacity = state.carrier_capacity
    # Rows (service, node, day, slots, held[, used, explicit]): older snapshots lack the last two.
    for row in json.loads(blob):
        if len(row) not in (5, 7):
            raise ValueError(f"capacity entry {row!r}: expected 5 or 7 fields")
        service_id, node_id, day, slots, held = row[:5]
        used, explicit = row[5:] if len(row) == 7 else (0, True)
        if not NAME_PATTERN.fullmatch(service_id) or not NODE_ID_PATTERN.fullmatch(node_id):
            raise ValueError(f"capacity entry {service_id!r}/{node_id!r}: invalid service or node")
        if not all(isinstance(x, int) and x >= 0 for x in (day, slots, held, used)):
            raise ValueError(f"capacity entry {service_id}/{node_id}: bad day, slots or held")
        if not isinstance(explicit, bool):
            raise ValueError(f"capacity entry {service_id}/{node_id}: bad explicit flag")
        if capacity.get(service_id, node_id, day) is not None:
            raise ValueError(f"capacity entry {service_id}/{node_id}/{day} is listed twice")
        capacity.set(service_id, node_id, day, slots)
        entry = capacity.get(service_id, node_id, day)
        assert entry is not None
        entry.held, entry.used, entry.explicit = held, used, explicit


def _load_reservations(
    state: AtpState,
    ids: list[str],
    channels: list[str],
    segments: list[str],
    makers: list[Maker | None],
    table: list[list[int]],
    line_rows: list[list[int]],
    sku_names: list[str],
) -> None:
    """Fill the reservations in (indexes were checked by the caller)."""
    node_names = state.node_ids.names
    retention = []
    held: list[tuple[int, str]] = []
    # The hot loop of a large recovery (1M reservations): enum members and Line objects come
    # from lookups, and the Reservation is filled in directly rather than re-derived.
    statuses = {int(x): x for x in ReservationStatus}
    kinds = {int(x): x for x in ReservationKind}
    held_status = ReservationStatus.HELD
    open_statuses = {ReservationStatus.HELD, ReservationStatus.CONFIRMED}
    new_reservation = Reservation.__new__
    open_count = 0
    for i, reservation_id in enumerate(ids):
        row = table[i]
        first = row[R_FIRST_LINE]
        rows = line_rows[first : first + row[R_LINES]]
        r = new_reservation(Reservation)
        r.reservation_id = reservation_id
        r.lines = tuple(Line(sku_names[x[0]], node_names[x[1]], x[2]) for x in rows)
        r.cells = tuple((x[0], x[1]) for x in rows)
        r.kind = kinds[row[R_KIND]]
        r.channel = channels[i]
        r.segment = segments[i]
        r.ttl_ms = row[R_TTL]
        r.created_at_ms = row[R_CREATED]
        r.expires_at_ms = row[R_EXPIRES]
        r.updated_at_ms = row[R_UPDATED]
        r.status = status = statuses[row[R_STATUS]]
        r.held = [x[3] for x in rows]
        r.fulfilled = [x[4] for x in rows]
        r.protected = None
        r.maker = makers[i]
        r.plan = None
        state.reservations[reservation_id] = r
        if status in open_statuses:
            open_count += 1
            if status is held_status:
                held.append((row[R_EXPIRES], reservation_id))
        else:
            retention.append((row[R_PURGE_AT], reservation_id))
    state.open_reservations += open_count
    state.retention.update(retention)
    state.expiry.add_many(held)
