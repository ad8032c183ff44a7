"""Shared builders for the availability-rules tests: a small world of warehouses, stores and an
outlet over three geo levels, rule texts composed from tables, and caller-aware helpers that
read ATP both ways (the numba kernel and the scalar `caller_atp`) and insist they agree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypedDict

from atpd.core.commands import (
    AddSupply,
    Line,
    NodeKind,
    ReservationKind,
    Reserve,
    SetRules,
    SetStock,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.core.results import ReserveResult, RulesResult, SupplyResult
from atpd.core.state import AtpState
from atpd.core.supply import SupplyKind

HOUR_MS = 3_600_000
TTL_MS = 60_000
SOURCE = "shop.toml"

# node id -> (kind, geo path, tags)
NODES: dict[str, tuple[NodeKind, tuple[str, ...], tuple[str, ...]]] = {
    "wh-par": (NodeKind.WAREHOUSE, ("EU", "FR", "Paris"), ()),
    "wh-nyc": (NodeKind.WAREHOUSE, ("NA", "US", "NYC"), ()),
    "st-par": (NodeKind.STORE, ("EU", "FR", "Paris"), ("flagship",)),
    "st-lyo": (NodeKind.STORE, ("EU", "FR", "Lyon"), ()),
    "st-ber": (NodeKind.STORE, ("EU", "DE", "Berlin"), ("flagship", "east")),
    "out-ber": (NodeKind.OUTLET, ("EU", "DE", "Berlin"), ("east",)),
}
ALL_NODES = frozenset(NODES)
WAREHOUSES = frozenset(n for n, (kind, _, _) in NODES.items() if kind is NodeKind.WAREHOUSE)
STORES = frozenset(n for n, (kind, _, _) in NODES.items() if kind is NodeKind.STORE)
# A SKU row only used to move the core's clock (see `advance`).
CLOCK_SKU = "zz-clock"


class Caller(TypedDict):
    """Who asks: keyword arguments for the `*_as` helpers."""

    channel: str
    segment: str


def make_world(limits: Limits | None = None) -> AtpState:
    """A state holding the six NODES, all enabled, no stock, no rules, clock at 0."""
    state = AtpState(limits)
    for node_id, (kind, geo_path, tags) in NODES.items():
        state.apply(UpsertNode(node_id, kind, geo_path, tags=tags), 0)
    return state


def rules_text(
    tables: Mapping[str, str] | None = None,
    protections: Iterable[str] = (),
    *,
    version: str = "v1",
    defaults: tuple[str, str] | None = ("web", "standard"),
) -> str:
    """A rule set with channels web and store, segments standard and vip (empty tables unless
    `tables` gives their body), plus any other `tables` and `[[protections]]` bodies."""
    all_tables = {
        "channels.web": "",
        "channels.store": "",
        "segments.standard": "",
        "segments.vip": "",
    }
    all_tables.update(tables or {})
    parts = [f'version = "{version}"']
    if defaults is not None:
        parts.append(f'[defaults]\nchannel = "{defaults[0]}"\nsegment = "{defaults[1]}"')
    # [policy] first, then the rest in a stable order (sub-tables after their parents).
    for name in sorted(all_tables, key=lambda table: (table != "policy", table)):
        parts.append(f"[{name}]\n{all_tables[name]}")
    parts.extend(f"[[protections]]\n{body}" for body in protections)
    return "\n".join(parts) + "\n"


def set_rules(state: AtpState, text: str, source: str = SOURCE) -> RulesResult:
    result: RulesResult = state.apply(SetRules(text, source), state.now_ms)
    return result


def stock(state: AtpState, sku: str, node_id: str, on_hand: int, safety: int | None = None) -> None:
    """SetStock with the next source sequence for the position."""
    sequence = state.position(sku, node_id).last_source_sequence + 1
    state.apply(SetStock(sku, node_id, on_hand, sequence, safety), state.now_ms)


def advance(state: AtpState, now_ms: int) -> None:
    """Move the core's clock to `now_ms` with a command that changes something unrelated (a
    command that changes nothing leaves the clock where it was)."""
    sequence = state.position(CLOCK_SKU, "wh-nyc").last_source_sequence + 1
    state.apply(SetStock(CLOCK_SKU, "wh-nyc", 0, sequence), now_ms)
    assert state.now_ms == now_ms


def reserve_as(
    state: AtpState,
    reservation_id: str,
    *lines: tuple[str, str, int],
    channel: str = "",
    segment: str = "",
    ttl_ms: int = TTL_MS,
    kind: ReservationKind = ReservationKind.CART,
) -> ReserveResult:
    command = Reserve(
        reservation_id,
        tuple(Line(sku, node, quantity) for sku, node, quantity in lines),
        ttl_ms,
        kind,
        channel,
        segment,
    )
    result: ReserveResult = state.apply(command, state.now_ms)
    return result


def add_supply(
    state: AtpState,
    supply_id: str,
    sku: str,
    node_id: str,
    quantity: int,
    eta_ms: int,
    kind: SupplyKind,
) -> SupplyResult:
    command = AddSupply(supply_id, sku, node_id, quantity, eta_ms, kind)
    result: SupplyResult = state.apply(command, state.now_ms)
    return result


def atp_by_node(state: AtpState, sku: str, channel: str = "", segment: str = "") -> dict[str, int]:
    """Every node's ATP of `sku` for a caller, from `availability` (the kernel), checked against
    the scalar path node by node; nodes with 0 are left out."""
    view = state.availability([sku], channel=channel, segment=segment)
    policy = state.policy(channel, segment)
    row = state.skus.get(sku)
    result = {}
    for node in state.nodes:
        kernel = int(view.matrix[0, node.index])
        if policy is not None and row >= 0:
            scalar = state.caller_atp(policy, row, node.index)
            assert kernel == scalar, (sku, node.node_id, channel, segment, kernel, scalar)
            terms = state.explain_position(policy, row, node.index)
            if policy.visible[node.index]:
                assert terms["atp"] == kernel, (terms, kernel)
        if kernel:
            result[node.node_id] = kernel
    assert int(view.matrix[0, -1]) == sum(result.values())
    return result


def atp_as(state: AtpState, sku: str, node_id: str, channel: str = "", segment: str = "") -> int:
    return atp_by_node(state, sku, channel, segment).get(node_id, 0)


def visible_nodes(state: AtpState, channel: str = "", segment: str = "") -> set[str]:
    policy = state.policy(channel, segment)
    if policy is None:
        return {n.node_id for n in state.nodes if n.enabled}
    return {n.node_id for n in state.nodes if policy.visible[n.index]}


def consumed(state: AtpState, protection: str, sku: str, node_id: str) -> int:
    """Units of `protection` (by name, in the current rules) held by its beneficiaries."""
    names = [p.name for p in state.rules.protections]
    row = state.skus.get(sku)
    table = state.protection_consumed.get(row)
    if table is None or protection not in names:
        return 0
    return int(table[names.index(protection), state.node_ids.get(node_id)])
