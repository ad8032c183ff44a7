"""Client commands for restocking: `atpd restock plan|show|apply`.

atpd restock plan --geo EU [--sku-prefix BAG-] [--horizon 7] [--csv plan.csv]
atpd restock show PLAN_ID ;  atpd restock apply PLAN_ID
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from atpd.cli.client import CLIENT_EXIT_CODES, add_client_options, call_or_exit, open_channel
from atpd.cli.output import outcome_name, table

CSV_HEADERS = (
    "plan_id",
    "from_node_id",
    "to_node_id",
    "ship_date",
    "lead_days",
    "sku",
    "units",
    "from_cover_before_days",
    "from_cover_after_days",
    "to_cover_before_days",
    "to_cover_after_days",
)


def _cover(value: float) -> str:
    return "no demand" if value < 0 else f"{value:.1f}"


def print_plan(plan: Any, details: bool) -> None:
    print(
        f"plan {plan.plan_id} (state sequence {plan.state_sequence}, horizon "
        f"{plan.horizon_days} d, computed in {plan.compute_seconds:.2f} s)"
    )
    print(
        f"{len(plan.shipments)} lanes, {plan.total_units} units, cost {plan.total_cost:.2f}; "
        f"{plan.receivers} positions below their min cover, {plan.receivers_unmet} still below "
        f"after; {plan.dropped_lanes} lanes left out (below the minimum shipment)"
    )
    if plan.truncated:
        print("the plan reached max_restock_moves: the least urgent SKUs wait for the next one")
    if plan.moves_truncated:
        print(
            f"{plan.move_count} moves; the first {sum(len(s.moves) for s in plan.shipments)} listed"
        )
    rows = [
        (
            s.from_node_id,
            s.to_node_id,
            s.ship_date,
            s.lead_days,
            len(s.moves),
            s.units,
            f"{s.cost:.2f}",
        )
        for s in plan.shipments
    ]
    if rows:
        print(table(("from", "to", "ships", "lead_days", "skus", "units", "cost"), rows))
    if details:
        moves = [
            (
                s.from_node_id,
                s.to_node_id,
                m.sku,
                m.units,
                f"{_cover(m.from_cover_before_days)} -> {_cover(m.from_cover_after_days)}",
                f"{_cover(m.to_cover_before_days)} -> {_cover(m.to_cover_after_days)}",
            )
            for s in plan.shipments
            for m in s.moves
        ]
        if moves:
            print()
            print(table(("from", "to", "sku", "units", "from cover (d)", "to cover (d)"), moves))


def write_csv(plan: Any, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADERS)
        for s in plan.shipments:
            for m in s.moves:
                writer.writerow(
                    (
                        plan.plan_id,
                        s.from_node_id,
                        s.to_node_id,
                        s.ship_date,
                        s.lead_days,
                        m.sku,
                        m.units,
                        m.from_cover_before_days,
                        m.from_cover_after_days,
                        m.to_cover_before_days,
                        m.to_cover_after_days,
                    )
                )


def cmd_restock(args: argparse.Namespace) -> int:
    from atpd.v1 import common_pb2, restock_pb2, restock_pb2_grpc

    stub = restock_pb2_grpc.RestockServiceStub(open_channel(args))
    if args.action == "apply":
        request = restock_pb2.ApplyRestockRequest(plan_id=args.plan_id)
        response = call_or_exit(lambda: stub.ApplyRestock(request, timeout=args.timeout))
        print(
            f"plan {response.plan_id}: {outcome_name(response.outcome)}, "
            f"{len(response.transfer_ids)} transfers: {', '.join(response.transfer_ids)}"
        )
        return 0 if response.outcome == common_pb2.OUTCOME_OK else 3
    if args.action == "show":
        get = restock_pb2.GetRestockPlanRequest(plan_id=args.plan_id)
        plan = call_or_exit(lambda: stub.GetRestockPlan(get, timeout=args.timeout))
    else:
        query = restock_pb2.PlanRestockRequest(
            geo_prefix=args.geo or "",
            sku_prefix=args.sku_prefix or "",
            horizon_days=args.horizon,
            ship_date=args.ship_date or "",
        )
        plan = call_or_exit(lambda: stub.PlanRestock(query, timeout=args.timeout))
    print_plan(plan, args.moves)
    if args.csv is not None:
        try:
            write_csv(plan, args.csv)
        except OSError as error:
            print(f"atpd: cannot write {args.csv}: {error.strerror}", file=sys.stderr)
            return 1
        print(f"moves written to {args.csv}")
    if args.action == "plan" and plan.shipments:
        print(f"apply with: atpd restock apply {plan.plan_id}")
    return 0


def _horizon(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 365:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days in 1..365")
    return int(text)


def add_restock_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`atpd restock ...` on the top-level parser."""
    restock = sub.add_parser("restock", help="plan and apply restocking transfers")
    actions = restock.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(
            name, help=text, description=text, epilog=CLIENT_EXIT_CODES
        )
        add_client_options(p)
        p.set_defaults(func=cmd_restock)
        return p

    for name, text in (
        ("plan", "propose bulked transfers from donors to positions below their min cover"),
        ("show", "show a plan kept by the server"),
    ):
        p = action(name, text)
        if name == "plan":
            p.add_argument("--geo", help="only nodes under this geo prefix, e.g. EU")
            p.add_argument("--sku-prefix", help="only SKUs starting with this")
            p.add_argument(
                "--horizon", type=_horizon, default=7, help="days of demand to plan for (7)"
            )
            p.add_argument("--ship-date", help="YYYY-MM-DD (UTC; default today)")
        else:
            p.add_argument("plan_id")
        p.add_argument("--csv", type=Path, help="also write every move to this CSV file")
        p.add_argument("--moves", action="store_true", help="list every SKU moved, with cover")
    p = action("apply", "create a plan's transfers (refused if the plan is stale)")
    p.add_argument("plan_id")
