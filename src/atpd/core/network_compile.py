"""A network compiled against the nodes: dense arrays indexed by node index (the state's
`node_ids`), zone index and service index, for the promise search (phase B's kernels read
arrays, never the frozen model). Rebuilt when the network or the nodes change, like
CompiledRules.

Conventions: a node the network does not list has `in_network` False, NaN coordinates and
distances, cut-off -1, no open weekday; `transit_days` is -1 where a service does not reach a
zone; weekday masks have bit d set for weekday d (0 = Monday); dates are days since 1970-01-01.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from atpd.core.network import UNLIMITED_PICKS, Mode, Network, normalize_postal_code
from atpd.core.nodes import Node

EARTH_RADIUS_KM = 6371.0088
EPOCH = datetime.date(1970, 1, 1)
# Longest postal prefix a zone may have (network_parse.POSTAL_PREFIX).
MAX_PREFIX_CHARACTERS = 10

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int32]
Bools = npt.NDArray[np.bool_]


def epoch_day(date: datetime.date) -> int:
    return (date - EPOCH).days


def weekday_mask(days: Sequence[int]) -> int:
    mask = 0
    for day in days:
        mask |= 1 << day
    return mask


def great_circle_km(
    latitude: Floats, longitude: Floats, to_latitude: Floats, to_longitude: Floats
) -> Floats:
    """Haversine distances, broadcast over the arguments (degrees in, km out)."""
    lat1, lon1, lat2, lon2 = (
        np.radians(x) for x in (latitude, longitude, to_latitude, to_longitude)
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    distance: Floats = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distance


@dataclass(slots=True)
class CompiledNetwork:
    network: Network
    node_count: int
    zone_ids: tuple[str, ...]
    service_ids: tuple[str, ...]
    # per node
    in_network: Bools
    ships: Bools
    pickup: Bools
    latitude: Floats
    longitude: Floats
    time_zones: tuple[str, ...]  # "" where not in the network
    processing_minutes: Ints
    cutoff_minutes: Ints  # local minutes after midnight; -1 where not in the network
    open_weekdays: Ints  # weekday mask
    closed_days: Ints  # [node, max closed dates] sorted days since epoch, -1 padded
    closed_count: Ints
    pick_capacity_orders: Ints  # UNLIMITED_PICKS (-1): no limit
    # per zone
    zone_latitude: Floats
    zone_longitude: Floats
    distance_km: Floats  # [node, zone] great-circle; NaN where the node has no coordinates
    # per service
    mode: Ints  # Mode values
    transit_days: Ints  # [service, zone]; -1: the service does not reach the zone
    origin: Bools  # [service, node]: the service collects there (before `ships` is applied)
    pickup_weekdays: Ints  # weekday mask
    pickup_cutoff_minutes: Ints
    cost_base: Floats
    cost_per_item: Floats
    cost_per_km: Floats
    item_weight_kg: Floats
    default_daily_slots: Ints  # -1: no default (unlimited unless the TMS sets slots)
    co2_grams_per_km: Floats  # [service, weight class]
    weight_class_upper_kg: Floats
    # transfer lanes, one row per (from, to) pair
    lane_from: Ints
    lane_to: Ints
    lane_lead_days: Ints
    lane_cost: Floats
    # (country, normalized postal prefix or "") -> zone index
    postal_zones: dict[tuple[str, str], int]

    def zone_index(self, zone_id: str) -> int:
        try:
            return self.zone_ids.index(zone_id)
        except ValueError:
            return -1

    def service_index(self, service_id: str) -> int:
        try:
            return self.service_ids.index(service_id)
        except ValueError:
            return -1

    def resolve_destination(self, country: str, postal_code: str) -> int:
        """The zone of a destination by longest postal prefix, then the country's zone without
        prefixes; -1 when none covers it."""
        country = country.upper()
        code = normalize_postal_code(postal_code)[:MAX_PREFIX_CHARACTERS]
        for length in range(len(code), -1, -1):
            zone = self.postal_zones.get((country, code[:length]))
            if zone is not None:
                return zone
        return -1


def compile_network(network: Network, nodes: Sequence[Node]) -> CompiledNetwork:
    node_count = len(nodes)
    zones = network.zones
    services = network.services
    in_network = np.zeros(node_count, np.bool_)
    latitude = np.full(node_count, math.nan)
    longitude = np.full(node_count, math.nan)
    time_zones = [""] * node_count
    processing = np.zeros(node_count, np.int32)
    cutoff = np.full(node_count, -1, np.int32)
    open_weekdays = np.zeros(node_count, np.int32)
    max_closed = max((len(x.closed_dates) for x in network.nodes), default=0)
    closed_days = np.full((node_count, max(max_closed, 1)), -1, np.int32)
    closed_count = np.zeros(node_count, np.int32)
    picks = np.full(node_count, UNLIMITED_PICKS, np.int32)
    index_of = {node.node_id: node.index for node in nodes}
    for logistics in network.nodes:
        index = index_of.get(logistics.node_id)
        if index is None:
            continue  # a snapshot's network naming a node it lost: nothing to place
        in_network[index] = True
        latitude[index] = logistics.latitude
        longitude[index] = logistics.longitude
        time_zones[index] = logistics.time_zone
        processing[index] = logistics.processing_minutes
        cutoff[index] = logistics.cutoff_minutes
        open_weekdays[index] = weekday_mask(logistics.open_weekdays)
        closed = [epoch_day(d) for d in logistics.closed_dates]
        closed_days[index, : len(closed)] = closed
        closed_count[index] = len(closed)
        picks[index] = logistics.pick_capacity_orders
    zone_latitude = np.array([z.latitude for z in zones], np.float64)
    zone_longitude = np.array([z.longitude for z in zones], np.float64)
    distance = great_circle_km(
        latitude[:, None], longitude[:, None], zone_latitude[None, :], zone_longitude[None, :]
    ).reshape(node_count, len(zones))
    zone_ids = tuple(z.zone_id for z in zones)
    zone_position = {zone_id: i for i, zone_id in enumerate(zone_ids)}
    transit = np.full((len(services), len(zones)), -1, np.int32)
    origin = np.zeros((len(services), node_count), np.bool_)
    classes = len(network.co2.weight_class_upper_kg)
    co2 = np.zeros((len(services), max(classes, 1)), np.float64)
    for s, service in enumerate(services):
        for zone_id, days in service.transit_days.items():
            transit[s, zone_position[zone_id]] = days
        for node in nodes:
            origin[s, node.index] = service.origin.matches(node)
        co2[s, :classes] = network.co2.grams_per_km.get(service.mode, (0.0,) * classes)
    lanes: list[tuple[int, int, int, float]] = []
    for lane in network.lanes:
        source = index_of.get(lane.from_node)
        if source is None:
            continue
        lanes.extend(
            (source, node.index, lane.lead_days, lane.cost)
            for node in nodes
            if node.index != source and lane.to.matches(node)
        )
    postal_zones: dict[tuple[str, str], int] = {}
    for z, zone in enumerate(zones):
        for prefix in zone.postal_prefixes or ("",):
            postal_zones[(zone.country, prefix)] = z
    return CompiledNetwork(
        network=network,
        node_count=node_count,
        zone_ids=zone_ids,
        service_ids=tuple(s.service_id for s in services),
        in_network=in_network,
        ships=np.array([n.ships for n in nodes], np.bool_),
        pickup=np.array([n.pickup for n in nodes], np.bool_),
        latitude=latitude,
        longitude=longitude,
        time_zones=tuple(time_zones),
        processing_minutes=processing,
        cutoff_minutes=cutoff,
        open_weekdays=open_weekdays,
        closed_days=closed_days,
        closed_count=closed_count,
        pick_capacity_orders=picks,
        zone_latitude=zone_latitude,
        zone_longitude=zone_longitude,
        distance_km=distance,
        mode=np.array([int(s.mode) for s in services], np.int32),
        transit_days=transit,
        origin=origin,
        pickup_weekdays=np.array([weekday_mask(s.pickup_weekdays) for s in services], np.int32),
        pickup_cutoff_minutes=np.array([s.pickup_cutoff_minutes for s in services], np.int32),
        cost_base=np.array([s.cost.base for s in services], np.float64),
        cost_per_item=np.array([s.cost.per_item for s in services], np.float64),
        cost_per_km=np.array([s.cost.per_km for s in services], np.float64),
        item_weight_kg=np.array([s.item_weight_kg for s in services], np.float64),
        default_daily_slots=np.array(
            [-1 if s.default_daily_slots is None else s.default_daily_slots for s in services],
            np.int32,
        ),
        co2_grams_per_km=co2,
        weight_class_upper_kg=np.array(network.co2.weight_class_upper_kg, np.float64),
        lane_from=np.array([x[0] for x in lanes], np.int32),
        lane_to=np.array([x[1] for x in lanes], np.int32),
        lane_lead_days=np.array([x[2] for x in lanes], np.int32),
        lane_cost=np.array([x[3] for x in lanes], np.float64),
        postal_zones=postal_zones,
    )


__all__ = ["CompiledNetwork", "Mode", "compile_network", "epoch_day", "great_circle_km"]
