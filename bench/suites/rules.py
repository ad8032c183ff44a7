"""Availability-rules figures (issue 5): per-caller availability of one SKU over a 1,000-node
network, and the per-country ATP catalogue of 100k SKUs for one caller.

Both run in-process on a synthetic network with 3 geo levels (region / country / city; 4
regions, 32 countries, 110 cities), five node kinds and tags, under a rule set of 10 channels x
5 segments (`rules_toml` below: visibility by kind, geo and tags with explicit includes and
excludes, safety overrides by kind, node and SKU prefix, buffers, max_per_line, supply
eligibility per segment, channel x segment overrides) with 6 protections (units and percent,
some limited to SKU prefixes), incoming supply of every kind, and reservations by
beneficiaries that consume protected units.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from atpd.core import caller_atp, kernels
from atpd.core.commands import (
    AddSupply,
    Line,
    NodeKind,
    Reserve,
    SetRules,
    UpsertNode,
)
from atpd.core.results import Outcome
from atpd.core.rules_compile import sku_safety
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_SAFETY
from atpd.core.supply import SupplyKind
from bench.registry import Context, Figure, Target, benchmark
from bench.suites.core import BATCH, measure_calls
from bench.timing import summary_us, timer_overhead_ns, trial_p50s_us

NOW_MS = 1_764_000_000_000
HOUR_MS = 3_600_000
CHUNK_SKUS = 8192

# region -> country -> cities. Hub countries (first in each list marked *) get a warehouse.
_GEO: dict[str, dict[str, tuple[str, ...]]] = {
    "EU": {
        "FR": ("Paris", "Lyon", "Nice", "Cannes", "Bordeaux"),
        "IT": ("Milan", "Rome", "Florence", "Venice"),
        "GB": ("London", "Manchester", "Edinburgh"),
        "DE": ("Munich", "Berlin", "Hamburg", "Dusseldorf"),
        "ES": ("Madrid", "Barcelona", "Marbella"),
        "CH": ("Geneva", "Zurich", "Gstaad"),
        "NL": ("Amsterdam",),
        "BE": ("Brussels", "Antwerp"),
        "AT": ("Vienna", "Salzburg"),
        "MC": ("Monaco",),
        "PT": ("Lisbon", "Porto"),
        "SE": ("Stockholm",),
    },
    "AM": {
        "US": ("New York", "Los Angeles", "Miami", "Chicago", "San Francisco", "Las Vegas"),
        "CA": ("Toronto", "Vancouver", "Montreal"),
        "MX": ("Mexico City", "Cancun"),
        "BR": ("Sao Paulo", "Rio de Janeiro"),
        "AR": ("Buenos Aires",),
        "CL": ("Santiago",),
    },
    "APAC": {
        "JP": ("Tokyo", "Osaka", "Kyoto", "Nagoya"),
        "CN": ("Shanghai", "Beijing", "Shenzhen", "Chengdu", "Hangzhou"),
        "KR": ("Seoul", "Busan"),
        "HK": ("Hong Kong",),
        "TW": ("Taipei",),
        "SG": ("Singapore",),
        "AU": ("Sydney", "Melbourne"),
        "TH": ("Bangkok",),
        "IN": ("Mumbai", "Delhi"),
    },
    "MEA": {
        "AE": ("Dubai", "Abu Dhabi"),
        "SA": ("Riyadh", "Jeddah"),
        "QA": ("Doha",),
        "ZA": ("Johannesburg", "Cape Town"),
        "EG": ("Cairo",),
    },
}
HUBS = ("FR", "IT", "GB", "DE", "US", "JP", "CN", "AE")
SKU_FAMILIES = ("BAG-", "WCH-", "SHO-", "RTW-", "ACC-", "JWL-")
CHANNELS = (
    "web",
    "app",
    "store",
    "marketplace",
    "clienteling",
    "callcenter",
    "social",
    "wholesale",
    "outlet-web",
    "partner",
)
SEGMENTS = ("standard", "vip", "employee", "loyalty", "corporate")


def network(node_count: int) -> list[UpsertNode]:
    """`node_count` nodes spread round-robin over 32 countries (so every country has nodes
    even at 100): per country, slot 0 is a warehouse in hub countries and the flagship store
    elsewhere, slot 1 the hub's flagship; later slots are mostly stores, with outlets, dark
    stores and distribution centres mixed in. Ids: KIND-COUNTRY-SLOT (e.g. ST-FR-001)."""
    countries = [(region, country) for region, table in _GEO.items() for country in table]
    nodes = []
    for i in range(node_count):
        region, country = countries[i % len(countries)]
        slot = i // len(countries)
        cities = _GEO[region][country]
        city = cities[slot % len(cities)]
        hub = country in HUBS
        tags: list[str] = []
        if slot == 0 and hub:
            kind, code = NodeKind.WAREHOUSE, "WH"
        elif slot == (1 if hub else 0):
            kind, code = NodeKind.STORE, "ST"
            tags = ["flagship", "vip-lounge", "ship-from-store", "click-collect"]
        else:
            pick = (i * 7) % 20
            if pick == 0:
                kind, code = NodeKind.OUTLET, "OU"
            elif pick == 1:
                kind, code = NodeKind.DARK_STORE, "DK"
            elif pick == 2 and hub:
                kind, code = NodeKind.DISTRIBUTION_CENTER, "DC"
            else:
                kind, code = NodeKind.STORE, "ST"
                if pick % 3 == 0:
                    tags.append("ship-from-store")
                if pick % 2 == 0:
                    tags.append("click-collect")
                if pick in (4, 9):
                    tags.append("vip-lounge")
        nodes.append(
            UpsertNode(
                f"{code}-{country}-{slot:03d}",
                kind,
                (region, country, city),
                ships=kind is not NodeKind.OUTLET,
                pickup=kind in (NodeKind.STORE, NodeKind.OUTLET),
                tags=tuple(tags),
            )
        )
    return nodes


def rules_toml() -> str:
    """10 channels x 5 segments; every node id and geo prefix named here exists in
    `network(n)` for any n >= 64."""
    return """
