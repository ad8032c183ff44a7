"""Network text (TOML) to a `Network`, bounded and checked like rule text.

    version = "2026-12-01.1"
    [node_defaults]   time_zone, processing_hours, cutoff, open_days, closed_dates,
                      pick_capacity_orders, opening = "10:00-19:00" (local opening hours;
                      the cut-off defaults to closing time) (each node may override any)
    [nodes.NODE-ID]   latitude, longitude (+ the keys of node_defaults)
    [zones.NAME]      country, postal_prefixes, latitude, longitude
    [services.NAME]   name, mode, origin (a node selector), transit_days {zone = days},
                      pickup_days, pickup_cutoff, cost {base, per_item, per_km},
                      item_weight_kg, default_daily_slots
    [[lanes]]         from (node id), to (a node selector), lead_days, cost
    [co2]             weight_classes_kg = [..]; courier / road / air = [grams per km per class]

The text goes through the same bounds as rule text before and after the TOML parser (size,
lines, keys, nesting, array lengths; non-finite numbers refused). Errors name the file, the key
path and the problem; node ids, geo prefixes and zones referenced must exist.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atpd.core.commands import NodeKind
from atpd.core.network import (
    MINUTES_PER_DAY,
    UNLIMITED_PICKS,
    WEEKDAYS,
    CarrierService,
    Co2Factors,
    CostModel,
    Lane,
    Mode,
    Network,
    NetworkError,
    NodeLogistics,
    Zone,
    normalize_postal_code,
    parse_date,
)
from atpd.core.rules import NAME, NodeSelector, RulesError, read_rules_document
from atpd.core.text import shown

MAX_NETWORK_NODES = 65_000
MAX_NETWORK_SERVICES = 64
MAX_NETWORK_ZONES = 4_096
MAX_NETWORK_LANES = 10_000
MAX_WEIGHT_CLASSES = 8
MAX_CLOSED_DATES = 366
MAX_POSTAL_PREFIXES = 1_000
MAX_TRANSIT_DAYS = 60
MAX_LEAD_DAYS = 365
MAX_PROCESSING_HOURS = 30 * 24
MAX_SLOTS = 1_000_000
# Costs and CO2 factors: far above any real one, small enough that sums stay exact in float64.
MAX_AMOUNT = 1e9
TIME = re.compile(r"\A([01][0-9]|2[0-3]):([0-5][0-9])\Z")
COUNTRY = re.compile(r"\A[A-Z]{2}\Z")
POSTAL_PREFIX = re.compile(r"\A[A-Z0-9]{1,10}\Z")
NODE_KEYS = (
    "latitude",
    "longitude",
    "time_zone",
    "processing_hours",
    "cutoff",
    "open_days",
    "closed_dates",
    "pick_capacity_orders",
    "opening",
)
DEFAULT_KEYS = NODE_KEYS[2:]
SERVICE_KEYS = (
    "name",
    "mode",
    "origin",
    "transit_days",
    "pickup_days",
    "pickup_cutoff",
    "cost",
    "item_weight_kg",
    "default_daily_slots",
)
ZONE_KEYS = ("country", "postal_prefixes", "latitude", "longitude")
LANE_KEYS = ("from", "to", "lead_days", "cost")
SELECTOR_KEYS = ("kinds", "geo", "tags", "include", "exclude")


@dataclass(frozen=True, slots=True)
class NetworkKnown:
    """What references are checked against (None: not checked, e.g. a snapshot's network)."""

    node_ids: frozenset[str] | None = None
    geo: frozenset[str] | None = None

    def node(self, node_id: str, where: str) -> None:
        if self.node_ids is not None and node_id not in self.node_ids:
            raise NetworkError(f"{where}: unknown node {node_id!r}")

    def prefix(self, prefix: str, where: str) -> None:
        if self.geo is not None and prefix not in self.geo:
            raise NetworkError(f"{where}: no node under geo prefix {prefix!r}")


def read_network_document(text: str, source: str = "<network>") -> dict[str, Any]:
    """The TOML document of a network text within the bounds: the costly, state-free half of
    `parse_network` (the service runs it in a worker thread)."""
    try:
        return read_rules_document(text, source)
    except RulesError as error:
        raise NetworkError(str(error)) from None


def parse_network(
    text: str,
    source: str = "<network>",
    known: NetworkKnown | None = None,
    document: dict[str, Any] | None = None,
) -> Network:
    if document is None:
        document = read_network_document(text, source)
    try:
        return _parse(document, text, source, known or NetworkKnown())
    except NetworkError as error:
        raise NetworkError(f"{source}: {error}") from None


# ----------------------------------------------------------------------------- values


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if value is None:
        raise NetworkError(f"{where}: missing")
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        names = " or ".join(k.__name__ for k in _kinds(kind))
        raise NetworkError(f"{where}: expected {names}, got {value!r}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise NetworkError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _table(value: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    table: dict[str, Any] = _expect(value, dict, where)
    _check_keys(table, allowed, where)
    return table


def _integer(value: Any, where: str, low: int, high: int) -> int:
    number = int(_expect(value, int, where))
    if not low <= number <= high:
        raise NetworkError(f"{where}: {number} is not in {low}..{high}")
    return number


def _number(value: Any, where: str, low: float, high: float) -> float:
    number = float(_expect(value, (int, float), where))
    if not (math.isfinite(number) and low <= number <= high):
        raise NetworkError(f"{where}: {number} is not a number in {low:g}..{high:g}")
    return number


def _strings(value: Any, where: str, limit: int) -> tuple[str, ...]:
    items = _expect(value, list, where)
    if len(items) > limit:
        raise NetworkError(f"{where}: {len(items)} items, more than the {limit} allowed")
    for index, item in enumerate(items):
        _expect(item, str, f"{where}[{index}]")
    return tuple(items)


def _time_minutes(value: Any, where: str) -> int:
    text = _expect(value, str, where)
    match = TIME.fullmatch(text)
    if match is None:
        raise NetworkError(f"{where}: {shown(text)} is not a local time like 16:30")
    return int(match.group(1)) * 60 + int(match.group(2))


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _opening(value: Any, where: str) -> tuple[int, int]:
    """ "10:00-19:00" -> (600, 1140): local opening and closing minutes; "24:00" closes at
    midnight."""
    text = _expect(value, str, where)
    opening, _, closing = text.partition("-")
    problem = f"{where}: {shown(text)} is not opening hours like 10:00-19:00"
    if TIME.fullmatch(opening.strip()) is None:
        raise NetworkError(problem)
    open_minutes = _time_minutes(opening.strip(), where)
    closing = closing.strip()
    if closing == "24:00":
        close_minutes = MINUTES_PER_DAY
    elif TIME.fullmatch(closing) is not None:
        close_minutes = _time_minutes(closing, where)
    else:
        raise NetworkError(problem)
    if close_minutes <= open_minutes:
        raise NetworkError(f"{where}: {shown(text)} closes before it opens")
    return open_minutes, close_minutes


def _weekdays(value: Any, where: str) -> tuple[int, ...]:
    days = set()
    for index, name in enumerate(_strings(value, where, 7)):
        if name.lower() not in WEEKDAYS:
            raise NetworkError(
                f"{where}[{index}]: {shown(name)} is not a weekday ({', '.join(WEEKDAYS)})"
            )
        days.add(WEEKDAYS.index(name.lower()))
    if not days:
        raise NetworkError(f"{where}: name at least one weekday")
    return tuple(sorted(days))


def _dates(value: Any, where: str) -> tuple[datetime.date, ...]:
    found = set()
    for index, text in enumerate(_strings(value, where, MAX_CLOSED_DATES)):
        try:
            found.add(parse_date(text))
        except ValueError as error:
            raise NetworkError(f"{where}[{index}]: {error}") from None
    return tuple(sorted(found))


def _time_zone(value: Any, where: str) -> str:
    name = _expect(value, str, where)
    # zoneinfo reads the system's (or the tzdata package's) database: the same answer for the
    # same name on every replay on this host; an unknown name is refused here, at SetNetwork.
    try:
        if not name or name != name.strip() or "\\" in name:
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise NetworkError(f"{where}: {shown(name)} is not an IANA time zone") from None
    return str(name)


def _name(value: Any, where: str) -> str:
    if not NAME.fullmatch(value):
        raise NetworkError(f"{where}: {shown(value)} is not a name of 1-32 of a-z 0-9 _ -")
    return str(value)


def _selector(value: Any, where: str, known: NetworkKnown) -> NodeSelector:
    table = _table(value, where, SELECTOR_KEYS)
    kinds = []
    for index, name in enumerate(_strings(table.get("kinds", []), f"{where}.kinds", 16)):
        try:
            kinds.append(NodeKind[name.upper()])
        except KeyError:
            names = ", ".join(k.name.lower() for k in NodeKind)
            raise NetworkError(
                f"{where}.kinds[{index}]: unknown node kind {shown(name)} (known: {names})"
            ) from None
    selector = NodeSelector(
        tuple(kinds),
        _strings(table.get("geo", []), f"{where}.geo", MAX_NETWORK_NODES),
        _strings(table.get("tags", []), f"{where}.tags", MAX_NETWORK_NODES),
        _strings(table.get("include", []), f"{where}.include", MAX_NETWORK_NODES),
        _strings(table.get("exclude", []), f"{where}.exclude", MAX_NETWORK_NODES),
    )
    for index, prefix in enumerate(selector.geo):
        known.prefix(prefix, f"{where}.geo[{index}]")
    for key in ("include", "exclude"):
        for index, node_id in enumerate(getattr(selector, key)):
            known.node(node_id, f"{where}.{key}[{index}]")
    if not (selector.kinds or selector.geo or selector.tags or selector.include):
        raise NetworkError(f"{where}: select nodes by kinds, geo, tags or include")
    return selector


# ----------------------------------------------------------------------------- sections


def _node(node_id: str, table: Any, defaults: dict[str, Any], where: str) -> NodeLogistics:
    values = {**defaults, **_table(table, where, NODE_KEYS)}

    def at(key: str) -> str:
        return f"{where}.{key}" if key in table else f"node_defaults.{key}"

    if "time_zone" not in values:
        raise NetworkError(f"{where}.time_zone: missing (here or in node_defaults)")
    pick = values.get("pick_capacity_orders")
    open_minutes, close_minutes = 0, MINUTES_PER_DAY
    if "opening" in values:
        open_minutes, close_minutes = _opening(values["opening"], at("opening"))
    # Without a cut-off, orders are taken until closing time.
    cutoff = _time_minutes(values["cutoff"], at("cutoff")) if "cutoff" in values else None
    if cutoff is None:
        cutoff = min(23 * 60 + 59, close_minutes)
    if not open_minutes <= cutoff <= close_minutes:
        raise NetworkError(
            f"{at('cutoff')}: {clock(cutoff)} is outside the opening hours "
            f"{clock(open_minutes)}-{clock(close_minutes)} ({at('opening')})"
        )
    return NodeLogistics(
        node_id,
        _number(values.get("latitude"), f"{where}.latitude", -90.0, 90.0),
        _number(values.get("longitude"), f"{where}.longitude", -180.0, 180.0),
        _time_zone(values["time_zone"], at("time_zone")),
        round(
            _number(
                values.get("processing_hours", 0),
                at("processing_hours"),
                0.0,
                MAX_PROCESSING_HOURS,
            )
            * 60
        ),
        cutoff,
        _weekdays(values.get("open_days", list(WEEKDAYS)), at("open_days")),
        _dates(values.get("closed_dates", []), at("closed_dates")),
        UNLIMITED_PICKS
        if pick is None
        else _integer(pick, at("pick_capacity_orders"), 0, MAX_SLOTS),
        open_minutes,
        close_minutes,
    )


def _zone(zone_id: str, table: Any, where: str) -> Zone:
    table = _table(table, where, ZONE_KEYS)
    country = _expect(table.get("country"), str, f"{where}.country")
    if not COUNTRY.fullmatch(country):
        raise NetworkError(f"{where}.country: {shown(country)} is not a code like FR or US")
    prefixes = []
    raw = _strings(table.get("postal_prefixes", []), f"{where}.postal_prefixes", 1000)
    for index, text in enumerate(raw):
        prefix = normalize_postal_code(text)
        if not POSTAL_PREFIX.fullmatch(prefix):
            raise NetworkError(
                f"{where}.postal_prefixes[{index}]: {shown(text)} is not 1-10 letters or digits"
            )
        prefixes.append(prefix)
    return Zone(
        zone_id,
        country,
        tuple(sorted(set(prefixes))),
        _number(table.get("latitude"), f"{where}.latitude", -90.0, 90.0),
        _number(table.get("longitude"), f"{where}.longitude", -180.0, 180.0),
    )


def _service(
    service_id: str, table: Any, where: str, zones: set[str], known: NetworkKnown
) -> CarrierService:
    table = _table(table, where, SERVICE_KEYS)
    mode_name = _expect(table.get("mode"), str, f"{where}.mode")
    try:
        mode = Mode[mode_name.upper()]
    except KeyError:
        names = ", ".join(m.name.lower() for m in Mode)
        raise NetworkError(f"{where}.mode: {shown(mode_name)} is not one of {names}") from None
    transit = _expect(table.get("transit_days"), dict, f"{where}.transit_days")
    if not transit:
        raise NetworkError(f"{where}.transit_days: name at least one zone")
    transit_days = {}
    for zone_id, days in transit.items():
        if zone_id not in zones:
            raise NetworkError(f"{where}.transit_days.{zone_id}: unknown zone {zone_id!r}")
        transit_days[zone_id] = _integer(
            days, f"{where}.transit_days.{zone_id}", 0, MAX_TRANSIT_DAYS
        )
    cost = _table(table.get("cost", {}), f"{where}.cost", ("base", "per_item", "per_km"))
    slots = table.get("default_daily_slots")
    return CarrierService(
        service_id,
        _expect(table.get("name", service_id), str, f"{where}.name")[:128],
        mode,
        _selector(table.get("origin"), f"{where}.origin", known),
        dict(sorted(transit_days.items())),
        _weekdays(table.get("pickup_days", list(WEEKDAYS[:5])), f"{where}.pickup_days"),
        _time_minutes(table.get("pickup_cutoff", "23:59"), f"{where}.pickup_cutoff"),
        CostModel(
            *(
                _number(cost.get(key, 0), f"{where}.cost.{key}", 0.0, MAX_AMOUNT)
                for key in ("base", "per_item", "per_km")
            )
        ),
        _number(table.get("item_weight_kg", 1.0), f"{where}.item_weight_kg", 0.0, 1000.0),
        None if slots is None else _integer(slots, f"{where}.default_daily_slots", 0, MAX_SLOTS),
    )


def _lane(table: Any, where: str, known: NetworkKnown) -> Lane:
    table = _table(table, where, LANE_KEYS)
    from_node = _expect(table.get("from"), str, f"{where}.from")
    known.node(from_node, f"{where}.from")
    return Lane(
        from_node,
        _selector(table.get("to"), f"{where}.to", known),
        _integer(table.get("lead_days"), f"{where}.lead_days", 0, MAX_LEAD_DAYS),
        _number(table.get("cost", 0), f"{where}.cost", 0.0, MAX_AMOUNT),
    )


def _co2(value: Any, modes_used: set[Mode]) -> Co2Factors:
    table = _table(value, "co2", ("weight_classes_kg", *(m.name.lower() for m in Mode)))
    bounds_raw = _expect(table.get("weight_classes_kg"), list, "co2.weight_classes_kg")
    if not 1 <= len(bounds_raw) <= MAX_WEIGHT_CLASSES:
        raise NetworkError(f"co2.weight_classes_kg: give 1..{MAX_WEIGHT_CLASSES} upper bounds")
    bounds = tuple(
        _number(v, f"co2.weight_classes_kg[{i}]", 0.0, 1e6) for i, v in enumerate(bounds_raw)
    )
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise NetworkError("co2.weight_classes_kg: upper bounds must increase")
    factors: dict[Mode, tuple[float, ...]] = {}
    for mode in Mode:
        key = mode.name.lower()
        if key not in table:
            if mode in modes_used:
                raise NetworkError(f"co2.{key}: missing (a service uses mode {key})")
            continue
        values = _expect(table[key], list, f"co2.{key}")
        if len(values) != len(bounds):
            raise NetworkError(
                f"co2.{key}: {len(values)} factors, expected one per weight class ({len(bounds)})"
            )
        factors[mode] = tuple(
            _number(v, f"co2.{key}[{i}]", 0.0, MAX_AMOUNT) for i, v in enumerate(values)
        )
    return Co2Factors(bounds, factors)


def _section(document: Mapping[str, Any], key: str, limit: int) -> dict[str, Any]:
    table: dict[str, Any] = _expect(document.get(key, {}), dict, key)
    if len(table) > limit:
        raise NetworkError(f"{key}: {len(table)} entries, more than the {limit} allowed")
    return table


def _parse(document: dict[str, Any], text: str, source: str, known: NetworkKnown) -> Network:
    _check_keys(
        document,
        ("version", "node_defaults", "nodes", "zones", "services", "lanes", "co2"),
        "top level",
    )
    version = _expect(document.get("version"), str, "version")
    if not version or len(version) > 128:
        raise NetworkError("version: 1 to 128 characters")
    defaults = _table(document.get("node_defaults", {}), "node_defaults", DEFAULT_KEYS)
    nodes = []
    for node_id, table in sorted(_section(document, "nodes", MAX_NETWORK_NODES).items()):
        known.node(node_id, f"nodes.{node_id}")
        nodes.append(_node(node_id, table, defaults, f"nodes.{node_id}"))
    zones = []
    seen_prefixes: dict[tuple[str, str], str] = {}
    for zone_id, table in sorted(_section(document, "zones", MAX_NETWORK_ZONES).items()):
        zone = _zone(_name(zone_id, f"zones.{zone_id}"), table, f"zones.{zone_id}")
        for prefix in zone.postal_prefixes or ("",):
            other = seen_prefixes.setdefault((zone.country, prefix), zone_id)
            if other != zone_id:
                what = f"postal prefix {prefix!r}" if prefix else "the whole country"
                raise NetworkError(
                    f"zones.{zone_id}: {zone.country} {what} is already zone {other!r}"
                )
        zones.append(zone)
    zone_ids = {zone.zone_id for zone in zones}
    services = []
    for service_id, table in sorted(_section(document, "services", MAX_NETWORK_SERVICES).items()):
        where = f"services.{service_id}"
        services.append(_service(_name(service_id, where), table, where, zone_ids, known))
    raw_lanes = _expect(document.get("lanes", []), list, "lanes")
    if len(raw_lanes) > MAX_NETWORK_LANES:
        raise NetworkError(f"lanes: {len(raw_lanes)}, more than the {MAX_NETWORK_LANES} allowed")
    lanes = tuple(_lane(table, f"lanes[{i}]", known) for i, table in enumerate(raw_lanes))
    modes_used = {service.mode for service in services}
    if "co2" in document:
        co2 = _co2(document["co2"], modes_used)
    elif services:
        raise NetworkError("co2: missing (the services' CO2 factors per km and weight class)")
    else:
        co2 = Co2Factors((), {})
    return Network(
        version,
        source,
        text,
        tuple(nodes),
        tuple(services),
        tuple(zones),
        lanes,
        co2,
        {node.node_id: node for node in nodes},
        {service.service_id: service for service in services},
    )
