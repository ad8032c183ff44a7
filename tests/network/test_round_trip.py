"""Hypothesis: any network written as text parses back to the values written, and its
compiled arrays agree with the model, node by node, zone by zone and service by service."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.commands import NodeKind, SetNetwork, UpsertNode
from atpd.core.handlers_network import compiled_network
from atpd.core.network import WEEKDAYS, Mode
from atpd.core.network_compile import epoch_day, great_circle_km
from atpd.core.state import AtpState

NODE_IDS = ("N-0", "N-1", "N-2", "N-3", "N-4")
ZONE_IDS = ("za", "zb", "zc", "zd")
TIME_ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")
KINDS = (NodeKind.WAREHOUSE, NodeKind.STORE, NodeKind.OUTLET)


@dataclass
class NodeSpec:
    node_id: str
    kind: NodeKind
    latitude: float
    longitude: float
    time_zone: str
    processing_quarters: int  # processing time in quarter hours
    cutoff: int
    open_days: tuple[int, ...]
    closed: tuple[datetime.date, ...]
    picks: int | None


@dataclass
class ServiceSpec:
    service_id: str
    mode: Mode
    origin_kinds: tuple[NodeKind, ...]
    transit: dict[str, int]
    pickup_days: tuple[int, ...]
    cutoff: int
    costs: tuple[float, float, float]
    slots: int | None


coordinates = st.tuples(
    st.floats(-89.0, 89.0, allow_nan=False), st.floats(-179.0, 179.0, allow_nan=False)
)
weekdays = st.sets(st.integers(0, 6), min_size=1).map(lambda s: tuple(sorted(s)))
dates = st.dates(datetime.date(2026, 1, 1), datetime.date(2027, 12, 31))


@st.composite
def node_specs(draw: st.DrawFn, node_id: str) -> NodeSpec:
    latitude, longitude = draw(coordinates)
    return NodeSpec(
        node_id,
        draw(st.sampled_from(KINDS)),
        latitude,
        longitude,
        draw(st.sampled_from(TIME_ZONES)),
        draw(st.integers(0, 96)),
        draw(st.integers(0, 24 * 60 - 1)),
        draw(weekdays),
        tuple(sorted(draw(st.sets(dates, max_size=4)))),
        draw(st.none() | st.integers(0, 5000)),
    )


@st.composite
def service_specs(draw: st.DrawFn, service_id: str) -> ServiceSpec:
    zones = draw(st.sets(st.sampled_from(ZONE_IDS), min_size=1))
    return ServiceSpec(
        service_id,
        draw(st.sampled_from(list(Mode))),
        tuple(draw(st.sets(st.sampled_from(KINDS), min_size=1))),
        {zone: draw(st.integers(0, 20)) for zone in sorted(zones)},
        draw(weekdays),
        draw(st.integers(0, 24 * 60 - 1)),
        tuple(draw(st.floats(0, 1000, allow_nan=False)) for _ in range(3)),  # type: ignore[arg-type]
        draw(st.none() | st.integers(0, 1000)),
    )


@st.composite
def networks(
    draw: st.DrawFn,
) -> tuple[list[NodeSpec], list[tuple[float, float]], list[ServiceSpec]]:
    count = draw(st.integers(1, len(NODE_IDS)))
    nodes = [draw(node_specs(node_id)) for node_id in NODE_IDS[:count]]
    zones = [draw(coordinates) for _ in ZONE_IDS]
    services = [draw(service_specs(f"s{i}")) for i in range(draw(st.integers(0, 3)))]
    return nodes, zones, services


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def days(values: tuple[int, ...]) -> str:
    return "[" + ", ".join(f'"{WEEKDAYS[d]}"' for d in values) + "]"


def render(
    nodes: list[NodeSpec], zones: list[tuple[float, float]], services: list[ServiceSpec]
) -> str:
    out = ['version = "gen"']
    for node in nodes:
        out += [
            f"[nodes.{node.node_id}]",
            f"latitude = {node.latitude!r}",
            f"longitude = {node.longitude!r}",
            f'time_zone = "{node.time_zone}"',
            f"processing_hours = {node.processing_quarters / 4!r}",
            f'cutoff = "{hhmm(node.cutoff)}"',
            f"open_days = {days(node.open_days)}",
            "closed_dates = [" + ", ".join(f'"{d.isoformat()}"' for d in node.closed) + "]",
        ]
        if node.picks is not None:
            out.append(f"pick_capacity_orders = {node.picks}")
    for zone_id, (latitude, longitude) in zip(ZONE_IDS, zones, strict=True):
        out += [
            f"[zones.{zone_id}]",
            f'country = "{zone_id.upper()}"',
            f"latitude = {latitude!r}",
            f"longitude = {longitude!r}",
        ]
    for service in services:
        kinds = ", ".join(f'"{k.name.lower()}"' for k in service.origin_kinds)
        transit = ", ".join(f"{zone} = {d}" for zone, d in service.transit.items())
        base, per_item, per_km = service.costs
        out += [
            f"[services.{service.service_id}]",
            f'mode = "{service.mode.name.lower()}"',
            f"origin = {{ kinds = [{kinds}] }}",
            f"transit_days = {{ {transit} }}",
            f"pickup_days = {days(service.pickup_days)}",
            f'pickup_cutoff = "{hhmm(service.cutoff)}"',
            f"cost = {{ base = {base!r}, per_item = {per_item!r}, per_km = {per_km!r} }}",
        ]
        if service.slots is not None:
            out.append(f"default_daily_slots = {service.slots}")
    out += ["[co2]", "weight_classes_kg = [1.0, 5.0]"]
    out += [f"{mode.name.lower()} = [{i}.0, {i + 1}.5]" for i, mode in enumerate(Mode)]
    return "\n".join(out) + "\n"


def mask(values: tuple[int, ...]) -> int:
    return sum(1 << d for d in values)


@settings(max_examples=60, deadline=None)
@given(networks())
def test_text_model_arrays_agree(
    generated: tuple[list[NodeSpec], list[tuple[float, float]], list[ServiceSpec]],
) -> None:
    """Text -> model -> compiled arrays: every value written is found where it belongs."""
    nodes, zones, services = generated
    state = AtpState()
    for node_id in NODE_IDS:  # every node exists; only some are in the network
        kind = next((n.kind for n in nodes if n.node_id == node_id), NodeKind.STORE)
        state.apply(UpsertNode(node_id, kind, ("EU", "FR", "Paris")), 1)
    state.apply(SetNetwork(render(nodes, zones, services), "gen.toml"), 1)
    compiled = compiled_network(state)
    listed = {node.node_id: node for node in nodes}
    for node in state.nodes:
        spec = listed.get(node.node_id)
        i = node.index
        assert compiled.in_network[i] == (spec is not None)
        if spec is None:
            assert math.isnan(compiled.latitude[i]) and compiled.cutoff_minutes[i] == -1
            continue
        model = state.network.node(spec.node_id)
        assert model is not None
        assert (model.latitude, model.longitude) == (spec.latitude, spec.longitude)
        assert compiled.latitude[i] == spec.latitude
        assert compiled.time_zones[i] == spec.time_zone
        assert compiled.processing_minutes[i] == spec.processing_quarters * 15
        assert compiled.cutoff_minutes[i] == spec.cutoff
        assert compiled.open_weekdays[i] == mask(spec.open_days)
        count = int(compiled.closed_count[i])
        assert compiled.closed_days[i, :count].tolist() == [epoch_day(d) for d in spec.closed]
        assert compiled.pick_capacity_orders[i] == (-1 if spec.picks is None else spec.picks)
        for z, (latitude, longitude) in enumerate(zones):
            zone = compiled.zone_index(ZONE_IDS[z])
            expected = great_circle_km(
                *(np.array([v]) for v in (spec.latitude, spec.longitude, latitude, longitude))
            )[0]
            assert math.isclose(compiled.distance_km[i, zone], expected, abs_tol=1e-6)
            assert compiled.resolve_destination(ZONE_IDS[z].upper(), "12345") == zone
    for service in services:
        s = compiled.service_index(service.service_id)
        assert s >= 0 and compiled.mode[s] == service.mode
        for zone_id in ZONE_IDS:
            expected_days = service.transit.get(zone_id, -1)
            assert compiled.transit_days[s, compiled.zone_index(zone_id)] == expected_days
        for node in state.nodes:
            assert compiled.origin[s, node.index] == (node.kind in service.origin_kinds)
        assert compiled.pickup_weekdays[s] == mask(service.pickup_days)
        assert compiled.pickup_cutoff_minutes[s] == service.cutoff
        assert (compiled.cost_base[s], compiled.cost_per_item[s], compiled.cost_per_km[s]) == (
            service.costs
        )
        assert compiled.default_daily_slots[s] == (-1 if service.slots is None else service.slots)
        assert compiled.co2_grams_per_km[s].tolist() == [
            float(int(service.mode) - 1),
            int(service.mode) - 1 + 1.5,
        ]
