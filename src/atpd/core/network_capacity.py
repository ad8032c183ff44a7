"""Carrier capacity: slots per (carrier service, origin node, date), as a TMS sets them, and
the slots held by reservations of promised options (filled in by the promise reservations;
`held` stays 0 until then).

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

    @property
    def left(self) -> int:
        """Slots still free (never negative: a TMS may lower slots below what is held)."""
        return max(self.slots - self.held, 0)


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
        previous = entry.slots
        entry.slots = slots
        return previous

    def count_before(self, day: int) -> int:
        return int(self.by_day.bisect_left((day, "", "")))

    def purge_before(self, day: int) -> int:
        """Forget the entries of days before `day` (their pickups are over); answers how many."""
        count = self.count_before(day)
        for entry_day, service_id, node_id in self.by_day[:count]:
            del self.entries[(service_id, node_id, entry_day)]
        del self.by_day[:count]
        return count

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """(service, node, day, slots, held) in (day, service, node) order."""
        return [
            (service_id, node_id, day, *self._pair(service_id, node_id, day))
            for day, service_id, node_id in self.by_day
        ]

    def _pair(self, service_id: str, node_id: str, day: int) -> tuple[int, int]:
        entry = self.entries[(service_id, node_id, day)]
        return entry.slots, entry.held

    def problems(self) -> list[str]:
        """Broken invariants (for checks.check_invariants)."""
        found = []
        if len(self.by_day) != len(self.entries):
            found.append(f"capacity index has {len(self.by_day)} keys for {len(self.entries)}")
        for (service_id, node_id, day), entry in self.entries.items():
            if entry.slots < 0 or entry.held < 0:
                found.append(f"capacity {service_id}/{node_id}/{day}: {entry}")
        return found
