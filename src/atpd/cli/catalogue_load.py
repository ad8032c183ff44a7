"""`atpd load FILE --kind nodes|supply`: a nodes or supply CSV file into a running server.

As a positions load: every row is checked first and problems are reported by line number;
nothing is sent while a row is invalid unless --skip-invalid. The server applies the file as
one journaled step (all rows or none) and remembers its load id, derived by default from the
file content and kind, so running the same command twice applies it once.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from atpd.cli.catalogue_files import CatalogueFileError, Parsed, read_nodes, read_supply
from atpd.cli.client import call_or_exit, open_channel
from atpd.files import FileRefused, check_regular_file

ERRORS_SHOWN = 20


def catalogue_load_id(path: Path, kind: str) -> str:
    """Same file, same kind -> same id: re-running the command is answered, not re-applied."""
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    digest.update(kind.encode())
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem)[:64] or "load"
    if not stem[0].isalnum():
        stem = "f" + stem
    return f"{stem}-{kind}-{digest.hexdigest()}"


def _report(parsed: Parsed, path: Path) -> None:
    for line, message in sorted(parsed.problems)[:ERRORS_SHOWN]:
        print(f"{path}: line {line}: {message}", file=sys.stderr)
    if len(parsed.problems) > ERRORS_SHOWN:
        print(f"  ... and {len(parsed.problems) - ERRORS_SHOWN} more", file=sys.stderr)
    bad = len(parsed.bad_lines)
    print(
        f"{len(parsed.problems)} problem(s) on {bad} of {parsed.read} rows; "
        f"{parsed.read - bad} rows are valid",
        file=sys.stderr,
    )


def cmd_catalogue_load(args: argparse.Namespace) -> int:
    from atpd.v1 import inventory_pb2, inventory_pb2_grpc, store_pb2, store_pb2_grpc

    path: Path = args.file
    kind: str = args.kind
    try:
        check_regular_file(path, "load input")
    except FileRefused as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1
    channel = open_channel(args)
    deadline = args.timeout or None
    started = time.perf_counter()
    try:
        if kind == "nodes":
            parsed = read_nodes(path)
        else:
            listed = call_or_exit(
                lambda: inventory_pb2_grpc.InventoryServiceStub(channel).ListNodes(
                    inventory_pb2.ListNodesRequest(), timeout=deadline
                )
            )
            parsed = read_supply(path, (node.node_id for node in listed.nodes))
    except (CatalogueFileError, OSError, UnicodeDecodeError) as error:
        print(f"atpd: {path}: {error}", file=sys.stderr)
        return 1
    if parsed.problems:
        _report(parsed, path)
        if not args.skip_invalid:
            print("nothing was sent (--skip-invalid loads the valid rows)", file=sys.stderr)
            return 1
    if not parsed.rows:
        print(f"atpd: {path}: no valid rows to load", file=sys.stderr)
        return 1
    load_id = args.load_id or catalogue_load_id(path, kind)
    print(
        f"  {len(parsed.rows):,} {kind} rows read and checked in "
        f"{time.perf_counter() - started:.2f} s; sending load {load_id}",
        file=sys.stderr,
    )
    stub = store_pb2_grpc.StoreServiceStub(channel)
    if kind == "nodes":
        nodes_request = store_pb2.LoadNodesRequest(load_id=load_id, nodes=parsed.rows)
        response = call_or_exit(lambda: stub.LoadNodes(nodes_request, timeout=deadline))
    else:
        supply_request = store_pb2.LoadSupplyRequest(load_id=load_id, rows=parsed.rows)
        response = call_or_exit(lambda: stub.LoadSupply(supply_request, timeout=deadline))
    state = "already applied: stored summary" if response.replayed else "applied"
    print(f"load {response.load_id}: {kind.upper()} {state}")
    created = "nodes created" if kind == "nodes" else "supplies added"
    summary: list[tuple[str, int]] = [
        ("rows", response.rows),
        (created, response.created),
    ]
    if kind == "nodes":
        summary.append(("nodes updated", response.updated))
    summary += [
        ("rows unchanged", response.unchanged),
        ("rows skipped as invalid", len(parsed.bad_lines)),
    ]
    width = max(len(key) for key, _ in summary)
    for key, value in summary:
        print(f"  {key.ljust(width)}  {value:,}")
    return 0
