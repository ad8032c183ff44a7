"""The core state machine: nodes, stock positions and reservations, in memory.

Pure: no I/O, no clock, no locks. Every change goes through `apply(command, now_ms)`, so a
journal of (command, now_ms) pairs replays to exactly the same state, expiries included. Reads
are plain methods. Caller mistakes raise a `CommandRejected` before anything is mutated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sortedcontainers import SortedList

from atpd.core import kernels
from atpd.core.bulk import BulkLoad, LoadRegistry, apply_bulk_load
from atpd.core.commands import (
    AddSupply,
    AdjustStock,
    CancelSupply,
    Command,
    Confirm,
    Fulfil,
    Line,
    ReceiveSupply,
    Release,
    ReservationKind,
    Reserve,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.geo import Geography
from atpd.core.ids import IdMap
from atpd.core.limits import MAX_QUANTITY, Limits
from atpd.core.nodes import Node
from atpd.core.reservations import ExpiryIndex, Reservation, ReservationStatus
from atpd.core.reservations import fingerprint as reservation_fingerprint
from atpd.core.results import (
    AlreadyExists,
    CommandRejected,
    InvalidCommand,
    LimitExceeded,
    NodeResult,
    NotFound,
    Outcome,
    PositionView,
    ReservationResult,
    ReserveResult,
    RulesResult,
    Shortage,
    ShortageReason,
    StockResult,
    SupplyResult,
    TickResult,
)
from atpd.core.rules import (
    CompiledPolicy,
    CompiledRules,
    Known,
    RulesError,
    RuleSet,
    compile_rules,
    open_rules,
    parse_rules,
    sku_safety,
)
from atpd.core.stock import (
    FIELD_ON_HAND,
    FIELD_RESERVED,
    FIELD_SAFETY,
    RESIZE_HIGH_WATER_PERCENT,
    Resize,
    StockTable,
    grown_capacity,
)
from atpd.core.supply import Supply, SupplyBook, SupplyKind, eligible

MASK_CACHE_SIZE = 1024
# Per-policy caches keyed by SKU row are cleared when they reach this size.
SKU_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class AvailabilityView:
    """The raw answer of `availability`: one row per requested SKU of
    `[atp per node (node_count) | atp per geo id (geo_count) | total]`."""

    skus: tuple[str, ...]
    sku_rows: npt.NDArray[np.int64]
    node_mask: npt.NDArray[np.bool_]
    matrix: npt.NDArray[np.int64]
    node_count: int
    geo_count: int


class AtpState:
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
        self.reservations: dict[str, Reservation] = {}
        self.expiry = ExpiryIndex()
        # (purge_at_ms, reservation_id) for terminal reservations kept for idempotent retries,
        # oldest first: the order of purging by time and of eviction over the cap.
        self.retention: SortedList = SortedList()
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
        self._mask_cache: dict[tuple[tuple[str, ...], str], npt.NDArray[np.bool_]] = {}
        self.rules: RuleSet = open_rules()
        self._compiled: CompiledRules | None = None
        self.supply = SupplyBook()
        # Units of each protection (index in the current rules) held by its beneficiaries,
        # per SKU row: [protection, node]. Only SKUs with such holds have an entry.
        self.protection_consumed: dict[int, npt.NDArray[np.int32]] = {}
        # Open reservations whose lines took protected units (see Reservation.protected).
        self.protected_reservations: set[str] = set()
        # Change capture for the Watch stream: the callers being watched, and per position
        # touched by the current command, its ATP for each of them before the change.
        self.watched: tuple[tuple[str, str], ...] = ()
        self.changes: dict[tuple[int, int], list[int]] = {}
        # Applied bulk loads by id (idempotent retries), see core/bulk.py.
        self.loads = LoadRegistry()
        self._handlers: dict[type, Callable[[Any, int], Any]] = {
            UpsertNode: self._upsert_node,
            SetStock: self._set_stock,
            AdjustStock: self._adjust_stock,
            Reserve: self._reserve,
            Confirm: self._confirm,
            Fulfil: self._fulfil,
            Release: self._release,
            Tick: self._tick,
            SetRules: self._set_rules,
            AddSupply: self._add_supply,
            ReceiveSupply: self._receive_supply,
            CancelSupply: self._cancel_supply,
            BulkLoad: lambda command, now_ms: apply_bulk_load(self, command, now_ms),
        }

    # ------------------------------------------------------------------ commands

    def apply(self, command: Command, now_ms: int) -> Any:
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
            result = self._handlers[type(command)](command, now_ms)
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
        return self.expiry.next_expiry_ms()

    def _tick(self, command: Tick, now_ms: int) -> TickResult:
        return TickResult(expired=self.last_expired, time_moved=self.time_moved)

    def _expire_due(self, now_ms: int) -> tuple[str, ...]:
        due = self.expiry.pop_due(now_ms)
        if due:
            self._expire(due)
        # After expiring: a hold that expired long ago may already be past its retention.
        if self.retention and self.retention[0][0] <= now_ms:
            self._purge_terminal(now_ms)
        return tuple(due)

    def _expire(self, due: list[str]) -> None:
        for reservation_id in due:
            reservation = self.reservations[reservation_id]
            assert reservation.status is ReservationStatus.HELD
            self._free_held(reservation)
            reservation.status = ReservationStatus.EXPIRED
            # The hold ended at its expiry time exactly, whenever the clock noticed.
            reservation.updated_at_ms = reservation.expires_at_ms
            self._close(reservation, reservation.expires_at_ms)
        self.expired_total += len(due)

    def _purge_terminal(self, now_ms: int) -> None:
        count = self.retention.bisect_left((now_ms + 1, ""))
        self.purged_total += count
        for _, reservation_id in self.retention[:count]:
            del self.reservations[reservation_id]
        del self.retention[:count]

    def _close(self, reservation: Reservation, at_ms: int) -> None:
        """Bookkeeping for a reservation that just reached a terminal status."""
        assert not reservation.status.is_open
        self.open_reservations -= 1
        assert self.open_reservations >= 0
        retention = self.retention
        # Evict before adding, so the reservation closing now is never the one forgotten
        # (several can close in the same millisecond, and ties sort by id).
        overflow = len(retention) + 1 - self.limits.max_retained_reservations
        if overflow > 0:
            self._evict_retained(overflow)
        retention.add((at_ms + self.limits.terminal_retention_ms, reservation.reservation_id))
        assert len(retention) <= self.limits.max_retained_reservations

    def _evict_retained(self, count: int) -> None:
        """Forget the `count` oldest terminal reservations (retention order): a retry of one
        of their ids is then a new reservation."""
        assert 0 < count <= len(self.retention), count
        reservations = self.reservations
        for _, reservation_id in self.retention[:count]:
            evicted = reservations.pop(reservation_id)
            assert not evicted.status.is_open, evicted
        del self.retention[:count]
        self.evicted_total += count

    def _node_index(self, node_id: str, field: str) -> int:
        node = self.node_ids.get(node_id)
        if node < 0:
            raise NotFound(f"{field}: unknown node {node_id!r}")
        return node

    def _upsert_node(self, command: UpsertNode, now_ms: int) -> NodeResult:
        index = self.node_ids.get(command.node_id)
        created = index < 0
        if created:
            if len(self.nodes) >= self.limits.max_nodes:
                raise LimitExceeded(f"max_nodes: already {len(self.nodes)} nodes")
            index = self.node_ids.intern(command.node_id)
            self.stock.ensure(len(self.skus), index + 1)
            if self.geo.node_geo.shape[1] < self.stock.node_capacity:
                self.geo.grow(self.stock.node_capacity)
            self.nodes.append(Node(command.node_id, index, command.kind, (), True, False, True, ()))
        node = self.nodes[index]
        if not created and (
            node.kind,
            node.geo_path,
            node.ships,
            node.pickup,
            node.enabled,
            node.tags,
        ) == (
            command.kind,
            command.geo_path,
            command.ships,
            command.pickup,
            command.enabled,
            command.tags,
        ):
            return NodeResult(Outcome.OK, created=False, changed=False)
        node.kind = command.kind
        node.geo_path = command.geo_path
        node.ships = command.ships
        node.pickup = command.pickup
        node.enabled = command.enabled
        node.tags = command.tags
        self.geo.place(index, command.geo_path)
        self.enabled_mask = np.array([n.enabled for n in self.nodes], np.bool_)
        self._mask_cache.clear()
        self._compiled = None  # node masks of the rules are rebuilt on next use
        return NodeResult(Outcome.OK, created)

    def _register_sku(self, sku: str) -> int:
        index = self.skus.get(sku)
        if index < 0:
            if len(self.skus) >= self.limits.max_skus:
                raise LimitExceeded(f"max_skus: already {len(self.skus)} SKUs")
            index = self.skus.intern(sku)
            self.stock.ensure(index + 1, len(self.nodes))
        return index

    def _set_stock(self, command: SetStock, now_ms: int) -> StockResult:
        # The edge checks these too; the core checks again because an int32 cell that cannot
        # take the value would fail halfway through the writes.
        _check_quantity(command.on_hand, "on_hand")
        if command.safety_stock is not None:
            _check_quantity(command.safety_stock, "safety_stock")
        node = self._node_index(command.node_id, "node_id")
        sku = self.skus.get(command.sku)
        last = int(self.stock.source_seq[sku, node]) if sku >= 0 else 0
        if command.source_sequence <= last:
            return StockResult(Outcome.STALE, self.position(command.sku, command.node_id), last)
        sku = self._register_sku(command.sku)
        cells = self.stock.cells
        self._touch(sku, node)
        cells[sku, FIELD_ON_HAND, node] = command.on_hand
        if command.safety_stock is not None:
            cells[sku, FIELD_SAFETY, node] = command.safety_stock
        self.stock.source_seq[sku, node] = command.source_sequence
        self.stock.mark_present(sku, node)
        view = self.position(command.sku, command.node_id)
        return StockResult(Outcome.OK, view, command.source_sequence, changed=True)

    def _adjust_stock(self, command: AdjustStock, now_ms: int) -> StockResult:
        node = self._node_index(command.node_id, "node_id")
        sku = self.skus.get(command.sku)
        on_hand = int(self.stock.cells[sku, FIELD_ON_HAND, node]) if sku >= 0 else 0
        new_on_hand = on_hand + command.delta
        if new_on_hand < 0:
            view = self.position(command.sku, command.node_id)
            return StockResult(Outcome.NEGATIVE_ON_HAND, view, view.last_source_sequence)
        if new_on_hand > MAX_QUANTITY:
            raise InvalidCommand(f"delta: on_hand would exceed {MAX_QUANTITY}")
        sku = self._register_sku(command.sku)
        self._touch(sku, node)
        self.stock.cells[sku, FIELD_ON_HAND, node] = new_on_hand
        self.stock.mark_present(sku, node)
        view = self.position(command.sku, command.node_id)
        return StockResult(Outcome.OK, view, view.last_source_sequence, changed=True)

    def _atp(self, sku: int, node: int) -> int:
        cells = self.stock.cells
        atp = int(
            cells[sku, FIELD_ON_HAND, node]
            - cells[sku, FIELD_RESERVED, node]
            - cells[sku, FIELD_SAFETY, node]
        )
        return atp if atp > 0 else 0

    def _reserve(self, command: Reserve, now_ms: int) -> ReserveResult:
        # The hot path of checkout: one pass to resolve ids, one to check, one to hold; error
        # messages are only formatted when there is an error.
        lines = command.lines
        pos_sale = command.kind is ReservationKind.POS_SALE
        ttl_ms = 0 if pos_sale else command.ttl_ms
        existing = self.reservations.get(command.reservation_id)
        if existing is not None:
            asked = reservation_fingerprint(
                command.kind, command.channel, command.segment, ttl_ms, lines
            )
            if existing.fingerprint() == asked:
                return ReserveResult(Outcome.OK, existing, replayed=True)
            raise AlreadyExists(
                f"reservation_id: {command.reservation_id!r} exists with different content"
            )
        assert 1 <= len(lines) <= self.limits.max_lines_per_reservation
        node_get = self.node_ids.get
        sku_get = self.skus.get
        skus: list[int] = []
        nodes: list[int] = []
        for line in lines:
            node = node_get(line.node_id)
            if node < 0:
                self._node_index(line.node_id, f"lines[{lines.index(line)}].node_id")
            nodes.append(node)
            skus.append(sku_get(line.sku))
        if self.open_reservations >= self.limits.max_open_reservations:
            raise LimitExceeded(
                f"max_open_reservations: {self.open_reservations} reservations are open"
            )
        all_nodes = self.nodes
        for node in nodes:
            if not all_nodes[node].enabled:
                return self._refuse_disabled(lines, nodes)
        policy = self.policy(command.channel, command.segment) if self.rules.policies else None
        cells = self.stock.cells
        item = cells.item
        shortages: list[Shortage] | None = None
        for line, sku, node in zip(lines, skus, nodes, strict=True):
            assert line.quantity > 0, line  # the edge refuses it; never let it lower reserved
            if sku < 0:
                available = 0
            elif policy is None:
                available = (
                    item(sku, FIELD_ON_HAND, node)
                    - item(sku, FIELD_RESERVED, node)
                    - item(sku, FIELD_SAFETY, node)
                )
            else:
                available = self.caller_atp(policy, sku, node)
                cap = policy.policy.max_per_line
                if cap and available > cap:
                    available = cap
                # Counted supply can lift ATP above on_hand: bound what a position holds.
                if line.quantity <= available:
                    self._check_reserved_bound(lines, line, sku, node)
            if line.quantity > available:
                if shortages is None:
                    shortages = []
                shortages.append(self._shortage(policy, line, sku, node, available))
        if shortages is not None:
            return ReserveResult(Outcome.INSUFFICIENT_STOCK, shortages=tuple(shortages))
        # The edge refuses these; the core must never oversell even if a caller skipped it.
        assert len(lines) == 1 or len(set(zip(skus, nodes, strict=True))) == len(lines), lines
        # Every line was checked above; from here on nothing can refuse the command.
        watching = bool(self.watched) or self.stock.dirty_rows is not None  # resize: _touch
        for line, sku, node in zip(lines, skus, nodes, strict=True):
            if watching:
                self._touch(sku, node)
            reserved = item(sku, FIELD_RESERVED, node) + line.quantity
            assert reserved <= MAX_QUANTITY, (line, reserved)
            cells[sku, FIELD_RESERVED, node] = reserved
        protected = (
            self._take_protected(policy, lines, skus, nodes)
            if policy is not None and policy.mine
            else None
        )
        reservation = Reservation(
            command.reservation_id,
            lines,
            tuple(zip(skus, nodes, strict=True)),
            command.kind,
            command.channel,
            command.segment,
            ttl_ms,
            now_ms,
        )
        self.reservations[command.reservation_id] = reservation
        self.open_reservations += 1
        if protected is not None:
            reservation.protected = protected
            self.protected_reservations.add(command.reservation_id)
        if pos_sale:
            # A POS sale is a reserve and a fulfilment in one step: the goods left the store.
            # It never waits in the expiry index, so it passes through CONFIRMED, not HELD.
            reservation.status = ReservationStatus.CONFIRMED
            reservation.expires_at_ms = 0
            self._take_out(reservation, list(reservation.held), now_ms)
        else:
            self.expiry.add(reservation.expires_at_ms, reservation.reservation_id)
        return ReserveResult(Outcome.OK, reservation)

    def _check_reserved_bound(
        self, lines: tuple[Line, ...], line: Line, sku: int, node: int
    ) -> None:
        """Refuse a line that would make the position's reserved units exceed MAX_QUANTITY
        (quantities are int32 in the stock table)."""
        reserved = self.stock.cells.item(sku, FIELD_RESERVED, node)
        if reserved + line.quantity > MAX_QUANTITY:
            raise LimitExceeded(
                f"lines[{lines.index(line)}].quantity: {reserved} units of {line.sku!r} are "
                f"already reserved at {line.node_id!r}; {line.quantity} more would pass the "
                f"bound of {MAX_QUANTITY} reserved units per position (MAX_QUANTITY)"
            )

    def _shortage(
        self, policy: CompiledPolicy | None, line: Line, sku: int, node: int, available: int
    ) -> Shortage:
        """A short line and why it is short (computed on the refusal path only)."""
        if sku < 0:
            reason = ShortageReason.UNKNOWN_SKU
        elif policy is None:
            reason = ShortageReason.STOCK
        elif not policy.visible[node]:
            reason = ShortageReason.NOT_VISIBLE
        elif (
            policy.policy.max_per_line
            and line.quantity > policy.policy.max_per_line
            and self.caller_atp(policy, sku, node) >= line.quantity
        ):
            # The stock is there: only the per-line cap of the caller's rules refuses it.
            reason = ShortageReason.LINE_CAP
        else:
            reason = ShortageReason.STOCK
        return Shortage(line.sku, line.node_id, line.quantity, max(available, 0), reason)

    def _refuse_disabled(self, lines: tuple[Line, ...], nodes: list[int]) -> ReserveResult:
        """NODE_DISABLED, with a shortage entry for every line on a disabled node."""
        shortages = tuple(
            Shortage(line.sku, line.node_id, line.quantity, 0, ShortageReason.NODE_DISABLED)
            for line, node in zip(lines, nodes, strict=True)
            if not self.nodes[node].enabled
        )
        assert shortages
        return ReserveResult(
            Outcome.NODE_DISABLED, shortages=shortages, disabled_node_id=shortages[0].node_id
        )

    def _reservation(self, reservation_id: str) -> Reservation:
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            raise NotFound(f"reservation_id: unknown reservation {reservation_id!r}")
        return reservation

    def _stop_expiry(self, reservation: Reservation) -> None:
        if reservation.status is ReservationStatus.HELD:
            self.expiry.remove(reservation.expires_at_ms, reservation.reservation_id)

    def _confirm(self, command: Confirm, now_ms: int) -> ReservationResult:
        reservation = self._reservation(command.reservation_id)
        status = reservation.status
        if status is ReservationStatus.CONFIRMED:
            return ReservationResult(Outcome.OK, reservation)
        if status is ReservationStatus.EXPIRED:
            return ReservationResult(Outcome.EXPIRED, reservation)
        if status is not ReservationStatus.HELD:
            return ReservationResult(Outcome.INVALID_STATE, reservation)
        self._stop_expiry(reservation)
        reservation.status = ReservationStatus.CONFIRMED
        reservation.expires_at_ms = 0
        reservation.updated_at_ms = now_ms
        return ReservationResult(Outcome.OK, reservation, changed=True)

    def _release(self, command: Release, now_ms: int) -> ReservationResult:
        reservation = self._reservation(command.reservation_id)
        status = reservation.status
        if status in (ReservationStatus.RELEASED, ReservationStatus.EXPIRED):
            return ReservationResult(Outcome.OK, reservation)
        if status is ReservationStatus.FULFILLED:
            return ReservationResult(Outcome.INVALID_STATE, reservation)
        self._stop_expiry(reservation)
        self._free_held(reservation)
        reservation.status = ReservationStatus.RELEASED
        reservation.updated_at_ms = now_ms
        self._close(reservation, now_ms)
        return ReservationResult(Outcome.OK, reservation, changed=True)

    def _free_held(self, reservation: Reservation) -> None:
        for i, held in enumerate(reservation.held):
            if held:
                self._unhold(reservation, i, held)
        self.protected_reservations.discard(reservation.reservation_id)

    def _unhold(self, reservation: Reservation, line: int, quantity: int) -> None:
        """Line `line` holds `quantity` fewer units: reserved drops, and protected units it
        took go back to their protection (the last taken first)."""
        sku, node = reservation.cells[line]
        self._touch(sku, node)
        cells = self.stock.cells
        cells[sku, FIELD_RESERVED, node] -= quantity
        assert cells[sku, FIELD_RESERVED, node] >= 0
        reservation.held[line] -= quantity
        assert reservation.held[line] >= 0
        records = reservation.protected[line] if reservation.protected is not None else None
        if not records:
            return
        # Protected units are given back only once the general-pool part is gone.
        protected_units = sum(units for _, units in records)
        give_back = protected_units - min(protected_units, reservation.held[line])
        for _ in range(len(records)):
            if give_back <= 0:
                break
            name, units = records[-1]
            returned = min(units, give_back)
            give_back -= returned
            if returned == units:
                records.pop()
            else:
                records[-1] = (name, units - returned)
            index = self._protection_index(name)
            consumed = self.protection_consumed.get(sku)
            if index >= 0 and consumed is not None:
                consumed[index, node] -= returned
                assert consumed[index, node] >= 0

    def _fulfil(self, command: Fulfil, now_ms: int) -> ReservationResult:
        reservation = self._reservation(command.reservation_id)
        status = reservation.status
        if status is ReservationStatus.EXPIRED:
            return ReservationResult(Outcome.EXPIRED, reservation)
        if status is ReservationStatus.FULFILLED and not command.lines:
            return ReservationResult(Outcome.OK, reservation)
        if not status.is_open:
            return ReservationResult(Outcome.INVALID_STATE, reservation)
        if command.lines:
            quantities = [0] * len(reservation.lines)
            positions = {(line.sku, line.node_id): i for i, line in enumerate(reservation.lines)}
            for i, line in enumerate(command.lines):
                index = positions.get((line.sku, line.node_id))
                if index is None:
                    raise InvalidCommand(
                        f"lines[{i}]: ({line.sku!r}, {line.node_id!r}) is not a line of "
                        f"reservation {reservation.reservation_id!r}"
                    )
                if line.quantity > reservation.held[index]:
                    return ReservationResult(Outcome.EXCEEDS_HELD, reservation)
                quantities[index] = line.quantity
        else:
            quantities = list(reservation.held)
        self._take_out(reservation, quantities, now_ms, command.release_remainder)
        return ReservationResult(Outcome.OK, reservation, changed=True)

    def _take_out(
        self,
        reservation: Reservation,
        quantities: Sequence[int],
        now_ms: int,
        release_remainder: bool = False,
    ) -> None:
        """The goods left: on_hand and reserved drop by `quantities` (per line)."""
        cells = self.stock.cells
        for i, ((sku, node), quantity) in enumerate(
            zip(reservation.cells, quantities, strict=True)
        ):
            assert 0 <= quantity <= reservation.held[i]
            if quantity == 0:
                continue
            self._unhold(reservation, i, quantity)
            # A recount may have set on_hand below what was held; on_hand never goes negative.
            on_hand = int(cells[sku, FIELD_ON_HAND, node]) - quantity
            cells[sku, FIELD_ON_HAND, node] = on_hand if on_hand > 0 else 0
            reservation.fulfilled[i] += quantity
        if release_remainder:
            self._free_held(reservation)
        reservation.updated_at_ms = now_ms
        if not any(reservation.held):
            self.protected_reservations.discard(reservation.reservation_id)
            self._stop_expiry(reservation)
            fulfilled_any = any(reservation.fulfilled)
            reservation.status = (
                ReservationStatus.FULFILLED if fulfilled_any else ReservationStatus.RELEASED
            )
            self._close(reservation, now_ms)

    # ------------------------------------------------------------------ change capture

    def _touch(self, row: int, node: int) -> None:
        """Called before a position changes: remember its ATP for every watched caller, and
        mark its row dirty while a background resize copies the table."""
        dirty = self.stock.dirty_rows
        if dirty is not None:
            dirty.add(row)
        if self.watched and (row, node) not in self.changes:
            self.changes[(row, node)] = self.watched_atp(row, node)

    def watched_atp(self, row: int, node: int) -> list[int]:
        result = []
        for channel, segment in self.watched:
            try:
                policy = self.policy(channel, segment)
            except InvalidCommand:  # rules changed under a watcher: it is resynced anyway
                result.append(0)
                continue
            if policy is None:
                result.append(self._atp(row, node) if self.nodes[node].enabled else 0)
            else:
                result.append(self.caller_atp(policy, row, node))
        return result

    def take_changes(self) -> list[tuple[int, int, list[int], list[int]]]:
        """The positions the last command changed: (row, node, ATP before, ATP after) per
        watched caller, in the order they were first touched; clears the capture."""
        if not self.changes:
            return []
        changes = [
            (row, node, before, self.watched_atp(row, node))
            for (row, node), before in self.changes.items()
        ]
        self.changes = {}
        return changes

    # ------------------------------------------------------------------ rules and supply

    def _set_rules(self, command: SetRules, now_ms: int) -> RulesResult:
        known = Known(frozenset(self.node_ids.names), frozenset(self.geo.geo_ids.names))
        try:
            rules = parse_rules(command.text, command.source, known, command.document)
        except RulesError as error:
            raise InvalidCommand(f"rules: {error}") from None
        previous = self.rules
        self.rules = rules
        self._compiled = None
        self._rebuild_protection_consumption()
        return RulesResult(Outcome.OK, rules.version, previous.version)

    def _compiled_rules(self) -> CompiledRules:
        compiled = self._compiled
        if compiled is None:
            compiled = compile_rules(self.rules, self.nodes, self.stock.node_capacity)
            self._compiled = compiled
            count = compiled.protection_mask.shape[0]
            for row, consumed in list(self.protection_consumed.items()):
                if consumed.shape != (count, self.stock.node_capacity):
                    grown = np.zeros((count, self.stock.node_capacity), np.int32)
                    rows = min(count, consumed.shape[0])
                    grown[:rows, : consumed.shape[1]] = consumed[:rows]
                    self.protection_consumed[row] = grown
        return compiled

    def _protection_index(self, name: str) -> int:
        for index, protection in enumerate(self.rules.protections):
            if protection.name == name:
                return index
        return -1

    def _rebuild_protection_consumption(self) -> None:
        """After a rule swap: protections are matched by name; holds on protections that no
        longer exist simply stop counting against anything."""
        self.protection_consumed.clear()
        capacity = self.stock.node_capacity
        count = max(len(self.rules.protections), 1)
        for reservation_id in self.protected_reservations:
            reservation = self.reservations[reservation_id]
            assert reservation.protected is not None
            for (sku, node), records in zip(reservation.cells, reservation.protected, strict=True):
                for name, units in records:
                    index = self._protection_index(name)
                    if index < 0:
                        continue
                    consumed = self.protection_consumed.get(sku)
                    if consumed is None:
                        consumed = np.zeros((count, capacity), np.int32)
                        self.protection_consumed[sku] = consumed
                    consumed[index, node] += units

    def policy(self, channel: str, segment: str) -> CompiledPolicy | None:
        """The caller's compiled policy; None when no rule set is loaded (everyone sees every
        enabled node with the positions' own safety stock). Unknown names: InvalidCommand."""
        if not self.rules.policies:
            return None
        try:
            key = self.rules.resolve(channel, segment)
        except KeyError as error:
            raise InvalidCommand(str(error.args[0])) from None
        return self._compiled_rules().policies[key]

    def _protection_inputs(
        self, policy: CompiledPolicy, row: int, sku: str
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
        """Which protections hold units back from this caller for this SKU, and what their
        beneficiaries already hold of it. Shared read-only arrays on the common paths."""
        compiled = self._compiled_rules()
        against = policy.against
        if compiled.prefixed_protections:
            cached = policy.against_by_sku.get(row)
            if cached is None:
                cached = against.copy()
                for index in compiled.prefixed_protections:
                    if cached[index] and not self.rules.protections[index].covers_sku(sku):
                        cached[index] = False
                if len(policy.against_by_sku) >= SKU_CACHE_SIZE:
                    policy.against_by_sku.clear()
                policy.against_by_sku[row] = cached
            against = cached
        consumed = self.protection_consumed.get(row)
        return against, compiled.no_consumption if consumed is None else consumed

    def _supply_row(self, policy: CompiledPolicy, row: int) -> npt.NDArray[np.int64]:
        entries = self.supply.by_sku.get(row)
        if not entries:
            return self._compiled_rules().no_supply
        supply = np.zeros(self.stock.node_capacity, np.int64)
        kinds = policy.policy.supply_kinds
        horizon = policy.policy.supply_horizon_ms
        for entry in entries:
            if eligible(entry, kinds, self.eval_ms, horizon):
                supply[entry.node_index] += entry.quantity
        return supply

    def caller_atp(self, policy: CompiledPolicy, row: int, node: int) -> int:
        """ATP of one position for one caller (the scalar twin of kernels.rollup_atp_rules)."""
        if not policy.visible[node]:
            return 0
        on_hand, reserved, safety, buffer, supply, protected = self._atp_terms(policy, row, node)
        atp = on_hand - reserved - safety - buffer + supply - protected
        return atp if atp > 0 else 0

    def explain_position(self, policy: CompiledPolicy, row: int, node: int) -> dict[str, int]:
        """Why a caller sees what it sees at one node: every term of the ATP formula."""
        on_hand, reserved, safety, buffer, supply, protected = self._atp_terms(policy, row, node)
        atp = on_hand - reserved - safety - buffer + supply - protected
        return {
            "on_hand": on_hand,
            "reserved": reserved,
            "safety_stock": safety,
            "buffer": buffer,
            "supply": supply,
            "protected_for_others": protected,
            "atp": atp if atp > 0 else 0,
        }

    def _atp_terms(
        self, policy: CompiledPolicy, row: int, node: int
    ) -> tuple[int, int, int, int, int, int]:
        """(on_hand, reserved, safety, buffer, supply counted, protected for others)."""
        item = self.stock.cells.item
        on_hand = item(row, FIELD_ON_HAND, node)
        safety = policy.safety_node.item(node)
        if policy.policy.safety_by_sku_prefix:
            safety = max(safety, sku_safety(policy, row, self.skus.names[row]))
        if safety < 0:
            safety = item(row, FIELD_SAFETY, node)
        supply = 0
        if row in self.supply.by_sku:
            supply = self.supply.counted(
                row,
                node,
                policy.policy.supply_kinds,
                self.eval_ms,
                policy.policy.supply_horizon_ms,
            )
        protected = 0
        if self.rules.protections:
            compiled = self._compiled_rules()
            against, consumed = self._protection_inputs(policy, row, self.skus.names[row])
            units_of, percent_of = compiled.protection_units, compiled.protection_percent
            for index in range(len(self.rules.protections)):
                if against[index] and compiled.protection_mask[index, node]:
                    units = units_of.item(index) or on_hand * percent_of.item(index) // 100
                    remaining = units - consumed.item(index, node)
                    if remaining > 0:
                        protected += remaining
        reserved = item(row, FIELD_RESERVED, node)
        return on_hand, reserved, safety, policy.policy.buffer, supply, protected

    def _take_protected(
        self,
        policy: CompiledPolicy,
        lines: tuple[Line, ...],
        skus: list[int],
        nodes: list[int],
    ) -> list[list[tuple[str, int]]] | None:
        """A beneficiary's holds use its protected units before the general pool."""
        compiled = self._compiled_rules()
        protections = self.rules.protections
        records: list[list[tuple[str, int]]] = []
        took_any = False
        cells = self.stock.cells
        for line, sku, node in zip(lines, skus, nodes, strict=True):
            taken: list[tuple[str, int]] = []
            left = line.quantity
            for index in policy.mine:
                if left == 0:
                    break
                protection = protections[index]
                if not compiled.protection_mask[index, node] or not protection.covers_sku(line.sku):
                    continue
                units = (
                    protection.units
                    or int(cells[sku, FIELD_ON_HAND, node]) * protection.percent // 100
                )
                consumed = self.protection_consumed.get(sku)
                used = int(consumed[index, node]) if consumed is not None else 0
                take = min(left, units - used)
                if take <= 0:
                    continue
                if consumed is None:
                    consumed = np.zeros(compiled.protection_mask.shape, np.int32)
                    self.protection_consumed[sku] = consumed
                consumed[index, node] += take
                taken.append((protection.name, take))
                left -= take
            took_any = took_any or bool(taken)
            records.append(taken)
        return records if took_any else None

    def _supply(self, supply_id: str) -> Supply:
        supply = self.supply.by_id.get(supply_id)
        if supply is None:
            raise NotFound(f"supply_id: unknown supply {supply_id!r}")
        return supply

    def _add_supply(self, command: AddSupply, now_ms: int) -> SupplyResult:
        existing = self.supply.find(command.supply_id)
        node = self._node_index(command.node_id, "node_id")
        if existing is not None:
            same = (
                existing.sku,
                existing.node_id,
                existing.quantity + existing.received,
                existing.eta_ms,
                int(existing.kind),
            )
            if same == (
                command.sku,
                command.node_id,
                command.quantity,
                command.eta_ms,
                command.kind,
            ):
                return SupplyResult(Outcome.OK, existing, changed=False)
            raise AlreadyExists(f"supply_id: {command.supply_id!r} exists with different content")
        _check_quantity(command.quantity, "quantity")
        sku = self.skus.get(command.sku)
        expected = self.supply.expected_at(sku, node) if sku >= 0 else 0
        if expected + command.quantity > MAX_QUANTITY:
            raise LimitExceeded(
                f"quantity: {expected} units of {command.sku!r} are already expected at "
                f"{command.node_id!r}; {command.quantity} more would pass the bound of "
                f"{MAX_QUANTITY} units of open supply per position (MAX_QUANTITY)"
            )
        sku = self._register_sku(command.sku)
        supply = Supply(
            command.supply_id,
            command.sku,
            command.node_id,
            sku,
            node,
            command.quantity,
            command.eta_ms,
            SupplyKind(command.kind),
        )
        self._touch(sku, node)
        self.supply.add(supply)
        return SupplyResult(Outcome.OK, supply, changed=True)

    def _receive_supply(self, command: ReceiveSupply, now_ms: int) -> SupplyResult:
        supply = self._supply(command.supply_id)
        quantity = supply.quantity if command.quantity is None else command.quantity
        if quantity > supply.quantity:
            raise InvalidCommand(
                f"quantity: {quantity} is more than the {supply.quantity} still expected"
            )
        on_hand = int(self.stock.cells[supply.sku_index, FIELD_ON_HAND, supply.node_index])
        if on_hand + quantity > MAX_QUANTITY:
            raise InvalidCommand(f"quantity: on_hand would exceed {MAX_QUANTITY}")
        self._touch(supply.sku_index, supply.node_index)
        self.stock.cells[supply.sku_index, FIELD_ON_HAND, supply.node_index] = on_hand + quantity
        self.stock.mark_present(supply.sku_index, supply.node_index)
        supply.quantity -= quantity
        supply.received += quantity
        if supply.quantity == 0:
            self.supply.remove(supply)
        return SupplyResult(Outcome.OK, supply, changed=True)

    def _cancel_supply(self, command: CancelSupply, now_ms: int) -> SupplyResult:
        supply = self._supply(command.supply_id)
        self._touch(supply.sku_index, supply.node_index)
        self.supply.remove(supply)
        return SupplyResult(Outcome.OK, supply, changed=True)

    # ------------------------------------------------------------------ reads

    def node_mask(
        self, node_ids: Sequence[str] = (), geo_prefix: str = ""
    ) -> npt.NDArray[np.bool_]:
        """Enabled nodes, narrowed to `node_ids` and/or `geo_prefix`; cached per scope."""
        key = (tuple(node_ids), geo_prefix)
        mask = self._mask_cache.get(key)
        if mask is not None:
            return mask
        mask = self.enabled_mask.copy()
        if node_ids:
            wanted = np.zeros_like(mask)
            for i, node_id in enumerate(node_ids):
                wanted[self._node_index(node_id, f"node_ids[{i}]")] = True
            mask &= wanted
        if geo_prefix:
            geo, level = self.geo.lookup_prefix(geo_prefix)
            if geo < 0:
                raise NotFound(f"geo_prefix: no node under {geo_prefix!r}")
            mask &= self.geo.node_geo[level, : len(self.nodes)] == geo
        if len(self._mask_cache) >= MASK_CACHE_SIZE:
            self._mask_cache.clear()
        mask.flags.writeable = False  # shared by every answer in this scope
        self._mask_cache[key] = mask
        return mask

    def availability(
        self,
        skus: Sequence[str],
        node_ids: Sequence[str] = (),
        geo_prefix: str = "",
        channel: str = "",
        segment: str = "",
        policy: CompiledPolicy | None = None,
    ) -> AvailabilityView:
        """ATP of `skus` for one caller (named, or given as its resolved `policy`), per node,
        per geo prefix and in total."""
        mask = self.node_mask(node_ids, geo_prefix)
        sku_get = self.skus.get
        rows = np.array([sku_get(sku) for sku in skus], np.int64)
        geo_count = len(self.geo)
        if policy is None:
            policy = self.policy(channel, segment)
        if policy is None:
            matrix = kernels.rollup_atp(self.stock.cells, rows, mask, self.geo.node_geo, geo_count)
            return AvailabilityView(tuple(skus), rows, mask, matrix, len(self.nodes), geo_count)
        compiled = self._compiled_rules()
        scoped = policy.mask_cache.get(id(mask))
        if scoped is None or scoped[0] is not mask:
            if len(policy.mask_cache) >= MASK_CACHE_SIZE:
                policy.mask_cache.clear()
            scoped = (mask, mask & policy.visible)
            policy.mask_cache[id(mask)] = scoped
        mask = scoped[1]
        node_count = len(self.nodes)
        matrix = np.zeros((len(rows), node_count + geo_count + 1), np.int64)
        buffer = policy.policy.buffer
        for k, row in enumerate(rows.tolist()):
            if row < 0:
                continue
            sku = skus[k]
            against, consumed = self._protection_inputs(policy, row, sku)
            kernels.rollup_atp_rules(
                self.stock.cells,
                row,
                mask,
                self.geo.node_geo,
                geo_count,
                policy.safety_node,
                sku_safety(policy, row, sku),
                buffer,
                self._supply_row(policy, row),
                compiled.protection_mask,
                compiled.protection_units,
                compiled.protection_percent,
                against,
                consumed,
                matrix[k],
            )
        return AvailabilityView(tuple(skus), rows, mask, matrix, node_count, geo_count)

    def catalogue(
        self, channel: str = "", segment: str = "", level: int = 1
    ) -> tuple[list[str], npt.NDArray[np.int64]]:
        """ATP of every SKU for one caller, per geo prefix at `level` (0: region, 1: country,
        ...): (prefix names, matrix[sku row, prefix]). One parallel kernel over the whole
        catalogue, then the few SKUs with incoming supply or protected holds are redone
        exactly through the per-SKU path."""
        assert 0 <= level < self.geo.node_geo.shape[0]
        node_count, sku_count = len(self.nodes), len(self.skus)
        level_geo = self.geo.node_geo[level, :node_count]
        geo_ids = sorted({int(g) for g in level_geo if g >= 0}, key=self.geo.geo_ids.name)
        group_of = {geo: i for i, geo in enumerate(geo_ids)}
        node_group = np.array([group_of.get(int(g), -1) for g in level_geo], np.int32)
        names = [self.geo.geo_ids.name(g) for g in geo_ids]
        policy = self.policy(channel, segment)
        compiled = self._compiled_rules()
        mask = self.node_mask()
        if policy is None:
            safety_node = np.full(node_count, -1, np.int32)
            skus_safety = np.full(sku_count, -1, np.int64)
            buffer = 0
            against = np.zeros((sku_count, 1), np.bool_)
        else:
            mask = mask & policy.visible
            safety_node = policy.safety_node
            sku_names = self.skus.names
            skus_safety = np.array(
                [sku_safety(policy, row, sku_names[row]) for row in range(sku_count)], np.int64
            )
            buffer = policy.policy.buffer
            against = np.repeat(policy.against[np.newaxis, :], sku_count, axis=0)
            for index in compiled.prefixed_protections:
                if policy.against[index]:
                    prefixes = self.rules.protections[index].sku_prefixes
                    against[:, index] = [sku.startswith(prefixes) for sku in sku_names]
        matrix = kernels.catalogue_atp(
            self.stock.cells,
            sku_count,
            mask,
            node_group,
            len(geo_ids),
            safety_node,
            skus_safety,
            buffer,
            compiled.protection_mask,
            compiled.protection_units,
            compiled.protection_percent,
            against,
        )
        exact = set(self.supply.by_sku) | set(self.protection_consumed)
        if policy is not None and exact:
            in_groups = node_group >= 0
            for row in sorted(exact):
                view = self.availability([self.skus.name(row)], (), "", channel, segment)
                per_node = view.matrix[0, :node_count]
                matrix[row] = np.bincount(
                    node_group[in_groups], per_node[in_groups], len(geo_ids)
                ).astype(np.int64)
        return names, matrix

    def position(self, sku: str, node_id: str) -> PositionView:
        node = self._node_index(node_id, "node_id")
        row = self.skus.get(sku)
        if row < 0:
            return PositionView(sku, node_id, 0, 0, 0, 0, 0)
        cells = self.stock.cells
        return PositionView(
            sku,
            node_id,
            int(cells[row, FIELD_ON_HAND, node]),
            int(cells[row, FIELD_RESERVED, node]),
            int(cells[row, FIELD_SAFETY, node]),
            self._atp(row, node),
            int(self.stock.source_seq[row, node]),
        )

    def reservation(self, reservation_id: str) -> Reservation:
        return self._reservation(reservation_id)

    def list_nodes(self, geo_prefix: str = "") -> list[Node]:
        prefix = tuple(geo_prefix.split("/")) if geo_prefix else ()
        return [node for node in self.nodes if node.under(prefix)]

    # ------------------------------------------------------------------ checks

    def check_invariants(self) -> None:
        """Recompute reserved from open holds and compare; O(state), for tests and recovery."""
        sku_count, node_count = len(self.skus), len(self.nodes)
        expected = np.zeros((sku_count, node_count), np.int64)
        open_count = 0
        for reservation in self.reservations.values():
            if reservation.status.is_open:
                open_count += 1
            else:
                assert not any(reservation.held), reservation
            for (sku, node), held in zip(reservation.cells, reservation.held, strict=True):
                expected[sku, node] += held
        cells = self.stock.cells[:sku_count, :, :node_count]
        assert np.array_equal(cells[:, FIELD_RESERVED, :], expected), "reserved != sum of holds"
        assert (cells[:, FIELD_ON_HAND, :] >= 0).all(), "negative on_hand"
        assert open_count == self.open_reservations, (open_count, self.open_reservations)
        held_count = sum(
            1 for r in self.reservations.values() if r.status is ReservationStatus.HELD
        )
        assert held_count == len(self.expiry), (held_count, len(self.expiry))

    def digest(self) -> str:
        """A hash of everything that defines the state (for recovery equality tests)."""
        sku_count, node_count = len(self.skus), len(self.nodes)
        h = hashlib.sha256()
        h.update(repr((self.skus.names, self.node_ids.names, self.now_ms)).encode())
        h.update(
            repr(
                [(n.kind, n.geo_path, n.ships, n.pickup, n.enabled, n.tags) for n in self.nodes]
            ).encode()
        )
        h.update(np.ascontiguousarray(self.stock.cells[:sku_count, :, :node_count]).tobytes())
        h.update(np.ascontiguousarray(self.stock.source_seq[:sku_count, :node_count]).tobytes())
        h.update(np.ascontiguousarray(self.stock.present[:sku_count, :node_count]).tobytes())
        h.update(self.rules.text.encode())
        for supply_id in sorted(self.supply.by_id):
            x = self.supply.by_id[supply_id]
            h.update(b"open")
            h.update(
                repr(
                    (supply_id, x.sku, x.node_id, x.quantity, x.eta_ms, x.kind, x.received)
                ).encode()
            )
        for x in self.supply.closed.values():
            h.update(repr((x.supply_id, x.quantity, x.received, x.eta_ms)).encode())
        for reservation_id in sorted(self.reservations):
            r = self.reservations[reservation_id]
            h.update(
                repr(
                    (
                        reservation_id,
                        r.status,
                        r.lines,
                        r.held,
                        r.fulfilled,
                        r.created_at_ms,
                        r.expires_at_ms,
                        r.updated_at_ms,
                        r.kind,
                        r.channel,
                        r.segment,
                        # Closed holds have given every protected unit back: [[]] is None.
                        r.protected if r.protected and any(r.protected) else None,
                    )
                ).encode()
            )
        h.update(self.loads.to_json())
        return h.hexdigest()

    # ------------------------------------------------------------------ growth off the writer

    def capacity_needed(self, command: Command) -> tuple[int, int] | None:
        """(SKU rows, node columns) that `command` may need when the stock table has fewer,
        so applying it now would grow the table synchronously; None otherwise. Cheap and
        conservative: every SKU a bulk load names counts as possibly new."""
        stock = self.stock
        sku_count, node_count = len(self.skus), len(self.nodes)
        if isinstance(command, UpsertNode):
            if node_count < stock.node_capacity or command.node_id in self.node_ids:
                return None
            if node_count >= self.limits.max_nodes:
                return None  # refused by the limit, never grown
            return sku_count, node_count + 1
        if isinstance(command, SetStock | AdjustStock | AddSupply):
            if sku_count < stock.sku_capacity or command.sku in self.skus:
                return None
            if sku_count >= self.limits.max_skus:
                return None
            return sku_count + 1, node_count
        if isinstance(command, BulkLoad) and command.columns is not None:
            rows = min(sku_count + len(command.columns.sku_names), self.limits.max_skus)
            return (rows, node_count) if rows > stock.sku_capacity else None
        return None

    def resize_target(self, needed: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The capacities a background resize should grow to: an axis whose used count (or
        `needed`) reached RESIZE_HIGH_WATER_PERCENT of its capacity doubles (further if
        `needed` asks), never past the limits. None when no axis needs to grow."""
        stock = self.stock
        sku_used, node_used = len(self.skus), len(self.nodes)
        if needed is not None:
            sku_used, node_used = max(sku_used, needed[0]), max(node_used, needed[1])

        def target(capacity: int, used: int, limit: int) -> int:
            if used * 100 < capacity * RESIZE_HIGH_WATER_PERCENT or capacity >= limit:
                return capacity
            return max(capacity, min(grown_capacity(capacity * 2, used), limit))

        sku_capacity = target(stock.sku_capacity, sku_used, self.limits.max_skus)
        node_capacity = target(stock.node_capacity, node_used, self.limits.max_nodes)
        if (sku_capacity, node_capacity) == (stock.sku_capacity, stock.node_capacity):
            return None
        return sku_capacity, node_capacity

    def begin_resize(self, sku_capacity: int, node_capacity: int) -> Resize:
        """Start growing the stock table in the background (see core/stock.py `Resize`): the
        caller copies (`Resize.copy_all`, any thread), then calls `finish_resize` here."""
        return self.stock.begin_resize(sku_capacity, node_capacity, len(self.skus), len(self.nodes))

    def finish_resize(self, max_rows: int) -> bool:
        """Swap the grown table in when at most `max_rows` rows are left to copy (True), or
        start another copy round of those rows (False). Also grows the per-node geography."""
        done = self.stock.finish_resize(len(self.skus), len(self.nodes), max_rows)
        if done and self.geo.node_geo.shape[1] < self.stock.node_capacity:
            self.geo.grow(self.stock.node_capacity)
        return done


def _check_quantity(value: int, field: str) -> None:
    if not 0 <= value <= MAX_QUANTITY:
        raise InvalidCommand(f"{field}: {value} is not in 0..{MAX_QUANTITY}")
