"""Limits on everything a caller can make the server hold or compute.

Each limit has a name used in config files and in error messages, so a refused request says
which limit it hit.
"""

from __future__ import annotations

from dataclasses import dataclass

# Quantities live in int32 arrays; on_hand is capped well below 2**31 so that on_hand, reserved
# and safety stock arithmetic can never overflow.
MAX_QUANTITY = 1_000_000_000
MAX_GEO_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Limits:
    max_lines_per_reservation: int = 100
    min_ttl_ms: int = 1_000
    max_ttl_ms: int = 7 * 24 * 3600 * 1000
    max_open_reservations: int = 5_000_000
    max_skus_per_query: int = 1_000
    max_nodes: int = 65_000
    max_skus: int = 50_000_000
    # Starting capacities of the stock table (see core/stock.py). The service doubles an axis
    # in a background thread once 75 % of it is used (the core alone, e.g. replay, grows
    # synchronously); pre-sizing above the node count the deployment will reach avoids any
    # copy. Each SKU takes 21 bytes x initial_node_capacity.
    initial_node_capacity: int = 64
    initial_sku_capacity: int = 1024
    # Terminal reservations (released, expired, fulfilled) are kept this long so that a retried
    # Reserve with the same id is answered from its stored outcome instead of reserving twice.
    terminal_retention_ms: int = 24 * 3600 * 1000
    # ... and at most this many are kept (about 0.5 KB each): past it, the oldest finished
    # reservation (earliest closed; ties by id) is forgotten first, as if its retention had
    # run out. A pure function of the command sequence, so journal replay evicts the same ones.
    max_retained_reservations: int = 1_000_000
    # Bulk loads (FeedService.BulkLoad): rows per streamed chunk and per load (a load holds its
    # rows in memory, about 16 bytes each, until its stream ends), loads streaming at once, and
    # load ids remembered so that a retried load is answered from its stored summary.
    # A chunk of max_load_chunk_rows rows must fit in the server's max_receive_message_bytes
    # (4 MiB by default: 25,000 rows of 64-character ids take up to 3.8 MB; checked at start).
    max_load_chunk_rows: int = 25_000
    max_load_rows: int = 20_000_000
    max_concurrent_loads: int = 2
    max_remembered_loads: int = 10_000
    # Carrier capacity entries (service, origin node, date) set by SetCarrierCapacity, and how
    # far ahead a date may be. Entries of past dates are dropped as time passes.
    max_capacity_entries: int = 1_000_000
    max_capacity_days_ahead: int = 400

    def __post_init__(self) -> None:
        assert 0 < self.min_ttl_ms <= self.max_ttl_ms
        assert self.max_lines_per_reservation >= 1
        # Reservation lines keep node indexes in 16 bits (core/reservation_table.py).
        assert 1 <= self.max_nodes <= 65_535, "max_nodes: at most 65,535"
        assert self.max_skus_per_query >= 1
        assert 1 <= self.max_load_chunk_rows <= self.max_load_rows
        assert self.max_concurrent_loads >= 1 and self.max_remembered_loads >= 1
        assert self.max_retained_reservations >= 1
        assert self.max_capacity_entries >= 1, "max_capacity_entries: must be >= 1"
        assert self.max_capacity_days_ahead >= 1, "max_capacity_days_ahead: must be >= 1"
        assert self.initial_node_capacity >= 1, "initial_node_capacity: must be >= 1"
        assert self.initial_sku_capacity >= 1, "initial_sku_capacity: must be >= 1"
