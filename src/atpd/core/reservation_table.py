"""Every reservation of the state, as columns: one row per reservation, one per line.

A reservation used to be a Python object with lists and tuples (about 3 objects per line and
1 KB per reservation); building a million of them was most of a restart. Here a reservation is
a row of typed arrays (`array.array`: compact, fast to read one item from Python, and viewed as
numpy arrays for bulk work: snapshots, invariants, the digest):

- per row: status (0: a free row), kind, caller (an interned (channel, segment) pair), maker
  (an interned principal, -1: none), ttl, created / updated / expires times, and where its
  lines are (`first_line`, `line_count`);
- per line, in a line arena: SKU and node index, quantity reserved, still held, fulfilled;
- the ids in `ids` (core/id_index.py), open holds by expiry in `expiry` and finished
  reservations by purge time in `retention` (core/row_heap.py);
- what few reservations have, in side dicts keyed by row: the plan of a promised option,
  the protected units taken.

About 54 bytes per row, 18 per line, the id's length plus about 20 for the index, 16 in the
expiry heap while held. Free rows and line blocks (by length) are reused. Readers get a
`ReservationView` (core/reservations.py): a copy of one row, never a live object.

The table changes only through the handlers (core/handlers_reservations.py) and snapshot
loading; it knows nothing of stock.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from atpd.core.commands import Line, Maker, ReservationKind
from atpd.core.id_index import IdIndex
from atpd.core.ids import IdMap
from atpd.core.plan import Plan
from atpd.core.reservations import ReservationStatus, ReservationView
from atpd.core.row_heap import RowHeap

FREE = 0  # status of a row that holds no reservation
STATUS_OF = {int(x): x for x in ReservationStatus}
KIND_OF = {int(x): x for x in ReservationKind}
HELD = int(ReservationStatus.HELD)
CONFIRMED = int(ReservationStatus.CONFIRMED)
OPEN_STATUSES = (HELD, CONFIRMED)
# Capacity grows by an eighth (and at least this much): at most 12.5 % unused.
MIN_GROWTH = 1024

ProtectedRecords = list[list[tuple[str, int]]]


def _not_read() -> ReservationView:
    """What results carry while a journal is replayed (`ReservationTable.answering` off):
    replay throws every result away, so no copy of the row is made for it."""
    view = ReservationView.__new__(ReservationView)
    view.reservation_id = "<not read: replay>"
    view.status = ReservationStatus.HELD
    view.kind = ReservationKind.CART
    view.channel = view.segment = ""
    view.ttl_ms = view.created_at_ms = view.updated_at_ms = view.expires_at_ms = 0
    view.maker = view.plan = view.protected = None
    view.skus, view.nodes, view.quantities, view.held, view.fulfilled = [], [], [], [], []
    view._lines = ()
    view._sku_names = view._node_names = []
    return view


NOT_READ = _not_read()

ROW_COLUMNS = {
    "status": "b",
    "kind": "b",
    "caller": "i",
    "maker": "i",
    "ttl_ms": "q",
    "created_ms": "q",
    "updated_ms": "q",
    "expires_ms": "q",
    "first_line": "q",
    "line_count": "i",
}
LINE_COLUMNS = {
    "line_sku": "i",
    "line_node": "H",  # node indexes are < max_nodes <= 65,535 (core/limits.py)
    "line_quantity": "i",
    "line_held": "i",
    "line_fulfilled": "i",
}


def _grown(capacity: int, needed: int) -> int:
    return max(needed, capacity + max(capacity >> 3, MIN_GROWTH))


class ReservationTable:
    __slots__ = (
        "answering",
        "caller",
        "caller_index",
        "callers",
        "capacity",
        "count",
        "created_ms",
        "expires_ms",
        "expiry",
        "find",
        "first_line",
        "free_lines",
        "free_rows",
        "high",
        "ids",
        "kind",
        "last_maker",
        "last_maker_index",
        "line_capacity",
        "line_count",
        "line_fulfilled",
        "line_held",
        "line_high",
        "line_node",
        "line_quantity",
        "line_sku",
        "maker",
        "maker_index",
        "makers",
        "node_ids",
        "node_names",
        "plans",
        "protected",
        "retention",
        "sku_names",
        "skus",
        "status",
        "ttl_ms",
        "updated_ms",
    )

    def __init__(self, skus: IdMap, node_ids: IdMap) -> None:
        # The state's id maps (append-only), for the names in views.
        self.skus = skus
        self.node_ids = node_ids
        self.sku_names = skus.names  # the live lists
        self.node_names = node_ids.names
        # Results carry a copy of their row (`answer`); off only while a journal is replayed,
        # where every result is thrown away (persistence/recovery.py).
        self.answering = True
        self.status = array("b")
        self.kind = array("b")
        self.caller = array("i")
        self.maker = array("i")
        self.ttl_ms = array("q")
        self.created_ms = array("q")
        self.updated_ms = array("q")
        self.expires_ms = array("q")
        self.first_line = array("q")
        self.line_count = array("i")
        self.line_sku = array("i")
        self.line_node = array("H")
        self.line_quantity = array("i")
        self.line_held = array("i")
        self.line_fulfilled = array("i")
        self.capacity = 0  # rows allocated in every row column
        self.high = 0  # rows 0..high-1 have been used at least once
        self.count = 0  # rows holding a reservation
        self.free_rows = array("i")
        self.line_capacity = 0
        self.line_high = 0
        self.free_lines: dict[int, array[int]] = {}  # line count -> first lines of free blocks
        self.ids = IdIndex()
        # The row of an id, -1 when none (bound here: one call, not two, on every Reserve).
        self.find = self.ids.find
        # Open HELD rows by expiry time; finished rows by purge time (oldest first).
        self.expiry = RowHeap(track_rows=True)
        self.retention = RowHeap(track_rows=False)
        self.callers: list[tuple[str, str]] = []
        self.caller_index: dict[tuple[str, str], int] = {}
        self.makers: list[Maker] = []
        self.maker_index: dict[Maker, int] = {}
        # Most calls come from one principal object (a terminal's): found without hashing it.
        self.last_maker: Maker | None = None
        self.last_maker_index = -1
        self.plans: dict[int, Plan] = {}
        self.protected: dict[int, ProtectedRecords] = {}

    # ------------------------------------------------------------------ reads (a Mapping)

    def __len__(self) -> int:
        return self.count

    def __contains__(self, reservation_id: object) -> bool:
        return isinstance(reservation_id, str) and self.ids.find(reservation_id) >= 0

    def __iter__(self) -> Iterator[str]:
        id_of = self.ids.id_of
        return iter([id_of(row) for row in self.live_rows().tolist()])

    def keys(self) -> list[str]:
        return list(self)

    def get(self, reservation_id: str) -> ReservationView | None:
        row = self.ids.find(reservation_id)
        return None if row < 0 else self.view(row)

    def __getitem__(self, reservation_id: str) -> ReservationView:
        row = self.ids.find(reservation_id)
        if row < 0:
            raise KeyError(reservation_id)
        return self.view(row)

    def values(self) -> Iterator[ReservationView]:
        view = self.view
        return (view(row) for row in self.live_rows().tolist())

    def items(self) -> Iterator[tuple[str, ReservationView]]:
        for view in self.values():
            yield view.reservation_id, view

    def id_of(self, row: int) -> str:
        return self.ids.id_of(row)

    def live_rows(self) -> npt.NDArray[np.int64]:
        """The rows holding a reservation, ascending."""
        return np.flatnonzero(np.frombuffer(self.status, np.int8)[: self.high])

    def line_range(self, row: int) -> range:
        first = self.first_line[row]
        return range(first, first + self.line_count[row])

    def maker_of(self, row: int) -> Maker | None:
        index = self.maker[row]
        return self.makers[index] if index >= 0 else None

    def caller_of(self, row: int) -> tuple[str, str]:
        return self.callers[self.caller[row]]

    def view(self, row: int, reservation_id: str | None = None) -> ReservationView:
        """A copy of the row (`reservation_id`: its id, when the caller has it in hand)."""
        view = self._scalars(row, self.ids.id_of(row) if reservation_id is None else reservation_id)
        first = self.first_line[row]
        count = self.line_count[row]
        if count == 1:  # most carts: a list of one item, not a slice and a list
            view.skus = [self.line_sku[first]]
            view.nodes = [self.line_node[first]]
            view.quantities = [self.line_quantity[first]]
            view.held = [self.line_held[first]]
            view.fulfilled = [self.line_fulfilled[first]]
        else:
            end = first + count
            view.skus = self.line_sku[first:end].tolist()
            view.nodes = self.line_node[first:end].tolist()
            view.quantities = self.line_quantity[first:end].tolist()
            view.held = self.line_held[first:end].tolist()
            view.fulfilled = self.line_fulfilled[first:end].tolist()
        view._lines = None
        return view

    def answer(self, row: int, reservation_id: str | None = None) -> ReservationView:
        """The copy of the row a result carries (NOT_READ while replaying)."""
        return self.view(row, reservation_id) if self.answering else NOT_READ

    def new_view(
        self,
        row: int,
        reservation_id: str,
        kind: ReservationKind,
        channel: str,
        segment: str,
        maker: int,
        ttl_ms: int,
        now_ms: int,
        lines: tuple[Line, ...],
        skus: list[int],
        nodes: list[int],
        quantities: list[int],
    ) -> ReservationView:
        """A copy of a HELD row just inserted and still holding all its lines (Reserve's
        answer), from what the caller has in hand: no read back of the row (the lists are
        kept: not to be changed after)."""
        view = ReservationView.__new__(ReservationView)
        view.reservation_id = reservation_id
        view.status = ReservationStatus.HELD
        view.kind = kind
        view.channel = channel
        view.segment = segment
        view.ttl_ms = ttl_ms
        view.created_at_ms = view.updated_at_ms = now_ms
        view.expires_at_ms = now_ms + ttl_ms
        view.maker = self.makers[maker] if maker >= 0 else None
        view.plan = self.plans.get(row) if self.plans else None
        records = self.protected.get(row) if self.protected else None
        view.protected = None if records is None else [list(line) for line in records]
        view.skus = skus
        view.nodes = nodes
        view.quantities = quantities
        view.held = quantities[:]
        view.fulfilled = [0] * len(quantities)
        view._lines = lines
        view._sku_names = self.sku_names
        view._node_names = self.node_names
        return view

    def _scalars(self, row: int, reservation_id: str) -> ReservationView:
        view = ReservationView.__new__(ReservationView)
        view.reservation_id = reservation_id
        status = self.status[row]
        assert status != FREE, row
        view.status = STATUS_OF[status]
        view.kind = KIND_OF[self.kind[row]]
        view.channel, view.segment = self.callers[self.caller[row]]
        view.ttl_ms = self.ttl_ms[row]
        view.created_at_ms = self.created_ms[row]
        view.updated_at_ms = self.updated_ms[row]
        view.expires_at_ms = self.expires_ms[row]
        maker = self.maker[row]
        view.maker = self.makers[maker] if maker >= 0 else None
        view.plan = self.plans.get(row) if self.plans else None
        records = self.protected.get(row) if self.protected else None
        view.protected = None if records is None else [list(line) for line in records]
        view._sku_names = self.sku_names
        view._node_names = self.node_names
        return view

    # ------------------------------------------------------------------ writes

    def intern_caller(self, channel: str, segment: str) -> int:
        key = (channel, segment)
        index = self.caller_index.get(key)
        if index is None:
            index = self.caller_index[key] = len(self.callers)
            self.callers.append(key)
        return index

    def intern_maker(self, maker: Maker | None) -> int:
        if maker is None:
            return -1
        if maker is self.last_maker:
            return self.last_maker_index
        index = self.maker_index.get(maker)
        if index is None:
            index = self.maker_index[maker] = len(self.makers)
            self.makers.append(maker)
        self.last_maker, self.last_maker_index = maker, index
        return index

    def insert(
        self,
        reservation_id: str,
        kind: ReservationKind,
        caller: int,
        maker: int,
        ttl_ms: int,
        now_ms: int,
        skus: Sequence[int],
        nodes: Sequence[int],
        quantities: Sequence[int],
    ) -> int:
        """A new HELD row (not yet in the expiry heap: the caller decides); returns it."""
        # The hot path of Reserve: every column written once; one line (the most common
        # cart) is written without a loop (`_write_lines`).
        free_rows = self.free_rows
        if free_rows:
            row = free_rows.pop()
        else:
            row = self.high
            if row == self.capacity:
                self.grow_rows(row + 1)
            self.high = row + 1
        self.ids.add(reservation_id, row)
        self.status[row] = HELD
        self.kind[row] = kind
        self.caller[row] = caller
        self.maker[row] = maker
        self.ttl_ms[row] = ttl_ms
        self.created_ms[row] = now_ms
        self.updated_ms[row] = now_ms
        self.expires_ms[row] = now_ms + ttl_ms
        self._write_lines(row, skus, nodes, quantities)
        self.count += 1
        return row

    def replace_lines(
        self, row: int, skus: Sequence[int], nodes: Sequence[int], quantities: Sequence[int]
    ) -> None:
        """Give `row` new lines, all held, none fulfilled (the old block is freed; the new
        one may be elsewhere). For amending a HELD reservation: the caller moves the stock."""
        self._free_lines(row)
        self._write_lines(row, skus, nodes, quantities)

    def delete(self, row: int) -> None:
        """Forget a finished reservation (not in the expiry heap nor the retention heap)."""
        status = self.status[row]
        assert status != FREE and status not in (HELD, CONFIRMED), (row, status)
        assert not self.expiry.contains(row), row
        self.ids.remove(row)
        self._free_lines(row)
        self.status[row] = FREE
        self.maker[row] = -1
        if self.plans:
            self.plans.pop(row, None)
        if self.protected:
            self.protected.pop(row, None)
        self.free_rows.append(row)
        self.count -= 1

    def _write_lines(
        self, row: int, skus: Sequence[int], nodes: Sequence[int], quantities: Sequence[int]
    ) -> None:
        count = len(quantities)
        free = self.free_lines.get(count)
        if free:
            first = free.pop()
        else:
            first = self.line_high
            if first + count > self.line_capacity:
                self.grow_lines(first + count)
            self.line_high = first + count
        self.first_line[row] = first
        self.line_count[row] = count
        assert len(skus) == len(nodes) == count, (skus, nodes, quantities)
        if count == 1:
            self.line_sku[first] = skus[0]
            self.line_node[first] = nodes[0]
            quantity = quantities[0]
            self.line_quantity[first] = quantity
            self.line_held[first] = quantity
            self.line_fulfilled[first] = 0
            return
        line_sku, line_node, line_quantity = self.line_sku, self.line_node, self.line_quantity
        line_held, line_fulfilled = self.line_held, self.line_fulfilled
        for k in range(count):  # by index: a third cheaper than a strict zip of three
            at = first + k
            quantity = quantities[k]
            line_sku[at] = skus[k]
            line_node[at] = nodes[k]
            line_quantity[at] = quantity
            line_held[at] = quantity
            line_fulfilled[at] = 0

    def _free_lines(self, row: int) -> None:
        count = self.line_count[row]
        free = self.free_lines.get(count)
        if free is None:
            free = self.free_lines[count] = array("q")
        free.append(self.first_line[row])

    def grow_rows(self, needed: int) -> None:
        capacity = _grown(self.capacity, needed)
        grow = capacity - self.capacity
        for name, code in ROW_COLUMNS.items():
            column: array[int] = getattr(self, name)
            column.frombytes(bytes(grow * array(code).itemsize))
        self.ids.grow_rows(capacity)
        self.expiry.grow_rows(capacity)
        self.capacity = capacity

    def grow_lines(self, needed: int) -> None:
        capacity = _grown(self.line_capacity, needed)
        grow = capacity - self.line_capacity
        for name in LINE_COLUMNS:
            column: array[int] = getattr(self, name)
            column.frombytes(bytes(grow * column.itemsize))
        self.line_capacity = capacity

    # ------------------------------------------------------------------ time

    def next_expiry_ms(self) -> int | None:
        return self.expiry.min_key()

    def pop_expired(self, now_ms: int) -> list[int]:
        """Remove from the expiry heap and return every hold with expires_at_ms <= now_ms,
        ordered by (expiry time, id)."""
        due = self.expiry.pop_until(now_ms)
        if len(due) > 1:
            expires, id_of = self.expires_ms, self.ids.id_of
            due.sort(key=lambda row: (expires[row], id_of(row)))
        return due

    def pop_purged(self, now_ms: int) -> list[int]:
        """Remove from retention every finished row whose purge time is <= now_ms."""
        return self.retention.pop_until(now_ms)

    def pop_oldest_retained(self, count: int) -> list[int]:
        """Remove from retention the `count` oldest finished rows, by (purge time, id)."""
        retention, id_of = self.retention, self.ids.id_of
        if count == 1:
            # Every closing at the cap evicts one: found among the ties, nothing pushed back.
            return [retention.pop_first_by(id_of)[1]]
        rows: list[int] = []
        while len(rows) < count:
            key, row = retention.pop_first()
            group = [row]
            while len(retention) and retention.min_key() == key:
                group.append(retention.pop_first()[1])
            if len(group) > 1:
                group.sort(key=id_of)
            needed = count - len(rows)
            rows.extend(group[:needed])
            for kept in group[needed:]:
                retention.push(key, kept)
        return rows

    def retention_order(self) -> list[tuple[int, str]]:
        """(purge time, id) of every retained row, oldest first (tests, diagnostics)."""
        keys, rows = self.retention.entries()
        id_of = self.ids.id_of
        return sorted(zip(keys.tolist(), [id_of(row) for row in rows.tolist()], strict=True))
