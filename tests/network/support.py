"""A small network over four nodes, and helpers to build states holding it."""

from __future__ import annotations

from atpd.core.commands import NodeKind, SetNetwork, UpsertNode
from atpd.core.state import AtpState

SOURCE = "net.toml"
# 2026-11-30T10:00:00Z, a Monday.
NOW_MS = 1_796_032_800_000
DAY_MS = 86_400_000

NODES: dict[str, tuple[NodeKind, tuple[str, ...], bool, bool]] = {
    "WH-1": (NodeKind.WAREHOUSE, ("EU", "FR", "Lyon"), True, False),
    "ST-PAR": (NodeKind.STORE, ("EU", "FR", "Paris"), True, True),
    "ST-LON": (NodeKind.STORE, ("EU", "GB", "London"), False, True),
    "ST-NYC": (NodeKind.STORE, ("AM", "US", "New York"), True, True),
}

NETWORK = """\
version = "n1"

[node_defaults]
time_zone = "Europe/Paris"
processing_hours = 2
cutoff = "17:00"
open_days = ["mon", "tue", "wed", "thu", "fri", "sat"]
closed_dates = ["2026-12-25"]
pick_capacity_orders = 40

[nodes.WH-1]
latitude = 45.764
longitude = 4.8357
processing_hours = 4.5
cutoff = "15:30"
open_days = ["mon", "tue", "wed", "thu", "fri"]
pick_capacity_orders = 2000

[nodes.ST-PAR]
latitude = 48.8566
longitude = 2.3522

[nodes.ST-LON]
latitude = 51.5072
longitude = -0.1276
time_zone = "Europe/London"

[nodes.ST-NYC]
latitude = 40.7128
longitude = -74.006
time_zone = "America/New_York"
closed_dates = ["2026-11-26", "2026-12-25"]

[zones.fr-paris]
country = "FR"
postal_prefixes = ["75", "92"]
latitude = 48.8566
longitude = 2.3522

[zones.fr]
country = "FR"
latitude = 46.6
longitude = 1.89

[zones.gb-london]
country = "GB"
postal_prefixes = ["SW", "EC", "N1"]
latitude = 51.5072
longitude = -0.1276

[zones.us]
country = "US"
latitude = 39.8
longitude = -98.6

[services.express]
name = "Express air"
mode = "air"
origin = { kinds = ["warehouse"], include = ["ST-NYC"] }
transit_days = { fr-paris = 1, fr = 1, gb-london = 1, us = 2 }
pickup_days = ["mon", "tue", "wed", "thu", "fri"]
pickup_cutoff = "18:00"
cost = { base = 20.0, per_item = 1.5, per_km = 0.004 }
item_weight_kg = 1.2
default_daily_slots = 10

[services.courier]
mode = "courier"
origin = { geo = ["EU/FR/Paris", "EU/GB/London"] }
transit_days = { fr-paris = 0, gb-london = 0 }
cost = { base = 15.0, per_km = 0.9 }

[[lanes]]
from = "WH-1"
to = { kinds = ["store"], geo = ["EU"] }
lead_days = 2
cost = 6.0

[co2]
weight_classes_kg = [2.0, 10.0]
courier = [90.0, 140.0]
road = [35.0, 60.0]
air = [600.0, 1100.0]
"""


def make_world() -> AtpState:
    state = AtpState()
    for node_id, (kind, geo_path, ships, pickup) in NODES.items():
        state.apply(UpsertNode(node_id, kind, geo_path, ships=ships, pickup=pickup), NOW_MS)
    return state


def networked_world(text: str = NETWORK) -> AtpState:
    state = make_world()
    state.apply(SetNetwork(text, SOURCE), NOW_MS)
    return state
