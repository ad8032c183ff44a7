"""Node pick capacity: orders picked per node per day, held by reservations of promised options.

The capacity itself is the network's `pick_capacity_orders` of the node (core/network.py; read
when a plan is reserved, so a new network applies at once); this table only counts, per
(node, day), the picks held by open reservations (`held`) and those spent by fulfilled ones
(`used`: the order was picked, the capacity is not given back). Days are epoch days of the
node's local calendar. Entries nobody holds any more are dropped once their day is past.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

PickKey = tuple[str, int]  # (node id, day)


@dataclass(slots=True)
class PickEntry:
    held: int = 0
    used: int = 0

    @property
    def taken(self) -> int:
        return self.held + self.used


class PickCapacity:
    def __init__(self) -> None:
        self.entries: dict[PickKey, PickEntry] = {}
        # (day, node): the purge order.
        self.by_day: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self.entries)

    def taken(self, node_id: str, day: int) -> int:
        entry = self.entries.get((node_id, day))
        return 0 if entry is None else entry.taken

    def hold(self, node_id: str, day: int) -> None:
        key = (node_id, day)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = PickEntry()
            self.by_day.add((day, node_id))
        entry.held += 1

    def give_back(self, node_id: str, day: int, used: bool) -> None:
        """A held pick is given back, or spent (`used`: the reservation was fulfilled)."""
        entry = self.entries[(node_id, day)]
        entry.held -= 1
        assert entry.held >= 0, (node_id, day)
        if used:
            entry.used += 1

    def set_row(self, node_id: str, day: int, held: int, used: int) -> None:
        """Snapshot load: one entry as it was."""
        assert (node_id, day) not in self.entries, (node_id, day)
        self.entries[(node_id, day)] = PickEntry(held, used)
        self.by_day.add((day, node_id))

    def purge_before(self, day: int) -> int:
        """Forget the entries of days before `day` that nothing holds; answers how many."""
        count = int(self.by_day.bisect_left((day, "")))
        if not count:
            return 0
        kept = []
        for entry_day, node_id in self.by_day[:count]:
            if self.entries[(node_id, entry_day)].held:
                kept.append((entry_day, node_id))
            else:
                del self.entries[(node_id, entry_day)]
        del self.by_day[:count]
        self.by_day.update(kept)
        return count - len(kept)

    def rows(self) -> list[tuple[str, int, int, int]]:
        """(node, day, held, used) in (day, node) order."""
        return [
            (node_id, day, self.entries[(node_id, day)].held, self.entries[(node_id, day)].used)
            for day, node_id in self.by_day
        ]

    def problems(self) -> list[str]:
        """Broken invariants (for checks.check_invariants)."""
        found = []
        if len(self.by_day) != len(self.entries):
            found.append(f"pick index has {len(self.by_day)} keys for {len(self.entries)}")
        for (node_id, day), entry in self.entries.items():
            if entry.held < 0 or entry.used < 0:
                found.append(f"pick capacity {node_id}/{day}: {entry}")
        return found
