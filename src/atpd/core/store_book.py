"""What store operations leave in the state besides stock: the receipt ids already recorded
(idempotent retries), the discrepancies forced sales found, and returned units waiting for
inspection. Pure data with bounded sizes; the handlers are in core/handlers_store.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from atpd.core.ids import is_load_id, is_node_id, is_reservation_id, is_sku_id
from atpd.core.limits import MAX_QUANTITY

# Kinds of recorded ids (one namespace: a return may not reuse a sale's receipt id).
RECEIPT_SALE = "sale"
RECEIPT_RETURN = "return"
RECEIPT_EXCHANGE = "exchange"
RECEIPT_RELEASE = "release"
RECEIPT_KINDS = frozenset({RECEIPT_SALE, RECEIPT_RETURN, RECEIPT_EXCHANGE, RECEIPT_RELEASE})


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """A forced sale sold more than the system counted at one (SKU, node)."""

    sequence: int
    receipt_id: str
    sku: str
    node_id: str
    expected: int  # on_hand just before the sale
    sold: int
    sold_at_ms: int  # the till's time
    recorded_at_ms: int  # the server's apply time
    terminal_id: str

    @property
    def missing(self) -> int:
        return self.sold - self.expected

    def row(self) -> list[Any]:
        return [
            self.sequence,
            self.receipt_id,
            self.sku,
            self.node_id,
            self.expected,
            self.sold,
            self.sold_at_ms,
            self.recorded_at_ms,
            self.terminal_id,
        ]


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: str
    fingerprint: str
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """An applied nodes or supply load: what a retry of its id answers."""

    kind: str  # LOAD_NODES or LOAD_SUPPLY
    fingerprint: str
    rows: int
    created: int
    updated: int
    unchanged: int


LOAD_NODES = "nodes"
LOAD_SUPPLY = "supply"


def fingerprint(command: object) -> str:
    """A stable digest of a command's content (the same in every process, unlike `hash`)."""
    return hashlib.blake2b(repr(command).encode(), digest_size=12).hexdigest()


