"""Promise figures (issue 12 §5): a whole promise in the core — caller's ATP, time-phased
availability, origins over a synthetic 300-node network with 6 carrier services, dates from the
day tables, cost and CO2, the sourcing search, plans — for a 3-line order; and a listing page
(PromiseBatch: 1,000 SKUs to one zone) per SKU.

The network: 30 warehouses and 270 stores scattered over Europe (8 time zones' worth of
longitudes is not needed: all in Europe/Paris or Europe/London), 6 services (2 from
warehouses, 4 from stores, transit 0 to 4 days), 4 zones; 1,000 SKUs stocked at about a third of
the nodes with 0 to 4 units; rules: standard 1 shipment from warehouses, vip up to 3 from
stores too (the VIP caller is measured: the larger search).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import numpy as np

from atpd.core.commands import NodeKind, SetNetwork, SetRules, SetStock, UpsertNode
from atpd.core.promise import promise
from atpd.core.promise import warm_up as warm_promise_kernels
from atpd.core.promise_listing import earliest_deliveries
from atpd.core.state import AtpState
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.core import BATCH, measure_calls
from bench.timing import summary_us, timer_overhead_ns, trial_p50s_us

NOW_MS = 1_796_032_800_000  # 2026-11-30 10:00 UTC, a Monday
NODES = 300
WAREHOUSES = 30
SKUS = 1_000
LINES = 3
ZONES = (("fr", "FR", 46.6, 1.9), ("de", "DE", 51.2, 10.4), ("it", "IT", 42.8, 12.5))
ZONES_WITH_PREFIX = (("fr-paris", "FR", "75", 48.86, 2.35),)
SERVICES = (
    ("wh-road", "road", "WAREHOUSE", 2, 6.0, 0.5, 0.002),
    ("wh-air", "air", "WAREHOUSE", 1, 18.0, 1.0, 0.004),
    ("st-courier", "courier", "STORE", 0, 15.0, 0.0, 0.9),
    ("st-road", "road", "STORE", 3, 5.0, 0.5, 0.002),
    ("st-express", "road", "STORE", 1, 9.0, 0.8, 0.003),
    ("st-economy", "road", "STORE", 4, 3.5, 0.2, 0.001),
)
RULES = """\
version = "bench"
[defaults]
channel = "web"
segment = "standard"
[policy]
nodes = { kinds = ["WAREHOUSE", "STORE"] }
sourcing = { max_shipments = 1, ship_from_kinds = ["WAREHOUSE"] }
[channels.web]
[segments.standard]
[segments.vip.sourcing]
max_shipments = 3
ship_from_kinds = ["WAREHOUSE", "STORE"]
weights = { speed_per_day = 2000, per_shipment = 300 }
"""


def node_id(index: int) -> str:
    return f"WH-{index:03d}" if index < WAREHOUSES else f"ST-{index:03d}"


def network_text(rng: np.random.Generator) -> str:
    parts = [
        'version = "bench"\n[node_defaults]\ntime_zone = "Europe/Paris"\nprocessing_hours = 2\n'
        'cutoff = "16:00"\nopen_days = ["mon", "tue", "wed", "thu", "fri", "sat"]\n'
        'closed_dates = ["2026-12-25"]\n'
    ]
    for index in range(NODES):
        latitude = rng.uniform(41.0, 54.0)
        longitude = rng.uniform(-4.0, 16.0)
        zone = "Europe/London" if longitude < 0 else "Europe/Paris"
        parts.append(
            f"[nodes.{node_id(index)}]\nlatitude = {latitude:.4f}\nlongitude = {longitude:.4f}\n"
            f'time_zone = "{zone}"\n'
        )
    for zone_id, country, latitude, longitude in ZONES:
        parts.append(
            f'[zones.{zone_id}]\ncountry = "{country}"\nlatitude = {latitude}\n'
            f"longitude = {longitude}\n"
        )
    for zone_id, country, prefix, latitude, longitude in ZONES_WITH_PREFIX:
        parts.append(
            f'[zones.{zone_id}]\ncountry = "{country}"\npostal_prefixes = ["{prefix}"]\n'
            f"latitude = {latitude}\nlongitude = {longitude}\n"
        )
    zone_ids = [z[0] for z in ZONES] + [z[0] for z in ZONES_WITH_PREFIX]
    for service_id, mode, kind, transit, base, per_item, per_km in SERVICES:
        transit_days = ", ".join(f"{zone} = {transit}" for zone in zone_ids)
        parts.append(
            f'[services.{service_id}]\nmode = "{mode}"\norigin = {{ kinds = ["{kind.lower()}"] }}\n'
            f"transit_days = {{ {transit_days} }}\n"
            f"cost = {{ base = {base}, per_item = {per_item}, per_km = {per_km} }}\n"
            "item_weight_kg = 1.0\n"
        )
    parts.append(
        "[co2]\nweight_classes_kg = [2.0, 10.0]\ncourier = [90.0, 140.0]\n"
        "road = [35.0, 60.0]\nair = [600.0, 1100.0]\n"
    )
    return "\n".join(parts)


def world(rng: np.random.Generator) -> AtpState:
    state = AtpState()
    for index in range(NODES):
        kind = NodeKind.WAREHOUSE if index < WAREHOUSES else NodeKind.STORE
        region = "FR" if index % 2 else "IT"
        state.apply(
            UpsertNode(node_id(index), kind, ("EU", region, f"C{index}"), ships=True, pickup=True),
            NOW_MS,
        )
    state.apply(SetNetwork(network_text(rng), "bench-network.toml"), NOW_MS)
    state.apply(SetRules(RULES, "bench-rules.toml"), NOW_MS)
    sequence = 0
    for sku in range(SKUS):
        for index in np.flatnonzero(rng.random(NODES) < 0.33).tolist():
            sequence += 1
            on_hand = int(rng.integers(0, 5))
            state.apply(SetStock(f"SKU-{sku:05d}", node_id(index), on_hand, sequence, 0), NOW_MS)
    return state


def shared_world(ctx: Context) -> AtpState:
    state: AtpState = ctx.fixture("promise_world", lambda: world(np.random.default_rng(7)))
    return state


@benchmark("promise_us_p50", "us", Target("<=", 1000.0))
def promise_p50(ctx: Context) -> Figure:
    """In-core promise of a 3-line order to one postal code for a VIP caller (up to 3
    shipments, stores too) over a 300-node, 6-service network: p50 of single calls."""
    warm_promise_kernels()
    state = shared_world(ctx)
    rng = np.random.default_rng(13)
    orders = [
        [(f"SKU-{sku:05d}", int(rng.integers(1, 3))) for sku in rng.choice(SKUS, LINES, False)]
        for _ in range(200)
    ]

    def call(order: list[tuple[str, int]]) -> object:
        return promise(state, order, NOW_MS, "FR", "75008", segment="vip")

    answers = [call(order) for order in orders]
    with_options = sum(bool(answer.options) for answer in answers)  # type: ignore[attr-defined]
    assert with_options > len(orders) // 2, with_options
    overhead_ns = timer_overhead_ns()
    rounds = ctx.size(1000, 150)
    gc.collect()
    measure_calls(call, orders, BATCH, max(1, rounds // 10), overhead_ns)
    cpu_means: list[float] = []
    batch_means, singles = measure_calls(call, orders, BATCH, rounds, overhead_ns, cpu_means)
    details: dict[str, Any] = dict(summary_us(batch_means, singles, cpu_means))
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["orders_with_options"] = f"{with_options}/{len(orders)}"
    details["options_per_order_mean"] = round(
        statistics.mean(len(answer.options) for answer in answers),  # type: ignore[attr-defined]
        2,
    )
    return Figure(
        float(details["single_us_p50"]),
        details,
        "core.promise.promise, 200 random 3-line VIP orders to FR 75008, cycling",
    )


@benchmark("promise_listing_us_per_sku", "us", Target("<=", 20.0))
def promise_listing(ctx: Context) -> Figure:
    """In-core listing (PromiseBatch): the earliest delivery date of 1,000 SKUs to one zone
    for a VIP caller, per SKU (one call's time / 1,000)."""
    warm_promise_kernels()
    state = shared_world(ctx)
    skus = [f"SKU-{sku:05d}" for sku in range(SKUS)]
    earliest_deliveries(state, skus, NOW_MS, "FR", "75008", segment="vip")
    rounds = ctx.size(200, 30)
    gc.collect()
    per_sku_us: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        answer = earliest_deliveries(state, skus, NOW_MS, "FR", "75008", segment="vip")
        per_sku_us.append((time.perf_counter_ns() - started) / 1000 / len(skus))
    available = int((answer.earliest_day >= 0).sum())
    details: dict[str, Any] = {
        "per_sku_us_p50": round(statistics.median(per_sku_us), 3),
        "per_sku_us_min": round(min(per_sku_us), 3),
        "call_ms_p50": round(statistics.median(per_sku_us) * len(skus) / 1000, 3),
        "skus_available": f"{available}/{len(skus)}",
        "summary_keys": ["call_ms_p50", "skus_available"],
    }
    return Figure(
        float(details["per_sku_us_p50"]),
        details,
        "core.promise_listing.earliest_deliveries, 1,000 SKUs",
    )
