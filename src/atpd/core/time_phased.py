"""Time-phased ATP: when each unit a caller may be promised is actually there.

"3 now, 10 more from Dec 4". Pure functions; no I/O, no clock (`now_ms` is an argument).

How it relates to ATP now (core/atp.py, core/caller_atp.py, README "Availability rules"):

    ATP now = max(0, free + S)    free = on_hand - reserved - safety - buffer - protected
                                  S    = supply counted for the caller

where the counted supply is each open supply entry of the position whose kind the caller's
rules count and whose ETA is in [now, now + horizon] (`supply.eligible`; supply past its ETA
counts for nobody). ATP now therefore already includes supply that has not arrived. The
schedule splits it by date: at instant t the caller can have

    available(t) = max(0, free + sum of counted quantities with eta <= t)

units, rising to ATP now at the last ETA. Since free = ATP now - S whenever ATP now > 0 (and
when ATP now is 0, free + S <= 0 so every partial sum is 0 too), the schedule follows from ATP
now and the counted (eta_ms, quantity) pairs alone, which is what these functions take. Units
reserved come out of what is on hand first, as they do in ATP now.

The schedule is a short list of steps `(available_from_ms, cumulative_quantity)`, sorted,
with cumulative quantities strictly increasing: the first step is `now_ms` when units are on
hand now; the last reaches ATP now. Empty when ATP now is 0.

`earliest_many` is the vectorised form for many positions (PromiseBatch): ATP now per
position, counted supply as one flat list with per-position offsets (CSR), the quantity
wanted per position; out: the earliest instant each quantity is available, -1 for never.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from atpd.core.supply import Supply, SupplyKind, eligible

Int64Array = npt.NDArray[np.int64]
NEVER = -1
# A position rarely has more than a few open supply entries; this bounds one schedule.
MAX_SUPPLY_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Step:
    available_from_ms: int
    cumulative_quantity: int


@dataclass(frozen=True, slots=True)
class Schedule:
    now_ms: int
    steps: tuple[Step, ...]

    @property
    def total(self) -> int:
        """ATP now: everything the caller may be promised, whenever it arrives."""
        return self.steps[-1].cumulative_quantity if self.steps else 0

    @property
    def on_hand_now(self) -> int:
        """What can be taken now, without waiting for supply."""
        if self.steps and self.steps[0].available_from_ms == self.now_ms:
            return self.steps[0].cumulative_quantity
        return 0

    def earliest_ms_for(self, quantity: int) -> int | None:
        """The first instant at which `quantity` units are available; None if never."""
        if quantity <= 0:
            raise ValueError(f"quantity: {quantity} is not positive")
        for step in self.steps:
            if step.cumulative_quantity >= quantity:
                return step.available_from_ms
        return None


def counted_supply(
    entries: Iterable[Supply],
    node_index: int,
    kinds: frozenset[SupplyKind],
    now_ms: int,
    horizon_ms: int | None,
) -> list[tuple[int, int]]:
    """The (eta_ms, quantity) pairs a caller's ATP counts at one node, exactly as
    `SupplyBook.counted` sums them (pass `book.by_sku.get(sku_index, ())`)."""
    return [
        (entry.eta_ms, entry.quantity)
        for entry in entries
        if entry.node_index == node_index and eligible(entry, kinds, now_ms, horizon_ms)
    ]


def check_supply(now_ms: int, supply: Sequence[tuple[int, int]]) -> None:
    if len(supply) > MAX_SUPPLY_ENTRIES:
        raise ValueError(f"supply: {len(supply)} entries, at most {MAX_SUPPLY_ENTRIES}")
    for index, (eta_ms, quantity) in enumerate(supply):
        if eta_ms < now_ms:
            raise ValueError(f"supply[{index}].eta_ms: {eta_ms} is before now ({now_ms})")
        if quantity <= 0:
            raise ValueError(f"supply[{index}].quantity: {quantity} is not positive")


def schedule(atp_now: int, supply: Sequence[tuple[int, int]], now_ms: int) -> Schedule:
    """The time-phased view of one position: ATP now and the supply counted in it."""
    if atp_now < 0:
        raise ValueError(f"atp_now: {atp_now} is negative")
    check_supply(now_ms, supply)
    if atp_now == 0:
        return Schedule(now_ms, ())
    available = atp_now - sum(quantity for _, quantity in supply)  # free, before any arrival
    steps: list[Step] = []
    if available > 0:
        steps.append(Step(now_ms, available))
    for eta_ms, quantity in sorted(supply):
        available += quantity
        if available <= 0:
            continue
        if steps and steps[-1].available_from_ms == eta_ms:
            steps[-1] = Step(eta_ms, available)
        else:
            steps.append(Step(eta_ms, available))
    assert steps and steps[-1].cumulative_quantity == atp_now
    return Schedule(now_ms, tuple(steps))


@njit(nogil=True, cache=True)
def earliest_kernel(
    atp_now: Int64Array,
    wanted: Int64Array,
    offsets: Int64Array,
    eta_ms: Int64Array,
    quantity: Int64Array,
    now_ms: int,
    out: Int64Array,
) -> None:
    """out[i] = earliest instant position i has wanted[i] units; -1 for never. Supply of
    position i is eta_ms / quantity[offsets[i]:offsets[i + 1]], in any order."""
    for position in range(atp_now.shape[0]):
        total = atp_now[position]
        need = wanted[position]
        out[position] = NEVER
        if need > total:
            continue
        start = offsets[position]
        stop = offsets[position + 1]
        counted = 0
        for entry in range(start, stop):
            counted += quantity[entry]
        available = total - counted
        if available >= need:
            out[position] = now_ms
            continue
        # Few entries per position: selection by repeated minimum beats sorting a copy.
        last_eta = -1
        while available < need:
            soonest = -1
            for entry in range(start, stop):
                eta = eta_ms[entry]
                if eta > last_eta and (soonest < 0 or eta < soonest):
                    soonest = eta
            for entry in range(start, stop):
                if eta_ms[entry] == soonest:
                    available += quantity[entry]
            last_eta = soonest
        out[position] = last_eta


def earliest_many(
    atp_now: Int64Array,
    wanted: Int64Array,
    offsets: Int64Array,
    eta_ms: Int64Array,
    quantity: Int64Array,
    now_ms: int,
    out: Int64Array | None = None,
) -> Int64Array:
    """`Schedule.earliest_ms_for` for many positions in one pass (-1 for never). Inputs as
    in the kernel; the caller guarantees what `schedule` checks (ETAs at or after now,
    positive quantities, wanted >= 1, ATP now >= 0)."""
    assert offsets.shape[0] == atp_now.shape[0] + 1 == wanted.shape[0] + 1
    assert eta_ms.shape == quantity.shape and offsets[-1] == eta_ms.shape[0]
    if out is None:
        out = np.empty(atp_now.shape[0], np.int64)
    earliest_kernel(atp_now, wanted, offsets, eta_ms, quantity, now_ms, out)
    return out


def warm_up() -> None:
    """Compile (or load from cache) the kernel before the first promise."""
    one = np.ones(1, np.int64)
    earliest_many(one, one, np.array([0, 1], np.int64), one, one, 0)
