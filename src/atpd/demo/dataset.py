"""The embedded demo data set: a made-up luxury house with 3 warehouses, 59 boutiques and a
catalogue of 20,000 SKUs, loaded by `atpd serve --demo`.

Everything is deterministic. The network (`demo_nodes`) and the catalogue (`demo_skus`) are
fixed; the stock picture (`demo_stock`) is drawn from `numpy.random.default_rng(seed)`, so the
same seed gives the same commands, in the same order, on every machine.

Shape of the data, chosen to look like a real luxury network:

- Regions are EU, AM (Americas) and APAC, each with one warehouse that ships. Like many luxury
  houses the EU region covers EMEA, so Dubai sits under `EU/AE/Dubai`.
- Geo paths are region/country/city with ISO country codes (`EU/FR/Paris`, `AM/US/New York`,
  `APAC/JP/Tokyo`); node ids use IATA city codes (`ST-PAR-01`, `WH-EU-01`).
- Every boutique offers pickup; one flagship per region also ships (ship-from-store). Outlets
  are `NodeKind.OUTLET` and carry mostly past collections.
- A SKU is a style in one colour and one size: `SHO-RIVA-BLK-39-004512` is size 39 of shoe
  style 4512 from the Riviera collection, in black; one-size categories omit the size
  (`BAG-MONO-BLK-000123`).
- Stock is sparse and long-tailed: each warehouse holds most of the catalogue (popular SKUs
  more often and deeper), with safety stock on the deeper positions; a boutique holds a few
  hundred SKUs (flagships up to about two thousand), mostly 1-5 units, and a few positions
  are stocked at zero (sold out, awaiting replenishment).

Generation is vectorised (numpy); the only per-position Python work is building the
`SetStock` values themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from atpd.core.commands import Line, NodeKind, SetStock, UpsertNode
from atpd.core.commands_store import RecordOfflineSales, RecordSale, SaleLine
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from atpd.demo.sales_history import SALES_PER_COMMAND, DemoSales, demo_sales

DEFAULT_SEED = 7
CATALOGUE_SEED = 20_240_901
SKU_COUNT = 20_000
# Every demo count is the first the source system ever sent for its position.
SOURCE_SEQUENCE = 1
REGIONS = ("EU", "AM", "APAC")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_ArrayT = TypeVar("_ArrayT", bound=npt.NDArray[Any])

# ---------------------------------------------------------------------------- the network

# (node id, geo path, kind, ships, tags). Pickup follows from the kind: boutiques yes,
# warehouses no.
_FLAGSHIP = ("flagship",)
_FLAGSHIP_SHIPS = ("flagship", "ship-from-store")
_OUTLET = ("outlet",)
_NODE_TABLE: tuple[tuple[str, str, NodeKind, bool, tuple[str, ...]], ...] = (
    # Warehouses: one regional hub each.
    ("WH-EU-01", "EU/IT/Florence", NodeKind.WAREHOUSE, True, ("hub", "ecom")),
    ("WH-AM-01", "AM/US/Newark", NodeKind.WAREHOUSE, True, ("hub", "ecom")),
    ("WH-APAC-01", "APAC/SG/Singapore", NodeKind.WAREHOUSE, True, ("hub", "ecom")),
    # EU (EMEA).
    ("ST-PAR-01", "EU/FR/Paris", NodeKind.STORE, True, _FLAGSHIP_SHIPS),
    ("ST-PAR-02", "EU/FR/Paris", NodeKind.STORE, False, ()),
    ("ST-PAR-03", "EU/FR/Paris", NodeKind.STORE, False, ()),
    ("ST-CEQ-01", "EU/FR/Cannes", NodeKind.STORE, False, ()),
    ("ST-LON-01", "EU/GB/London", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-LON-02", "EU/GB/London", NodeKind.STORE, False, ()),
    ("ST-LON-03", "EU/GB/London", NodeKind.STORE, False, ()),
    ("ST-BIC-01", "EU/GB/Bicester", NodeKind.OUTLET, False, _OUTLET),
    ("ST-MIL-01", "EU/IT/Milan", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-MIL-02", "EU/IT/Milan", NodeKind.STORE, False, ()),
    ("ST-ROM-01", "EU/IT/Rome", NodeKind.STORE, False, ()),
    ("ST-FLR-01", "EU/IT/Florence", NodeKind.STORE, False, ()),
    ("ST-SRV-01", "EU/IT/Serravalle", NodeKind.OUTLET, False, _OUTLET),
    ("ST-MUC-01", "EU/DE/Munich", NodeKind.STORE, False, ()),
    ("ST-BER-01", "EU/DE/Berlin", NodeKind.STORE, False, ()),
    ("ST-MAD-01", "EU/ES/Madrid", NodeKind.STORE, False, ()),
    ("ST-BCN-01", "EU/ES/Barcelona", NodeKind.STORE, False, ()),
    ("ST-GVA-01", "EU/CH/Geneva", NodeKind.STORE, False, ()),
    ("ST-ZRH-01", "EU/CH/Zurich", NodeKind.STORE, False, ()),
    ("ST-AMS-01", "EU/NL/Amsterdam", NodeKind.STORE, False, ()),
    ("ST-MCM-01", "EU/MC/Monaco", NodeKind.STORE, False, ()),
    ("ST-DXB-01", "EU/AE/Dubai", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-DXB-02", "EU/AE/Dubai", NodeKind.STORE, False, ()),
    # Americas.
    ("ST-NYC-01", "AM/US/New York", NodeKind.STORE, True, _FLAGSHIP_SHIPS),
    ("ST-NYC-02", "AM/US/New York", NodeKind.STORE, False, ()),
    ("ST-NYC-03", "AM/US/New York", NodeKind.STORE, False, ()),
    ("ST-LAX-01", "AM/US/Los Angeles", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-LAX-02", "AM/US/Los Angeles", NodeKind.STORE, False, ()),
    ("ST-MIA-01", "AM/US/Miami", NodeKind.STORE, False, ()),
    ("ST-CHI-01", "AM/US/Chicago", NodeKind.STORE, False, ()),
    ("ST-SFO-01", "AM/US/San Francisco", NodeKind.STORE, False, ()),
    ("ST-LAS-01", "AM/US/Las Vegas", NodeKind.STORE, False, ()),
    ("ST-BOS-01", "AM/US/Boston", NodeKind.STORE, False, ()),
    ("ST-HOU-01", "AM/US/Houston", NodeKind.STORE, False, ()),
    ("ST-WDB-01", "AM/US/Central Valley", NodeKind.OUTLET, False, _OUTLET),
    ("ST-CBZ-01", "AM/US/Cabazon", NodeKind.OUTLET, False, _OUTLET),
    ("ST-YTO-01", "AM/CA/Toronto", NodeKind.STORE, False, ()),
    ("ST-YVR-01", "AM/CA/Vancouver", NodeKind.STORE, False, ()),
    ("ST-MEX-01", "AM/MX/Mexico City", NodeKind.STORE, False, ()),
    ("ST-SAO-01", "AM/BR/Sao Paulo", NodeKind.STORE, False, ()),
    # APAC.
    ("ST-TYO-01", "APAC/JP/Tokyo", NodeKind.STORE, True, _FLAGSHIP_SHIPS),
    ("ST-TYO-02", "APAC/JP/Tokyo", NodeKind.STORE, False, ()),
    ("ST-TYO-03", "APAC/JP/Tokyo", NodeKind.STORE, False, ()),
    ("ST-OSA-01", "APAC/JP/Osaka", NodeKind.STORE, False, ()),
    ("ST-GTB-01", "APAC/JP/Gotemba", NodeKind.OUTLET, False, _OUTLET),
    ("ST-SEL-01", "APAC/KR/Seoul", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-SEL-02", "APAC/KR/Seoul", NodeKind.STORE, False, ()),
    ("ST-SHA-01", "APAC/CN/Shanghai", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-SHA-02", "APAC/CN/Shanghai", NodeKind.STORE, False, ()),
    ("ST-BJS-01", "APAC/CN/Beijing", NodeKind.STORE, False, ()),
    ("ST-CTU-01", "APAC/CN/Chengdu", NodeKind.STORE, False, ()),
    ("ST-SZX-01", "APAC/CN/Shenzhen", NodeKind.STORE, False, ()),
    ("ST-HKG-01", "APAC/HK/Hong Kong", NodeKind.STORE, False, _FLAGSHIP),
    ("ST-HKG-02", "APAC/HK/Hong Kong", NodeKind.STORE, False, ()),
    ("ST-TPE-01", "APAC/TW/Taipei", NodeKind.STORE, False, ()),
    ("ST-SIN-01", "APAC/SG/Singapore", NodeKind.STORE, False, ()),
    ("ST-SYD-01", "APAC/AU/Sydney", NodeKind.STORE, False, ()),
    ("ST-MEL-01", "APAC/AU/Melbourne", NodeKind.STORE, False, ()),
    ("ST-BKK-01", "APAC/TH/Bangkok", NodeKind.STORE, False, ()),
)


@functools.cache
def _nodes() -> tuple[UpsertNode, ...]:
    nodes = tuple(
        UpsertNode(
            node_id=node_id,
            kind=kind,
            geo_path=tuple(geo.split("/")),
            ships=ships,
            pickup=kind is not NodeKind.WAREHOUSE,
            enabled=True,
            tags=tags,
        )
        for node_id, geo, kind, ships, tags in _NODE_TABLE
    )
    assert len({node.node_id for node in nodes}) == len(nodes), "duplicate demo node id"
    assert all(len(node.geo_path) == 3 and node.geo_path[0] in REGIONS for node in nodes)
    return nodes


def demo_nodes() -> list[UpsertNode]:
    """The demo network: 3 regional warehouses, then the boutiques, in a fixed order."""
    return list(_nodes())


# ---------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True, slots=True)
class _Category:
    code: str
    sizes: tuple[str, ...]  # () for one-size categories
    weight: float  # share of styles
    demand: float  # relative sell-through per SKU
    warehouse_depth: float  # typical warehouse units for a median-popularity SKU
    store_depth: float  # geometric p for boutique units: lower means deeper


_CATEGORIES: tuple[_Category, ...] = (
    _Category("BAG", (), 0.16, 1.6, 10.0, 0.65),
    _Category("SLG", (), 0.14, 1.4, 18.0, 0.50),
    _Category(
        "SHO", ("35", "36", "37", "38", "39", "40", "41", "42", "43", "44"), 0.10, 1.0, 4.0, 0.70
    ),
    _Category("RTW", ("XS", "S", "M", "L", "XL"), 0.14, 0.8, 5.0, 0.70),
    _Category("KNT", ("XS", "S", "M", "L", "XL"), 0.07, 0.8, 5.0, 0.65),
    _Category("SCF", (), 0.08, 1.0, 14.0, 0.50),
    _Category("JWL", (), 0.08, 0.7, 4.0, 0.80),
    _Category("BLT", ("80", "85", "90", "95", "100"), 0.06, 0.9, 6.0, 0.60),
    _Category("EYE", (), 0.07, 0.9, 12.0, 0.55),
    _Category("FRG", ("30ML", "50ML", "100ML"), 0.05, 2.2, 45.0, 0.30),
    _Category("WCH", (), 0.05, 0.4, 2.0, 0.90),
)
# How often each size sells, centre sizes most (same length as each category's sizes).
_SIZE_CURVES: dict[int, tuple[float, ...]] = {
    3: (0.8, 1.0, 0.6),
    5: (0.5, 0.9, 1.0, 0.8, 0.4),
    10: (0.3, 0.55, 0.8, 1.0, 1.0, 0.9, 0.8, 0.6, 0.4, 0.25),
}
# Collections; the last two are past seasons, which outlets carry most.
_COLLECTIONS = ("MONO", "ATEL", "RIVA", "NOIR", "SOIE", "ICON", "JARD", "HERI", "CRUI", "ARCH")
_PAST_COLLECTIONS = ("CRUI", "ARCH")
_COLOURS = ("BLK", "WHT", "NVY", "TAN", "BRN", "RED", "BRG", "GRN", "BEI", "GRY", "PNK", "CML")
_COLOUR_WEIGHTS = (3.0, 1.2, 1.5, 1.6, 1.4, 0.8, 0.9, 0.6, 1.2, 1.0, 0.6, 1.1)


@dataclass(frozen=True, slots=True)
class _Catalogue:
    skus: tuple[str, ...]
    category: IntArray  # index into _CATEGORIES, per SKU
    collection: IntArray  # index into _COLLECTIONS, per SKU
    popularity: FloatArray  # relative demand per SKU, median 1


@functools.cache
def _catalogue() -> _Catalogue:
    """Styles drawn from a fixed seed, expanded into colours x sizes until SKU_COUNT SKUs."""
    rng = np.random.default_rng(CATALOGUE_SEED)
    # Every style yields at least one SKU, so SKU_COUNT styles always suffice; draw all their
    # attributes at once and expand them in order until the catalogue is full.
    style_count = SKU_COUNT
    category_weights = np.array([c.weight for c in _CATEGORIES])
    style_category = rng.choice(
        len(_CATEGORIES), size=style_count, p=category_weights / category_weights.sum()
    )
    style_collection = rng.integers(len(_COLLECTIONS), size=style_count)
    style_colour_count = rng.integers(1, 5, size=style_count)
    # A weighted sample of colours without replacement per style: top-k of log(w) + Gumbel.
    colour_keys = np.log(np.array(_COLOUR_WEIGHTS)) + rng.gumbel(size=(style_count, len(_COLOURS)))
    style_colours = np.argsort(-colour_keys, axis=1)
    style_popularity = rng.lognormal(0.0, 1.0, size=style_count)

    skus: list[str] = []
    categories: list[int] = []
    collections: list[int] = []
    popularity: list[float] = []
    for style in range(style_count):
        if len(skus) >= SKU_COUNT:
            break
        category_index = int(style_category[style])
        category = _CATEGORIES[category_index]
        collection_index = int(style_collection[style])
        prefix = f"{category.code}-{_COLLECTIONS[collection_index]}"
        # Fragrances and watches come in one colourway per style.
        colour_count = 1 if category.code in ("FRG", "WCH") else int(style_colour_count[style])
        colours = sorted(style_colours[style, :colour_count].tolist())
        base_popularity = float(style_popularity[style]) * category.demand
        sizes = category.sizes or ("",)
        size_curve = _SIZE_CURVES.get(len(category.sizes), (1.0,))
        number = f"{style + 1:06d}"
        for colour_index in colours:
            colour_popularity = base_popularity * _COLOUR_WEIGHTS[colour_index]
            for size, size_weight in zip(sizes, size_curve, strict=True):
                size_part = f"-{size}" if size else ""
                skus.append(f"{prefix}-{_COLOURS[colour_index]}{size_part}-{number}")
                categories.append(category_index)
                collections.append(collection_index)
                popularity.append(colour_popularity * size_weight)
    # The last style may lose some sizes: a discontinued size run, which real catalogues have.
    del skus[SKU_COUNT:], categories[SKU_COUNT:], collections[SKU_COUNT:], popularity[SKU_COUNT:]
    assert len(skus) == SKU_COUNT
    assert len(set(skus)) == SKU_COUNT, "duplicate demo SKU id"
    popularity_array = np.array(popularity)
    popularity_array /= np.median(popularity_array)
    return _Catalogue(
        tuple(skus),
        _frozen(np.array(categories, np.int64)),
        _frozen(np.array(collections, np.int64)),
        _frozen(popularity_array),
    )


def demo_skus() -> list[str]:
    """The demo catalogue (independent of the stock seed), in catalogue order."""
    return list(_catalogue().skus)


# ---------------------------------------------------------------------------- the stock


@dataclass(frozen=True, slots=True)
class DemoPositions:
    """The demo stock as parallel arrays, sorted by (SKU, node) catalogue and network order.

    `sku[i]` indexes `demo_skus()`, `node[i]` indexes `demo_nodes()`; `safety_stock[i]` is 0
    where none is set. Arrays are read-only (the result is cached per seed).
    """

    sku: IntArray
    node: IntArray
    on_hand: IntArray
    safety_stock: IntArray

    def __len__(self) -> int:
        return int(self.sku.shape[0])


def _frozen(array: _ArrayT) -> _ArrayT:
    array.setflags(write=False)
    return array


def _store_targets(nodes: tuple[UpsertNode, ...], rng: np.random.Generator) -> IntArray:
    """How many SKUs each boutique carries (0 for warehouses)."""
    targets = np.zeros(len(nodes), np.int64)
    for index, node in enumerate(nodes):
        if node.kind is NodeKind.WAREHOUSE:
            continue
        if "flagship" in node.tags:
            targets[index] = rng.integers(1_400, 2_100)
        elif node.kind is NodeKind.OUTLET:
            targets[index] = rng.integers(600, 1_100)
        else:
            targets[index] = rng.integers(300, 900)
    return targets


@functools.lru_cache(maxsize=4)
def demo_positions(seed: int = DEFAULT_SEED) -> DemoPositions:
    """Draw the whole stock picture for `seed` (vectorised; the last few seeds are cached)."""
    nodes = _nodes()
    catalogue = _catalogue()
    rng = np.random.default_rng(seed)
    sku_count = len(catalogue.skus)
    categories = catalogue.category
    popularity = catalogue.popularity
    warehouse_depth = np.array([c.warehouse_depth for c in _CATEGORIES])[categories]
    store_p = np.array([c.store_depth for c in _CATEGORIES])[categories]
    region_of = np.array([REGIONS.index(node.geo_path[0]) for node in nodes], np.int64)
    # Regional taste: each region likes some collections more than others.
    affinity = rng.lognormal(0.0, 0.35, size=(len(REGIONS), len(_COLLECTIONS)))
    past = np.isin(np.arange(len(_COLLECTIONS)), [_COLLECTIONS.index(c) for c in _PAST_COLLECTIONS])
    past_sku = past[catalogue.collection]
    popularity_rank = np.argsort(np.argsort(popularity)) / (sku_count - 1)  # 0 rare .. 1 top

    sku_parts: list[IntArray] = []
    node_parts: list[IntArray] = []
    on_hand_parts: list[IntArray] = []
    safety_parts: list[IntArray] = []

    # Warehouses: most of the catalogue, popular SKUs more often and deeper; the EU hub (the
    # house's home) carries the widest range.
    warehouses = [i for i, node in enumerate(nodes) if node.kind is NodeKind.WAREHOUSE]
    held_anywhere = np.zeros(sku_count, np.bool_)
    held_by: list[BoolArray] = []
    for index in warehouses:
        base = 0.92 if nodes[index].geo_path[0] == "EU" else 0.78
        probability = base * (0.75 + 0.25 * popularity_rank)
        held = rng.random(sku_count) < probability
        held_by.append(held)
        held_anywhere |= held
    # Every SKU sits in at least one warehouse (its home region's), so every SKU has stock.
    home = rng.integers(len(warehouses), size=sku_count)
    for position, held in enumerate(held_by):
        held |= ~held_anywhere & (home == position)
    for index, held in zip(warehouses, held_by, strict=True):
        rows = np.flatnonzero(held)
        region = region_of[index]
        scale = warehouse_depth[rows] * popularity[rows] ** 0.8
        scale *= affinity[region, catalogue.collection[rows]]
        if nodes[index].geo_path[0] == "EU":
            scale *= 1.5
        on_hand = np.ceil(rng.lognormal(np.log(scale), 0.7)).astype(np.int64)
        on_hand = np.clip(on_hand, 1, 5_000)
        # Safety stock on deeper positions only: 5-15% of on hand, and always below it.
        safety = np.where(
            on_hand >= 10,
            np.maximum(1, np.floor(on_hand * rng.uniform(0.05, 0.15, rows.shape[0]))),
            0,
        ).astype(np.int64)
        safety = np.minimum(safety, on_hand - 1)
        sku_parts.append(rows)
        node_parts.append(np.full(rows.shape[0], index, np.int64))
        on_hand_parts.append(on_hand)
        safety_parts.append(safety)

    # Boutiques: a weighted sample without replacement of `target` SKUs per store
    # (Efraimidis-Spirakis: top-k of log(weight) + Gumbel noise), mostly 1-5 units each.
    targets = _store_targets(nodes, rng)
    log_popularity = np.log(popularity)
    for index, node in enumerate(nodes):
        target = int(targets[index])
        if target == 0:
            continue
        outlet = node.kind is NodeKind.OUTLET
        weight = log_popularity + np.log(affinity[region_of[index], catalogue.collection])
        # Outlets carry mostly past collections; boutiques mostly current ones.
        weight += (
            np.where(past_sku, np.log(6.0), np.log(0.15))
            if outlet
            else np.where(past_sku, np.log(0.4), 0.0)
        )
        keys = weight + rng.gumbel(size=sku_count)
        rows = np.sort(np.argpartition(keys, -target)[-target:])
        p = store_p[rows]
        if "flagship" in node.tags:
            p = p * 0.7
        on_hand = np.minimum(rng.geometric(p), 12 if "flagship" in node.tags else 6)
        # About 3% sold out and awaiting replenishment (stocked at zero).
        on_hand[rng.random(target) < 0.03] = 0
        sku_parts.append(rows.astype(np.int64))
        node_parts.append(np.full(target, index, np.int64))
        on_hand_parts.append(on_hand.astype(np.int64))
        safety_parts.append(np.zeros(target, np.int64))

    all_skus = np.concatenate(sku_parts)
    all_nodes = np.concatenate(node_parts)
    order = np.lexsort((all_nodes, all_skus))
    positions = DemoPositions(
        _frozen(all_skus[order]),
        _frozen(all_nodes[order]),
        _frozen(np.concatenate(on_hand_parts)[order]),
        _frozen(np.concatenate(safety_parts)[order]),
    )
    assert (positions.on_hand >= 0).all() and (positions.safety_stock >= 0).all()
    assert (
        positions.safety_stock[positions.safety_stock > 0]
        < positions.on_hand[positions.safety_stock > 0]
    ).all()
    return positions


def demo_stock(seed: int = DEFAULT_SEED) -> Iterator[SetStock]:
    """One absolute count per demo position (source_sequence 1), SKU-major in catalogue order,
    with safety stock on the warehouse positions that have some."""
    positions = demo_positions(seed)
    skus = _catalogue().skus
    node_ids = [node.node_id for node in _nodes()]
    for sku, node, on_hand, safety in zip(
        positions.sku.tolist(),
        positions.node.tolist(),
        positions.on_hand.tolist(),
        positions.safety_stock.tolist(),
        strict=True,
    ):
        yield SetStock(skus[sku], node_ids[node], on_hand, SOURCE_SEQUENCE, safety or None)


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class DemoSummary:
    nodes: int
    warehouses: int
    stores: int
    skus: int
    positions: int
    units_on_hand: int
    sales: int  # till receipts of the sales history (sales_history.py)
    units_sold: int


# Units a boutique sells a day in the sales history; warehouses sell nothing at a till.
FLAGSHIP_DAILY_UNITS = 30.0
_DAILY_UNITS = {NodeKind.STORE: 12.0, NodeKind.OUTLET: 8.0}


def demo_history(seed: int = DEFAULT_SEED) -> DemoSales:
    """The demo's four weeks of till sales over the positions of `seed` (see sales_history)."""
    positions = demo_positions(seed)
    daily_units = np.array(
        [
            FLAGSHIP_DAILY_UNITS if "flagship" in node.tags else _DAILY_UNITS.get(node.kind, 0.0)
            for node in _nodes()
        ]
    )
    return demo_sales(positions.node, _catalogue().popularity[positions.sku], daily_units)


