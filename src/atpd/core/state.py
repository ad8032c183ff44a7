"""The core state machine: nodes, stock positions and reservations, in memory.

Pure: no I/O, no clock, no locks. Every change goes through `apply(command, now_ms)`, so a
journal of (command, now_ms) pairs replays to exactly the same state, expiries included. Reads
are plain methods. Caller mistakes raise a `CommandRejected` before anything is mutated.

Where things live: the fields in core/state_fields.py; one handler function per command,
grouped by family in core/handlers_stock.py, handlers_reservations.py, handlers_supply.py,
handlers_rules.py and bulk.py; what a caller sees (policy, ATP terms) in core/caller_atp.py;
protections in core/protections.py; Watch change capture in core/change_capture.py; reads in
core/reads.py; invariants and the digest in core/checks.py; stock table growth in
core/growth.py. This module keeps the dispatch, time (expiries, purges) and the named entry
points used from outside the core (`set_watched`, `rebuild_derived`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from atpd.core import caller_atp as caller
from atpd.core import change_capture, checks, growth, reads
from atpd.core.bulk import apply_bulk_load
from atpd.core.command_base import CommandOf, Result
from atpd.core.commands import (
    AddSupply,
    AdjustStock,
    CancelSupply,
    CommandGroup,
    Confirm,
    Fulfil,
    ReceiveSupply,
    Release,
    Reserve,
    SetCarrierCapacity,
    SetNetwork,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.commands_amend import AmendReservation
from atpd.core.commands_store import (
    Exchange,
    NodeLoad,
    RecordOfflineSales,
    RecordReturn,
    RecordSale,
    ReleaseInspection,
    SupplyLoad,
)
from atpd.core.handlers_amend import amend_reservation
from atpd.core.handlers_catalogue import node_load, supply_load
from atpd.core.handlers_network import set_carrier_capacity, set_network
from atpd.core.handlers_reservations import (
    close_reservation,
    confirm,
    free_held,
    fulfil,
    release,
    reserve,
)
from atpd.core.handlers_rules import set_rules
from atpd.core.handlers_stock import adjust_stock, set_stock, upsert_node
from atpd.core.handlers_store import (
    exchange,
    record_offline_sales,
    record_return,
    record_sale,
    release_inspection,
)
from atpd.core.handlers_supply import add_supply, cancel_supply, receive_supply
from atpd.core.handlers_transfers import (
    apply_restock,
    cancel_transfer,
    create_transfer,
    receive_transfer,
    ship_transfer,
)
from atpd.core.limits import Limits
from atpd.core.load_command import BulkLoad
from atpd.core.protections import rebuild_protection_consumption
from atpd.core.reads import AvailabilityView
from atpd.core.reservations import ReservationStatus
from atpd.core.results import CommandRejected, GroupMemberRejected, GroupResult, TickResult
from atpd.core.state_fields import StateFields, find_reservation
from atpd.core.transfer_commands import (
    ApplyRestock,
    CancelTransfer,
    CreateTransfer,
    ReceiveTransfer,
    ShipTransfer,
)

__all__ = ["AtpState", "AvailabilityView"]

ResultT = TypeVar("ResultT", bound=Result)


class AtpState(StateFields):
    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        # One handler per command type, called as handler(state, command, now_ms).
        self._handlers: dict[type, Callable[[AtpState, Any, int], Any]] = {
            UpsertNode: upsert_node,
            SetStock: set_stock,
            AdjustStock: adjust_stock,
            Reserve: reserve,
            Confirm: confirm,
            Fulfil: fulfil,
            Release: release,
            Tick: AtpState._tick,
            SetRules: set_rules,
            AddSupply: add_supply,
            ReceiveSupply: receive_supply,
            CancelSupply: cancel_supply,
            BulkLoad: apply_bulk_load,
            SetNetwork: set_network,
            SetCarrierCapacity: set_carrier_capacity,
            RecordSale: record_sale,
            RecordOfflineSales: record_offline_sales,
            RecordReturn: record_return,
            Exchange: exchange,
            ReleaseInspection: release_inspection,
            NodeLoad: node_load,
            SupplyLoad: supply_load,
            AmendReservation: amend_reservation,
            CreateTransfer: create_transfer,
            ShipTransfer: ship_transfer,
            ReceiveTransfer: receive_transfer,
            CancelTransfer: cancel_transfer,
            ApplyRestock: apply_restock,
            CommandGroup: AtpState._group,
        }

    # ------------------------------------------------------------------ commands

    def apply(self, command: CommandOf[ResultT], now_ms: int) -> ResultT:
        """Apply one command at time `now_ms` (never earlier than the previous one).

        Time passing is applied first (expiries, purges of old terminal reservations);
        `time_moved` says whether it changed anything. A rejected command that moved no time
        leaves no trace at all, not even the clock."""
        assert now_ms >= self.now_ms, (now_ms, self.now_ms)
        previous_now_ms = self.now_ms
        self.now_ms = now_ms
        self.eval_ms = now_ms
        purged_before = self.purged_total
        self.last_expired = self._expire_due(now_ms)
        self.time_moved = bool(self.last_expired) or self.purged_total != purged_before
        try:
            result: ResultT = self._handlers[type(command)](self, command, now_ms)
        except CommandRejected:
            if not self.time_moved:
                self.now_ms = previous_now_ms
            raise
        if not (result.changed or self.time_moved):
            # Nothing journaled, so nothing may differ from a replay: not even the clock.
            self.now_ms = previous_now_ms
        return result

    def observe(self, now_ms: int) -> None:
        """A read at `now_ms`: evaluate time-dependent ATP terms (supply ETAs) at that time."""
        if now_ms > self.eval_ms:
            self.eval_ms = now_ms

    def next_expiry_ms(self) -> int | None:
        return self.expiry.min_key()

    def _tick(self, command: Tick, now_ms: int) -> TickResult:
        return TickResult(expired=self.last_expired, time_moved=self.time_moved)

    def _group(self, command: CommandGroup, now_ms: int) -> GroupResult:
        """Each command as `apply` applied it live at the same time: what is due expires
        first (a no-op unless a command of the group made something due), then its handler."""
        handlers = self._handlers
        for index, member in enumerate(command.commands):
            self._expire_due(now_ms)
            try:
                handlers[type(member)](self, member, now_ms)
            except CommandRejected as error:
                raise GroupMemberRejected(index, type(member).__name__, error) from error
        return GroupResult(len(command.commands))

    def _expire_due(self, now_ms: int) -> tuple[str, ...]:
        keys = self.expiry.keys
        expired: tuple[str, ...] = ()
        if keys and keys[0] <= now_ms:
            expired = self._expire(self.reservations.pop_expired(now_ms))
        # After expiring: a hold that expired long ago may already be past its retention.
        purge_keys = self.retention.keys
        if purge_keys and purge_keys[0] <= now_ms:
            self._purge_terminal(now_ms)
        return expired

    def _expire(self, due: list[int]) -> tuple[str, ...]:
        table = self.reservations
        # The ids first: closing one may evict an older finished one, freeing its row.
        expired = tuple([table.id_of(row) for row in due])
        for row in due:
            assert table.status[row] == ReservationStatus.HELD
            free_held(self, row)
            table.status[row] = ReservationStatus.EXPIRED
            # The hold ended at its expiry time exactly, whenever the clock noticed.
            expires_at_ms = table.expires_ms[row]
            table.updated_ms[row] = expires_at_ms
            close_reservation(self, row, expires_at_ms)
        self.expired_total += len(due)
        return expired

    def _purge_terminal(self, now_ms: int) -> None:
        table = self.reservations
        purged = table.pop_purged(now_ms)
        self.purged_total += len(purged)
        for row in purged:
            table.delete(row)

    # ------------------------------------------------------------------ entry points from outside

    def set_watched(self, callers: tuple[tuple[str, str], ...]) -> None:
        """The (channel, segment) callers whose ATP change capture records (the Watch hub's
        choice; not state: not journaled, not in the digest)."""
        assert len(set(callers)) == len(callers), callers
        self.watched = callers

    def rebuild_derived(self) -> None:
        """Recompute what derives from the primary fields (geography placement, the enabled
        mask, caches, protection consumption): after filling a state in from snapshot parts,
        before it serves."""
        if self.geo.node_geo.shape[1] < self.stock.node_capacity:
            self.geo.grow(self.stock.node_capacity)
        for node in self.nodes:
            self.geo.place(node.index, node.geo_path)
        self.enabled_mask = np.array([n.enabled for n in self.nodes], np.bool_)
        self.mask_cache.clear()
        self.compiled_cache = None
        self.network_cache = None
        rebuild_protection_consumption(self)

    # ------------------------------------------------------------------ reads and checks
    # Functions of the modules named, bound here as methods: `state.availability(...)` costs
    # no more than a method defined in this class.

    policy = caller.caller_policy
    caller_atp = caller.caller_atp
    explain_position = caller.explain_position
    node_mask = reads.node_mask
    availability = reads.availability
    catalogue = reads.catalogue
    position = reads.position
    position_rows = reads.position_rows
    reservation = find_reservation
    list_nodes = reads.list_nodes
    watched_atp = change_capture.watched_atp
    take_changes = change_capture.take_changes
    check_invariants = checks.check_invariants
    digest = checks.digest
    capacity_needed = growth.capacity_needed
    resize_target = growth.resize_target
    begin_resize = growth.begin_resize
    finish_resize = growth.finish_resize
