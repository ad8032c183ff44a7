"""PromiseService: Promise, PromiseBatch and AssociateView (README "Promises").

Reads: each runs on the event loop against the current state, like GetAvailability. Every
option answered carries an option token (service/option_tokens.py) signed with the server's
key, which Reserve verifies to hold exactly that plan.
"""

from __future__ import annotations

from typing import Any

from atpd.core.calendar import to_local
from atpd.core.promise import PromiseAnswer, PromiseOption, promise
from atpd.core.promise_listing import earliest_deliveries
from atpd.core.promise_pickup import PickupOption, associate
from atpd.core.results import InvalidCommand
from atpd.service.promise_messages import iso_date, option_message
from atpd.service.servicers import ServicerBase
from atpd.v1 import promise_pb2, promise_pb2_grpc


def lines_of(request: promise_pb2.PromiseRequest) -> list[tuple[str, int]]:
    return [(line.sku, int(line.quantity)) for line in request.lines]


class PromiseServicer(ServicerBase, promise_pb2_grpc.PromiseServiceServicer):
    def token(self, plan: Any, now_ms: int) -> str:
        tokens = self.engine.option_tokens
        if tokens is None:
            return ""  # an engine built without tokens (tests of the core service only)
        return tokens.issue(plan, now_ms, self.engine.journal.last_sequence)

    def option_message(self, option: PromiseOption, now_ms: int) -> promise_pb2.PromiseOption:
        return option_message(option, self.token(option.plan, now_ms))

    def pickup_message(self, option: PickupOption, now_ms: int) -> promise_pb2.PickupOption:
        tz = self.engine.state.network.node_by_id[option.store_id].time_zone
        return promise_pb2.PickupOption(
            store_id=option.store_id,
            source_node_id=option.source_node_id,
            transfer_lead_days=option.transfer_lead_days,
            ready_by_ms=option.ready_by_ms,
            ready_by=to_local(tz, option.ready_by_ms).isoformat(),
            option_token=self.token(option.plan, now_ms),
        )

    def answer_message(
        self, answer: PromiseAnswer, now_ms: int, channel: str, segment: str
    ) -> promise_pb2.PromiseResponse:
        policy = self.engine.state.policy(channel, segment)
        return promise_pb2.PromiseResponse(
            destination=answer.destination,
            options=[self.option_message(option, now_ms) for option in answer.options],
            pickup_options=[
                self.pickup_message(option, now_ms) for option in answer.pickup_options
            ],
            no_option_reason=answer.no_option_reason,
            exhaustive=answer.exhaustive,
            channel=policy.channel if policy is not None else "",
            segment=policy.segment if policy is not None else "",
        )

    async def Promise(
        self, request: promise_pb2.PromiseRequest, context: Any
    ) -> promise_pb2.PromiseResponse:
        async def handle() -> promise_pb2.PromiseResponse:
            has_destination = request.HasField("destination")
            if has_destination == bool(request.pickup_node_id):
                raise InvalidCommand(
                    "destination: give either destination (country, postal_code) or "
                    "pickup_node_id, not both nor neither"
                )
            if has_destination and not request.destination.country:
                raise InvalidCommand("destination.country: empty")
            now_ms = self.engine.catch_up()
            answer = promise(
                self.engine.state,
                lines_of(request),
                now_ms,
                country=request.destination.country,
                postal_code=request.destination.postal_code,
                pickup_node_id=request.pickup_node_id,
                channel=request.channel,
                segment=request.segment,
            )
            return self.answer_message(answer, now_ms, request.channel, request.segment)

        return await self._guard("Promise", context, handle, write=False)

    async def PromiseBatch(
        self, request: promise_pb2.PromiseBatchRequest, context: Any
    ) -> promise_pb2.PromiseBatchResponse:
        async def handle() -> promise_pb2.PromiseBatchResponse:
            if not request.destination.country:
                raise InvalidCommand("destination.country: empty")
            skus = list(request.skus)
            now_ms = self.engine.catch_up()
            state = self.engine.state
            answer = earliest_deliveries(
                state,
                skus,
                now_ms,
                request.destination.country,
                request.destination.postal_code,
                request.channel,
                request.segment,
            )
            nodes = state.nodes
            return promise_pb2.PromiseBatchResponse(
                zone=answer.zone_id,
                items=[
                    promise_pb2.PromiseBatchItem(
                        sku=sku,
                        available=day >= 0,
                        earliest_delivery_date=iso_date(day),
                        node_id=nodes[node].node_id if node >= 0 else "",
                    )
                    for sku, day, node in zip(
                        skus, answer.earliest_day.tolist(), answer.node_index.tolist(), strict=True
                    )
                ],
            )

        return await self._guard("PromiseBatch", context, handle, write=False)

    async def AssociateView(
        self, request: promise_pb2.AssociateViewRequest, context: Any
    ) -> promise_pb2.AssociateViewResponse:
        async def handle() -> promise_pb2.AssociateViewResponse:
            if not request.store_id:
                raise InvalidCommand("store_id: empty")
            now_ms = self.engine.catch_up()
            state = self.engine.state
            zone, rows = associate(
                state,
                request.sku,
                request.store_id,
                now_ms,
                request.channel,
                request.segment,
                request.destination.country,
                request.destination.postal_code,
            )
            logistics = state.network.node_by_id.get(request.store_id)
            tz = logistics.time_zone if logistics is not None else "UTC"
            return promise_pb2.AssociateViewResponse(
                sku=request.sku,
                store_id=request.store_id,
                zone=zone,
                rows=[
                    promise_pb2.AssociateViewRow(
                        node_id=row.node_id,
                        atp=row.atp,
                        available_ms=row.available_ms,
                        transfer_lead_days=row.transfer_lead_days,
                        pickup_ready_ms=row.pickup_ready_ms,
                        pickup_ready=(
                            to_local(tz, row.pickup_ready_ms).isoformat()
                            if row.pickup_ready_ms >= 0
                            else ""
                        ),
                        delivery_earliest_date=iso_date(row.delivery_earliest_day),
                    )
                    for row in rows
                ],
            )

        return await self._guard("AssociateView", context, handle, write=False)
