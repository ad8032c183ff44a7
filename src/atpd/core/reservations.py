"""What a reservation is to its readers: its status, its idempotency fingerprint, and a
read-only view of one (the reservations themselves are rows of core/reservation_table.py)."""

from __future__ import annotations

import enum

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


class ReservationView:
    """One reservation as it was when the view was taken: a copy of its row of the table
    (core/reservation_table.py), made for one caller (a result, GetReservation, a test). It
    never changes after, so it can be converted to a message after awaits while the table moves
    on (and reuses the row). `held[i]` is what line i still held; `fulfilled[i]` what left."""

    __slots__ = (
        "_lines",
        "_node_names",
        "_sku_names",
        "channel",
        "created_at_ms",
        "expires_at_ms",
        "fulfilled",
        "held",
        "kind",
        "maker",
        "nodes",
        "plan",
        "protected",
        "quantities",
        "reservation_id",
        "segment",
        "skus",
        "status",
        "ttl_ms",
        "updated_at_ms",
    )

    reservation_id: str
    status: ReservationStatus
    kind: ReservationKind
    channel: str
    segment: str
    ttl_ms: int
    created_at_ms: int
    updated_at_ms: int
    expires_at_ms: int
    maker: Maker | None
    plan: Plan | None
    # Per line, the protected units it took: [(protection name, units)], or None when the
    # caller is no protection's beneficiary (the common case).
    protected: list[list[tuple[str, int]]] | None
    skus: list[int]  # SKU index per line
    nodes: list[int]  # node index per line
    quantities: list[int]
    held: list[int]
    fulfilled: list[int]
    _lines: tuple[Line, ...] | None
    _sku_names: list[str]
    _node_names: list[str]

    @property
    def lines(self) -> tuple[Line, ...]:
        """The lines as reserved (built on first use: most views never need the names)."""
        lines = self._lines
        if lines is None:
            skus, nodes = self._sku_names, self._node_names
            lines = self._lines = tuple(
                Line(skus[sku], nodes[node], quantity)
                for sku, node, quantity in zip(self.skus, self.nodes, self.quantities, strict=True)
            )
        return lines

    @property
    def cells(self) -> tuple[tuple[int, int], ...]:
        """(SKU index, node index) per line."""
        return tuple(zip(self.skus, self.nodes, strict=True))

    def fingerprint(self) -> tuple[object, ...]:
        """Computed only when an id is reused: most reservations are never compared."""
        return fingerprint(
            self.kind, self.channel, self.segment, self.ttl_ms, self.lines, self.plan
        )

    def _compared(self) -> tuple[object, ...]:
        return (
            self.reservation_id,
            self.status,
            self.kind,
            self.channel,
            self.segment,
            self.ttl_ms,
            self.created_at_ms,
            self.updated_at_ms,
            self.expires_at_ms,
            self.maker,
            self.plan,
            self.protected,
            self.skus,
            self.nodes,
            self.quantities,
            self.held,
            self.fulfilled,
        )

    def __eq__(self, other: object) -> bool:
        """Views of the same reservation in the same state are equal (not identical)."""
        if not isinstance(other, ReservationView):
            return NotImplemented
        return self._compared() == other._compared()

    __hash__ = None  # type: ignore[assignment]  # compared by value, and not immutable

    def __repr__(self) -> str:
        return f"Reservation({self.reservation_id!r}, {self.status.name}, held={self.held})"