class StoreBook:
    def __init__(self) -> None:
        # Recorded ids in recording order (the oldest is forgotten first past the limit).
        self.receipts: dict[str, Receipt] = {}
        self.discrepancies: deque[Discrepancy] = deque()
        self.discrepancy_sequence = 0
        # Units to inspect per (sku, node_id): returned, not sellable until released.
        self.inspection: dict[tuple[str, str], int] = {}
        # Applied nodes and supply loads by (kind, load id), oldest first.
        self.loads: dict[tuple[str, str], LoadRecord] = {}

    def __bool__(self) -> bool:
        return bool(self.receipts or self.discrepancies or self.inspection or self.loads)

    def remember_load(self, load_id: str, record: LoadRecord, max_loads: int) -> None:
        key = (record.kind, load_id)
        assert key not in self.loads, key
        while len(self.loads) >= max_loads:
            del self.loads[next(iter(self.loads))]
        self.loads[key] = record

    @property
    def forgotten_discrepancies(self) -> int:
        return self.discrepancy_sequence - len(self.discrepancies)

    def remember(self, receipt_id: str, receipt: Receipt, max_receipts: int) -> None:
        assert receipt_id not in self.receipts, receipt_id
        while len(self.receipts) >= max_receipts:
            del self.receipts[next(iter(self.receipts))]
        self.receipts[receipt_id] = receipt

    def add_discrepancy(
        self,
        receipt_id: str,
        sku: str,
        node_id: str,
        expected: int,
        sold: int,
        sold_at_ms: int,
        recorded_at_ms: int,
        terminal_id: str,
        max_discrepancies: int,
    ) -> Discrepancy:
        assert 0 <= expected < sold, (expected, sold)
        self.discrepancy_sequence += 1
        record = Discrepancy(
            self.discrepancy_sequence,
            receipt_id,
            sku,
            node_id,
            expected,
            sold,
            sold_at_ms,
            recorded_at_ms,
            terminal_id,
        )
        self.discrepancies.append(record)
        while len(self.discrepancies) > max_discrepancies:
            self.discrepancies.popleft()
        return record

    def add_inspection(self, sku: str, node_id: str, quantity: int) -> None:
        key = (sku, node_id)
        total = self.inspection.get(key, 0) + quantity
        assert 0 < total <= MAX_QUANTITY, (key, total)
        self.inspection[key] = total

    def take_inspection(self, sku: str, node_id: str, quantity: int) -> None:
        key = (sku, node_id)
        left = self.inspection[key] - quantity
        assert left >= 0, (key, left)
        if left:
            self.inspection[key] = left
        else:
            del self.inspection[key]

    # ------------------------------------------------------------------ snapshot and digest

    def to_json(self) -> bytes:
        """Everything, in a canonical order (the digest hashes it, snapshots store it)."""
        document: dict[str, Any] = {
            "receipts": [
                [receipt_id, r.kind, r.fingerprint, r.recorded_at_ms]
                for receipt_id, r in self.receipts.items()
            ],
            "discrepancy_sequence": self.discrepancy_sequence,
            "discrepancies": [d.row() for d in self.discrepancies],
            "inspection": [
                [sku, node, units] for (sku, node), units in sorted(self.inspection.items())
            ],
        }
        if self.loads:  # only once there are some: digests of states without them stay
            document["loads"] = [
                [load_id, r.kind, r.fingerprint, r.rows, r.created, r.updated, r.unchanged]
                for (_, load_id), r in self.loads.items()
            ]
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> StoreBook:
        """The book a snapshot holds; ValueError saying what is wrong."""
        document = json.loads(blob)
        book = cls()
        for receipt_id, kind, digest, at_ms in document["receipts"]:
            if not is_reservation_id(receipt_id) or kind not in RECEIPT_KINDS:
                raise ValueError(f"receipt {receipt_id!r}: bad id or kind {kind!r}")
            if not isinstance(digest, str) or not isinstance(at_ms, int):
                raise ValueError(f"receipt {receipt_id!r}: bad fingerprint or time")
            if receipt_id in book.receipts:
                raise ValueError(f"receipt {receipt_id!r} is listed twice")
            book.receipts[receipt_id] = Receipt(kind, digest, at_ms)
        book.discrepancy_sequence = int(document["discrepancy_sequence"])
        previous = 0
        for row in document["discrepancies"]:
            if len(row) != 9:
                raise ValueError(f"discrepancy {row!r}: expected 9 fields")
            record = Discrepancy(*row)
            if not (previous < record.sequence <= book.discrepancy_sequence):
                raise ValueError(f"discrepancy {record.sequence}: out of sequence")
            if not (is_sku_id(record.sku) and is_node_id(record.node_id)):
                raise ValueError(f"discrepancy {record.sequence}: bad sku or node id")
            if not 0 <= record.expected < record.sold <= MAX_QUANTITY:
                raise ValueError(f"discrepancy {record.sequence}: bad expected or sold")
            previous = record.sequence
            book.discrepancies.append(record)
        for sku, node_id, units in document["inspection"]:
            if not (is_sku_id(sku) and is_node_id(node_id)):
                raise ValueError(f"inspection {sku!r}@{node_id!r}: bad sku or node id")
            if not (isinstance(units, int) and 0 < units <= MAX_QUANTITY):
                raise ValueError(f"inspection {sku}@{node_id}: bad quantity {units!r}")
            book.inspection[(sku, node_id)] = units
        for load_id, kind, digest, *counts in document.get("loads", []):
            if not is_load_id(load_id) or kind not in (LOAD_NODES, LOAD_SUPPLY):
                raise ValueError(f"load {load_id!r}: bad id or kind {kind!r}")
            if len(counts) != 4 or not all(isinstance(x, int) and x >= 0 for x in counts):
                raise ValueError(f"load {load_id!r}: bad counts {counts!r}")
            book.loads[(kind, load_id)] = LoadRecord(kind, str(digest), *counts)
        return book
