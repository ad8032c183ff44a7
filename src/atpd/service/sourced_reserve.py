"""Reserve of lines that name no node (issue 12): the server sources them by the caller's
rules (the BEST option of a promise to the request's destination) and holds that plan exactly
as a Reserve of its option token would (service/option_reserve.py, core/plan_holds.py).

A retry with the same reservation id and request reuses the stored reservation's plan, so it
replays the stored answer rather than sourcing again after stock moved.
"""

from __future__ import annotations

from atpd.core.commands import Reserve
from atpd.core.handlers_network import compiled_network
from atpd.core.limits import Limits
from atpd.core.plan import Plan
from atpd.core.promise_best import PICKUP_PREFIX, Best, best_now, cart_of
from atpd.core.state_fields import StateFields
from atpd.service import validation
from atpd.service.option_reserve import check_plan_access, reserve_option
from atpd.service.ownership import GeoPathOf
from atpd.service.principals import Principal
from atpd.service.validation import InvalidArgument
from atpd.v1 import reservations_pb2


def is_sourced(request: reservations_pb2.ReserveRequest) -> bool:
    """True when the request's lines name no node and the server must source them; refuses
    lines mixing empty and set node ids, and a destination with lines that name nodes."""
    has_destination = request.HasField("destination") or bool(request.pickup_node_id)
    nodeless = [index for index, line in enumerate(request.lines) if not line.node_id]
    if not nodeless:
        if has_destination and request.option_token:
            raise InvalidArgument("destination", "not with option_token: the option has its own")
        if has_destination:
            raise InvalidArgument(
                "destination", "only for lines that name no node (the server sources those)"
            )
        return False
    if len(nodeless) != len(request.lines):
        first = nodeless[0]
        raise InvalidArgument(
            f"lines[{first}].node_id",
            "empty while other lines name their node: either every line names its node or "
            "none does (then the server sources them)",
        )
    if request.option_token:
        raise InvalidArgument("lines", "must be empty or the option's lines with option_token")
    if not has_destination:
        raise InvalidArgument(
            "lines[0].node_id",
            "empty: name the node, or give a destination (country, postal_code) or a "
            "pickup_node_id so the server sources the lines (they need a destination)",
        )
    if request.HasField("destination") and request.pickup_node_id:
        raise InvalidArgument(
            "destination", "give either destination (country, postal_code) or pickup_node_id"
        )
    if request.HasField("destination") and not request.destination.country:
        raise InvalidArgument("destination.country", "empty")
    return True


def cart(request: reservations_pb2.ReserveRequest) -> list[tuple[str, int]]:
    return [(line.sku, int(line.quantity)) for line in request.lines]


def stored_plan(state: StateFields, request: reservations_pb2.ReserveRequest) -> Plan | None:
    """The plan of the reservation this request already made (same id, cart, destination and
    channel), so a retry replays it; None otherwise."""
    row = state.reservations.find(request.reservation_id)
    plan = None if row < 0 else state.reservations.plans.get(row)
    if plan is None or sorted(cart_of(plan)) != sorted(cart(request)):
        return None
    if request.channel and request.channel != plan.channel:
        return None
    if request.segment and request.segment != plan.segment:
        return None
    if request.pickup_node_id:
        destination = PICKUP_PREFIX + request.pickup_node_id
    else:
        if not state.network.version:
            return None
        network = compiled_network(state)
        zone = network.resolve_destination(
            request.destination.country, request.destination.postal_code
        )
        destination = network.zone_ids[zone] if zone >= 0 else ""
    return plan if plan.destination == destination else None


def sourced_plan(state: StateFields, request: reservations_pb2.ReserveRequest, now_ms: int) -> Best:
    """The plan to hold for a node-less request: the stored one on a retry, else the BEST
    option now (or why there is none). Raises like a Promise for bad input."""
    plan = stored_plan(state, request)
    if plan is not None:
        return Best(plan, None, "")
    return best_now(
        state,
        cart(request),
        now_ms,
        country=request.destination.country,
        postal_code=request.destination.postal_code,
        pickup_node_id=request.pickup_node_id,
        channel=request.channel,
        segment=request.segment,
    )


def sourced_command(
    state: StateFields,
    request: reservations_pb2.ReserveRequest,
    limits: Limits,
    now_ms: int,
    principal: Principal | None,
    geo_path_of: GeoPathOf,
) -> Reserve | str:
    """The Reserve command holding the sourced plan, or why nothing can fulfil the lines."""
    validation.reservation_id(request.reservation_id)
    best = sourced_plan(state, request, now_ms)
    if best.plan is None:
        return best.reason
    check_plan_access(principal, best.plan, geo_path_of)
    planned = reservations_pb2.ReserveRequest()
    planned.CopyFrom(request)
    del planned.lines[:]  # the plan's lines, with their nodes, replace the node-less ones
    maker = principal.maker if principal is not None else None
    return reserve_option(planned, limits, best.plan, maker)
