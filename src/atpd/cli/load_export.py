"""`atpd load` and `atpd export`: positions in and out of a running server as CSV (or Parquet).

    atpd load FILE --mode full|delta [--nodes N1,N2] [--source-sequence S] [--skip-invalid]
    atpd load nodes.csv --kind nodes ;  atpd load supply.csv --kind supply  (cli/catalogue_load.py)
    atpd export FILE [--channel C --segment S] [--nodes N1,N2] [--geo PREFIX]

`load` reads the whole file and validates every row first (SKU and node ids, quantities, known
nodes, duplicate positions), reporting problems by line number; nothing is sent while any row
is invalid unless --skip-invalid. The valid rows then stream to FeedService.BulkLoad in
dictionary-encoded chunks, with progress on stderr, and the server applies them atomically.
The default load id is derived from the file content and the options, so running the same
command twice applies the load once (the second run prints the stored summary).

`export` writes sku,node_id,on_hand,safety_stock,reserved,atp; `load` accepts such a file
as is (reserved and atp are ignored), so export -> load -> export gives back the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from atpd.cli.catalogue_load import cmd_catalogue_load
from atpd.cli.client import call_or_exit, open_channel
from atpd.cli.positions_file import (
    PARQUET_SUFFIXES,
    LoadFileError,
    Problems,
    Rows,
    drop_rows,
    find_repeats,
    read_rows,
    write_csv,
    write_parquet,
)
from atpd.core.limits import Limits
from atpd.files import FileRefused, check_regular_file

ERRORS_SHOWN = 20
NODES_SHOWN = 8
# The server's default max_load_chunk_rows: a chunk that size fits its default
# max_receive_message_bytes whatever the ids (config.max_load_chunk_bytes).
DEFAULT_CHUNK_ROWS = Limits().max_load_chunk_rows
PROGRESS_INTERVAL_S = 0.25


class Progress:
    """rows sent / total and rows per second on one stderr line, redrawn a few times a second."""

    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream
        self.started = time.perf_counter()
        self._shown_at = 0.0

    def update(self, sent: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._shown_at < PROGRESS_INTERVAL_S:
            return
        self._shown_at = now
        elapsed = now - self.started
        rate = sent / elapsed if elapsed > 0 else 0.0
        share = sent / self.total if self.total else 1.0
        filled = int(share * 30)
        self.stream.write(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {sent:,}/{self.total:,} rows "
            f"{share:4.0%}  {rate:,.0f} rows/s"
        )
        self.stream.flush()

    def done(self, note: str) -> None:
        if self.enabled:
            self.update(self.total, force=True)
            self.stream.write(f"\n  {note}\n")
            self.stream.flush()


def chunk_messages(rows: Rows, chunk_rows: int) -> Iterator[Any]:
    """PositionChunk messages with per-chunk SKU and node dictionaries."""
    from atpd.v1 import feeds_pb2

    sku = np.array(rows.sku, np.int64)
    node = np.array(rows.node, np.int64)
    on_hand = np.array(rows.on_hand, np.int64)
    safety = np.array(rows.safety, np.int64)
    sku_names, node_names = rows.sku_names, rows.node_names
    for start in range(0, len(rows), chunk_rows):
        end = start + chunk_rows
        sku_used, sku_index = np.unique(sku[start:end], return_inverse=True)
        node_used, node_index = np.unique(node[start:end], return_inverse=True)
        chunk = feeds_pb2.PositionChunk(
            skus=[sku_names[i] for i in sku_used.tolist()],
            sku_index=sku_index.tolist(),
            node_ids=[node_names[i] for i in node_used.tolist()],
            node_index=node_index.tolist(),
            on_hand=on_hand[start:end].tolist(),
        )
        if rows.has_safety:
            chunk.safety_stock.extend(safety[start:end].tolist())
        yield chunk


def default_load_id(path: Path, args: argparse.Namespace, scope: Sequence[str]) -> str:
    """Same file, same options -> same id, so re-running a load is answered, not re-applied."""
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    options = f"{args.mode}|{args.source_sequence}|{','.join(sorted(scope))}|{args.skip_invalid}"
    digest.update(options.encode())
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem)[:64] or "load"
    if not stem[0].isalnum():
        stem = "f" + stem
    return f"{stem}-{digest.hexdigest()}"


def _print_problems(problems: Problems, path: Path, read: int, out: TextIO) -> None:
    for line, message in sorted(problems.messages)[:ERRORS_SHOWN]:
        out.write(f"{path}: line {line}: {message}\n")
    if problems.count > ERRORS_SHOWN:
        out.write(f"  ... and {problems.count - ERRORS_SHOWN} more\n")
    out.write(
        f"{problems.count} problem(s) on {len(problems.bad_lines)} of {read} rows; "
        f"{read - len(problems.bad_lines)} rows are valid\n"
    )


def cmd_load(args: argparse.Namespace) -> int:
    from atpd.v1 import feeds_pb2, feeds_pb2_grpc, inventory_pb2, inventory_pb2_grpc

    if args.kind != "positions":
        return cmd_catalogue_load(args)
    if args.mode is None:
        print("atpd load: --mode full|delta is required for a positions file", file=sys.stderr)
        return 2
    path: Path = args.file
    if args.chunk_rows < 1:
        print("atpd: --chunk-rows must be >= 1", file=sys.stderr)
        return 2
    try:
        check_regular_file(path, "load input")
    except FileRefused as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1
    mode = args.mode
    scope = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else []
    channel = open_channel(args)
    deadline = args.timeout or None
    listed = call_or_exit(
        lambda: inventory_pb2_grpc.InventoryServiceStub(channel).ListNodes(
            inventory_pb2.ListNodesRequest(), timeout=deadline
        )
    )
    known_nodes = {node.node_id for node in listed.nodes}
    unknown_scope = [n for n in scope if n not in known_nodes]
    if unknown_scope:
        print(f"atpd: --nodes: unknown node(s) {', '.join(unknown_scope)}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        rows, problems, read = read_rows(path, known_nodes, set(scope) if scope else None)
    except (LoadFileError, OSError) as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1
    repeats = find_repeats(rows)
    for row, first in repeats:
        problems.add(rows.lines[row], f"position listed again (first at line {rows.lines[first]})")
    if problems.count:
        _print_problems(problems, path, read, sys.stderr)
        if not args.skip_invalid:
            print("nothing was sent (--skip-invalid loads the valid rows)", file=sys.stderr)
            return 1
        rows = drop_rows(rows, {row for row, _ in repeats})
    if mode == "full" and not scope:
        scope = list(rows.node_names)
        shown = ", ".join(scope[:NODES_SHOWN]) + (", ..." if len(scope) > NODES_SHOWN else "")
        print(f"FULL load of the {len(scope)} node(s) in the file: {shown}", file=sys.stderr)
        if not scope:
            print("atpd: a FULL load with no rows needs --nodes", file=sys.stderr)
            return 1
    load_id = args.load_id or default_load_id(path, args, scope)
    header = feeds_pb2.BulkLoadHeader(
        load_id=load_id,
        mode=feeds_pb2.LOAD_MODE_FULL if mode == "full" else feeds_pb2.LOAD_MODE_DELTA,
        source_sequence=args.source_sequence,
        node_ids=scope if mode == "full" else [],
    )
    read_seconds = time.perf_counter() - started
    progress = Progress(len(rows), args.progress or sys.stderr.isatty(), sys.stderr)

    def requests() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield feeds_pb2.BulkLoadRequest(header=header)
        sent = chunks = 0
        for chunk in chunk_messages(rows, args.chunk_rows):
            yield feeds_pb2.BulkLoadRequest(chunk=chunk)
            sent += len(chunk.on_hand)
            chunks += 1
            progress.update(sent)
        yield feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=sent, chunks=chunks))

    stub = feeds_pb2_grpc.FeedServiceStub(channel)
    try:
        response = call_or_exit(lambda: stub.BulkLoad(requests(), timeout=deadline))
    except SystemExit:
        if progress.enabled:
            sys.stderr.write("\n")
        raise
    progress.done("sent; applied atomically by the server")
    sequence = (
        str(response.source_sequence)
        if response.source_sequence
        else "none (positions overwritten, their sequences unchanged)"
    )
    state = "already applied: stored summary" if response.replayed else "applied"
    print(f"load {response.load_id}: {mode.upper()} {state}")
    summary: list[tuple[str, object]] = [
        ("rows", response.rows),
        ("chunks", response.chunks),
        ("positions written", response.positions_written),
        ("positions changed", response.positions_changed),
        ("positions zeroed", response.positions_zeroed),
        ("positions stale (kept)", response.positions_stale),
        ("new SKUs", response.skus_created),
        ("rows skipped as invalid", len(problems.bad_lines)),
        ("source sequence", sequence),
        ("seconds reading the file", round(read_seconds, 2)),
        ("seconds streaming and applying", round(response.seconds, 2)),
    ]
    if response.seconds > 0 and not response.replayed:
        summary.append(("rows/s", int(response.rows / response.seconds)))
    width = max(len(key) for key, _ in summary)
    for key, value in summary:
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"  {key.ljust(width)}  {shown}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from atpd.v1 import feeds_pb2, feeds_pb2_grpc

    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else []
    request = feeds_pb2.ExportPositionsRequest(
        node_ids=nodes,
        geo_prefix=args.geo or "",
        channel=args.channel or "",
        segment=args.segment or "",
    )
    stub = feeds_pb2_grpc.FeedServiceStub(open_channel(args))
    started = time.perf_counter()
    to_stdout = str(args.file) == "-"
    progress = Progress(0, (args.progress or sys.stderr.isatty()) and not to_stdout, sys.stderr)

    def shown(total: int) -> None:
        progress.total = total
        progress.update(total)

    def export() -> int:
        chunks = stub.ExportPositions(request, timeout=args.timeout or None)
        if to_stdout:
            return write_csv(sys.stdout, chunks, shown)
        if args.file.suffix.lower() in PARQUET_SUFFIXES:
            return write_parquet(args.file, chunks)
        temp = args.file.with_name(args.file.name + ".part")
        with temp.open("w", encoding="utf-8", newline="") as out:
            count = write_csv(out, chunks, shown)
        temp.replace(args.file)
        return count

    try:
        count = call_or_exit(export)
    except (LoadFileError, OSError) as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    progress.done(f"{count:,} positions in {seconds:.2f} s")
    if not to_stdout:
        print(f"{count} positions written to {args.file} in {seconds:.2f} s")
    return 0


def _no_deadline(parser: argparse.ArgumentParser) -> None:
    """Loads and exports of millions of rows take as long as they take: no default deadline."""
    for action in parser._actions:
        if action.dest == "timeout":
            action.default = 0.0
            action.help = "seconds (default: no deadline)"


def add_feed_commands(
    client: Callable[[str, str], argparse.ArgumentParser],
) -> None:
    """Register `load` and `export` through entry.build_parser's client-parser factory."""
    p = client("load", "load positions, nodes or supply from a CSV file, atomically")
    p.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="header row: sku,node_id,on_hand[,...] (positions; also Parquet); "
        "node_id,kind,geo_path[,ships,pickup,enabled,tags] (nodes); "
        "supply_id,sku,node_id,quantity,eta[,kind] (supply)",
    )
    p.add_argument(
        "--kind",
        choices=("positions", "nodes", "supply"),
        default="positions",
        help="what the file holds (default positions); nodes and supply files are applied as "
        "one step, all rows or none",
    )
    p.add_argument("--mode", choices=("full", "delta"), help=MODE_HELP + " (positions only)")
    p.add_argument(
        "--nodes",
        help="N1,N2: FULL: the nodes the load replaces (default: those in the file); "
        "DELTA: rows elsewhere are invalid",
    )
    p.add_argument(
        "--source-sequence",
        type=int,
        default=0,
        metavar="S",
        help="the feed's sequence for the whole load: positions whose last sequence is >= S "
        "keep their value; default 0: unsequenced (overwrite, sequences unchanged)",
    )
    p.add_argument("--load-id", help="idempotency key (default: from the file content and options)")
    p.add_argument(
        "--skip-invalid", action="store_true", help="load the valid rows even if some are not"
    )
    p.add_argument("--progress", action="store_true", help="show progress even when not a TTY")
    p.add_argument(
        "--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per streamed chunk"
    )
    _no_deadline(p)
    p.set_defaults(func=cmd_load)

    p = client("export", "write the current positions (and ATP) to a CSV file ('-': stdout)")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--channel", help="ATP as offered to this sales channel")
    p.add_argument("--segment", help="ATP as offered to this customer segment")
    p.add_argument("--nodes", help="N1,N2: only these nodes")
    p.add_argument("--geo", help="only nodes under this geo prefix, e.g. EU/FR")
    p.add_argument("--progress", action="store_true", help="show progress even when not a TTY")
    _no_deadline(p)
    p.set_defaults(func=cmd_export)


MODE_HELP = (
    "full: the file replaces every position of the nodes it covers (absent ones get on_hand "
    "0); delta: only the listed positions change. Reservations are kept either way."
)
