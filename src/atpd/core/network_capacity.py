"""Carrier capacity: slots per (carrier service, origin node, date), as a TMS sets them, and
the slots held by reservations of promised options (core/plan_holds.py): `held` counts the
open reservations' slots (released or expired ones give theirs back), `used` the slots of
fulfilled ones (the carrier collected the parcel: the slot is spent, not given back).

One entry per (service, node, day) the TMS named; a date it never named has the service's
`default_daily_slots` (or no limit). Dates are days since 1970-01-01. Entries of dates past are
dropped as time passes (`purge_before`), and the table is bounded by `max_capacity_entries`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

CapacityKey = tuple[str, str, int]  # (service id, node id, day)


@dataclass(slots=True)
class CapacityEntry:
    slots: int
    held: int = 0
    used: int = 0
    # False: made by a hold on a date the TMS never named; `slots` is then the service's
    # default of the moment, and a later SetCarrierCapacity makes it explicit.
    explicit: bool = True

    @property
    def left(self) -> int:
        """Slots still free (never negative: a TMS may lower slots below what is held)."""
        return max(self.slots - self.held - self.used, 0)


class CarrierCapacity:
    def __init__(self) -> None:
        self.entries: dict[CapacityKey, CapacityEntry] = {}
        # (day, service, node): the purge order.
        self.by_day: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, service_id: str, node_id: str, day: int) -> CapacityEntry | None:
        return self.entries.get((service_id, node_id, day))

    def set(self, service_id: str, node_id: str, day: int, slots: int) -> int | None:
        """Set the slots of one entry; answers the previous slots (None: there was none)."""
        assert slots >= 0, slots
        key = (service_id, node_id, day)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = CapacityEntry(slots)
            self.by_day.add((day, service_id, node_id))
            return None
        previous = entry.slots if entry.explicit else None
        entry.slots = slots
        entry.explicit = True
        return previous

    def hold(self, service_id: str, node_id: str, day: int, default_slots: int) -> None:
        """One more slot held (the caller checked one is left)."""
        key = (service_id, node_id, day)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = CapacityEntry(default_slots, explicit=False)
            self.by_day.add((day, service_id, node_id))
        entry.held += 1

    def give_back(self, service_id: str, node_id: str, day: int, used: bool) -> None:
        """A held slot is given back, or spent (`used`: the reservation was fulfilled)."""
        entry = self.entries[(service_id, node_id, day)]
        entry.held -= 1
        assert entry.held >= 0, (service_id, node_id, day)
        if used:
            entry.used += 1

    def count_before(self, day: int) -> int:
        return int(self.by_day.bisect_left((day, "", "")))

    def purge_before(self, day: int) -> int:
        """Forget the entries of days before `day` (their pickups are over); answers how many.
        Entries an open reservation still holds stay until it is closed (its give-back needs
        them), and are forgotten by a later purge."""
        count = self.count_before(day)
        kept = []
        for entry_day, service_id, node_id in self.by_day[:count]:
            key = (service_id, node_id, entry_day)
            if self.entries[key].held:
                kept.append((entry_day, service_id, node_id))
            else:
                del self.entries[key]
        del self.by_day[:count]
        self.by_day.update(kept)
        return count - len(kept)

    def rows(self) -> list[tuple[str, str, int, int, int, int, bool]]:
        """(service, node, day, slots, held, used, explicit) in (day, service, node) order."""
        rows = []
        for day, service_id, node_id in self.by_day:
            entry = self.entries[(service_id, node_id, day)]
            rows.append(
                (service_id, node_id, day, entry.slots, entry.held, entry.used, entry.explicit)
            )
        return rows

    def problems(self) -> list[str]:
        """Broken invariants (for checks.check_invariants)."""
        found = []
        if len(self.by_day) != len(self.entries):
            found.append(f"capacity index has {len(self.by_day)} keys for {len(self.entries)}")
        for (service_id, node_id, day), entry in self.entries.items():
            if entry.slots < 0 or entry.held < 0 or entry.used < 0:
                found.append(f"capacity {service_id}/{node_id}/{day}: {entry}")
        return found
