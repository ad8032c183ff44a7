"""A fulfilment plan: what a promise offers and what reserving it holds.

A promise (PromiseService) searches the network and answers options; each option is a `Plan`.
Reserving an option holds, all or nothing, every resource the plan needs:

- the stock of each planned line at its shipment's node (as any reservation does);
- one carrier slot per shipment: (service, origin node, ship day) in the carrier capacity table;
- one order of pick capacity per shipment: (node, ship day).

A pickup at a store from its own stock is a shipment with no carrier service (`service == ""`):
it holds the stock and the store's pick capacity, no carrier slot.

Days are epoch days (days since 1970-01-01) of the origin's local calendar, as
core/calendar.py computes them. The plan names ids, not dense indexes, so it stays meaningful
in a token a client carries back and across a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bounds on what a plan (and so an option token) may carry.
MAX_PLAN_SHIPMENTS = 16
MAX_PLAN_LINES = 100


@dataclass(frozen=True, slots=True)
class PlannedLine:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Shipment:
    node_id: str
    service: str  # carrier service name; "" for a pickup at node_id from its own stock
    ship_day: int  # epoch day the goods leave (or are ready for pickup), origin's calendar
    lines: tuple[PlannedLine, ...]

    @property
    def is_pickup(self) -> bool:
        return not self.service


@dataclass(frozen=True, slots=True)
class Plan:
    """One option: its shipments, for one caller (channel, segment) and one destination
    (a zone name, or "pickup:<node id>")."""

    shipments: tuple[Shipment, ...]
    destination: str
    channel: str
    segment: str

    def __post_init__(self) -> None:
        assert 1 <= len(self.shipments) <= MAX_PLAN_SHIPMENTS, len(self.shipments)
        assert sum(len(s.lines) for s in self.shipments) <= MAX_PLAN_LINES

    def lines(self) -> list[tuple[str, str, int]]:
        """(sku, node_id, quantity) of every planned line, shipment by shipment."""
        return [
            (line.sku, shipment.node_id, line.quantity)
            for shipment in self.shipments
            for line in shipment.lines
        ]
