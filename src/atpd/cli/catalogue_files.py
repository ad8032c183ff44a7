"""Nodes and supply CSV files for `atpd load FILE --kind nodes|supply`: read and checked line by
line (every problem named by its line number and column), into the rows of a LoadNodes or
LoadSupply request.

nodes.csv:  node_id,kind,geo_path[,ships,pickup,enabled,tags]
    kind: store | warehouse | distribution_center | dark_store | outlet
    ships, pickup, enabled: true/false (also yes/no, 1/0); default true, false, true
    tags: separated by ';' (e.g. flagship;paris)
supply.csv: supply_id,sku,node_id,quantity,eta[,kind]
    eta: 2026-12-03 (midnight UTC), 2026-12-03T14:00:00+01:00 (a time needs its zone), or
         epoch milliseconds
    kind: purchase_order (default; also po) | asn (an advance shipping notice: supply from a
          supplier, recorded as a purchase order with the shipped ETA) | transfer |
          return_in_transit
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from atpd.core.geo import parse_geo_path
from atpd.core.ids import (
    ADD_NODE_HINT,
    ID_PATTERN,
    NODE_ID_PATTERN,
    RESERVATION_ID_PATTERN,
    TAG_PATTERN,
)
from atpd.core.limits import MAX_QUANTITY
from atpd.core.text import shown

NODE_COLUMNS = ("node_id", "kind", "geo_path")
NODE_OPTIONAL = ("ships", "pickup", "enabled", "tags")
SUPPLY_COLUMNS = ("supply_id", "sku", "node_id", "quantity", "eta")
SUPPLY_OPTIONAL = ("kind",)
NODE_KINDS = ("store", "warehouse", "distribution_center", "dark_store", "outlet")
SUPPLY_KINDS = {
    "purchase_order": "SUPPLY_KIND_PURCHASE_ORDER",
    "po": "SUPPLY_KIND_PURCHASE_ORDER",
    "asn": "SUPPLY_KIND_PURCHASE_ORDER",
    "transfer": "SUPPLY_KIND_TRANSFER",
    "return_in_transit": "SUPPLY_KIND_RETURN_IN_TRANSIT",
}
TRUE = frozenset({"true", "yes", "1", "y"})
FALSE = frozenset({"false", "no", "0", "n"})
MAX_TAGS = 16
# A nodes or supply file is small next to a positions file: bound what is read.
MAX_ROWS = 1_000_000


class CatalogueFileError(ValueError):
    """The file cannot be read as such (no header, a bad header): nothing is loaded."""


@dataclass
class Parsed:
    """Valid rows (request messages) with their line numbers, and every problem found."""

    rows: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    read: int = 0

    @property
    def bad_lines(self) -> set[int]:
        return {line for line, _ in self.problems}


def _boolean(text: str, column: str, default: bool) -> bool:
    value = text.strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{column}: {shown(text)} is not true or false")


def _identifier(text: str, pattern: Any, column: str, what: str) -> str:
    value = text.strip()
    if not pattern.fullmatch(value):
        raise ValueError(f"{column}: {shown(text)} is not {what}")
    return value


def _quantity(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"quantity: {shown(text)} is not a whole number") from None
    if not 1 <= value <= MAX_QUANTITY:
        raise ValueError(f"quantity: {value} is not in 1..{MAX_QUANTITY}")
    return value


def parse_eta_ms(text: str) -> int:
    """An ETA as epoch milliseconds: a date (midnight UTC), a datetime with its zone, or
    epoch milliseconds. ValueError saying what is wrong."""
    value = text.strip()
    if value.isdigit():
        eta_ms = int(value)
        if eta_ms <= 0:
            raise ValueError("eta: epoch milliseconds must be > 0")
        return eta_ms
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"eta: {shown(text)} is not a date (2026-12-03), a datetime with its zone "
            "(2026-12-03T14:00:00+01:00) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"eta: {shown(text)} has no time zone: add Z or an offset like +01:00")
    eta_ms = int(moment.timestamp() * 1000)
    if eta_ms <= 0:
        raise ValueError(f"eta: {shown(text)} is before 1970")
    return eta_ms


def _header(reader: Any, required: tuple[str, ...], optional: tuple[str, ...]) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueFileError("line 1: the file is empty (expected a header row)") from None
    columns = [name.strip().lower() for name in header]
    expected = ",".join(required) + "[," + ",".join(optional) + "]"
    for name in required:
        if name not in columns:
            raise CatalogueFileError(
                f"line 1: header: missing column {name!r} (expected {expected})"
            )
    for name in columns:
        if name not in required and name not in optional:
            raise CatalogueFileError(
                f"line 1: header: unknown column {shown(name)} (expected {expected})"
            )
    if len(set(columns)) != len(columns):
        raise CatalogueFileError("line 1: header: a column is named twice")
    return columns


def _read(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    make_row: Callable[[dict[str, str]], Any],
    key: Callable[[Any], str],
    key_name: str,
) -> Parsed:
    parsed = Parsed()
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        columns = _header(reader, required, optional)
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # a blank line
            parsed.read += 1
            if parsed.read > MAX_ROWS:
                raise CatalogueFileError(f"line {line}: more than {MAX_ROWS} rows")
            if len(values) != len(columns):
                parsed.problems.append(
                    (line, f"{len(values)} fields, the header has {len(columns)}")
                )
                continue
            try:
                row = make_row(dict(zip(columns, values, strict=True)))
            except ValueError as error:
                parsed.problems.append((line, str(error)))
                continue
            identifier = key(row)
            earlier = first_line.setdefault(identifier, line)
            if earlier != line:
                parsed.problems.append(
                    (line, f"{key_name}: {identifier!r} is listed again (first at line {earlier})")
                )
                continue
            parsed.rows.append(row)
            parsed.lines.append(line)
    return parsed


def read_nodes(path: Path) -> Parsed:
    """inventory_pb2.Node rows of a nodes file."""
    from atpd.v1 import inventory_pb2

    def make(fields: dict[str, str]) -> Any:
        node_id = _identifier(
            fields["node_id"], NODE_ID_PATTERN, "node_id", "1-64 letters, digits, . _ -"
        )
        kind = fields["kind"].strip().lower()
        if kind not in NODE_KINDS:
            raise ValueError(f"kind: {shown(fields['kind'])} is not one of {', '.join(NODE_KINDS)}")
        geo = fields["geo_path"].strip()
        try:
            parse_geo_path(geo)
        except ValueError as error:
            raise ValueError(f"geo_path: {shown(geo)} {error}") from None
        tags = [t.strip() for t in fields.get("tags", "").split(";") if t.strip()]
        if len(tags) > MAX_TAGS:
            raise ValueError(f"tags: {len(tags)} tags, at most {MAX_TAGS}")
        for tag in tags:
            if not TAG_PATTERN.fullmatch(tag):
                raise ValueError(f"tags: {shown(tag)} is not 1-32 letters, digits, _ -")
        return inventory_pb2.Node(
            node_id=node_id,
            kind=f"NODE_KIND_{kind.upper()}",
            geo_path=geo,
            ships=_boolean(fields.get("ships", ""), "ships", True),
            pickup=_boolean(fields.get("pickup", ""), "pickup", False),
            enabled=_boolean(fields.get("enabled", ""), "enabled", True),
            tags=tags,
        )

    return _read(path, NODE_COLUMNS, NODE_OPTIONAL, make, lambda row: row.node_id, "node_id")


def read_supply(path: Path, known_nodes: Iterable[str]) -> Parsed:
    """supply_pb2.AddSupplyRequest rows of a supply file (purchase orders, ASNs, ...)."""
    from atpd.v1 import supply_pb2

    nodes = frozenset(known_nodes)

    def make(fields: dict[str, str]) -> Any:
        supply_id = _identifier(
            fields["supply_id"],
            RESERVATION_ID_PATTERN,
            "supply_id",
            "1-128 letters, digits, . _ : / @ # -",
        )
        sku = _identifier(fields["sku"], ID_PATTERN, "sku", "1-64 letters, digits, . _ : / -")
        node_id = _identifier(
            fields["node_id"], NODE_ID_PATTERN, "node_id", "1-64 letters, digits, . _ -"
        )
        if node_id not in nodes:
            raise ValueError(f"node_id: unknown node {node_id!r}: {ADD_NODE_HINT}")
        kind = fields.get("kind", "").strip().lower() or "purchase_order"
        if kind not in SUPPLY_KINDS:
            raise ValueError(f"kind: {shown(kind)} is not one of {', '.join(SUPPLY_KINDS)}")
        return supply_pb2.AddSupplyRequest(
            supply_id=supply_id,
            sku=sku,
            node_id=node_id,
            quantity=_quantity(fields["quantity"]),
            eta_ms=parse_eta_ms(fields["eta"]),
            kind=SUPPLY_KINDS[kind],
        )

    return _read(
        path, SUPPLY_COLUMNS, SUPPLY_OPTIONAL, make, lambda row: row.supply_id, "supply_id"
    )
