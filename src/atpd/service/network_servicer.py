"""NetworkService: the fulfilment network (SetNetwork, GetNetwork) and carrier capacity
(SetCarrierCapacity, GetCarrierCapacity)."""

from __future__ import annotations

from typing import Any

from atpd.core.commands import SetNetwork
from atpd.core.handlers_network import CapacityDay, capacity_calendar, compiled_network
from atpd.core.network import NetworkError
from atpd.core.network_parse import read_network_document
from atpd.service import convert, validation
from atpd.service.servicers import ServicerBase
from atpd.v1 import network_pb2, network_pb2_grpc


def day_message(day: CapacityDay) -> network_pb2.CarrierCapacityDay:
    return network_pb2.CarrierCapacityDay(
        date=day.date, slots=day.slots, held=day.held, left=day.left, explicit=day.explicit
    )


class NetworkServicer(ServicerBase, network_pb2_grpc.NetworkServiceServicer):
    async def SetNetwork(
        self, request: network_pb2.SetNetworkRequest, context: Any
    ) -> network_pb2.SetNetworkResponse:
        async def handle() -> network_pb2.SetNetworkResponse:
            command = validation.set_network(request)
            document = await self.document_off_loop(
                read_network_document, command.text, command.source, NetworkError, "network"
            )
            result = await self.engine.execute(SetNetwork(command.text, command.source, document))
            return network_pb2.SetNetworkResponse(
                outcome=convert.pb_enum(result.outcome),
                version=result.version,
                previous_version=result.previous_version,
            )

        return await self._guard("SetNetwork", context, handle, write=True)

    async def GetNetwork(
        self, request: network_pb2.GetNetworkRequest, context: Any
    ) -> network_pb2.GetNetworkResponse:
        async def handle() -> network_pb2.GetNetworkResponse:
            state = self.engine.state
            network = state.network
            return network_pb2.GetNetworkResponse(
                version=network.version,
                source=network.source,
                text=network.text,
                node_count=len(network.nodes),
                services=[s.service_id for s in network.services],
                zones=[z.zone_id for z in network.zones],
                lane_count=len(compiled_network(state).lane_from),
                capacity_entries=len(state.carrier_capacity),
            )

        return await self._guard("GetNetwork", context, handle, write=False)

    async def SetCarrierCapacity(
        self, request: network_pb2.SetCarrierCapacityRequest, context: Any
    ) -> network_pb2.SetCarrierCapacityResponse:
        async def handle() -> network_pb2.SetCarrierCapacityResponse:
            result = await self.engine.execute(validation.set_carrier_capacity(request))
            day = CapacityDay(
                result.date,
                result.slots,
                result.held,
                max(result.slots - result.held, 0),
                True,
            )
            return network_pb2.SetCarrierCapacityResponse(
                outcome=convert.pb_enum(result.outcome),
                day=day_message(day),
                had_slots=result.previous_slots is not None,
                previous_slots=result.previous_slots or 0,
            )

        return await self._guard("SetCarrierCapacity", context, handle, write=True)

    async def GetCarrierCapacity(
        self, request: network_pb2.GetCarrierCapacityRequest, context: Any
    ) -> network_pb2.GetCarrierCapacityResponse:
        async def handle() -> network_pb2.GetCarrierCapacityResponse:
            service, node_id, first, last = validation.carrier_capacity_query(request)
            self.engine.catch_up()
            days = capacity_calendar(self.engine.state, service, node_id, first, last)
            return network_pb2.GetCarrierCapacityResponse(
                service=service, node_id=node_id, days=[day_message(d) for d in days]
            )

        return await self._guard("GetCarrierCapacity", context, handle, write=False)
