"""Data the benchmarks run on: a synthetic 100-node network with a realistic fill, and the demo
data set. Every stock write here goes through `AtpState.apply(SetStock)`, the real path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atpd.core import kernels
from atpd.core.commands import NodeKind, SetStock, UpsertNode
from atpd.core.results import Outcome
from atpd.core.state import AtpState

# (geo path, boutiques there). Three levels: region / country / city.
_CITIES: tuple[tuple[str, int], ...] = (
    ("EU/FR/Paris", 7),
    ("EU/FR/Lyon", 1),
    ("EU/FR/Nice", 1),
    ("EU/FR/Cannes", 1),
    ("EU/GB/London", 6),
    ("EU/GB/Manchester", 1),
    ("EU/IT/Milan", 4),
    ("EU/IT/Rome", 2),
    ("EU/IT/Florence", 1),
    ("EU/IT/Venice", 1),
    ("EU/DE/Munich", 2),
    ("EU/DE/Berlin", 2),
    ("EU/DE/Hamburg", 1),
    ("EU/DE/Dusseldorf", 1),
    ("EU/ES/Madrid", 2),
    ("EU/ES/Barcelona", 2),
    ("EU/CH/Geneva", 2),
    ("EU/CH/Zurich", 1),
    ("EU/NL/Amsterdam", 1),
    ("EU/MC/Monaco", 1),
    ("EU/AE/Dubai", 3),
    ("AM/US/New York", 7),
    ("AM/US/Los Angeles", 3),
    ("AM/US/Miami", 2),
    ("AM/US/Chicago", 2),
    ("AM/US/San Francisco", 2),
    ("AM/US/Las Vegas", 2),
    ("AM/US/Boston", 1),
    ("AM/US/Houston", 1),
    ("AM/CA/Toronto", 2),
    ("AM/CA/Vancouver", 1),
    ("AM/MX/Mexico City", 1),
    ("AM/BR/Sao Paulo", 2),
    ("APAC/JP/Tokyo", 6),
    ("APAC/JP/Osaka", 2),
    ("APAC/KR/Seoul", 3),
    ("APAC/CN/Shanghai", 3),
    ("APAC/CN/Beijing", 2),
    ("APAC/CN/Shenzhen", 1),
    ("APAC/CN/Chengdu", 1),
    ("APAC/HK/Hong Kong", 3),
    ("APAC/TW/Taipei", 1),
    ("APAC/SG/Singapore", 2),
    ("APAC/AU/Sydney", 2),
    ("APAC/AU/Melbourne", 1),
    ("APAC/TH/Bangkok", 1),
)
_WAREHOUSES = (
    ("WH-EU-01", "EU/IT/Florence"),
    ("WH-EU-02", "EU/DE/Hamburg"),
    ("WH-AM-01", "AM/US/Newark"),
    ("WH-APAC-01", "APAC/SG/Singapore"),
)


def synthetic_network(node_count: int = 100) -> list[UpsertNode]:
    """4 regional warehouses, then boutiques spread over 46 cities in 3 regions (3 geo levels)."""
    assert len(_WAREHOUSES) < node_count <= len(_WAREHOUSES) + sum(n for _, n in _CITIES)
    nodes = [
        UpsertNode(node_id, NodeKind.WAREHOUSE, tuple(geo.split("/")), ships=True, pickup=False)
        for node_id, geo in _WAREHOUSES
    ]
    # Round-robin over cities, each up to its boutique count, so any node_count stays spread.
    remaining = {geo: count for geo, count in _CITIES}
    serial: dict[str, int] = {}
    while len(nodes) < node_count:
        for geo, _ in _CITIES:
            if len(nodes) == node_count:
                break
            if remaining[geo] == 0:
                continue
            remaining[geo] -= 1
            city = geo.rsplit("/", 1)[1]
            code = "".join(ch for ch in city.upper() if ch.isalpha())[:3]
            serial[code] = serial.get(code, 0) + 1
            node_id = f"ST-{code}-{serial[code]:02d}"
            nodes.append(UpsertNode(node_id, NodeKind.STORE, tuple(geo.split("/")), pickup=True))
    assert len({n.node_id for n in nodes}) == len(nodes)
    return nodes


@dataclass(frozen=True, slots=True)
class SyntheticState:
    state: AtpState
    node_count: int
    sku_count: int
    positions: int
    # SKUs to query, drawn with replacement by popularity (what real traffic asks for).
    query_skus: tuple[str, ...]
    stocked_nodes_mean: float  # nodes with ATP > 0 per queried SKU, on average


def synthetic_state(
    sku_count: int, node_count: int = 100, queries: int = 1000, seed: int = 3
) -> SyntheticState:
    """A state over `synthetic_network(node_count)`: warehouses hold ~90% of the catalogue
    (lognormal depth, safety stock on deep positions); boutiques hold popular SKUs far more
    often (1-6 units, ~3% sold out at zero). Popularity is Zipf-like."""
    kernels.warm_up()
    rng = np.random.default_rng(seed)
    state = AtpState()
    now_ms = 1_000_000
    network = synthetic_network(node_count)
    for node in network:
        assert state.apply(node, now_ms).outcome is Outcome.OK
    skus = [f"SKU-{i:07d}" for i in range(sku_count)]
    popularity = 1.0 / np.arange(1, sku_count + 1) ** 0.8
    popularity = popularity[rng.permutation(sku_count)]
    relative = popularity / popularity.max()
    store_probability = np.minimum(0.9, 0.04 + 0.6 * relative**0.35)
    apply = state.apply
    positions = 0
    for index, node in enumerate(network):
        warehouse = node.kind is NodeKind.WAREHOUSE
        held = rng.random(sku_count) < (0.9 if warehouse else store_probability)
        rows = np.flatnonzero(held)
        if warehouse:
            on_hand = np.ceil(rng.lognormal(np.log(8 + 40 * relative[rows]), 0.7)).astype(int)
            safety = np.where(on_hand >= 10, on_hand // 10, 0)
        else:
            on_hand = np.minimum(rng.geometric(0.5, rows.shape[0]), 6)
            on_hand[rng.random(rows.shape[0]) < 0.03] = 0
            safety = np.zeros(rows.shape[0], int)
        for row, units, keep in zip(rows.tolist(), on_hand.tolist(), safety.tolist(), strict=True):
            result = apply(SetStock(skus[row], node.node_id, units, 1, keep or None), now_ms)
            assert result.outcome is Outcome.OK
            positions += 1
        assert index < node_count
    picks = rng.choice(sku_count, size=queries, p=popularity / popularity.sum())
    query_skus = tuple(skus[i] for i in picks.tolist())
    stocked = [
        int(np.count_nonzero(state.availability([sku]).matrix[0, :node_count]))
        for sku in query_skus
    ]
    return SyntheticState(
        state, node_count, sku_count, positions, query_skus, float(np.mean(stocked))
    )


def demo_state(now_ms: int) -> AtpState:
    from atpd.demo.dataset import load_demo

    kernels.warm_up()
    state = AtpState()
    load_demo(state, now_ms)
    return state
