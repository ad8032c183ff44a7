"""Reserve with an option token: verify the token, check the caller may act on the plan's
nodes and channel (the access gate only sees the request, whose lines are empty), and build
the Reserve command of the plan. The writer then re-checks the whole plan (core/plan_holds.py).
"""

from __future__ import annotations

from atpd.core.commands import Maker, ReservationKind, Reserve
from atpd.core.limits import Limits
from atpd.core.plan import Plan
from atpd.core.plan_holds import plan_lines
from atpd.service import validation
from atpd.service.option_tokens import InvalidToken, OptionTokens
from atpd.service.ownership import GeoPathOf, PermissionDenied
from atpd.service.principals import Principal
from atpd.service.validation import InvalidArgument
from atpd.v1 import reservations_pb2


def verified_plan(
    tokens: OptionTokens | None, token: str, now_ms: int, *, retry: bool = False
) -> Plan:
    """The plan of a token this server signed. A `retry` (the reservation id already exists)
    accepts an expired token: the stored reservation answers it if the plan is the same, so a
    client retrying after a lost answer is never refused a hold it already has."""
    if tokens is None:
        raise InvalidArgument("option_token", "this server issues no option tokens")
    try:
        return tokens.verify(token, now_ms, check_expiry=not retry)
    except InvalidToken as error:
        problem = str(error).removeprefix("option_token: ")
        raise InvalidArgument("option_token", problem) from None


def check_plan_access(principal: Principal | None, plan: Plan, geo_path_of: GeoPathOf) -> None:
    """A scoped principal may reserve only plans within its nodes and channels."""
    if principal is None:
        return
    scope = principal.scope
    if scope is not None:
        for shipment in plan.shipments:
            if not scope.contains(shipment.node_id, geo_path_of(shipment.node_id)):
                raise PermissionDenied(
                    f"ReservationService/Reserve: role {principal.role!r} (principal "
                    f"{principal.name!r}) may not act on node {shipment.node_id!r} of the "
                    f"option; its scope: {scope.describe()}"
                )
    if principal.channels is not None and plan.channel not in principal.channels:
        raise PermissionDenied(
            f"ReservationService/Reserve: role {principal.role!r} (principal "
            f"{principal.name!r}) may not act for channel {plan.channel!r} of the option"
        )


def reserve_option(
    request: reservations_pb2.ReserveRequest,
    limits: Limits,
    plan: Plan,
    maker: Maker | None,
) -> Reserve:
    """The Reserve command of a verified plan; the request's lines, channel and segment must
    be empty or the option's."""
    try:
        kind = ReservationKind(request.kind or ReservationKind.CART)
    except ValueError:
        raise InvalidArgument("kind", f"unknown reservation kind {request.kind}") from None
    if kind is ReservationKind.POS_SALE:
        raise InvalidArgument("kind", "a POS sale cannot reserve a promised option")
    lines = plan_lines(plan)
    if request.lines:
        asked = validation.lines(request.lines, limits, allow_empty=False)
        if sorted(asked, key=repr) != sorted(lines, key=repr):
            raise InvalidArgument(
                "lines", "must be empty or the option's lines when option_token is set"
            )
    if len(lines) > limits.max_lines_per_reservation:
        raise InvalidArgument(
            "option_token",
            f"the option has {len(lines)} lines, max_lines_per_reservation is "
            f"{limits.max_lines_per_reservation}",
        )
    for field, asked_name, planned in (
        ("channel", request.channel, plan.channel),
        ("segment", request.segment, plan.segment),
    ):
        if asked_name and asked_name != planned:
            raise InvalidArgument(
                field, f"{asked_name!r} differs from the option's {planned!r}; leave it empty"
            )
    ttl_ms = request.ttl_ms
    if not limits.min_ttl_ms <= ttl_ms <= limits.max_ttl_ms:
        raise InvalidArgument(
            "ttl_ms", f"{ttl_ms} is outside [{limits.min_ttl_ms}, {limits.max_ttl_ms}]"
        )
    return Reserve(
        validation.reservation_id(request.reservation_id),
        lines,
        ttl_ms,
        kind,
        plan.channel,
        plan.segment,
        maker,
        plan,
    )
