"""`atpd serve`, `atpd verify-journal`, `atpd verify-snapshot`: run the server, check its files.

These run in this process (no gRPC client); heavy imports are deferred so `atpd --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    from atpd.config import ConfigError, load_config
    from atpd.core.network import NetworkError
    from atpd.core.rules import RulesError
    from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, check_regular_file
    from atpd.persistence.journal_errors import JournalCorrupt, JournalUnavailable
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
        "follow": args.follow,
        "replication": args.replication,
        "cluster": args.cluster,
        "etcd": args.etcd,
        "advertise": args.advertise,
    }
    try:
        config = load_config(args.config, overrides)
        if config.rules_file is not None:
            # Refused before anything starts; the file is read when the server is ready.
            check_regular_file(config.rules_file, "rules_file", MAX_RULES_FILE_BYTES)
        if config.network_file is not None:
            check_regular_file(config.network_file, "network_file", MAX_RULES_FILE_BYTES)
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
    except NetworkError as error:
        print(f"atpd: network refused, not starting: {error}", file=sys.stderr)
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
    from atpd.persistence.journal_errors import JournalUnavailable
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
