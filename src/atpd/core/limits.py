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
    # Store operations (StoreService): receipt ids remembered for idempotent retries (the
    # oldest forgotten first), discrepancy records kept for ListDiscrepancies (the oldest
    # dropped first), sales per RecordOfflineSales call, and how far a till's clock may run
    # ahead of the server's (a till time later than that is refused, not recorded).
    max_retained_receipts: int = 1_000_000
    max_retained_discrepancies: int = 100_000
    max_offline_sales_per_call: int = 1_000
    max_till_clock_skew_ms: int = 5 * 60 * 1000
    # Rows of one nodes or supply load (StoreService.LoadNodes / LoadSupply): one journaled
    # record holds them all, and the request must fit max_receive_message_bytes (a supply row
    # takes about 80 bytes: 40,000 rows are about 3.2 MB of the default 4 MiB).
    max_catalogue_load_rows: int = 40_000
    # Transfer orders (core/transfers.py): open ones at once, lines per transfer, closed ones
    # kept for idempotent retries (the oldest forgotten first), receipts per transfer, and how
    # far ahead a ship date may be.
    max_open_transfers: int = 100_000
    max_lines_per_transfer: int = 1_000
    max_retained_transfers: int = 100_000
    max_receipts_per_transfer: int = 100
    max_transfer_days_ahead: int = 400
    # Moves (SKU, lane, units) one restock plan may hold: bounds the plan, its journal record
    # (at most 16 MiB: about 50,000 moves with 64-character ids) and the ApplyRestock work;
    # past it the least urgent SKUs wait for the next plan.
    max_restock_moves: int = 50_000

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
        assert self.max_retained_receipts >= 1, "max_retained_receipts: must be >= 1"
        assert self.max_retained_discrepancies >= 1, "max_retained_discrepancies: must be >= 1"
        assert self.max_offline_sales_per_call >= 1, "max_offline_sales_per_call: must be >= 1"
        assert self.max_till_clock_skew_ms >= 0, "max_till_clock_skew_ms: must be >= 0"
        assert self.max_catalogue_load_rows >= 1, "max_catalogue_load_rows: must be >= 1"
        assert self.max_open_transfers >= 1, "max_open_transfers: must be >= 1"
        assert self.max_lines_per_transfer >= 1, "max_lines_per_transfer: must be >= 1"
        assert self.max_retained_transfers >= 1, "max_retained_transfers: must be >= 1"
        assert self.max_receipts_per_transfer >= 1, "max_receipts_per_transfer: must be >= 1"
        assert self.max_transfer_days_ahead >= 1, "max_transfer_days_ahead: must be >= 1"
        assert self.max_restock_moves >= 1, "max_restock_moves: must be >= 1"
