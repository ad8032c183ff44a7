"""ReservationService.AmendReservation, as a mixin of ReservationServicer (servicers.py):
validate, check the caller may act on the reservation (as for Release), apply, answer."""

from __future__ import annotations

from typing import Any

from atpd.core.commands_amend import AmendReservation, AmendResult
from atpd.core.limits import Limits
from atpd.service import convert, validation
from atpd.service.ownership import check_owner
from atpd.service.principals import current_principal
from atpd.service.validation import InvalidArgument
from atpd.v1 import reservations_pb2


def amend_command(
    request: reservations_pb2.AmendReservationRequest, limits: Limits
) -> AmendReservation:
    ttl_ms = request.ttl_ms
    if ttl_ms and not limits.min_ttl_ms <= ttl_ms <= limits.max_ttl_ms:
        raise InvalidArgument(
            "ttl_ms",
            f"{ttl_ms} is not in [{limits.min_ttl_ms}, {limits.max_ttl_ms}] (min_ttl_ms, "
            "max_ttl_ms); 0 keeps the expiry",
        )
    return AmendReservation(
        validation.reservation_id(request.reservation_id),
        validation.lines(request.lines, limits, allow_empty=False),
        ttl_ms,
    )


def amend_response(result: AmendResult) -> reservations_pb2.AmendReservationResponse:
    response = reservations_pb2.AmendReservationResponse(
        outcome=convert.pb_enum(result.outcome),
        reservation=convert.reservation_message(result.reservation),
        replayed=result.replayed,
        disabled_node_id=result.disabled_node_id,
    )
    for shortage in result.shortages:
        response.shortages.add(
            sku=shortage.sku,
            node_id=shortage.node_id,
            requested=shortage.requested,
            available=shortage.available,
            reason=convert.pb_enum(shortage.reason),
        )
    return response


class AmendMixin:
    """Needs the ServicerBase attributes (engine, limits, _guard) and `_geo_path_of`."""

    async def AmendReservation(
        self, request: reservations_pb2.AmendReservationRequest, context: Any
    ) -> reservations_pb2.AmendReservationResponse:
        servicer: Any = self  # a ReservationServicer (ServicerBase)

        async def handle() -> reservations_pb2.AmendReservationResponse:
            command = amend_command(request, servicer.limits)
            principal = current_principal()
            if principal is not None:
                # Race-free: no await from here to the command's application (ownership.py).
                reservation = servicer.engine.state.reservations.get(command.reservation_id)
                if reservation is not None:
                    check_owner(
                        "ReservationService/AmendReservation",
                        principal,
                        command.reservation_id,
                        reservation.maker,
                        servicer._geo_path_of,
                    )
            result: AmendResult = await servicer.engine.execute(command)
            return amend_response(result)

        response: reservations_pb2.AmendReservationResponse = await servicer._guard(
            "AmendReservation", context, handle, write=True
        )
        return response
