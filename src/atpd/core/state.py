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
from atpd.core.commands import (
    AdjustStock,
    Command,
    Confirm,
    Fulfil,
    Line,
    Release,
    ReservationKind,
    Reserve,
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
    Shortage,
    StockResult,
    TickResult,
)
from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY, StockTable

MASK_CACHE_SIZE = 1024


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
        self.stock = StockTable()
        self.geo = Geography(self.stock.node_capacity)
        self.enabled_mask: npt.NDArray[np.bool_] = np.zeros(0, np.bool_)
        self.reservations: dict[str, Reservation] = {}
        self.expiry = ExpiryIndex()
        # (purge_at_ms, reservation_id) for terminal reservations kept for idempotent retries.
        self.retention: SortedList = SortedList()
        self.open_reservations = 0
        self.now_ms = 0
        self.expired_total = 0
        # Ids expired by the last `apply` (the engine journals a Tick when a rejected command
        # expired holds, so the journal alone explains every change).
        self.last_expired: tuple[str, ...] = ()
        self.time_moved = False
        self.purged_total = 0
        self._mask_cache: dict[tuple[tuple[str, ...], str], npt.NDArray[np.bool_]] = {}
        self._handlers: dict[type, Callable[[Any, int], Any]] = {
            UpsertNode: self._upsert_node,
            SetStock: self._set_stock,
            AdjustStock: self._adjust_stock,
            Reserve: self._reserve,
            Confirm: self._confirm,
            Fulfil: self._fulfil,
            Release: self._release,
            Tick: self._tick,
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
        purged_before = self.purged_total
        self.last_expired = self._expire_due(now_ms)
        self.time_moved = bool(self.last_expired) or self.purged_total != purged_before
        try:
            return self._handlers[type(command)](command, now_ms)
        except CommandRejected:
            if not self.time_moved:
                self.now_ms = previous_now_ms
            raise

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
        cells = self.stock.cells
        for reservation_id in due:
            reservation = self.reservations[reservation_id]
            assert reservation.status is ReservationStatus.HELD
            for (sku, node), held in zip(reservation.cells, reservation.held, strict=True):
                cells[sku, FIELD_RESERVED, node] -= held
            reservation.held = [0] * len(reservation.held)
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
        self.retention.add((at_ms + self.limits.terminal_retention_ms, reservation.reservation_id))

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
        node = self._node_index(command.node_id, "node_id")
        sku = self.skus.get(command.sku)
        last = int(self.stock.source_seq[sku, node]) if sku >= 0 else 0
        if command.source_sequence <= last:
            return StockResult(Outcome.STALE, self.position(command.sku, command.node_id), last)
        sku = self._register_sku(command.sku)
        cells = self.stock.cells
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
        pos_sale = command.kind is ReservationKind.POS_SALE
        fingerprint = reservation_fingerprint(
            command.kind,
            command.channel,
            command.segment,
            0 if pos_sale else command.ttl_ms,
            command.lines,
        )
        existing = self.reservations.get(command.reservation_id)
        if existing is not None:
            if existing.fingerprint == fingerprint:
                return ReserveResult(Outcome.OK, existing, replayed=True)
            raise AlreadyExists(
                f"reservation_id: {command.reservation_id!r} exists with different content"
            )
        assert 1 <= len(command.lines) <= self.limits.max_lines_per_reservation
        nodes = [
            self._node_index(line.node_id, f"lines[{i}].node_id")
            for i, line in enumerate(command.lines)
        ]
        if self.open_reservations >= self.limits.max_open_reservations:
            raise LimitExceeded(
                f"max_open_reservations: {self.open_reservations} reservations are open"
            )
        for line, node in zip(command.lines, nodes, strict=True):
            if not self.nodes[node].enabled:
                return ReserveResult(Outcome.NODE_DISABLED, disabled_node_id=line.node_id)
        skus = [self.skus.get(line.sku) for line in command.lines]
        shortages: list[Shortage] = []
        for line, sku, node in zip(command.lines, skus, nodes, strict=True):
            available = self._atp(sku, node) if sku >= 0 else 0
            if line.quantity > available:
                shortages.append(Shortage(line.sku, line.node_id, line.quantity, available))
        if shortages:
            return ReserveResult(Outcome.INSUFFICIENT_STOCK, shortages=tuple(shortages))
        cells = self.stock.cells
        for line, sku, node in zip(command.lines, skus, nodes, strict=True):
            cells[sku, FIELD_RESERVED, node] += line.quantity
        reservation = Reservation(
            command.reservation_id,
            command.lines,
            tuple(zip(skus, nodes, strict=True)),
            command.kind,
            command.channel,
            command.segment,
            0 if pos_sale else command.ttl_ms,
            now_ms,
            fingerprint,
        )
        self.reservations[command.reservation_id] = reservation
        self.open_reservations += 1
        if pos_sale:
            # A POS sale is a reserve and a fulfilment in one step: the goods left the store.
            # It never waits in the expiry index, so it passes through CONFIRMED, not HELD.
            reservation.status = ReservationStatus.CONFIRMED
            reservation.expires_at_ms = 0
            self._take_out(reservation, list(reservation.held), now_ms)
        else:
            self.expiry.add(reservation.expires_at_ms, reservation.reservation_id)
        return ReserveResult(Outcome.OK, reservation)

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
        cells = self.stock.cells
        for (sku, node), held in zip(reservation.cells, reservation.held, strict=True):
            cells[sku, FIELD_RESERVED, node] -= held
            assert cells[sku, FIELD_RESERVED, node] >= 0
        reservation.held = [0] * len(reservation.held)

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
            cells[sku, FIELD_RESERVED, node] -= quantity
            # A recount may have set on_hand below what was held; on_hand never goes negative.
            on_hand = int(cells[sku, FIELD_ON_HAND, node]) - quantity
            cells[sku, FIELD_ON_HAND, node] = on_hand if on_hand > 0 else 0
            reservation.held[i] -= quantity
            reservation.fulfilled[i] += quantity
        if release_remainder:
            self._free_held(reservation)
        reservation.updated_at_ms = now_ms
        if not any(reservation.held):
            self._stop_expiry(reservation)
            fulfilled_any = any(reservation.fulfilled)
            reservation.status = (
                ReservationStatus.FULFILLED if fulfilled_any else ReservationStatus.RELEASED
            )
            self._close(reservation, now_ms)

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
        self._mask_cache[key] = mask
        return mask

    def availability(
        self, skus: Sequence[str], node_ids: Sequence[str] = (), geo_prefix: str = ""
    ) -> AvailabilityView:
        mask = self.node_mask(node_ids, geo_prefix)
        sku_get = self.skus.get
        rows = np.array([sku_get(sku) for sku in skus], np.int64)
        geo_count = len(self.geo)
        matrix = kernels.rollup_atp(self.stock.cells, rows, mask, self.geo.node_geo, geo_count)
        return AvailabilityView(tuple(skus), rows, mask, matrix, len(self.nodes), geo_count)

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

    def lines_of(self, reservation: Reservation) -> tuple[Line, ...]:
        return reservation.lines

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
                    )
                ).encode()
            )
        return h.hexdigest()