version = "bench-10x5"

[defaults]
channel = "web"
segment = "standard"

[policy]
nodes = { kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "STORE"] }
safety = { kinds = { STORE = 1 }, sku_prefixes = { "WCH-" = 1, "JWL-" = 1 } }
supply = { kinds = ["PURCHASE_ORDER"], horizon_hours = 72 }

[channels.web]
max_per_line = 3
[channels.web.nodes]
kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER"]
include = ["ST-FR-001", "ST-US-001", "ST-JP-001"]

[channels.app]
max_per_line = 3
[channels.app.nodes]
kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "DARK_STORE"]
include = ["ST-FR-001", "ST-US-001"]

[channels.store]
nodes = { kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "STORE", "OUTLET"] }
safety = { kinds = { STORE = 0 } }

[channels.marketplace]
nodes = { kinds = ["WAREHOUSE"] }
buffer = 2
max_per_line = 1
supply = { kinds = [] }

[channels.clienteling]
nodes = { kinds = ["WAREHOUSE", "STORE"], exclude = ["ST-CN-001"] }

[channels.callcenter]
max_per_line = 5
[channels.callcenter.nodes]
kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "STORE"]
geo = ["EU", "AM"]
exclude = ["ST-FR-001"]

[channels.social]
nodes = { kinds = ["WAREHOUSE"], geo = ["EU", "AM", "APAC"] }
buffer = 1
max_per_line = 2

[channels.wholesale]
nodes = { kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER"] }
safety = { kinds = { WAREHOUSE = 5, DISTRIBUTION_CENTER = 3 } }
buffer = 3

[channels.outlet-web]
nodes = { kinds = ["OUTLET", "WAREHOUSE"] }
supply = { kinds = [] }

[channels.partner]
buffer = 1
[channels.partner.nodes]
kinds = ["WAREHOUSE", "STORE"]
geo = ["APAC/JP", "APAC/CN", "MEA"]
tags = ["ship-from-store"]
include = ["WH-JP-000", "WH-CN-000", "WH-AE-000"]

[segments.standard]

[segments.vip]
nodes = { kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "STORE"] }
safety = { kinds = { STORE = 0 } }
supply = { kinds = ["PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT"], horizon_hours = 72 }
max_per_line = 0

