"""Every field of the core state, declared in one place, and the lookups all handlers share.

`AtpState` (core/state.py) is this plus `apply`; the handler families (core/handlers_*.py) and
the read, capture and check modules are plain functions over a `StateFields`, so they depend
on this module only and never on each other's classes (no import cycle with state.py).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from atpd.core.demand import DemandBook
from atpd.core.geo import Geography
from atpd.core.ids import IdMap
from atpd.core.limits import MAX_QUANTITY, Limits
from atpd.core.load_registry import LoadRegistry
from atpd.core.network import Network, empty_network
from atpd.core.network_capacity import CarrierCapacity
from atpd.core.network_compile import CompiledNetwork
from atpd.core.nodes import Node
from atpd.core.pick_capacity import PickCapacity
from atpd.core.reservation_table import ReservationTable
from atpd.core.reservations import ReservationView
from atpd.core.results import InvalidCommand, LimitExceeded, NotFound
from atpd.core.row_heap import RowHeap
from atpd.core.rules import RuleSet, open_rules
from atpd.core.rules_compile import CompiledRules
from atpd.core.stock import StockTable
from atpd.core.store_book import StoreBook
from atpd.core.supply import Supply, SupplyBook
from atpd.core.transfers import TransferBook


class StateFields:
    """The data of the state machine. Written only by the handlers `AtpState.apply` calls,
    and by the named entry points of `AtpState` (`set_watched`, and `rebuild_derived` on a
    state filled in from a snapshot before it serves)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.skus = IdMap()
        self.node_ids = IdMap()
        self.nodes: list[Node] = []
        limits = self.limits
        # Never more capacity than the limits let the state use.
        self.stock = StockTable(
            min(limits.initial_sku_capacity, limits.max_skus),
            min(limits.initial_node_capacity, limits.max_nodes),
        )
        self.geo = Geography(self.stock.node_capacity)
        self.enabled_mask: npt.NDArray[np.bool_] = np.zeros(0, np.bool_)
        # Every reservation, open or finished and kept for retries, as table rows (read like a
        # mapping from id to ReservationView).
        self.reservations = ReservationTable(self.skus, self.node_ids)
        # Open HELD rows by expiry time, and terminal rows kept for idempotent retries by purge
        # time, oldest first: the order of purging by time and of eviction over the cap (ties
        # by id). Both belong to the table; named here for the time handling in core/state.py.
        self.expiry: RowHeap = self.reservations.expiry
        self.retention: RowHeap = self.reservations.retention
        self.open_reservations = 0
        self.now_ms = 0
        # The time ATP is evaluated at (incoming supply counts only until its ETA): the last
        # command's time, or a later read's (see `observe`). Not state: not in the digest.
        self.eval_ms = 0
        self.expired_total = 0
        # Ids expired by the last `apply` (the engine journals a Tick when a rejected command
        # expired holds, so the journal alone explains every change).
        self.last_expired: tuple[str, ...] = ()
        self.time_moved = False
        self.purged_total = 0
        # Terminal reservations forgotten early because max_retained_reservations was reached.
        self.evicted_total = 0
        # Node masks per (node_ids, geo_prefix) scope (see reads.node_mask).
        self.mask_cache: dict[tuple[tuple[str, ...], str], npt.NDArray[np.bool_]] = {}
        self.rules: RuleSet = open_rules()
        # The rules compiled against the current nodes; None until next needed (see
        # caller_atp.compiled_rules).
        self.compiled_cache: CompiledRules | None = None
        self.supply = SupplyBook()
        # Units of each protection (index in the current rules) held by its beneficiaries,
        # per SKU row: [protection, node]. Only SKUs with such holds have an entry.
        self.protection_consumed: dict[int, npt.NDArray[np.int32]] = {}
        # Ids of open reservations whose lines took protected units (ReservationView.protected).
        self.protected_reservations: set[str] = set()
        # Change capture for the Watch stream: the callers being watched, and per position
        # touched by the current command, its ATP for each of them before the change.
        self.watched: tuple[tuple[str, str], ...] = ()
        self.changes: dict[tuple[int, int], list[int]] = {}
        # Applied bulk loads by id (idempotent retries), see core/bulk.py.
        self.loads = LoadRegistry()
        # The fulfilment network (core/network.py), compiled against the nodes on next use
        # (None until then; see handlers_network.compiled_network), and carrier slots.
        self.network: Network = empty_network()
        self.network_cache: CompiledNetwork | None = None
        self.carrier_capacity = CarrierCapacity()
        # Node pick capacity held by reservations of promised options (core/plan_holds.py).
        self.pick_capacity = PickCapacity()
        # Store operations: receipt ids, discrepancies, units to inspect (core/store_book.py).
        self.store = StoreBook()
        # Transfer orders (core/transfers.py) and demand velocity (core/demand.py).
        self.transfers = TransferBook(limits.max_retained_transfers)
        self.demand = DemandBook()


def node_index(state: StateFields, node_id: str, field: str) -> int:
    node = state.node_ids.get(node_id)
    if node < 0:
        raise NotFound(f"{field}: unknown node {node_id!r}")
    return node


def register_sku(state: StateFields, sku: str) -> int:
    index = state.skus.get(sku)
    if index < 0:
        if len(state.skus) >= state.limits.max_skus:
            raise LimitExceeded(f"max_skus: already {len(state.skus)} SKUs")
        index = state.skus.intern(sku)
        state.stock.ensure(index + 1, len(state.nodes))
    return index


def find_row(state: StateFields, reservation_id: str) -> int:
    row = state.reservations.find(reservation_id)
    if row < 0:
        raise NotFound(f"reservation_id: unknown reservation {reservation_id!r}")
    return row


def find_reservation(state: StateFields, reservation_id: str) -> ReservationView:
    return state.reservations.view(find_row(state, reservation_id))


def find_supply(state: StateFields, supply_id: str) -> Supply:
    supply = state.supply.by_id.get(supply_id)
    if supply is None:
        raise NotFound(f"supply_id: unknown supply {supply_id!r}")
    return supply


def check_quantity(value: int, field: str) -> None:
    if not 0 <= value <= MAX_QUANTITY:
        raise InvalidCommand(f"{field}: {value} is not in 0..{MAX_QUANTITY}")
