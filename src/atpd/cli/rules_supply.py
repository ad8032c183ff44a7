"""Client commands for the availability rules and incoming supply: `atpd rules`, `atpd supply`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from atpd.cli.client import call_or_exit, open_channel, read_text_or_exit
from atpd.cli.output import outcome_name, table


def cmd_rules(args: argparse.Namespace) -> int:
    from atpd.v1 import rules_pb2, rules_pb2_grpc

    stub = rules_pb2_grpc.RulesServiceStub(open_channel(args))
    if args.action == "apply":
        text = read_text_or_exit(args.file, "rules file")
        request = rules_pb2.SetRulesRequest(text=text, source=str(args.file))
        response = call_or_exit(lambda: stub.SetRules(request, timeout=args.timeout))
        print(f"rules {response.version} in force (was {response.previous_version or 'none'})")
        return 0
    rules = call_or_exit(lambda: stub.GetRules(rules_pb2.GetRulesRequest(), timeout=args.timeout))
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

    stub = supply_pb2_grpc.SupplyServiceStub(open_channel(args))
    if args.action == "list":
        response = call_or_exit(
            lambda: stub.ListSupply(supply_pb2.ListSupplyRequest(sku=args.sku or ""))
        )
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
        response = call_or_exit(lambda: stub.AddSupply(request, timeout=args.timeout))
    elif args.action == "receive":
        request = supply_pb2.ReceiveSupplyRequest(supply_id=args.supply_id)
        if args.quantity is not None:
            request.quantity = args.quantity
        response = call_or_exit(lambda: stub.ReceiveSupply(request, timeout=args.timeout))
    else:
        request = supply_pb2.CancelSupplyRequest(supply_id=args.supply_id)
        response = call_or_exit(lambda: stub.CancelSupply(request, timeout=args.timeout))
    x = response.supply
    print(
        f"outcome: {outcome_name(response.outcome)}; supply {x.supply_id}: {x.quantity} of "
        f"{x.sku} still expected at {x.node_id}, {x.received} received"
    )
    return 0 if response.outcome == common_pb2.OUTCOME_OK else 3
