"""AmendReservation: a HELD cart's new lines and expiry (handler: core/handlers_amend.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from atpd.core.command_base import CommandOf
from atpd.core.results import Outcome, Shortage

if TYPE_CHECKING:  # annotations only: commands.py imports this module for its Command union
    from atpd.core.commands import Line
    from atpd.core.reservations import ReservationView


@dataclass(slots=True)
class AmendResult:
    outcome: Outcome
    reservation: ReservationView  # a copy of the row after the command
    shortages: tuple[Shortage, ...] = ()
    replayed: bool = False
    disabled_node_id: str = ""
    changed: bool = False


@dataclass(frozen=True, slots=True)
class AmendReservation(CommandOf[AmendResult]):
    reservation_id: str
    lines: tuple[Line, ...]
    ttl_ms: int = 0  # 0: keep the expiry