def _record_history(state: AtpState, sales: DemoSales, seed: int, now_ms: int) -> None:
    """The history as RecordOfflineSales commands, oldest first, with their till times."""
    positions = demo_positions(seed)
    skus = _catalogue().skus
    node_ids = [node.node_id for node in _nodes()]
    sale_skus = positions.sku[sales.position].tolist()
    sale_nodes = positions.node[sales.position].tolist()
    batch: list[RecordSale] = []
    for number, (sku, node, quantity, before_now_ms) in enumerate(
        zip(
            sale_skus,
            sale_nodes,
            sales.quantity.tolist(),
            sales.before_now_ms.tolist(),
            strict=True,
        )
    ):
        node_id = node_ids[node]
        batch.append(
            RecordSale(
                receipt_id=f"demo-{node_id}-{number:06d}",
                node_id=node_id,
                lines=(SaleLine(skus[sku], quantity),),
                force=True,
                sold_at_ms=max(now_ms - before_now_ms, 1),
                channel="store",
                terminal_id=f"{node_id}-T1",
            )
        )
        if len(batch) == SALES_PER_COMMAND:
            state.apply(RecordOfflineSales(tuple(batch)), now_ms)
            batch = []
    if batch:
        state.apply(RecordOfflineSales(tuple(batch)), now_ms)


