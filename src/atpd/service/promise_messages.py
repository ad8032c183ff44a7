"""Protobuf messages of promise answers, shared by PromiseService and by Reserve (the best
option it offers with PROMISE_CHANGED)."""

from __future__ import annotations

from atpd.core.calendar import date_of
from atpd.core.promise import PromiseOption
from atpd.core.sourcing import Objective
from atpd.v1 import promise_pb2

REASONS = {
    Objective.BEST: promise_pb2.BEST,
    Objective.FASTEST: promise_pb2.FASTEST,
    Objective.CHEAPEST: promise_pb2.CHEAPEST,
    Objective.GREENEST: promise_pb2.GREENEST,
    Objective.FEWEST_SHIPMENTS: promise_pb2.FEWEST_SHIPMENTS,
}


def iso_date(epoch_day: int) -> str:
    return date_of(epoch_day).isoformat() if epoch_day >= 0 else ""


def option_message(option: PromiseOption, token: str) -> promise_pb2.PromiseOption:
    return promise_pb2.PromiseOption(
        shipments=[
            promise_pb2.PromiseShipment(
                node_id=shipment.node_id,
                service=shipment.service_id,
                ship_date=iso_date(shipment.ship_day),
                delivery_earliest_date=iso_date(shipment.delivery_earliest_day),
                delivery_latest_date=iso_date(shipment.delivery_latest_day),
                lines=[
                    promise_pb2.PromiseShipmentLine(sku=line.sku, quantity=line.quantity)
                    for line in shipment.lines
                ],
                cost_minor=shipment.cost_minor,
                co2_grams=shipment.co2_grams,
            )
            for shipment in option.shipments
        ],
        delivery_earliest_date=iso_date(option.delivery_earliest_day),
        delivery_latest_date=iso_date(option.delivery_latest_day),
        cost_minor=option.cost_minor,
        co2_grams=option.co2_grams,
        shipment_count=len(option.shipments),
        reasons=[REASONS[reason] for reason in option.reasons],
        option_token=token,
    )
