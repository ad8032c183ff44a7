"""Who may act on a reservation another principal made.

A reservation records its maker (core `Maker`: name, role, scope and channels as the gate
authenticated them). Confirm, Release and Fulfil by another principal are allowed only to
`admin`, or to the same role with a scope that covers the maker's: every node id and geo prefix
of the maker's scope inside the caller's (a caller without a node scope covers any), every
channel of the maker's among the caller's (a caller without channels covers any). So two tills
of the same store may finish each other's sales, a region's POS token a store's, and a checkout
service for the web channel cannot release the app's carts. A reservation without a maker (made
with authentication off, or before makers were recorded) keeps the older rule: any caller whose
role and node scope allow the method.

The servicer checks this just before it hands the command to the engine; the maker of a
reservation never changes and nothing awaits between the check and the command's application
(lifecycle commands never wait for the stock table to grow), so the check cannot be raced.
"""

from __future__ import annotations

from collections.abc import Callable

from atpd.core.commands import Maker
from atpd.service.principals import Principal

GeoPathOf = Callable[[str], tuple[str, ...] | None]


class PermissionDenied(Exception):
    """A call its principal may not make on this object (gRPC PERMISSION_DENIED)."""


def covers(principal: Principal, maker: Maker, geo_path_of: GeoPathOf) -> bool:
    """True when `principal`'s scope and channels include all of `maker`'s."""
    channels = principal.channels
    if channels is not None and not (maker.channels and channels.issuperset(maker.channels)):
        return False
    scope = principal.scope
    if scope is None:
        return True
    if not (maker.node_ids or maker.geo_prefixes):
        return False  # the maker may act network-wide, the caller may not
    for node_id in maker.node_ids:
        if not scope.contains(node_id, geo_path_of(node_id)):
            return False
    for prefix in maker.geo_prefixes:
        path = tuple(prefix.split("/"))
        if not any(path[: len(own)] == own for own in scope.geo_prefixes):
            return False
    return True


def may_act_on(principal: Principal, maker: Maker | None, geo_path_of: GeoPathOf) -> bool:
    if maker is None or principal.role == "admin" or maker.same_principal(principal.maker):
        return True
    return principal.role == maker.role and covers(principal, maker, geo_path_of)


def describe_maker(maker: Maker) -> str:
    parts = [f"principal {maker.name!r}", f"role {maker.role!r}"]
    scope = list(maker.node_ids) + [prefix + "/*" for prefix in maker.geo_prefixes]
    if scope:
        parts.append(f"scope {', '.join(scope)}")
    if maker.channels:
        parts.append(f"channels {', '.join(maker.channels)}")
    return ", ".join(parts)


def check_owner(
    method: str,
    principal: Principal | None,
    reservation_id: str,
    maker: Maker | None,
    geo_path_of: GeoPathOf,
) -> None:
    """Raise PermissionDenied naming the method, the caller's role and the reservation when
    `principal` may not act on a reservation made by `maker`. No principal (no access gate)
    and the anonymous principal (authentication off) may act on any."""
    if principal is None or may_act_on(principal, maker, geo_path_of):
        return
    assert maker is not None
    raise PermissionDenied(
        f"{method}: role {principal.role!r} (principal {principal.name!r}) may not act on "
        f"reservation {reservation_id!r}, made by another principal ({describe_maker(maker)}); "
        "only admin or the same role with a scope that covers the maker's may"
    )