def load_demo(state: AtpState, now_ms: int, seed: int = DEFAULT_SEED) -> DemoSummary:
    """Apply every demo command to `state` at `now_ms`; returns what was loaded.

    The counts, raised by what each position then sells, and the boutiques' last four weeks of
    till sales (`demo_history`, with their original times): the stock left is the demo stock
    picture (`demo_positions`), and demand velocity is real, so a restock plan has work.

    Meant for an empty state. On a state that already has these positions at source sequence
    1 or later, the counts are refused as stale (and not counted), and no sale is recorded.
    """
    nodes = _nodes()
    for node in nodes:
        result = state.apply(node, now_ms)
        assert result.outcome is Outcome.OK, (node.node_id, result)
    history = demo_history(seed)
    sold = history.units_per_position(len(demo_positions(seed))).tolist()
    positions = 0
    units = 0
    apply = state.apply
    ok = Outcome.OK
    for command, extra in zip(demo_stock(seed), sold, strict=True):
        counted = replace(command, on_hand=command.on_hand + extra) if extra else command
        if apply(counted, now_ms).outcome is ok:
            positions += 1
            units += command.on_hand
    complete = positions == len(sold)
    if complete:
        _record_history(state, history, seed, now_ms)
    warehouses = sum(1 for node in nodes if node.kind is NodeKind.WAREHOUSE)
    return DemoSummary(
        nodes=len(nodes),
        warehouses=warehouses,
        stores=len(nodes) - warehouses,
        skus=len(_catalogue().skus),
        positions=positions,
        units_on_hand=units,
        sales=len(history) if complete else 0,
        units_sold=int(history.quantity.sum()) if complete else 0,
    )


