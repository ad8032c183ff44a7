"""Small worlds for promise tests: the four-node network of tests/network with rules."""

from __future__ import annotations

from network.support import NOW_MS, networked_world

from atpd.core.commands import SetRules, SetStock
from atpd.core.state import AtpState

# Standard customers: one parcel from the warehouse; VIPs: up to 3 parcels, stores too.
RULES = """\
version = "r1"
[defaults]
channel = "web"
segment = "standard"
[policy]
nodes = { kinds = ["WAREHOUSE", "STORE"] }
supply = { kinds = ["PURCHASE_ORDER"], horizon_hours = 240 }
[policy.sourcing]
max_shipments = 1
ship_from_kinds = ["WAREHOUSE"]
[channels.web]
[segments.standard]
[segments.vip]
sourcing = { max_shipments = 3, ship_from_kinds = ["WAREHOUSE", "STORE"] }
[segments.nostore]
sourcing = { pickup_transfers = false }
[segments.nowarehouse]
sourcing = { exclude = ["WH-1"] }
"""


def world(stock: dict[tuple[str, str], int], rules: str | None = RULES) -> AtpState:
    """The network world with rules and stock {(sku, node): on hand}."""
    state = networked_world()
    if rules is not None:
        state.apply(SetRules(rules, "rules.toml"), NOW_MS)
    for sequence, ((sku, node_id), on_hand) in enumerate(sorted(stock.items()), 1):
        state.apply(SetStock(sku, node_id, on_hand, sequence, safety_stock=0), NOW_MS)
    return state
