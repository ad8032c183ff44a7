"""The fulfilment network as data: where nodes are and when they work, the carrier services
that leave them, the destination zones those services reach, and the transfer lanes between
nodes. Pure frozen values; no I/O and no clock.

A network is TOML text (see README "Fulfilment network" and src/atpd/demo/network.toml), parsed
by core/network_parse.py, compiled against the nodes into dense arrays by
core/network_compile.py, replaced whole by the `SetNetwork` command. Carrier slot capacity
per (service, origin node, date) is separate state (core/network_capacity.py), set by
`SetCarrierCapacity` as a TMS would.

Units are in the names: `processing_minutes`, `cutoff_minutes` (local minutes after midnight),
`transit_days` (business days), `lead_days` (calendar days), costs in the house currency, CO2
in grams, distances in km, weights in kg. Weekdays are 0 (Monday) .. 6 (Sunday), as
`datetime.date.weekday()` counts them.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from atpd.core.rules import NodeSelector

MINUTES_PER_DAY = 24 * 60

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_WEEKDAYS = (0, 1, 2, 3, 4, 5, 6)
# Slots of a (service, node, date) with no capacity set and no `default_daily_slots`: carrier
# capacity is not limited there (a TMS that sends nothing does not stop every shipment).
UNLIMITED_SLOTS = 1_000_000_000
# A node without `pick_capacity_orders`: no daily pick limit.
UNLIMITED_PICKS = -1


class NetworkError(ValueError):
    """A network was refused; the message names the file, the key path and the problem."""


class Mode(enum.IntEnum):
    """How a carrier service moves parcels (numbers match atpd.v1.TransportMode)."""

    COURIER = 1
    ROAD = 2
    AIR = 3


@dataclass(frozen=True, slots=True)
class NodeLogistics:
    """Where a node is and when it can ship: one per node listed in the network."""

    node_id: str
    latitude: float
    longitude: float
    time_zone: str  # IANA name, e.g. "Europe/Paris"
    processing_minutes: int  # from order to parcel ready
    cutoff_minutes: int  # orders after this local time are processed the next working day
    open_weekdays: tuple[int, ...]
    closed_dates: tuple[datetime.date, ...]  # sorted, local dates
    pick_capacity_orders: int  # orders picked per working day; UNLIMITED_PICKS: no limit
    # Opening hours (`opening = "10:00-19:00"`, local): work, and pickups at a store, happen
    # only inside them; the whole day without the key.
    open_minutes: int = 0
    close_minutes: int = MINUTES_PER_DAY


@dataclass(frozen=True, slots=True)
class CostModel:
    base: float  # per shipment
    per_item: float
    per_km: float


@dataclass(frozen=True, slots=True)
class CarrierService:
    service_id: str
    name: str  # shown to people
    mode: Mode
    origin: NodeSelector  # the nodes it collects from (ids, kinds, geo prefixes, tags)
    transit_days: Mapping[str, int]  # zone id -> business days from pickup to delivery
    pickup_weekdays: tuple[int, ...]
    pickup_cutoff_minutes: int  # local time at the origin: later parcels go the next pickup
    cost: CostModel
    item_weight_kg: float  # weight assumed per item (for the CO2 weight class)
    default_daily_slots: int | None  # slots per origin per date when the TMS set none


@dataclass(frozen=True, slots=True)
class Zone:
    """A destination: a country and postal-code prefixes (none: the whole country)."""

    zone_id: str
    country: str  # ISO 3166-1 alpha-2, upper case
    postal_prefixes: tuple[str, ...]  # normalized (upper case, no spaces or dashes)
    latitude: float  # a representative point, for distances
    longitude: float


@dataclass(frozen=True, slots=True)
class Lane:
    """A transfer lane: stock moved from one node to others (e.g. to a store for pickup)."""

    from_node: str
    to: NodeSelector
    lead_days: int
    cost: float


@dataclass(frozen=True, slots=True)
class Co2Factors:
    """Grams of CO2 per km per shipment, by mode and by weight class. A shipment's class is
    the first whose upper bound (kg) holds its weight; heavier ones use the last class."""

    weight_class_upper_kg: tuple[float, ...]
    grams_per_km: Mapping[Mode, tuple[float, ...]]  # one factor per weight class

    def weight_class(self, weight_kg: float) -> int:
        for index, upper in enumerate(self.weight_class_upper_kg):
            if weight_kg <= upper:
                return index
        return len(self.weight_class_upper_kg) - 1


@dataclass(frozen=True, slots=True)
class Network:
    version: str  # "" when no network is loaded
    source: str  # where the text came from (a file name), for messages
    text: str  # the TOML text: what is journaled and snapshotted
    nodes: tuple[NodeLogistics, ...]  # sorted by node id
    services: tuple[CarrierService, ...]  # sorted by service id
    zones: tuple[Zone, ...]  # sorted by zone id
    lanes: tuple[Lane, ...]  # in file order
    co2: Co2Factors
    node_by_id: Mapping[str, NodeLogistics] = field(default_factory=dict, compare=False)
    service_by_id: Mapping[str, CarrierService] = field(default_factory=dict, compare=False)

    def service(self, service_id: str) -> CarrierService | None:
        return self.service_by_id.get(service_id)

    def node(self, node_id: str) -> NodeLogistics | None:
        return self.node_by_id.get(node_id)


def empty_network() -> Network:
    """Before any SetNetwork: no node has logistics, no service, no zone."""
    return Network("", "", "", (), (), (), (), Co2Factors((), {}))


def format_minutes(minutes: int) -> str:
    """Local minutes after midnight as "HH:MM"."""
    assert 0 <= minutes < 24 * 60, minutes
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_date(text: str) -> datetime.date:
    """A "YYYY-MM-DD" date; raises ValueError saying what is wrong."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"{text!r} is not a date like 2026-12-24")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid date") from None


def normalize_postal_code(text: str) -> str:
    """Postal codes compared upper case, without spaces or dashes ("sw1a 1aa" -> "SW1A1AA")."""
    return text.upper().replace(" ", "").replace("-", "")