[segments.employee]
max_per_line = 1
supply = { kinds = [] }

[segments.loyalty]
supply = { kinds = ["PURCHASE_ORDER", "TRANSFER"], horizon_hours = 48 }

[segments.corporate]
safety = { sku_prefixes = { "BAG-" = 2 }, nodes = { "WH-FR-000" = 4 } }
max_per_line = 10

[channels.marketplace.segments.vip]
nodes = { kinds = ["WAREHOUSE"] }
supply = { kinds = [] }
max_per_line = 1

[channels.store.segments.vip]
nodes = { kinds = ["WAREHOUSE", "DISTRIBUTION_CENTER", "STORE", "OUTLET"], tags = [] }
supply = { kinds = ["PURCHASE_ORDER", "TRANSFER", "RETURN_IN_TRANSIT"], horizon_hours = 120 }

[channels.web.segments.employee]
nodes = { kinds = ["OUTLET", "WAREHOUSE"] }

[channels.wholesale.segments.corporate]
buffer = 5
max_per_line = 50

[channels.clienteling.segments.vip]
nodes = { kinds = ["WAREHOUSE", "STORE", "DISTRIBUTION_CENTER"], tags = [] }
buffer = 0

[[protections]]
name = "flagship-bags"
skus = ["BAG-"]
nodes = { tags = ["flagship"] }
units = 1
for = ["store/*", "*/vip"]

[[protections]]
name = "watches-vip"
skus = ["WCH-"]
nodes = { kinds = ["WAREHOUSE"] }
percent = 20
for = ["*/vip"]

[[protections]]
name = "apac-clienteling"
nodes = { geo = ["APAC"], kinds = ["STORE"] }
units = 2
for = ["clienteling/*"]

[[protections]]
name = "wholesale-allocation"
nodes = { kinds = ["DISTRIBUTION_CENTER"] }
percent = 10
for = ["wholesale/*"]

[[protections]]
name = "launch-reserve"
skus = ["SHO-", "RTW-"]
nodes = { include = ["WH-FR-000", "WH-US-000"] }
percent = 5
for = ["*/vip", "web/loyalty"]

