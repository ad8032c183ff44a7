"""The single best way to fulfil a cart now (issue 12): what a Reserve answering
PROMISE_CHANGED offers instead (`best_option_token`), and what a Reserve of lines that name no
node holds (the server sources them by the caller's rules).

Pure, like core/promise.py: reads the state, never changes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atpd.core.plan import Plan
from atpd.core.promise import PromiseAnswer, PromiseOption, promise
from atpd.core.promise_context import NoNetwork
from atpd.core.results import CommandRejected
from atpd.core.sourcing import Objective
from atpd.core.state_fields import StateFields

PICKUP_PREFIX = "pickup:"


@dataclass(frozen=True, slots=True)
class Best:
    """The best option (delivery option, or the soonest pickup's plan), or why there is none."""

    plan: Plan | None
    option: PromiseOption | None  # None for a pickup (its plan is enough) or no option
    reason: str  # why there is no option ("" when there is one)


def best_of(answer: PromiseAnswer) -> Best:
    """BEST under the caller's weights among delivery options; the soonest pickup option."""
    for option in answer.options:
        if Objective.BEST in option.reasons:
            return Best(option.plan, option, "")
    if answer.options:  # every search lists BEST; kept total for safety
        return Best(answer.options[0].plan, answer.options[0], "")
    if answer.pickup_options:
        return Best(answer.pickup_options[0].plan, None, "")
    return Best(None, None, answer.no_option_reason or "no option")


def cart_of(plan: Plan) -> list[tuple[str, int]]:
    """The plan's lines summed per SKU, in first-seen order: the cart that was promised."""
    quantities: dict[str, int] = {}
    for shipment in plan.shipments:
        for line in shipment.lines:
            quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
    return list(quantities.items())


def best_now(
    state: StateFields,
    lines: Sequence[tuple[str, int]],
    now_ms: int,
    *,
    country: str = "",
    postal_code: str = "",
    pickup_node_id: str = "",
    channel: str = "",
    segment: str = "",
) -> Best:
    """The best option for `lines` to a destination. Raises like `promise` for bad input."""
    answer = promise(
        state,
        lines,
        now_ms,
        country=country,
        postal_code=postal_code,
        pickup_node_id=pickup_node_id,
        channel=channel,
        segment=segment,
    )
    return best_of(answer)


def best_instead(state: StateFields, plan: Plan, now_ms: int) -> Best:
    """The best option now for the cart, destination and caller of a plan that can no longer
    be held; no option (never an error) when the network, zone or store went away."""
    store_id = plan.destination.removeprefix(PICKUP_PREFIX)
    is_pickup = store_id != plan.destination
    try:
        answer = promise(
            state,
            cart_of(plan),
            now_ms,
            pickup_node_id=store_id if is_pickup else "",
            zone_id="" if is_pickup else plan.destination,
            channel=plan.channel,
            segment=plan.segment,
        )
    except (CommandRejected, NoNetwork) as error:
        return Best(None, None, str(error))
    return best_of(answer)
