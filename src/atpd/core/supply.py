"""Incoming supply: purchase orders, transfers and returns in transit, each with an ETA.

Supply is not on hand yet, but a caller whose rules count it (the right kinds, arriving within
its horizon) may be promised it: a VIP may buy a bag that is on a truck arriving tomorrow.
Supply whose ETA has passed without a receipt stays listed for operators but counts for nobody.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

MAX_CLOSED = 1_000_000


class SupplyKind(enum.IntEnum):
    # Numbers match atpd.v1.SupplyKind.
    PURCHASE_ORDER = 1
    TRANSFER = 2
    RETURN_IN_TRANSIT = 3


@dataclass(slots=True)
class Supply:
    supply_id: str
    sku: str
    node_id: str
    sku_index: int
    node_index: int
    quantity: int  # still expected (drops with partial receipts)
    eta_ms: int
    kind: SupplyKind
    received: int = 0


class SupplyBook:
    """Open supply by id, and by SKU index for the availability path."""

    __slots__ = ("by_id", "by_sku", "closed")

    def __init__(self) -> None:
        self.by_id: dict[str, Supply] = {}
        self.by_sku: dict[int, list[Supply]] = {}
        # Received or cancelled supply, kept (the newest MAX_CLOSED) so that a feed retrying
        # an AddSupply after the goods arrived is answered, not counted a second time.
        self.closed: OrderedDict[str, Supply] = OrderedDict()

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, supply: Supply) -> None:
        assert supply.supply_id not in self.by_id
        self.by_id[supply.supply_id] = supply
        self.by_sku.setdefault(supply.sku_index, []).append(supply)

    def remove(self, supply: Supply) -> None:
        del self.by_id[supply.supply_id]
        entries = self.by_sku[supply.sku_index]
        entries.remove(supply)
        if not entries:
            del self.by_sku[supply.sku_index]
        self.closed[supply.supply_id] = supply
        if len(self.closed) > MAX_CLOSED:
            self.closed.popitem(last=False)

    def find(self, supply_id: str) -> Supply | None:
        """Open or closed supply by id."""
        return self.by_id.get(supply_id) or self.closed.get(supply_id)

    def expected_at(self, sku_index: int, node_index: int) -> int:
        """Units of open supply still expected at one position, whoever counts them."""
        return sum(
            supply.quantity
            for supply in self.by_sku.get(sku_index, ())
            if supply.node_index == node_index
        )

    def counted(
        self,
        sku_index: int,
        node_index: int,
        kinds: frozenset[SupplyKind],
        now_ms: int,
        horizon_ms: int | None,
    ) -> int:
        """Units of supply for one position that a caller with these eligibility rules counts."""
        total = 0
        for supply in self.by_sku.get(sku_index, ()):
            if supply.node_index == node_index and eligible(supply, kinds, now_ms, horizon_ms):
                total += supply.quantity
        return total


def eligible(
    supply: Supply, kinds: frozenset[SupplyKind], now_ms: int, horizon_ms: int | None
) -> bool:
    if supply.kind not in kinds or supply.eta_ms < now_ms:
        return False
    return horizon_ms is None or supply.eta_ms <= now_ms + horizon_ms
