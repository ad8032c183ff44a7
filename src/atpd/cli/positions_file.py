"""Positions files for `atpd load` and `atpd export`: read and validate rows, write them back.

A positions file is CSV (or Parquet, with pyarrow) with a header row: sku,node_id,on_hand and
optionally safety_stock; the columns `atpd export` adds (reserved, atp) are accepted and ignored,
so an exported file loads as is. Rows are validated in full and reported by line number; valid
rows are kept dictionary-encoded (SKU and node names once, codes per row).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from atpd.core.ids import ADD_NODE_HINT, ID_PATTERN, NODE_ID_PATTERN
from atpd.core.limits import MAX_QUANTITY
from atpd.core.text import shown

REQUIRED_COLUMNS = ("sku", "node_id", "on_hand")
OPTIONAL_COLUMNS = ("safety_stock",)
# Written by `atpd export`, ignored by `atpd load`.
EXPORT_ONLY_COLUMNS = ("reserved", "atp", "last_source_sequence")
EXPORT_COLUMNS = ("sku", "node_id", "on_hand", "safety_stock", "reserved", "atp")
PARQUET_SUFFIXES = (".parquet", ".pq")


class LoadFileError(Exception):
    """The file cannot be read as a positions file at all (not a row problem)."""


@dataclass
class Rows:
    """Valid rows, dictionary-encoded, with the line each came from."""

    sku_names: list[str] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)
    sku: list[int] = field(default_factory=list)
    node: list[int] = field(default_factory=list)
    on_hand: list[int] = field(default_factory=list)
    safety: list[int] = field(default_factory=list)  # -1: not given
    lines: list[int] = field(default_factory=list)
    has_safety: bool = False

    def __len__(self) -> int:
        return len(self.on_hand)


@dataclass
class Problems:
    count: int = 0
    messages: list[tuple[int, str]] = field(default_factory=list)
    bad_lines: set[int] = field(default_factory=set)

    def add(self, line: int, message: str) -> None:
        self.count += 1
        self.bad_lines.add(line)
        self.messages.append((line, message))


def _int_field(value: Any, name: str, low: int) -> tuple[int | None, str]:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip() if value is not None else ""
        if not text or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
            return None, f"{name}: {value!r} is not an integer"
        number = int(text)
    if not low <= number <= MAX_QUANTITY:
        return None, f"{name}: {number} is not in {low}..{MAX_QUANTITY}"
    return number, ""


def _csv_records(
    path: Path, files: ExitStack
) -> tuple[list[str], Iterator[tuple[int, Sequence[Any]]]]:
    source: TextIO = files.enter_context(path.open(newline="", encoding="utf-8"))
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        raise LoadFileError(f"{path}: the file is empty (a header row is required)") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise LoadFileError(f"{path}: line 1: {error}") from None

    def records() -> Iterator[tuple[int, Sequence[Any]]]:
        try:
            for row in reader:
                if row:  # blank lines are skipped
                    yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as error:
            raise LoadFileError(f"{path}: line {reader.line_num}: {error}") from None

    return [name.strip() for name in header], records()


def _parquet_records(path: Path) -> tuple[list[str], Iterator[tuple[int, Sequence[Any]]]]:
    try:
        import pyarrow.parquet as parquet  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise LoadFileError(
            f"{path}: reading Parquet needs pyarrow, which is not installed "
            "(pip install pyarrow, or export the file as CSV)"
        ) from None
    table = parquet.read_table(path)
    header = [str(name) for name in table.column_names]
    columns = [table.column(name).to_pylist() for name in header]

    def records() -> Iterator[tuple[int, Sequence[Any]]]:
        # "Line" numbers count like a CSV file's: the header is line 1, row 0 is line 2.
        for index, row in enumerate(zip(*columns, strict=True)):
            yield index + 2, row

    return header, records()


def read_rows(
    path: Path,
    known_nodes: set[str],
    allowed_nodes: set[str] | None,
) -> tuple[Rows, Problems, int]:
    """Read and validate every row; returns (valid rows, problems, rows read)."""
    with ExitStack() as files:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            header, records = _parquet_records(path)
        else:
            header, records = _csv_records(path, files)
        return _validate(path, header, records, known_nodes, allowed_nodes)


def _validate(
    path: Path,
    header: list[str],
    records: Iterator[tuple[int, Sequence[Any]]],
    known_nodes: set[str],
    allowed_nodes: set[str] | None,
) -> tuple[Rows, Problems, int]:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise LoadFileError(
            f"{path}: line 1: the header lacks {', '.join(missing)} "
            f"(expected {','.join(REQUIRED_COLUMNS)}[,safety_stock])"
        )
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS + EXPORT_ONLY_COLUMNS
    unknown = [name for name in header if name not in known]
    if unknown or len(set(header)) != len(header):
        what = f"unknown column(s) {', '.join(unknown)}" if unknown else "a column named twice"
        raise LoadFileError(f"{path}: line 1: {what} (known: {', '.join(known)})")
    sku_at, node_at, on_hand_at = (header.index(name) for name in REQUIRED_COLUMNS)
    safety_at = header.index("safety_stock") if "safety_stock" in header else -1
    width = len(header)
    rows = Rows(has_safety=safety_at >= 0)
    problems = Problems()
    sku_codes: dict[str, int] = {}
    node_codes: dict[str, int] = {}
    read = 0
    for line, record in records:
        read += 1
        if len(record) != width:
            problems.add(line, f"{len(record)} fields, the header has {width}")
            continue
        errors: list[str] = []
        sku = str(record[sku_at] if record[sku_at] is not None else "").strip()
        sku_code = sku_codes.get(sku)
        if sku_code is None:
            if ID_PATTERN.fullmatch(sku):
                sku_code = sku_codes[sku] = len(rows.sku_names)
                rows.sku_names.append(sku)
            else:
                errors.append(f"sku: {shown(sku)} is not 1-64 letters, digits and . _ : / -")
        node = str(record[node_at] if record[node_at] is not None else "").strip()
        node_code = node_codes.get(node)
        if node_code is None:
            if not NODE_ID_PATTERN.fullmatch(node):
                errors.append(f"node_id: {shown(node)} is not 1-64 letters, digits and . _ -")
            elif node not in known_nodes:
                errors.append(f"node_id: unknown node {node!r}: {ADD_NODE_HINT}")
            elif allowed_nodes is not None and node not in allowed_nodes:
                errors.append(f"node_id: {node!r} is not one of --nodes")
            else:
                node_code = node_codes[node] = len(rows.node_names)
                rows.node_names.append(node)
        on_hand, error = _int_field(record[on_hand_at], "on_hand", 0)
        if error:
            errors.append(error)
        safety = -1
        if safety_at >= 0:
            value = record[safety_at]
            if value is not None and str(value).strip() != "":
                number, error = _int_field(value, "safety_stock", 0)
                if error:
                    errors.append(error)
                else:
                    safety = number  # type: ignore[assignment]
        if errors:
            problems.add(line, "; ".join(errors))
            continue
        assert sku_code is not None and node_code is not None and on_hand is not None
        rows.sku.append(sku_code)
        rows.node.append(node_code)
        rows.on_hand.append(on_hand)
        rows.safety.append(safety)
        rows.lines.append(line)
    return rows, problems, read


def find_repeats(rows: Rows) -> list[tuple[int, int]]:
    """(row, row of its first occurrence) for every position listed again, in file order."""
    if len(rows) < 2:
        return []
    keys = np.array(rows.sku, np.int64) * max(1, len(rows.node_names)) + np.array(rows.node)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    repeat = np.zeros(len(keys), np.bool_)
    repeat[1:] = ordered[1:] == ordered[:-1]
    if not repeat.any():
        return []
    run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(keys))))
    pairs = [(int(order[i]), int(order[run_start[i]])) for i in np.flatnonzero(repeat)]
    pairs.sort()
    return pairs


def drop_rows(rows: Rows, drop: set[int]) -> Rows:
    keep = [i for i in range(len(rows)) if i not in drop]
    return Rows(
        rows.sku_names,
        rows.node_names,
        [rows.sku[i] for i in keep],
        [rows.node[i] for i in keep],
        [rows.on_hand[i] for i in keep],
        [rows.safety[i] for i in keep],
        [rows.lines[i] for i in keep],
        rows.has_safety,
    )


def write_csv(out: TextIO, chunks: Iterator[Any], on_rows: Callable[[int], None]) -> int:
    out.write(",".join(EXPORT_COLUMNS) + "\n")
    total = 0
    for chunk in chunks:
        skus = list(chunk.skus)
        nodes = list(chunk.node_ids)
        lines = [
            f"{skus[s]},{nodes[n]},{o},{f},{r},{a}\n"
            for s, n, o, f, r, a in zip(
                chunk.sku_index,
                chunk.node_index,
                chunk.on_hand,
                chunk.safety_stock,
                chunk.reserved,
                chunk.atp,
                strict=True,
            )
        ]
        out.write("".join(lines))
        total += len(lines)
        on_rows(total)
    return total


def write_parquet(path: Path, chunks: Iterator[Any]) -> int:
    try:
        import pyarrow as arrow  # type: ignore[import-not-found, unused-ignore]
        import pyarrow.parquet as parquet  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise LoadFileError(
            f"{path}: writing Parquet needs pyarrow, which is not installed"
        ) from None
    columns: dict[str, list[Any]] = {name: [] for name in EXPORT_COLUMNS}
    for chunk in chunks:
        skus = list(chunk.skus)
        nodes = list(chunk.node_ids)
        columns["sku"] += [skus[i] for i in chunk.sku_index]
        columns["node_id"] += [nodes[i] for i in chunk.node_index]
        columns["on_hand"] += list(chunk.on_hand)
        columns["safety_stock"] += list(chunk.safety_stock)
        columns["reserved"] += list(chunk.reserved)
        columns["atp"] += list(chunk.atp)
    parquet.write_table(arrow.table(columns), path)
    return len(columns["sku"])
