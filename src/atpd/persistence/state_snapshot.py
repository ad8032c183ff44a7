"""The whole core state as named arrays and blobs (for snapshot files), and back.

Stock travels as the used part of the numpy arrays; reservations travel as the columns of the
reservation table (core/reservation_table.py): one array per row column ("reservation_status",
"reservation_expires_ms", ...; rows in table order, lines contiguous in row order) and per line
column ("line_sku", "line_held", ...), with the ids joined by newlines (no id alphabet allows a
newline). Loading copies the arrays into the table and rebuilds its id index and time heaps
with array operations: 1M reservations load with no per-reservation Python work but hashing
their ids. The (channel, segment) of each reservation is an index into "reservation_callers",
its principal an index ("reservation_principal", -1: none) into "principals" (JSON lists): a
few hundred terminals make a million reservations. A snapshot without the principal entries
(written with authentication off) loads with no principal on any reservation.

STATE_FORMAT 2 is this layout. Snapshots of format 1 (one int64 table per reservation, written
before the table was columnar) are converted as they load (persistence/snapshot_upgrade.py);
any other format is refused with the format named.

Loading trusts the file's checksum but not its content: every id is checked against the same
rules as a caller's, and every count, shape and index against the rest, so a snapshot written
by a faulty build is refused with the entry and the reason (`SnapshotContentError`), never an
assertion deep in the core.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from atpd.core.commands import Maker, NodeKind, ReservationKind
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
from atpd.core.reservation_columns import (
    line_columns,
    line_indexes,
    load_columns,
    open_count,
    row_columns,
)
from atpd.core.reservation_table import CONFIRMED, HELD, LINE_COLUMNS, ROW_COLUMNS
from atpd.core.reservations import ReservationStatus
from atpd.core.rules import parse_rules
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_COUNT
from atpd.core.store_book import StoreBook
from atpd.core.supply import Supply, SupplyKind
from atpd.core.text import shown
from atpd.persistence.codec import maker_problem
from atpd.persistence.plan_codec import load_picks, load_plans, plans_blob
from atpd.persistence.snapshot_upgrade import upgrade_format_1
from atpd.persistence.transfer_snapshot import export_transfers, import_transfers

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1 is converted on load (persistence/snapshot_upgrade.py)


def _joined_pattern(pattern: re.Pattern[str]) -> re.Pattern[bytes]:
    """Names matching `pattern`, joined by newlines: checked in one pass over a blob."""
    body = pattern.pattern.removeprefix(r"\A").removesuffix(r"\Z")
    return re.compile(f"(?:{body}\n)*{body}".encode())


JOINED_IDS = _joined_pattern(RESERVATION_ID_PATTERN)
JOINED_SKUS = _joined_pattern(ID_PATTERN)

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


def _makers(blobs: Blobs) -> list[Maker]:
    makers: list[Maker] = []
    for i, (name, role, node_ids, geo_prefixes, channels) in enumerate(
        json.loads(blobs.get("principals", b"[]"))
    ):
        maker = Maker(name, role, tuple(node_ids), tuple(geo_prefixes), tuple(channels))
        problem = maker_problem(maker)
        if problem is not None:
            raise ValueError(f"principals[{i}]: {problem}")
        makers.append(maker)
    if len(set(makers)) != len(makers):
        raise ValueError("a principal is listed twice")
    return makers


def _callers(blob: bytes) -> list[tuple[str, str]]:
    callers = [(str(channel), str(segment)) for channel, segment in json.loads(blob)]
    for channel, segment in callers:
        for name in (channel, segment):
            if name and not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"channel or segment {shown(name)} is not a valid name")
    if len(set(callers)) != len(callers):
        raise ValueError("a (channel, segment) pair is listed twice")
    return callers


def _reservation_arrays(state: AtpState) -> tuple[Arrays, Blobs, int]:
    """The table's live rows as snapshot columns (rows renumbered 0..n-1, lines contiguous,
    principals and callers reduced to those used)."""
    table = state.reservations
    rows = table.live_rows()
    columns = row_columns(table, rows)
    lines = line_columns(table, line_indexes(table, rows))
    counts = columns["line_count"].astype(np.int64)
    columns["first_line"] = np.cumsum(counts) - counts
    purge_keys, purge_rows = table.retention.entries()
    renumbered = np.full(max(table.high, 1), -1, np.int64)
    renumbered[rows] = np.arange(len(rows))
    purge_at = np.zeros(len(rows), np.int64)
    purge_at[renumbered[purge_rows]] = purge_keys
    used_makers = np.unique(columns["maker"][columns["maker"] >= 0])
    maker_map = np.full(len(table.makers) + 1, -1, np.int32)  # index -1 reads the last: -1
    maker_map[used_makers] = np.arange(len(used_makers), dtype=np.int32)
    columns["maker"] = maker_map[columns["maker"]]
    used_callers = np.unique(columns["caller"])
    caller_map = np.zeros(max(len(table.callers), 1), np.int32)
    caller_map[used_callers] = np.arange(len(used_callers), dtype=np.int32)
    columns["caller"] = caller_map[columns["caller"]]
    arrays: Arrays = {_array_name(name): values for name, values in columns.items()}
    arrays["reservation_purge_at_ms"] = purge_at
    arrays.update(lines)
    makers = [table.makers[i] for i in used_makers.tolist()]
    blobs: Blobs = {
        "reservation_ids": table.ids.joined(rows),
        "reservation_callers": json.dumps(
            [table.callers[i] for i in used_callers.tolist()]
        ).encode(),
        "principals": json.dumps(
            [
                [m.name, m.role, list(m.node_ids), list(m.geo_prefixes), list(m.channels)]
                for m in makers
            ]
        ).encode(),
    }
    return arrays, blobs, len(rows)


def export_state(state: AtpState) -> tuple[Arrays, Blobs]:
    """A consistent copy of everything (arrays are copied, so the caller may write them out
    while the state moves on)."""
    sku_count, node_count = len(state.skus), len(state.nodes)
    stock = state.stock
    reservation_arrays, reservation_blobs, reservation_count = _reservation_arrays(state)
    # Always copies (C order): np.ascontiguousarray returned the live array itself when the
    # used part is the whole table (every node column in use, or a table adopted from a
    # snapshot), and a snapshot written from it could mix in later writes.
    arrays: Arrays = {
        "cells": stock.cells[:sku_count, :, :node_count].copy(),
        "source_seq": stock.source_seq[:sku_count, :node_count].copy(),
        "present": stock.present[:sku_count, :node_count].copy(),
        **reservation_arrays,
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
        "reservations": reservation_count,
    }
    blobs: Blobs = {
        "meta": json.dumps(meta).encode(),
        "skus": _join(state.skus.names),
        "nodes": json.dumps(nodes).encode(),
        **reservation_blobs,
        "rules": state.rules.text.encode(),
        "supply": _supply_blob(state.supply.by_id.values()),
        "supply_closed": _supply_blob(state.supply.closed.values()),
        "protected": json.dumps(
            {
                rid: state.reservations.protected[state.reservations.find(rid)]
                for rid in sorted(state.protected_reservations)
            }
        ).encode(),
        "loads": state.loads.to_json(),
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
        if meta["format"] not in READABLE_FORMATS:
            raise ValueError(
                f"state format {meta['format']} is not supported (this build reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))}; a newer build wrote it?)"
            )

    if meta["format"] == 1:
        with _entry("reservations"):
            arrays, blobs = upgrade_format_1(arrays, blobs, int(meta["reservations"]))
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
        if sku_names and JOINED_SKUS.fullmatch(blobs["skus"]) is None:
            _check_names(sku_names, ID_PATTERN, "sku")
            raise ValueError("not a list of valid SKUs")
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
    with _entry("source_seq"):
        if arrays["source_seq"].shape != (sku_count, node_count):
            raise ValueError(
                f"shape {arrays['source_seq'].shape}, expected {(sku_count, node_count)}"
            )
    with _entry("present"):
        if arrays["present"].shape != (sku_count, node_count):
            raise ValueError(f"shape {arrays['present'].shape}, expected {(sku_count, node_count)}")
    # The snapshot's own arrays (views into the buffer read from the file) become the table
    # when they can: no copy. Otherwise (a small state under the configured presize, or a
    # converted format) they are copied into a table sized as before.
    if not stock.adopt(cells, arrays["source_seq"], arrays["present"]):
        stock.ensure(max(sku_count, 1), max(node_count, 1))
        stock.cells[:sku_count, :, :node_count] = cells
        stock.source_seq[:sku_count, :node_count] = arrays["source_seq"]
        stock.present[:sku_count, :node_count] = arrays["present"]
    with _entry("present"):
        stock.position_count = int(np.count_nonzero(arrays["present"]))

    _load_reservations(state, arrays, blobs, int(meta["reservations"]))
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
        table = state.reservations
        for reservation_id, records in json.loads(blobs.get("protected", b"{}")).items():
            row = table.find(reservation_id)
            if row < 0 or table.status[row] not in (HELD, CONFIRMED):
                raise ValueError(f"protected units of {shown(reservation_id)}, not open")
            if len(records) != table.line_count[row]:
                raise ValueError(f"protected units of {reservation_id}: not one list per line")
            table.protected[row] = [[(name, units) for name, units in line] for line in records]
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


def _load_reservations(state: AtpState, arrays: Arrays, blobs: Blobs, count: int) -> None:
    """Check every column against the others and fill the table in (core/reservation_columns);
    a problem raises SnapshotContentError naming the entry."""
    blob = blobs["reservation_ids"]
    with _entry("reservation_ids"):
        if count and JOINED_IDS.fullmatch(blob) is None:
            ids = blob.decode(errors="replace").split("\n")
            _check_names(ids, RESERVATION_ID_PATTERN, "reservation id")
            raise ValueError("not a list of valid ids")
        ids = _split(blob, count)
    with _entry("reservation_callers"):
        callers = _callers(blobs.get("reservation_callers", b"[]"))
    with _entry("principals"):
        makers = _makers(blobs)
    if "reservation_principal" not in arrays:
        # No principal recorded (authentication off when it was written): none on any.
        arrays = {**arrays, "reservation_principal": np.full(count, -1, np.int32)}
    rows: dict[str, npt.NDArray[Any]] = {}
    for name in ROW_COLUMNS:
        with _entry(_array_name(name)):
            rows[name] = _column(arrays, _array_name(name), count)
    with _entry("reservation_purge_at_ms"):
        purge_at = _column(arrays, "reservation_purge_at_ms", count)
    with _entry("line_sku"):
        line_total = len(_column(arrays, "line_sku", -1))
    lines: dict[str, npt.NDArray[Any]] = {}
    for name in LINE_COLUMNS:
        with _entry(name):
            lines[name] = _column(arrays, name, line_total)
    status, counts, first = rows["status"], rows["line_count"], rows["first_line"]
    checks: list[tuple[str, bool, str]] = []
    if count:
        checks += [
            (
                "reservation_status",
                not np.isin(status, [int(x) for x in ReservationStatus]).all(),
                "a reservation has an unknown status",
            ),
            (
                "reservation_kind",
                not np.isin(rows["kind"], [int(x) for x in ReservationKind]).all(),
                "a reservation has an unknown kind",
            ),
            (
                "reservation_caller",
                int(rows["caller"].min()) < 0 or int(rows["caller"].max()) >= len(callers),
                "a reservation names a (channel, segment) out of range",
            ),
            (
                "reservation_principal",
                int(rows["maker"].min()) < -1 or int(rows["maker"].max()) >= len(makers),
                "a reservation names a principal out of range",
            ),
            ("reservation_line_count", int(counts.min()) < 1, "a reservation has no lines"),
        ]
    ends = np.cumsum(counts.astype(np.int64))
    checks.append(
        (
            "reservation_first_line",
            not np.array_equal(first, ends - counts) or (ends[-1] if count else 0) != line_total,
            "reservation lines are not contiguous in reservation order",
        )
    )
    if line_total:
        sku, node = lines["line_sku"], lines["line_node"]
        quantity = lines["line_quantity"].astype(np.int64)
        held = lines["line_held"].astype(np.int64)
        fulfilled = lines["line_fulfilled"].astype(np.int64)
        is_open = (status == HELD) | (status == CONFIRMED)
        checks += [
            (
                "line_sku",
                int(sku.min()) < 0 or int(sku.max()) >= len(state.skus),
                "a reservation line names a SKU index out of range",
            ),
            (
                "line_node",
                int(node.min()) < 0 or int(node.max()) >= len(state.nodes),
                "a reservation line names a node index out of range",
            ),
            ("line_quantity", bool((quantity < 1).any()), "a line's quantity is not positive"),
            (
                "line_held",
                bool(
                    (held < 0).any() or (fulfilled < 0).any() or (held + fulfilled > quantity).any()
                ),
                "a line holds or fulfilled less than 0 or more than its quantity",
            ),
            (
                "line_held",
                bool(held[~np.repeat(is_open, counts)].any()),
                "a finished reservation still holds units",
            ),
        ]
    for entry, failed, reason in checks:
        if failed:
            raise SnapshotContentError(entry, reason)
    with _entry("reservation_ids"):
        load_columns(state.reservations, blob, ids, rows, lines, callers, makers, purge_at)
    state.open_reservations = open_count(state.reservations)


def _array_name(column_name: str) -> str:
    """The snapshot entry of a row column ("maker" is the principal, as in the protos)."""
    return "reservation_principal" if column_name == "maker" else f"reservation_{column_name}"


def _column(arrays: Arrays, name: str, count: int) -> npt.NDArray[Any]:
    if name not in arrays:
        raise ValueError(f"{name} is missing")
    values = arrays[name]
    if values.ndim != 1 or (count >= 0 and len(values) != count):
        raise ValueError(f"{name} has shape {values.shape}, expected ({count},)")
    if values.dtype.kind not in "iu":
        raise ValueError(f"{name} has type {values.dtype}, expected integers")
    return values
