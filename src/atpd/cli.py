"""The `atpd` command: run the server, and small human-facing client commands.

atpd serve [--config FILE] [--demo] [--port N] ...
atpd availability SKU... [--geo EU/FR] [--nodes]    readable tables
atpd reserve ID SKU@NODE=QTY... [--ttl 15m]
atpd confirm | release | get ID ;  atpd fulfil ID [SKU@NODE=QTY...]
atpd nodes [--geo PREFIX] ;  atpd status
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from atpd import __version__

DEFAULT_TARGET = "127.0.0.1:50051"
DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
LINE = re.compile(r"^([^@=\s]+)@([^@=\s]+)=(\d+)$")


def parse_duration_ms(text: str) -> int:
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 900ms, 30s, 15m, 2h")
    return int(match.group(1)) * DURATION_MS[match.group(2)]


def parse_line(text: str) -> tuple[str, str, int]:
    match = LINE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a line like SKU@NODE=QTY")
    return match.group(1), match.group(2), int(match.group(3))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table with right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int) for row in rows) and rows for i in range(len(headers))]
    out = []
    for r, row in enumerate(cells):
        parts = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        out.append("  ".join(parts).rstrip())
        if r == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from atpd.config import ConfigError, load_config
    from atpd.core.rules import RulesError
    from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, check_regular_file
    from atpd.persistence.journal import JournalCorrupt, JournalUnavailable
    from atpd.persistence.snapshot_file import SnapshotCorrupt
    from atpd.service.server import ServeOptions, serve

    overrides = {
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "fsync": args.fsync,
        "rules_file": str(args.rules) if args.rules else None,
        "metrics_host": args.metrics_host,
        "tls_cert_file": str(args.tls_cert) if args.tls_cert else None,
        "tls_key_file": str(args.tls_key) if args.tls_key else None,
        "tls_client_ca_file": str(args.tls_client_ca) if args.tls_client_ca else None,
        "auth_tokens_file": str(args.tokens_file) if args.tokens_file else None,
        "audit_log_file": str(args.audit_log) if args.audit_log else None,
        "insecure": True if args.insecure else None,
    }
    try:
        config = load_config(args.config, overrides)
        if config.rules_file is not None:
            # Refused before anything starts; the file is read when the server is ready.
            check_regular_file(config.rules_file, "rules_file", MAX_RULES_FILE_BYTES)
    except (ConfigError, FileRefused) as error:
        print(f"atpd: config error: {error}", file=sys.stderr)
        return 2
    options = ServeOptions(demo=args.demo, repair=args.repair, in_memory=args.in_memory)
    try:
        asyncio.run(serve(config, options))
    except JournalCorrupt as error:
        # One line: what, where (file and byte offset) and why, then what to do.
        print(
            f"atpd: refusing to start: {error} (inspect with `atpd verify-journal DIR`; "
            "`atpd serve --repair` keeps a backup and truncates at the bad record, later records "
            "are lost)",
            file=sys.stderr,
        )
        return 1
    except RulesError as error:
        print(f"atpd: rules refused, not starting: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        # The safe defaults (a non-loopback bind without TLS and tokens) and the security files.
        print(f"atpd: {error}", file=sys.stderr)
        return 2
    except (SnapshotCorrupt, JournalUnavailable, OSError) as error:
        print(f"atpd: cannot serve: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_verify_journal(args: argparse.Namespace) -> int:
    from atpd.persistence.journal import JournalUnavailable
    from atpd.persistence.verify import format_report, verify_journal

    try:
        report = verify_journal(args.directory, args.repair)
    except JournalUnavailable as error:
        print(f"atpd: {error}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.ok or report.repaired else 1


def cmd_verify_snapshot(args: argparse.Namespace) -> int:
    from atpd.persistence.verify import format_snapshot_reports, verify_snapshots

    if not args.directory.is_dir():
        print(f"atpd: {args.directory} is not a directory", file=sys.stderr)
        return 1
    reports = verify_snapshots(args.directory)
    print(format_snapshot_reports(args.directory, reports))
    return 0 if all(report.problem is None for report in reports) else 1


# ---------------------------------------------------------------------------- client


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return grpc.insecure_channel(args.target)


def _call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except grpc.RpcError as error:
        code = error.code()
        details = error.details()
        print(f"atpd: {code.name}: {details}", file=sys.stderr)
        raise SystemExit(1) from None


def _outcome_name(value: int) -> str:
    from atpd.v1 import common_pb2

    return common_pb2.Outcome.Name(value).removeprefix("OUTCOME_")


def _shortage_reason_name(value: int) -> str:
    from atpd.v1 import reservations_pb2

    return reservations_pb2.ShortageReason.Name(value).removeprefix("SHORTAGE_REASON_")


def _print_reservation(reservation: Any) -> None:
    from atpd.v1 import common_pb2

    status = common_pb2.ReservationStatus.Name(reservation.status).removeprefix(
        "RESERVATION_STATUS_"
    )
    print(f"reservation {reservation.reservation_id}: {status}", end="")
    if reservation.status == common_pb2.RESERVATION_STATUS_HELD:
        expires = datetime.fromtimestamp(reservation.expires_at_ms / 1000, UTC)
        print(f" until {expires:%Y-%m-%d %H:%M:%S} UTC", end="")
    print()
    fulfilled = {(x.sku, x.node_id): x.quantity for x in reservation.fulfilled}
    rows = [
        (x.sku, x.node_id, x.quantity, fulfilled.get((x.sku, x.node_id), 0))
        for x in reservation.lines
    ]
    print(table(("sku", "node", "qty", "fulfilled"), rows))


def cmd_availability(args: argparse.Namespace) -> int:
    from atpd.v1 import availability_pb2, availability_pb2_grpc

    stub = availability_pb2_grpc.AvailabilityServiceStub(_channel(args))
    request = availability_pb2.GetAvailabilityRequest(
        skus=args.skus,
        geo_prefix=args.geo or "",
        node_ids=args.node or [],
        channel=args.channel or "",
        segment=args.segment or "",
        include_nodes=args.nodes or args.explain,
        explain=args.explain,
    )
    response = _call(lambda: stub.GetAvailability(request, timeout=args.timeout))
    if response.rules_version:
        cap = f", at most {response.max_per_line} per line" if response.max_per_line else ""
        print(
            f"as {response.channel}/{response.segment} under rules {response.rules_version}{cap}\n"
        )
    for item in response.items:
        known = "" if item.known else " (unknown SKU)"
        print(f"{item.sku}: {item.total_atp} available{known}")
        if item.geo:
            print(table(("geo", "atp"), [("  " * (g.level - 1) + g.geo, g.atp) for g in item.geo]))
        if args.explain and item.nodes:
            rows = [
                (
                    n.node_id,
                    n.on_hand,
                    n.reserved,
                    n.safety_stock,
                    n.buffer,
                    n.supply,
                    n.protected_for_others,
                    n.atp,
                )
                for n in item.nodes
            ]
            headers = (
                "node",
                "on_hand",
                "reserved",
                "safety",
                "buffer",
                "supply",
                "protected",
                "atp",
            )
            print(table(headers, rows))
        elif args.nodes and item.nodes:
            plain = [(n.node_id, n.on_hand, n.reserved, n.safety_stock, n.atp) for n in item.nodes]
            print(table(("node", "on_hand", "reserved", "safety", "atp"), plain))
        print()
    return 0


def cmd_reserve(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, reservations_pb2, reservations_pb2_grpc

    stub = reservations_pb2_grpc.ReservationServiceStub(_channel(args))
    kind = common_pb2.RESERVATION_KIND_POS_SALE if args.pos else common_pb2.RESERVATION_KIND_CART
    request = reservations_pb2.ReserveRequest(
        reservation_id=args.reservation_id,
        lines=[
            reservations_pb2.ReservationLine(sku=s, node_id=n, quantity=q) for s, n, q in args.lines
        ],
        ttl_ms=args.ttl,
        kind=kind,
        channel=args.channel or "",
        segment=args.segment or "",
    )
    response = _call(lambda: stub.Reserve(request, timeout=args.timeout))
    print(
        f"outcome: {_outcome_name(response.outcome)}" + (" (replayed)" if response.replayed else "")
    )
    if response.shortages:
        rows = [
            (s.sku, s.node_id, s.requested, s.available, _shortage_reason_name(s.reason))
            for s in response.shortages
        ]
        print(table(("sku", "node", "requested", "available", "reason"), rows))
    if response.HasField("reservation"):
        _print_reservation(response.reservation)
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, reservations_pb2, reservations_pb2_grpc

    stub = reservations_pb2_grpc.ReservationServiceStub(_channel(args))
    rid = args.reservation_id
    calls: dict[str, Callable[[], Any]] = {
        "confirm": lambda: stub.Confirm(reservations_pb2.ConfirmRequest(reservation_id=rid)),
        "release": lambda: stub.Release(reservations_pb2.ReleaseRequest(reservation_id=rid)),
        "get": lambda: stub.GetReservation(
            reservations_pb2.GetReservationRequest(reservation_id=rid)
        ),
        "fulfil": lambda: stub.Fulfil(
            reservations_pb2.FulfilRequest(
                reservation_id=rid,
                lines=[
                    reservations_pb2.ReservationLine(sku=s, node_id=n, quantity=q)
                    for s, n, q in getattr(args, "lines", [])
                ],
                release_remainder=getattr(args, "release_remainder", False),
            )
        ),
    }
    response = _call(calls[args.command])
    print(f"outcome: {_outcome_name(response.outcome)}")
    _print_reservation(response.reservation)
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_nodes(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

    stub = inventory_pb2_grpc.InventoryServiceStub(_channel(args))
    response = _call(
        lambda: stub.ListNodes(inventory_pb2.ListNodesRequest(geo_prefix=args.geo or ""))
    )
    rows = [
        (
            n.node_id,
            common_pb2.NodeKind.Name(n.kind).removeprefix("NODE_KIND_"),
            n.geo_path,
            "yes" if n.ships else "",
            "yes" if n.pickup else "",
            "" if n.enabled else "DISABLED",
            ",".join(n.tags),
        )
        for n in response.nodes
    ]
    print(table(("node", "kind", "geo", "ships", "pickup", "state", "tags"), rows))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from atpd.v1 import rules_pb2, rules_pb2_grpc

    stub = rules_pb2_grpc.RulesServiceStub(_channel(args))
    if args.action == "apply":
        from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, read_regular_text

        try:
            text = read_regular_text(args.file, MAX_RULES_FILE_BYTES, "rules file")
        except FileRefused as error:
            print(f"atpd: {error}", file=sys.stderr)
            return 1
        request = rules_pb2.SetRulesRequest(text=text, source=str(args.file))
        response = _call(lambda: stub.SetRules(request, timeout=args.timeout))
        print(f"rules {response.version} in force (was {response.previous_version or 'none'})")
        return 0
    rules = _call(lambda: stub.GetRules(rules_pb2.GetRulesRequest(), timeout=args.timeout))
    if not rules.version:
        print("no rules loaded: every caller sees every enabled node")
        return 0
    print(f"rules {rules.version}")
    print(f"channels: {', '.join(rules.channels)} (default {rules.default_channel})")
    print(f"segments: {', '.join(rules.segments)} (default {rules.default_segment})")
    if args.text:
        print()
        print(rules.text)
    return 0


def cmd_supply(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, supply_pb2, supply_pb2_grpc

    stub = supply_pb2_grpc.SupplyServiceStub(_channel(args))
    if args.action == "list":
        response = _call(lambda: stub.ListSupply(supply_pb2.ListSupplyRequest(sku=args.sku or "")))
        rows = [
            (
                x.supply_id,
                x.sku,
                x.node_id,
                supply_pb2.SupplyKind.Name(x.kind).removeprefix("SUPPLY_KIND_"),
                x.quantity,
                f"{datetime.fromtimestamp(x.eta_ms / 1000, UTC):%Y-%m-%d %H:%M}",
                "" if x.counted else "overdue",
            )
            for x in response.supplies
        ]
        print(table(("supply", "sku", "node", "kind", "qty", "eta (UTC)", ""), rows))
        return 0
    if args.action == "add":
        kind: Any = supply_pb2.SupplyKind.Value("SUPPLY_KIND_" + args.kind.upper())
        eta_ms = int((datetime.now(UTC).timestamp() + args.eta_hours * 3600) * 1000)
        request: Any = supply_pb2.AddSupplyRequest(
            supply_id=args.supply_id,
            sku=args.sku,
            node_id=args.node,
            quantity=args.quantity,
            eta_ms=eta_ms,
            kind=kind,
        )
        response = _call(lambda: stub.AddSupply(request, timeout=args.timeout))
    elif args.action == "receive":
        request = supply_pb2.ReceiveSupplyRequest(supply_id=args.supply_id)
        if args.quantity is not None:
            request.quantity = args.quantity
        response = _call(lambda: stub.ReceiveSupply(request, timeout=args.timeout))
    else:
        request = supply_pb2.CancelSupplyRequest(supply_id=args.supply_id)
        response = _call(lambda: stub.CancelSupply(request, timeout=args.timeout))
    x = response.supply
    print(
        f"outcome: {_outcome_name(response.outcome)}; supply {x.supply_id}: {x.quantity} of "
        f"{x.sku} still expected at {x.node_id}, {x.received} received"
    )
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3


def cmd_watch(args: argparse.Namespace) -> int:
    from atpd.v1 import watch_pb2, watch_pb2_grpc

    stub = watch_pb2_grpc.WatchServiceStub(_channel(args))
    request = watch_pb2.WatchRequest(
        skus=args.skus,
        node_ids=args.node or [],
        geo_prefix=args.geo or "",
        channel=args.channel or "",
        segment=args.segment or "",
        from_sequence=args.from_sequence,
        low_stock_threshold=args.low_stock,
    )
    try:
        for event in stub.Watch(request):
            kind = watch_pb2.WatchEventKind.Name(event.kind).removeprefix("WATCH_EVENT_KIND_")
            if event.kind == watch_pb2.WATCH_EVENT_KIND_SYNC:
                print(f"watching from sequence {event.sequence} (epoch {event.epoch})", flush=True)
            elif event.kind == watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED:
                print(f"{event.sequence:>10}  RESYNC_REQUIRED  {event.reason}", flush=True)
            else:
                print(
                    f"{event.sequence:>10}  {kind:<15}  {event.sku}  {event.node_id}  "
                    f"{event.old_atp} -> {event.new_atp}",
                    flush=True,
                )
    except KeyboardInterrupt:
        return 0
    except grpc.RpcError as error:
        print(f"atpd: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from atpd.v1 import admin_pb2, admin_pb2_grpc

    stub = admin_pb2_grpc.AdminServiceStub(_channel(args))
    response = _call(lambda: stub.Snapshot(admin_pb2.SnapshotRequest(), timeout=args.timeout))
    print(
        f"snapshot at sequence {response.last_sequence}: {response.path} "
        f"({response.bytes} bytes, {response.seconds:.2f} s, "
        f"{response.segments_removed} journal segments removed)"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from atpd.v1 import admin_pb2, admin_pb2_grpc

    stub = admin_pb2_grpc.AdminServiceStub(_channel(args))
    response = _call(lambda: stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=args.timeout))
    rows = [
        ("version", response.version),
        ("nodes", response.nodes),
        ("skus", response.skus),
        ("positions", response.positions),
        ("open reservations", response.open_reservations),
        ("fsync policy", response.fsync_policy),
        ("journal sequence", response.journal_sequence),
        ("durable sequence", response.durable_sequence),
        ("last snapshot at", response.last_snapshot_sequence),
        ("journal failure", response.journal_failure or "none"),
    ]
    print(table(("", ""), rows))
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atpd",
        description="atpd: in-memory, real-time availability-to-promise server.",
    )
    parser.add_argument("--version", action="version", version=f"atpd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server", description="Run the gRPC server.")
    serve.add_argument("--config", type=Path, help="TOML config file (see README)")
    serve.add_argument("--demo", action="store_true", help="load the embedded demo data set")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks one)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; -1 off)")
    serve.add_argument("--data-dir", type=Path, help="journal and snapshot directory")
    serve.add_argument("--fsync", choices=("always", "everysec", "none"), help="fsync policy")
    serve.add_argument("--rules", type=Path, help="availability rules (TOML) to apply at start")
    serve.add_argument(
        "--repair",
        action="store_true",
        help="if the journal is corrupt mid-way, back it up and truncate at the bad record",
    )
    serve.add_argument(
        "--in-memory", action="store_true", help="no journal, no snapshots (benchmarks, trials)"
    )
    serve.add_argument("--metrics-host", help="metrics address (default 127.0.0.1)")
    serve.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="CA (PEM) for client certificates: mutual TLS"
    )
    serve.add_argument("--tokens-file", type=Path, help="bearer tokens (see `atpd token`)")
    serve.add_argument("--audit-log", type=Path, help="audit log file (JSON lines, rotated)")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback bind without TLS and tokens (logged at every start)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)

    verify = sub.add_parser(
        "verify-journal",
        help="check journal segments offline (the server must be stopped)",
        description="Check every journal segment's records and checksums, like redis-check-aof.",
    )
    verify.add_argument("directory", type=Path, help="the data directory (data_dir)")
    verify.add_argument(
        "--repair", action="store_true", help="back up and truncate at the first bad record"
    )
    verify.set_defaults(func=cmd_verify_journal)

    verify_snapshot = sub.add_parser(
        "verify-snapshot",
        help="check snapshot files offline: checksums and content",
        description="Load every snapshot in the data directory as recovery would (checksums, "
        "ids, counts, shapes) and report each one's status.",
    )
    verify_snapshot.add_argument("directory", type=Path, help="the data directory (data_dir)")
    verify_snapshot.set_defaults(func=cmd_verify_snapshot)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--target", default=DEFAULT_TARGET, help=f"server (default {DEFAULT_TARGET})"
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        return p

    p = client("availability", "show what can be promised for SKUs, rolled up by geography")
    p.add_argument("skus", nargs="+", metavar="SKU")
    p.add_argument("--geo", help="only nodes under this geo prefix, e.g. EU/FR")
    p.add_argument("--node", action="append", help="only this node (repeatable)")
    p.add_argument("--nodes", action="store_true", help="list every node with stock")
    p.add_argument("--explain", action="store_true", help="per node, every term of the ATP formula")
    p.add_argument("--channel", help="sales channel, e.g. web")
    p.add_argument("--segment", help="customer segment, e.g. vip")
    p.set_defaults(func=cmd_availability)

    p = client("reserve", "hold stock for a cart, an order or a POS sale (all or nothing)")
    p.add_argument("reservation_id")
    p.add_argument("lines", nargs="+", type=parse_line, metavar="SKU@NODE=QTY")
    p.add_argument("--ttl", type=parse_duration_ms, default=15 * 60_000, help="hold time (15m)")
    p.add_argument("--pos", action="store_true", help="a POS sale: reserve and fulfil at once")
    p.add_argument("--channel", help="sales channel")
    p.add_argument("--segment", help="customer segment")
    p.set_defaults(func=cmd_reserve)

    for name, text in (
        ("confirm", "confirm a held reservation (it stops expiring)"),
        ("release", "release a reservation (stock is freed)"),
        ("get", "show a reservation"),
    ):
        p = client(name, text)
        p.add_argument("reservation_id")
        p.set_defaults(func=cmd_lifecycle)
    p = client("fulfil", "record that goods left (all that is held, or the lines given)")
    p.add_argument("reservation_id")
    p.add_argument("lines", nargs="*", type=parse_line, metavar="SKU@NODE=QTY")
    p.add_argument("--release-remainder", action="store_true", help="free what is left")
    p.set_defaults(func=cmd_lifecycle)

    p = client("nodes", "list nodes")
    p.add_argument("--geo", help="only nodes under this geo prefix")
    p.set_defaults(func=cmd_nodes)

    p = client("status", "show server counts and journal state")
    p.set_defaults(func=cmd_status)

    p = client("watch", "print availability changes as they happen (Ctrl-C to stop)")
    p.add_argument("skus", nargs="*", metavar="SKU", help="only these SKUs (default: all)")
    p.add_argument("--geo", help="only nodes under this geo prefix")
    p.add_argument("--node", action="append", help="only this node (repeatable)")
    p.add_argument("--channel", help="sales channel")
    p.add_argument("--segment", help="customer segment")
    p.add_argument("--from-sequence", type=int, default=0, help="replay changes after this")
    p.add_argument("--low-stock", type=int, default=0, help="LOW_STOCK below this ATP")
    p.set_defaults(func=cmd_watch)

    p = client("snapshot", "write a snapshot now (journal segments it covers are removed)")
    p.set_defaults(func=cmd_snapshot)

    rules = sub.add_parser("rules", help="show or replace the availability rules")
    rules_sub = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("show", "show the rules in force"), ("apply", "replace the rules")):
        p = rules_sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--target", default=DEFAULT_TARGET, help=f"server (default {DEFAULT_TARGET})"
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        if name == "apply":
            p.add_argument("file", type=Path, help="TOML rule file")
        else:
            p.add_argument("--text", action="store_true", help="print the whole rule file")
        p.set_defaults(func=cmd_rules)

    supply = sub.add_parser("supply", help="incoming supply: add, receive, cancel, list")
    supply_sub = supply.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("add", "announce incoming supply (a PO, a transfer, a return in transit)"),
        ("receive", "the supply arrived: move it into on_hand"),
        ("cancel", "the supply will not come"),
        ("list", "list incoming supply"),
    ):
        p = supply_sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--target", default=DEFAULT_TARGET, help=f"server (default {DEFAULT_TARGET})"
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        if name == "list":
            p.add_argument("--sku", help="only this SKU")
        else:
            p.add_argument("supply_id")
        if name == "add":
            p.add_argument("sku")
            p.add_argument("node")
            p.add_argument("quantity", type=int)
            p.add_argument("--eta-hours", type=float, default=24.0, help="arrives in (24)")
            p.add_argument(
                "--kind",
                choices=("purchase_order", "transfer", "return_in_transit"),
                default="purchase_order",
            )
        if name == "receive":
            p.add_argument("--quantity", type=int, help="only part of it arrived")
        p.set_defaults(func=cmd_supply)
    from atpd.cli_load import add_feed_commands

    add_feed_commands(client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `atpd availability ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    return result


if __name__ == "__main__":
    raise SystemExit(main())