# ---------------------------------------------------------------------------- benchmark input


def demo_reservation_lines(
    count: int, seed: int = 11, stock_seed: int = DEFAULT_SEED
) -> list[Line]:
    """`count` realistic reservation lines against a fresh demo state loaded with `stock_seed`.

    Each line names a position with ATP (on hand minus safety stock) of at least its quantity,
    drawn with replacement, weighted by SKU popularity and node traffic (warehouses serve
    e-commerce and weigh most, flagships next); quantity is 1, sometimes 2. Lines are each
    satisfiable on their own: many of them together may of course exhaust a position.
    """
    assert 0 <= count <= 10_000_000, count
    positions = demo_positions(stock_seed)
    catalogue = _catalogue()
    nodes = _nodes()
    rng = np.random.default_rng(seed)
    atp = positions.on_hand - positions.safety_stock
    candidates = np.flatnonzero(atp > 0)
    assert candidates.shape[0] > 0
    node_traffic = np.array(
        [
            6.0
            if node.kind is NodeKind.WAREHOUSE
            else 2.5
            if "flagship" in node.tags
            else 0.6
            if node.kind is NodeKind.OUTLET
            else 1.0
            for node in nodes
        ]
    )
    weight = (
        catalogue.popularity[positions.sku[candidates]] * node_traffic[positions.node[candidates]]
    )
    picked = candidates[rng.choice(candidates.shape[0], size=count, p=weight / weight.sum())]
    quantity = np.where((atp[picked] >= 2) & (rng.random(count) < 0.1), 2, 1)
    skus = catalogue.skus
    node_ids = [node.node_id for node in nodes]
    return [
        Line(skus[sku], node_ids[node], qty)
        for sku, node, qty in zip(
            positions.sku[picked].tolist(),
            positions.node[picked].tolist(),
            quantity.tolist(),
            strict=True,
        )
    ]
