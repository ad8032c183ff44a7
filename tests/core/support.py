"""Shared builders for core unit tests: a small fixed world and terse command helpers."""

from __future__ import annotations

from atpd.core.commands import (
    Line,
    NodeKind,
    ReservationKind,
    Reserve,
    SetStock,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.core.results import PositionView, ReserveResult
from atpd.core.state import AtpState

# Four nodes over three geo depths; "soho" sits four levels deep.
NODES: dict[str, tuple[str, ...]] = {
    "paris": ("EU", "FR", "Paris"),
    "lyon": ("EU", "FR", "Lyon"),
    "berlin": ("EU", "DE", "Berlin"),
    "soho": ("NA", "US", "NYC", "SoHo"),
}
TTL_MS = 60_000


def make_state(limits: Limits | None = None) -> AtpState:
    """A state holding the four NODES, all enabled, no stock, clock at 0."""
    state = AtpState(limits)
    for node_id, geo_path in NODES.items():
        state.apply(UpsertNode(node_id, NodeKind.STORE, geo_path), 0)
    return state


def set_node_enabled(state: AtpState, node_id: str, enabled: bool, now_ms: int) -> None:
    state.apply(UpsertNode(node_id, NodeKind.STORE, NODES[node_id], enabled=enabled), now_ms)


def put_stock(
    state: AtpState,
    sku: str,
    node_id: str,
    on_hand: int,
    *,
    now_ms: int | None = None,
    safety_stock: int | None = None,
) -> PositionView:
    """SetStock with the next source sequence for the position; returns the new position."""
    sequence = state.position(sku, node_id).last_source_sequence + 1
    command = SetStock(sku, node_id, on_hand, sequence, safety_stock)
    result = state.apply(command, state.now_ms if now_ms is None else now_ms)
    position: PositionView = result.position
    return position


def reserve(
    state: AtpState,
    reservation_id: str,
    *lines: tuple[str, str, int],
    now_ms: int | None = None,
    ttl_ms: int = TTL_MS,
    kind: ReservationKind = ReservationKind.CART,
) -> ReserveResult:
    command = Reserve(
        reservation_id,
        tuple(Line(sku, node, quantity) for sku, node, quantity in lines),
        ttl_ms,
        kind,
    )
    result: ReserveResult = state.apply(command, state.now_ms if now_ms is None else now_ms)
    return result


def atp(state: AtpState, sku: str, node_id: str) -> int:
    return state.position(sku, node_id).atp


def reserved(state: AtpState, sku: str, node_id: str) -> int:
    return state.position(sku, node_id).reserved
