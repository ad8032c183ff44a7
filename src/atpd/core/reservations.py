"""Reservations and the expiry index."""

from __future__ import annotations

import enum

from sortedcontainers import SortedList

from atpd.core.commands import Line, Maker, ReservationKind
from atpd.core.plan import Plan


def fingerprint(
    kind: ReservationKind,
    channel: str,
    segment: str,
    ttl_ms: int,
    lines: tuple[Line, ...],
    plan: Plan | None = None,
) -> tuple[object, ...]:
    """What makes two Reserve requests "the same" for idempotency (line order does not)."""
    return (
        kind,
        channel,
        segment,
        ttl_ms,
        tuple(sorted((line.sku, line.node_id, line.quantity) for line in lines)),
        plan,
    )


class ReservationStatus(enum.IntEnum):
    # Numbers match atpd.v1.ReservationStatus.
    HELD = 1
    CONFIRMED = 2
    FULFILLED = 3
    RELEASED = 4
    EXPIRED = 5

    @property
    def is_open(self) -> bool:
        return self in (ReservationStatus.HELD, ReservationStatus.CONFIRMED)


class Reservation:
    """One reservation. `held[i]` is what line i still holds; `fulfilled[i]` what left."""

    __slots__ = (
        "cells",
        "channel",
        "created_at_ms",
        "expires_at_ms",
        "fulfilled",
        "held",
        "kind",
        "lines",
        "maker",
        "plan",
        "protected",
        "reservation_id",
        "segment",
        "status",
        "ttl_ms",
        "updated_at_ms",
    )

    def __init__(
        self,
        reservation_id: str,
        lines: tuple[Line, ...],
        cells: tuple[tuple[int, int], ...],
        kind: ReservationKind,
        channel: str,
        segment: str,
        ttl_ms: int,
        now_ms: int,
        maker: Maker | None = None,
    ) -> None:
        assert len(lines) == len(cells) and lines
        self.reservation_id = reservation_id
        self.lines = lines
        self.cells = cells  # (sku index, node index) per line
        self.kind = kind
        self.channel = channel
        self.segment = segment
        self.ttl_ms = ttl_ms
        self.created_at_ms = now_ms
        self.updated_at_ms = now_ms
        self.expires_at_ms = now_ms + ttl_ms
        self.status = ReservationStatus.HELD
        self.held = [line.quantity for line in lines]
        self.fulfilled = [0] * len(lines)
        # Per line, the protected units it took: [(protection name, units)], or None when the
        # caller is no protection's beneficiary (the common case: no list at all).
        self.protected: list[list[tuple[str, int]]] | None = None
        # The principal that made it (None: made with authentication off); never changes.
        self.maker = maker
        # A promised option (core/plan_holds.py): while the reservation is open it holds one
        # carrier slot and one pick per shipment besides the stock; None for a plain one.
        self.plan: Plan | None = None

    def fingerprint(self) -> tuple[object, ...]:
        """Computed only when an id is reused: most reservations are never compared."""
        return fingerprint(
            self.kind, self.channel, self.segment, self.ttl_ms, self.lines, self.plan
        )

    def __repr__(self) -> str:
        return f"Reservation({self.reservation_id!r}, {self.status.name}, held={self.held})"


class ExpiryIndex:
    """Open HELD reservations ordered by expiry time (ties broken by id, deterministically)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self._entries)

    def add_many(self, entries: list[tuple[int, str]]) -> None:
        """Bulk insert (snapshot load): one sort instead of a million bisects."""
        self._entries.update(entries)

    def add(self, expires_at_ms: int, reservation_id: str) -> None:
        self._entries.add((expires_at_ms, reservation_id))

    def remove(self, expires_at_ms: int, reservation_id: str) -> None:
        self._entries.remove((expires_at_ms, reservation_id))

    def next_expiry_ms(self) -> int | None:
        return self._entries[0][0] if self._entries else None

    def pop_due(self, now_ms: int) -> list[str]:
        """Remove and return the ids of every hold with expires_at_ms <= now_ms, in order."""
        entries = self._entries
        if not entries or entries[0][0] > now_ms:
            return []  # the common case, checked without a bisect
        count = entries.bisect_left((now_ms + 1, ""))
        if count == 0:
            return []
        due = [reservation_id for _, reservation_id in entries[:count]]
        del entries[:count]
        return due