[[protections]]
name = "vip-lounges"
skus = ["JWL-"]
nodes = { tags = ["vip-lounge"] }
units = 1
for = ["clienteling/vip", "store/vip"]
"""


@dataclass(frozen=True, slots=True)
class RulesState:
    state: AtpState
    node_count: int
    sku_count: int
    positions: int
    supplied_skus: tuple[str, ...]  # SKUs with incoming supply (the queried ones)
    supply_entries: int
    protected_reservations: int


def build_state(sku_count: int, node_count: int, supplied: int, seed: int = 5) -> RulesState:
    """Nodes via apply(UpsertNode); SKUs interned and stock written straight into the arrays
    (warehouses and DCs hold ~95% of SKUs, stores ~40%, outlets and dark stores ~25%, a few
    units each; safety stock on deep positions); then the rule set via apply(SetRules);
    `supplied` popular SKUs get 3-6 AddSupply entries each (every kind, some beyond the
    horizons, one overdue) and every 4th of them a VIP / clienteling / store reservation that
    consumes protected units."""
    kernels.warm_up()
    rng = np.random.default_rng(seed)
    state = AtpState()
    nodes = network(node_count)
    for node in nodes:
        assert state.apply(node, NOW_MS).outcome is Outcome.OK
    names = [f"{SKU_FAMILIES[i % len(SKU_FAMILIES)]}{i:07d}" for i in range(sku_count)]
    state.skus.intern_many(names)
    stock = state.stock
    stock.ensure(sku_count, node_count)
    kinds = np.array([int(node.kind) for node in nodes])
    deep = np.isin(kinds, [NodeKind.WAREHOUSE, NodeKind.DISTRIBUTION_CENTER])
    store = kinds == NodeKind.STORE
    fill = np.where(deep, 0.95, np.where(store, 0.4, 0.25))
    positions = 0
    for start in range(0, sku_count, CHUNK_SKUS):
        stop = min(sku_count, start + CHUNK_SKUS)
        shape = (stop - start, node_count)
        present = rng.random(shape) < fill
        on_hand = np.where(
            deep, rng.integers(0, 120, shape), np.minimum(rng.geometric(0.45, shape), 8)
        ).astype(np.int32)
        on_hand[~present] = 0
        stock.cells[start:stop, FIELD_ON_HAND, :node_count] = on_hand
        stock.cells[start:stop, FIELD_SAFETY, :node_count] = np.where(deep, on_hand // 10, 0)
        stock.source_seq[start:stop, :node_count] = present
        stock.present[start:stop, :node_count] = present
        positions += int(present.sum())
    stock.position_count = positions
    result = state.apply(SetRules(rules_toml(), "bench/suites/rules.py"), NOW_MS)
    assert result.outcome is Outcome.OK

    # Incoming supply for the popular SKUs, and reservations that take protected units.
    popularity = 1.0 / np.arange(1, sku_count + 1) ** 0.8
    chosen = rng.choice(sku_count, size=supplied, replace=False, p=popularity / popularity.sum())
    warehouses = [n.node_id for n in nodes if n.kind is NodeKind.WAREHOUSE]
    stores = [n.node_id for n in nodes if n.kind is NodeKind.STORE]
    flagships = [n.node_id for n in nodes if "flagship" in n.tags]
    entries = 0
    now_ms = NOW_MS
    plan = (
        (SupplyKind.PURCHASE_ORDER, warehouses, 30),
        (SupplyKind.TRANSFER, stores, 12),
        (SupplyKind.RETURN_IN_TRANSIT, stores, 60),
        (SupplyKind.PURCHASE_ORDER, warehouses, 240),  # beyond every horizon
        (SupplyKind.TRANSFER, flagships, 100),
        (SupplyKind.RETURN_IN_TRANSIT, flagships, -5),  # overdue: counted for nobody
    )
    supplied_skus = []
    for number, row in enumerate(chosen.tolist()):
        sku = names[row]
        supplied_skus.append(sku)
        for k, (kind, where, eta_hours) in enumerate(plan[: 3 + number % 4]):
            node_id = where[int(rng.integers(len(where)))]
            command = AddSupply(
                f"SUP-{row}-{k}", sku, node_id, int(rng.integers(1, 20)),
                NOW_MS + eta_hours * HOUR_MS, kind,
            )  # fmt: skip
            assert state.apply(command, now_ms).outcome is Outcome.OK
            entries += 1
    callers = (("store", "vip"), ("clienteling", "standard"), ("web", "vip"), ("store", "standard"))
    row_of = state.skus.get
    for number, sku in enumerate(supplied_skus[::4]):
        channel, segment = callers[number % len(callers)]
        policy = state.policy(channel, segment)
        assert policy is not None
        for node_id in [*flagships, *warehouses, *stores][number % 7 :: 7][:40]:
            index = state.node_ids.get(node_id)
            if state.caller_atp(policy, row_of(sku), index) >= 1:
                now_ms += 1
                reserve = Reserve(
                    f"R-{number}", (Line(sku, node_id, 1),), 3600_000, channel=channel,
                    segment=segment,
                )  # fmt: skip
                assert state.apply(reserve, now_ms).outcome is Outcome.OK
                break
    protected = len(state.protected_reservations)
    return RulesState(
        state,
        node_count,
        sku_count,
        positions,
        tuple(supplied_skus),
        entries,
        protected,
    )


def _batch_mean_us(call: Callable[[Any], object], arguments: list[Any], rounds: int) -> float:
    batch_means, _ = measure_calls(call, arguments, BATCH, rounds, 0.0)
    return round(statistics.median(batch_means) / 1000, 3)


@benchmark("core_availability_rules_us_p50", "us", Target("<=", 20.0))
def core_availability_rules(ctx: Context) -> Figure:
    """In-process `state.availability([sku], channel=, segment=)` for one SKU over 1,000 nodes
    (3 geo levels) under a 10-channel x 5-segment rule set with 6 protections, the SKU having
    incoming supply: p50 of single-call timings, callers cycling through all 50 pairs."""
    sku_count = ctx.size(5000, 2000)
    supplied = ctx.size(1000, 400)
    ctx.log(f"rules availability: 1,000 nodes x {sku_count} SKUs, {supplied} with supply")
    fixture: RulesState = ctx.fixture(
        f"rules_1000_{sku_count}", lambda: build_state(sku_count, 1000, supplied)
    )
    state = fixture.state
    pairs = [(c, s) for c in CHANNELS for s in SEGMENTS]
    # Each SKU with every caller in turn: (sku list, channel, segment), 7 SKUs per pair cycle.
    arguments = [([sku], *pairs[i % len(pairs)]) for i, sku in enumerate(fixture.supplied_skus * 3)]
    availability = state.availability

    def call(argument: Any) -> Any:
        return availability(argument[0], (), "", argument[1], argument[2])

    for argument in arguments[: len(pairs)]:  # every caller answers something
        assert call(argument).matrix.shape[1] == 1000 + len(state.geo) + 1
    overhead_ns = timer_overhead_ns()
    rounds = ctx.size(5000, 1000)
    gc.collect()
    measure_calls(call, arguments, BATCH, rounds // 10, overhead_ns)  # warm-up
    cpu_means: list[float] = []
    batch_means, singles = measure_calls(call, arguments, BATCH, rounds, overhead_ns, cpu_means)
    details: dict[str, Any] = summary_us(batch_means, singles, cpu_means)
    details["trial_single_us_p50"] = trial_p50s_us(singles)
    details["timer_overhead_ns"] = overhead_ns
    details["nodes"] = fixture.node_count
    details["geo_prefixes"] = len(state.geo)
    details["skus"] = fixture.sku_count
    details["positions"] = fixture.positions
    details["callers"] = f"{len(CHANNELS)} channels x {len(SEGMENTS)} segments"
    details["protections"] = len(state.rules.protections)
    details["supply_entries"] = fixture.supply_entries
    details["protected_reservations"] = fixture.protected_reservations
    visible = [int(state.policy(c, s).visible.sum()) for c, s in pairs]  # type: ignore[union-attr]
    details["visible_nodes_min_median_max"] = [
        min(visible),
        int(statistics.median(visible)),
        max(visible),
    ]
    try:
        details["breakdown_us"] = _availability_breakdown(
            state, arguments, ctx.size(1500, 300), details["batch_mean_us_p50"]
        )
    except Exception as error:  # reads internals that may change: never fatal
        details["breakdown_error"] = repr(error)
    details["summary_keys"] = [
        "single_us_p99",
        "trial_single_us_p50",
        "batch_mean_us_p50",
        "batch_cpu_us_p50",
        "nodes",
        "geo_prefixes",
    ]
    return Figure(
        details["single_us_p50"],
        details,
        f"p50 of single calls each timed with perf_counter_ns (timer cost subtracted), "
        f"interleaved with batches of {BATCH} timed as one; callers cycle over all 50 "
        f"channel/segment pairs; every queried SKU has incoming supply; GC on",
    )


def _availability_breakdown(
    state: AtpState, arguments: list[Any], rounds: int, total_us: float
) -> dict[str, float]:
    """The parts of one rules availability call, each timed on its own (batch means)."""
    compiled = caller_atp.compiled_rules(state)
    cells, node_geo, geo_count = state.stock.cells, state.geo.node_geo, len(state.geo)
    node_count = len(state.nodes)
    mask = state.node_mask()
    prepared = []
    for skus, channel, segment in arguments[:500]:
        policy = state.policy(channel, segment)
        assert policy is not None
        row = state.skus.get(skus[0])
        against, consumed = caller_atp.protection_inputs(state, policy, row, skus[0])
        prepared.append(
            (
                policy,
                row,
                skus[0],
                mask & policy.visible,
                against,
                consumed,
                caller_atp.supply_row(state, policy, row),
                sku_safety(policy, row, skus[0]),
                np.zeros(node_count + geo_count + 1, np.int64),
            )
        )

    def kernel(p: Any) -> None:
        out = p[8]
        out[:] = 0
        kernels.rollup_atp_rules(
            cells, p[1], p[3], node_geo, geo_count, p[0].safety_node, p[7], p[0].policy.buffer,
            p[6], compiled.protection_mask, compiled.protection_units,
            compiled.protection_percent, p[4], p[5], out,
        )  # fmt: skip

    parts = {
        "numba_kernel_call (rollup_atp_rules, 15 args)": _batch_mean_us(kernel, prepared, rounds),
        "supply_row (per-node supply array)": _batch_mean_us(
            lambda p: caller_atp.supply_row(state, p[0], p[1]), prepared, rounds
        ),
        "protection_inputs": _batch_mean_us(
            lambda p: caller_atp.protection_inputs(state, p[0], p[1], p[2]), prepared, rounds
        ),
        "policy lookup (resolve + compiled dict)": _batch_mean_us(
            lambda a: state.policy(a[1], a[2]), arguments, rounds
        ),
        "node_mask + scoped mask cache": _batch_mean_us(
            lambda p: p[0].mask_cache.get(id(state.node_mask((), ""))), prepared, rounds
        ),
        "output matrix np.zeros": _batch_mean_us(
            lambda p: np.zeros((1, node_count + geo_count + 1), np.int64), prepared, rounds
        ),
    }
    no_rules_rows = [np.array([p[1]], np.int64) for p in prepared]
    no_rules = _batch_mean_us(
        lambda rows: kernels.rollup_atp(cells, rows, mask, node_geo, geo_count),
        no_rules_rows,
        rounds,
    )
    parts["rest (Python in availability, view)"] = round(total_us - sum(parts.values()), 3)
    parts["for comparison: rollup_atp without rules, same SKU and nodes"] = no_rules
    return parts


@benchmark("catalogue_export_seconds", "s", Target("<=", 1.0))
def catalogue_export_seconds(ctx: Context) -> Figure:
    """`state.catalogue(channel, segment, level=1)`: ATP of every SKU rolled up by country
    for 100k SKUs x 100 nodes under the 10 x 5 rule set with protections and supply; median of
    runs after one warm-up, cycling over 5 callers."""
    sku_count = ctx.size(100_000, 20_000)
    supplied = ctx.size(500, 200)
    runs = ctx.size(5, 3)
    ctx.log(f"catalogue: 100 nodes x {sku_count:,} SKUs, {supplied} with supply")
    t0 = time.perf_counter()
    fixture: RulesState = ctx.fixture(
        f"rules_100_{sku_count}", lambda: build_state(sku_count, 100, supplied)
    )
    build_s = time.perf_counter() - t0
    state = fixture.state
    callers = [("web", "standard"), ("store", "vip"), ("marketplace", "standard"),
               ("clienteling", "vip"), ("web", "loyalty")]  # fmt: skip
    names, matrix = state.catalogue(*callers[0], level=1)  # warm-up (compile or cache load)
    assert matrix.shape == (sku_count, len(names)) and matrix.sum() > 0
    timings: dict[tuple[str, str], list[float]] = {caller: [] for caller in callers}
    gc.collect()
    for _ in range(runs):
        for caller in callers:
            t = time.perf_counter()
            names, matrix = state.catalogue(*caller, level=1)
            timings[caller].append(time.perf_counter() - t)
    per_caller = {f"{c}/{s}": round(statistics.median(v), 3) for (c, s), v in timings.items()}
    every = [t for v in timings.values() for t in v]
    # Exactness: a SKU with supply must equal the per-SKU availability rolled up by country.
    sku = fixture.supplied_skus[0]
    view = state.availability([sku], (), "", *callers[-1])
    row = state.skus.get(sku)
    by_country = {
        name: int(view.matrix[0, view.node_count + state.geo.geo_ids.get(name)]) for name in names
    }
    assert dict(zip(names, matrix[row].tolist(), strict=True)) == by_country
    details: dict[str, Any] = {
        "median_per_caller_s": per_caller,
        "min_s": round(min(every), 3),
        "max_s": round(max(every), 3),
        "runs": len(every),
        "countries": len(names),
        "skus": sku_count,
        "nodes": fixture.node_count,
        "positions": fixture.positions,
        "supply_entries": fixture.supply_entries,
        "protected_reservations": fixture.protected_reservations,
        "numba_threads": _numba_threads(),
        "state_build_s": round(build_s, 1),
    }
    try:
        details["breakdown_s"] = _catalogue_breakdown(state, *callers[0])
    except Exception as error:  # reads internals that may change: never fatal
        details["breakdown_error"] = repr(error)
    details["summary_keys"] = ["median_per_caller_s", "min_s", "countries", "skus", "nodes"]
    return Figure(
        round(statistics.median(every), 3),
        details,
        f"median wall time of state.catalogue(channel, segment, level=1) over {runs} rounds of "
        f"{len(callers)} callers after one warm-up; {sku_count:,} SKUs x 100 nodes",
    )


def _numba_threads() -> int:
    import numba

    return int(numba.get_num_threads())


def _catalogue_breakdown(state: AtpState, channel: str, segment: str) -> dict[str, float]:
    """The steps of `catalogue` redone one by one (same inputs), each timed once."""
    compiled = caller_atp.compiled_rules(state)
    policy = state.policy(channel, segment)
    assert policy is not None
    node_count, sku_count = len(state.nodes), len(state.skus)
    sku_names = state.skus.names
    times: dict[str, float] = {}

    t = time.perf_counter()
    level_geo = state.geo.node_geo[1, :node_count]
    geo_ids = sorted({int(g) for g in level_geo if g >= 0}, key=state.geo.geo_ids.name)
    group_of = {geo: i for i, geo in enumerate(geo_ids)}
    node_group = np.array([group_of.get(int(g), -1) for g in level_geo], np.int32)
    times["groups"] = time.perf_counter() - t

    t = time.perf_counter()
    skus_safety = np.array(
        [sku_safety(policy, row, sku_names[row]) for row in range(sku_count)], np.int64
    )
    times["sku_safety per SKU (Python)"] = time.perf_counter() - t

    t = time.perf_counter()
    against = np.repeat(policy.against[np.newaxis, :], sku_count, axis=0)
    for index in compiled.prefixed_protections:
        if policy.against[index]:
            prefixes = state.rules.protections[index].sku_prefixes
            against[:, index] = [sku.startswith(prefixes) for sku in sku_names]
    times["protections against per SKU (Python)"] = time.perf_counter() - t

    t = time.perf_counter()
    kernels.catalogue_atp(
        state.stock.cells, sku_count, state.node_mask() & policy.visible, node_group,
        len(geo_ids), policy.safety_node, skus_safety, policy.policy.buffer,
        compiled.protection_mask, compiled.protection_units, compiled.protection_percent,
        against,
    )  # fmt: skip
    times["catalogue_atp kernel (numba, parallel)"] = time.perf_counter() - t

    exact = sorted(set(state.supply.by_sku) | set(state.protection_consumed))
    t = time.perf_counter()
    for row in exact:
        state.availability([state.skus.name(row)], (), "", channel, segment)
    times[f"exact redo of {len(exact)} SKUs with supply/protected holds"] = time.perf_counter() - t
    return {name: round(value, 4) for name, value in times.items()}
