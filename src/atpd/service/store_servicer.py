"""StoreService: till sales, offline queues, returns, exchanges and inspection (store.proto).

Requests are checked in service/store_validation.py, applied by the engine like every command
(journaled, acknowledged once durable), and a forced sale's discrepancies are published on
Watch once the sale is durable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atpd.core.commands_store import CatalogueLoadResult, SaleResult
from atpd.core.results import Outcome, Shortage
from atpd.core.store_book import Discrepancy
from atpd.service import store_validation as checks
from atpd.service.engine import Engine
from atpd.service.principals import current_principal
from atpd.service.servicers import ServicerBase
from atpd.service.validation import InvalidArgument
from atpd.service.watch import WatchHub, discrepancy_message
from atpd.v1 import store_pb2, store_pb2_grpc


def default_channel() -> str:
    principal = current_principal()
    return principal.default_channel if principal is not None else ""


def add_discrepancies(found: Sequence[Discrepancy], target: Any) -> None:
    for discrepancy in found:
        discrepancy_message(discrepancy, target.add())


def add_shortages(shortages: Sequence[Shortage], target: Any) -> None:
    for shortage in shortages:
        target.add(
            sku=shortage.sku,
            node_id=shortage.node_id,
            requested=shortage.requested,
            available=shortage.available,
            reason=int(shortage.reason),
        )


def load_response(load_id: str, result: CatalogueLoadResult) -> store_pb2.CatalogueLoadResponse:
    return store_pb2.CatalogueLoadResponse(
        outcome=int(result.outcome),  # type: ignore[arg-type]
        replayed=result.replayed,
        load_id=load_id,
        rows=result.rows,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
    )


class StoreServicer(ServicerBase, store_pb2_grpc.StoreServiceServicer):
    def __init__(self, engine: Engine, hub: WatchHub) -> None:
        super().__init__(engine)
        self.hub = hub

    def _sale_response(self, result: SaleResult) -> store_pb2.RecordSaleResponse:
        if result.discrepancies:
            self.hub.publish_discrepancies(result.discrepancies, result.recorded_at_ms)
        response = store_pb2.RecordSaleResponse(
            outcome=int(result.outcome),  # type: ignore[arg-type]
            replayed=result.replayed,
            recorded_at_ms=result.recorded_at_ms,
        )
        add_shortages(result.shortages, response.shortages)
        add_discrepancies(result.discrepancies, response.discrepancies)
        return response

    async def RecordSale(
        self, request: store_pb2.RecordSaleRequest, context: Any
    ) -> store_pb2.RecordSaleResponse:
        async def handle() -> store_pb2.RecordSaleResponse:
            command = checks.record_sale(request, self.limits, default_channel())
            return self._sale_response(await self.engine.execute(command))

        return await self._guard("RecordSale", context, handle, write=True)

    async def RecordOfflineSales(
        self, request: store_pb2.RecordOfflineSalesRequest, context: Any
    ) -> store_pb2.RecordOfflineSalesResponse:
        async def handle() -> store_pb2.RecordOfflineSalesResponse:
            command = checks.record_offline_sales(request, self.limits, default_channel())
            result = await self.engine.execute(command)
            now_ms = result.recorded_at_ms
            response = store_pb2.RecordOfflineSalesResponse(
                outcome=int(Outcome.OK),  # type: ignore[arg-type]
                recorded_at_ms=now_ms,
            )
            for outcome in result.results:
                entry = response.results.add(
                    receipt_id=outcome.receipt_id, duplicate=outcome.duplicate
                )
                add_discrepancies(outcome.discrepancies, entry.discrepancies)
                if outcome.discrepancies:
                    self.hub.publish_discrepancies(outcome.discrepancies, now_ms)
            return response

        return await self._guard("RecordOfflineSales", context, handle, write=True)

    async def RecordReturn(
        self, request: store_pb2.RecordReturnRequest, context: Any
    ) -> store_pb2.StoreResponse:
        async def handle() -> store_pb2.StoreResponse:
            result = await self.engine.execute(checks.record_return(request, self.limits))
            return store_pb2.StoreResponse(
                outcome=int(result.outcome),  # type: ignore[arg-type]
                replayed=result.replayed,
                recorded_at_ms=result.recorded_at_ms,
            )

        return await self._guard("RecordReturn", context, handle, write=True)

    async def Exchange(
        self, request: store_pb2.ExchangeRequest, context: Any
    ) -> store_pb2.RecordSaleResponse:
        async def handle() -> store_pb2.RecordSaleResponse:
            command = checks.exchange(request, self.limits, default_channel())
            return self._sale_response(await self.engine.execute(command))

        return await self._guard("Exchange", context, handle, write=True)

    async def ReleaseInspection(
        self, request: store_pb2.ReleaseInspectionRequest, context: Any
    ) -> store_pb2.StoreResponse:
        async def handle() -> store_pb2.StoreResponse:
            result = await self.engine.execute(checks.release_inspection(request))
            return store_pb2.StoreResponse(
                outcome=int(result.outcome),  # type: ignore[arg-type]
                replayed=result.replayed,
                recorded_at_ms=result.recorded_at_ms,
            )

        return await self._guard("ReleaseInspection", context, handle, write=True)

    async def ListDiscrepancies(
        self, request: store_pb2.ListDiscrepanciesRequest, context: Any
    ) -> store_pb2.ListDiscrepanciesResponse:
        async def handle() -> store_pb2.ListDiscrepanciesResponse:
            node_id, sku = checks.list_filter(request.node_id, request.sku)
            limit = checks.list_limit(request.limit)
            if request.after_sequence < 0:
                raise InvalidArgument("after_sequence", "must be >= 0")
            book = self.engine.state.store
            response = store_pb2.ListDiscrepanciesResponse(forgotten=book.forgotten_discrepancies)
            records = book.discrepancies
            # Sequences are consecutive in the deque: start at the first one after the page.
            start = max(0, request.after_sequence - (records[0].sequence - 1)) if records else 0
            for index in range(start, len(records)):
                record = records[index]
                if (node_id and record.node_id != node_id) or (sku and record.sku != sku):
                    continue
                if len(response.discrepancies) == limit:
                    response.next_after_sequence = response.discrepancies[-1].sequence
                    break
                discrepancy_message(record, response.discrepancies.add())
            return response

        return await self._guard("ListDiscrepancies", context, handle, write=False)

    async def LoadNodes(
        self, request: store_pb2.LoadNodesRequest, context: Any
    ) -> store_pb2.CatalogueLoadResponse:
        async def handle() -> store_pb2.CatalogueLoadResponse:
            command = checks.node_load(request, self.limits)
            return load_response(command.load_id, await self.engine.execute(command))

        return await self._guard("LoadNodes", context, handle, write=True)

    async def LoadSupply(
        self, request: store_pb2.LoadSupplyRequest, context: Any
    ) -> store_pb2.CatalogueLoadResponse:
        async def handle() -> store_pb2.CatalogueLoadResponse:
            command = checks.supply_load(request, self.limits)
            return load_response(command.load_id, await self.engine.execute(command))

        return await self._guard("LoadSupply", context, handle, write=True)

    async def ListInspection(
        self, request: store_pb2.ListInspectionRequest, context: Any
    ) -> store_pb2.ListInspectionResponse:
        async def handle() -> store_pb2.ListInspectionResponse:
            node_id, sku = checks.list_filter(request.node_id, request.sku)
            response = store_pb2.ListInspectionResponse()
            waiting = self.engine.state.store.inspection
            rows = sorted(
                (node, item, units)
                for (item, node), units in waiting.items()
                if (not node_id or node == node_id) and (not sku or item == sku)
            )
            for node, item, units in rows[: checks.MAX_LIST_LIMIT]:
                response.entries.add(sku=item, node_id=node, quantity=units)
            return response

        return await self._guard("ListInspection", context, handle, write=False)
