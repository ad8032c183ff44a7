"""`atpd promise CART --to CC:POSTAL | --pickup STORE | --from-store STORE [--listing]`:
promises as tables (PromiseService)."""

from __future__ import annotations

import argparse
import sys

from atpd.cli.client import add_client_options, call_or_exit, open_channel
from atpd.cli.output import table

REASON_NAMES = {1: "best", 2: "fastest", 3: "cheapest", 4: "greenest", 5: "fewest shipments"}
MAX_CART_QUANTITY = 1_000_000


def cart(text: str) -> list[tuple[str, int]]:
    """ "SKU=2,SKU2=1" (a SKU alone means 1) -> [(sku, quantity)]."""
    lines = []
    for part in text.split(","):
        sku, _, quantity = part.strip().partition("=")
        if not sku:
            raise argparse.ArgumentTypeError(f"{text!r}: empty SKU (expected SKU=2,SKU2=1)")
        if quantity and (not quantity.isdigit() or not 1 <= int(quantity) <= MAX_CART_QUANTITY):
            raise argparse.ArgumentTypeError(
                f"{part!r}: quantity must be a whole number in 1..{MAX_CART_QUANTITY}"
            )
        lines.append((sku, int(quantity) if quantity else 1))
    return lines


def destination(text: str) -> tuple[str, str]:
    """ "FR:75008" -> ("FR", "75008"); "FR" alone is the whole country."""
    country, _, postal_code = text.partition(":")
    if len(country) != 2 or not country.isalpha():
        raise argparse.ArgumentTypeError(f"{text!r}: expected COUNTRY:POSTAL_CODE, e.g. FR:75008")
    return country.upper(), postal_code


def money(minor: int) -> str:
    return f"{minor / 100:.2f}"


def cmd_promise(args: argparse.Namespace) -> int:
    from atpd.v1 import promise_pb2, promise_pb2_grpc

    stub = promise_pb2_grpc.PromiseServiceStub(open_channel(args))
    where = None
    if args.to:
        where = promise_pb2.Destination(country=args.to[0], postal_code=args.to[1])
    if not (args.to or args.pickup or args.from_store):
        print(
            "atpd: say where: --to COUNTRY:POSTAL_CODE, --pickup STORE or --from-store STORE",
            file=sys.stderr,
        )
        return 2
    if args.to and args.pickup:
        print("atpd: --to and --pickup are two different promises: give one", file=sys.stderr)
        return 2
    if args.from_store:
        if len(args.cart) != 1:
            print("atpd: --from-store shows one SKU", file=sys.stderr)
            return 2
        view = promise_pb2.AssociateViewRequest(
            sku=args.cart[0][0],
            store_id=args.from_store,
            destination=where,
            channel=args.channel,
            segment=args.segment,
        )
        answer = call_or_exit(lambda: stub.AssociateView(view, timeout=args.timeout))
        rows = [
            [
                row.node_id,
                row.atp,
                "-" if row.transfer_lead_days < 0 else row.transfer_lead_days,
                row.pickup_ready[:16].replace("T", " ") or "-",
                row.delivery_earliest_date or "-",
            ]
            for row in answer.rows
        ]
        zone = f", delivery to {answer.zone}" if answer.zone else ""
        print(f"{answer.sku} seen from {answer.store_id}{zone}")
        print(table(["node", "atp", "lead days", "collect at store", "delivery"], rows))
        return 0
    if args.listing:
        if where is None:
            print("atpd: --listing needs --to COUNTRY:POSTAL_CODE", file=sys.stderr)
            return 2
        batch = promise_pb2.PromiseBatchRequest(
            skus=[sku for sku, _ in args.cart],
            destination=where,
            channel=args.channel,
            segment=args.segment,
        )
        listing = call_or_exit(lambda: stub.PromiseBatch(batch, timeout=args.timeout))
        print(f"earliest delivery to {listing.zone}")
        print(
            table(
                ["sku", "delivery", "from"],
                [
                    [item.sku, item.earliest_delivery_date or "unavailable", item.node_id or "-"]
                    for item in listing.items
                ],
            )
        )
        return 0
    request = promise_pb2.PromiseRequest(
        lines=[promise_pb2.PromiseLine(sku=sku, quantity=quantity) for sku, quantity in args.cart],
        destination=where,
        pickup_node_id=args.pickup or "",
        channel=args.channel,
        segment=args.segment,
    )
    response = call_or_exit(lambda: stub.Promise(request, timeout=args.timeout))
    caller = f"{response.channel or '-'}/{response.segment or '-'}"
    print(f"promise to {response.destination} for {caller}")
    if response.pickup_options:
        rows = [
            [
                option.store_id,
                option.source_node_id,
                option.transfer_lead_days,
                option.ready_by[:16].replace("T", " "),
            ]
            for option in response.pickup_options
        ]
        print(table(["store", "from", "lead days", "ready by"], rows))
    for number, option in enumerate(response.options, 1):
        reasons = ", ".join(REASON_NAMES.get(reason, str(reason)) for reason in option.reasons)
        print(
            f"\noption {number} ({reasons}): delivery {option.delivery_earliest_date}"
            f"..{option.delivery_latest_date}, cost {money(option.cost_minor)}, "
            f"CO2 {option.co2_grams / 1000:.1f} kg, {option.shipment_count} shipment(s)"
        )
        rows = [
            [
                shipment.node_id,
                shipment.service,
                shipment.ship_date,
                f"{shipment.delivery_earliest_date}..{shipment.delivery_latest_date}",
                ", ".join(f"{line.sku} x{line.quantity}" for line in shipment.lines),
            ]
            for shipment in option.shipments
        ]
        print(table(["from", "service", "ships", "delivery", "lines"], rows))
    if not (response.options or response.pickup_options):
        print(f"no option: {response.no_option_reason}")
    if args.tokens:
        for option in response.options:
            print(option.option_token)
        for pickup in response.pickup_options:
            print(pickup.option_token)
    return 0


def add_promise_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`atpd promise ...` on the top-level parser."""
    text = (
        "promise a cart: delivery options (--to), pickup at a store (--pickup), one SKU seen "
        "from a store (--from-store), or the earliest date per SKU for a listing (--listing)"
    )
    p = sub.add_parser("promise", help=text, description=text)
    p.add_argument("cart", type=cart, help="SKU=QTY,SKU2=QTY (a SKU alone means 1)")
    p.add_argument(
        "--to",
        type=destination,
        metavar="CC:POSTAL",
        help="deliver to, e.g. FR:75008 (with --from-store: also the delivery date there)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--pickup", metavar="STORE", help="collect at this store")
    mode.add_argument("--from-store", metavar="STORE", help="associate view from this store")
    p.add_argument("--listing", action="store_true", help="with --to: earliest date per SKU")
    p.add_argument("--channel", default="", help="sales channel (default: the rules' default)")
    p.add_argument("--segment", default="", help="customer segment (e.g. vip)")
    p.add_argument("--tokens", action="store_true", help="also print each option's token")
    add_client_options(p)
    p.set_defaults(func=cmd_promise)
