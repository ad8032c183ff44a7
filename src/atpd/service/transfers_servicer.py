"""TransferService: transfer orders (create, ship, receive, cancel, get, list)."""

from __future__ import annotations

import datetime
from typing import Any

from atpd.core.results import NotFound, Outcome, TransferResult
from atpd.core.transfers import Transfer
from atpd.service import convert, transfer_validation
from atpd.service.servicers import ServicerBase
from atpd.v1 import transfers_pb2, transfers_pb2_grpc

EPOCH = datetime.date(1970, 1, 1)


def date_of_day(day: int) -> str:
    return (EPOCH + datetime.timedelta(days=day)).isoformat()


def transfer_message(transfer: Transfer) -> transfers_pb2.Transfer:
    message = transfers_pb2.Transfer(
        transfer_id=transfer.transfer_id,
        from_node_id=transfer.from_node_id,
        to_node_id=transfer.to_node_id,
        status=int(transfer.status),  # type: ignore[arg-type]
        ship_date=date_of_day(transfer.ship_day),
        lead_days=transfer.lead_days,
        eta_ms=transfer.eta_ms,
        created_at_ms=transfer.created_at_ms,
        updated_at_ms=transfer.updated_at_ms,
        plan_id=transfer.plan_id,
        receipt_ids=[r.receipt_id for r in transfer.receipts],
    )
    for x in transfer.lines:
        message.lines.add(
            sku=x.sku,
            quantity=x.quantity,
            held=x.held,
            shipped=x.shipped,
            received=x.received,
            damaged=x.damaged,
            short=x.short,
            over=x.over,
            source_shortfall=x.source_shortfall,
        )
    return message


def transfer_response(result: TransferResult) -> transfers_pb2.TransferResponse:
    response = transfers_pb2.TransferResponse(outcome=convert.pb_enum(result.outcome))
    if result.transfer is not None:
        response.transfer.CopyFrom(transfer_message(result.transfer))
    for shortage in result.shortages:
        response.shortages.add(
            sku=shortage.sku,
            node_id=shortage.node_id,
            requested=shortage.requested,
            available=shortage.available,
            reason=convert.pb_enum(shortage.reason),
        )
    return response


class TransferServicer(ServicerBase, transfers_pb2_grpc.TransferServiceServicer):
    async def CreateTransfer(
        self, request: transfers_pb2.CreateTransferRequest, context: Any
    ) -> transfers_pb2.TransferResponse:
        async def handle() -> transfers_pb2.TransferResponse:
            command = transfer_validation.create_transfer(request, self.limits)
            return transfer_response(await self.engine.execute(command))

        return await self._guard("CreateTransfer", context, handle, write=True)

    async def ShipTransfer(
        self, request: transfers_pb2.ShipTransferRequest, context: Any
    ) -> transfers_pb2.TransferResponse:
        async def handle() -> transfers_pb2.TransferResponse:
            command = transfer_validation.ship_transfer(request)
            return transfer_response(await self.engine.execute(command))

        return await self._guard("ShipTransfer", context, handle, write=True)

    async def ReceiveTransfer(
        self, request: transfers_pb2.ReceiveTransferRequest, context: Any
    ) -> transfers_pb2.TransferResponse:
        async def handle() -> transfers_pb2.TransferResponse:
            command = transfer_validation.receive_transfer(request, self.limits)
            return transfer_response(await self.engine.execute(command))

        return await self._guard("ReceiveTransfer", context, handle, write=True)

    async def CancelTransfer(
        self, request: transfers_pb2.CancelTransferRequest, context: Any
    ) -> transfers_pb2.TransferResponse:
        async def handle() -> transfers_pb2.TransferResponse:
            command = transfer_validation.cancel_transfer(request)
            return transfer_response(await self.engine.execute(command))

        return await self._guard("CancelTransfer", context, handle, write=True)

    async def GetTransfer(
        self, request: transfers_pb2.GetTransferRequest, context: Any
    ) -> transfers_pb2.TransferResponse:
        async def handle() -> transfers_pb2.TransferResponse:
            transfer_id = transfer_validation.transfer_id(request.transfer_id)
            self.engine.catch_up()
            transfer = self.engine.state.transfers.find(transfer_id)
            if transfer is None:
                raise NotFound(f"transfer_id: unknown transfer {transfer_id!r}")
            response = transfers_pb2.TransferResponse(outcome=convert.pb_enum(Outcome.OK))
            response.transfer.CopyFrom(transfer_message(transfer))
            return response

        return await self._guard("GetTransfer", context, handle, write=False)

    async def ListTransfers(
        self, request: transfers_pb2.ListTransfersRequest, context: Any
    ) -> transfers_pb2.ListTransfersResponse:
        async def handle() -> transfers_pb2.ListTransfersResponse:
            node_id, status, limit = transfer_validation.list_transfers(request)
            self.engine.catch_up()
            state = self.engine.state
            if node_id and state.node_ids.get(node_id) < 0:
                raise NotFound(f"node_id: unknown node {node_id!r}")
            response = transfers_pb2.ListTransfersResponse()
            for transfer in state.transfers.all():
                if node_id and node_id not in (transfer.from_node_id, transfer.to_node_id):
                    continue
                if status is not None and transfer.status is not status:
                    continue
                if len(response.transfers) == limit:
                    response.truncated = True
                    break
                response.transfers.append(transfer_message(transfer))
            return response

        return await self._guard("ListTransfers", context, handle, write=False)
