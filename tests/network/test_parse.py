"""Parsing network text into the model and compiling it into dense arrays: values, defaults,
references, the zone lookup, and bad files refused naming the file and the key."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest

from atpd.core.handlers_network import compiled_network
from atpd.core.network import UNLIMITED_PICKS, Mode
from atpd.core.network_compile import epoch_day, great_circle_km
from atpd.core.network_parse import NetworkKnown, parse_network

from .support import NETWORK, NODES, SOURCE, networked_world

KNOWN = NetworkKnown(
    frozenset(NODES),
    frozenset(
        {
            "EU",
            "EU/FR",
            "EU/FR/Paris",
            "EU/FR/Lyon",
            "EU/GB",
            "EU/GB/London",
            "AM",
            "AM/US",
            "AM/US/New York",
        }
    ),
)


def test_node_values_and_defaults() -> None:
    """Node keys override node_defaults; units are converted (hours to minutes, HH:MM)."""
    network = parse_network(NETWORK, SOURCE, KNOWN)
    warehouse = network.node("WH-1")
    paris = network.node("ST-PAR")
    nyc = network.node("ST-NYC")
    assert warehouse is not None and paris is not None and nyc is not None
    assert (warehouse.processing_minutes, warehouse.cutoff_minutes) == (270, 15 * 60 + 30)
    assert warehouse.open_weekdays == (0, 1, 2, 3, 4)
    assert warehouse.pick_capacity_orders == 2000
    assert (paris.processing_minutes, paris.cutoff_minutes, paris.time_zone) == (
        120,
        17 * 60,
        "Europe/Paris",
    )
    assert paris.open_weekdays == (0, 1, 2, 3, 4, 5)
    assert paris.closed_dates == (datetime.date(2026, 12, 25),)
    assert nyc.time_zone == "America/New_York"
    assert nyc.closed_dates == (datetime.date(2026, 11, 26), datetime.date(2026, 12, 25))


def test_services_zones_lanes() -> None:
    """Services keep mode, transit per zone, pickup days and cut-off, costs, slots default."""
    network = parse_network(NETWORK, SOURCE, KNOWN)
    express = network.service("express")
    courier = network.service("courier")
    assert express is not None and courier is not None
    assert express.mode is Mode.AIR and courier.mode is Mode.COURIER
    assert dict(express.transit_days) == {"fr": 1, "fr-paris": 1, "gb-london": 1, "us": 2}
    assert express.pickup_cutoff_minutes == 18 * 60
    assert express.default_daily_slots == 10 and courier.default_daily_slots is None
    assert courier.pickup_weekdays == (0, 1, 2, 3, 4)  # the default: working days
    assert (courier.cost.base, courier.cost.per_item, courier.cost.per_km) == (15.0, 0.0, 0.9)
    assert [z.zone_id for z in network.zones] == ["fr", "fr-paris", "gb-london", "us"]
    assert network.lanes[0].lead_days == 2
    assert network.co2.weight_class(1.0) == 0 and network.co2.weight_class(50.0) == 1


def test_compiled_arrays() -> None:
    """The compiled network is dense arrays over the state's node indices and zone indices."""
    state = networked_world()
    compiled = compiled_network(state)
    index = {node.node_id: node.index for node in state.nodes}
    wh, paris, london, nyc = (index[n] for n in ("WH-1", "ST-PAR", "ST-LON", "ST-NYC"))
    assert compiled.in_network.all()
    assert compiled.processing_minutes[wh] == 270
    assert compiled.cutoff_minutes[paris] == 17 * 60
    assert compiled.open_weekdays[wh] == 0b0011111
    assert compiled.open_weekdays[paris] == 0b0111111
    assert compiled.closed_count[nyc] == 2
    assert compiled.closed_days[nyc, 0] == epoch_day(datetime.date(2026, 11, 26))
    assert compiled.time_zones[london] == "Europe/London"
    assert compiled.pick_capacity_orders[wh] == 2000
    express = compiled.service_index("express")
    courier = compiled.service_index("courier")
    us = compiled.zone_index("us")
    assert compiled.transit_days[express, us] == 2
    assert compiled.transit_days[courier, us] == -1
    assert compiled.origin[express].tolist() == [
        node.node_id in ("WH-1", "ST-NYC") for node in state.nodes
    ]
    assert compiled.origin[courier, paris] and compiled.origin[courier, london]
    assert not compiled.origin[courier, wh]
    assert compiled.ships[paris] and not compiled.ships[london]
    assert compiled.co2_grams_per_km[express].tolist() == [600.0, 1100.0]
    # Paris store to the Paris zone's point: 0 km; Paris to London: about 344 km.
    assert compiled.distance_km[paris, compiled.zone_index("fr-paris")] == pytest.approx(0.0)
    assert compiled.distance_km[paris, compiled.zone_index("gb-london")] == pytest.approx(
        344, abs=3
    )
    # The lane from the warehouse to the European stores only (not New York).
    pairs = set(zip(compiled.lane_from.tolist(), compiled.lane_to.tolist(), strict=True))
    assert pairs == {(wh, paris), (wh, london)}


def test_node_not_in_network() -> None:
    """A node the network does not list is out of the network: NaN coordinates and
    distances, no cut-off, no open weekday, no pick limit."""
    lines = NETWORK.split("\n")
    start = lines.index("[nodes.ST-LON]")
    state = networked_world("\n".join(lines[:start] + lines[start + 5 :]))
    compiled = compiled_network(state)
    london = state.node_ids.get("ST-LON")
    assert not compiled.in_network[london]
    assert math.isnan(compiled.latitude[london])
    assert np.isnan(compiled.distance_km[london]).all()
    assert compiled.cutoff_minutes[london] == -1 and compiled.open_weekdays[london] == 0
    assert compiled.pick_capacity_orders[london] == UNLIMITED_PICKS


@pytest.mark.parametrize(
    ("country", "postal_code", "zone"),
    [
        ("FR", "75008", "fr-paris"),
        ("fr", "92100", "fr-paris"),
        ("FR", "69001", "fr"),
        ("GB", "SW1A 1AA", "gb-london"),
        ("GB", "n1 9gu", "gb-london"),
        ("GB", "NE1 4ST", None),
        ("US", "10001", "us"),
        ("DE", "10115", None),
        ("FR", "", "fr"),
    ],
)
def test_resolve_destination(country: str, postal_code: str, zone: str | None) -> None:
    """A destination resolves to the zone with the longest matching postal prefix, then to
    the country's zone without prefixes, else to none (-1)."""
    compiled = compiled_network(networked_world())
    found = compiled.resolve_destination(country, postal_code)
    assert (compiled.zone_ids[found] if found >= 0 else None) == zone


def test_great_circle() -> None:
    """Distances are great-circle km (Paris-New York about 5,837 km)."""
    distance = great_circle_km(
        np.array([48.8566]), np.array([2.3522]), np.array([40.7128]), np.array([-74.006])
    )
    assert float(distance[0]) == pytest.approx(5837, rel=0.01)
