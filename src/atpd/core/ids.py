"""Dense integer ids for string identifiers (SKUs, nodes, geo prefixes).

Strings are mapped once at the edge; the core and its kernels work on dense ints that index
numpy arrays directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# SKU and node ids travel in URLs, CSV files and log lines: keep them printable and short.
# Every id pattern is anchored with \A...\Z and used with `fullmatch`: `$` would also match
# before a final newline, and an id ending in "\n" once got into the state and broke the
# newline-joined id lists of snapshots (every restart failed).
ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\Z")
NODE_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Reservation and supply ids come from order systems: longer, with a few more separators.
RESERVATION_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/@#-]{0,127}\Z")
# Bulk load ids also name load files on disk: no '/' or ':'.
LOAD_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# Channel, segment and rule names (the rules file's vocabulary).
NAME_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
TAG_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
# What an error about an unknown node id tells the operator to do (loads, supply, tills).
ADD_NODE_HINT = "add it first: `atpd node add`, or `atpd load nodes.csv --kind nodes`"


def is_sku_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def is_node_id(value: str) -> bool:
    return NODE_ID_PATTERN.fullmatch(value) is not None


def is_reservation_id(value: str) -> bool:
    """Reservation and supply ids."""
    return RESERVATION_ID_PATTERN.fullmatch(value) is not None


def is_load_id(value: str) -> bool:
    return LOAD_ID_PATTERN.fullmatch(value) is not None


def is_name(value: str) -> bool:
    """A channel, segment or rule name."""
    return NAME_PATTERN.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    return TAG_PATTERN.fullmatch(value) is not None


class IdMap:
    """A bidirectional map between string ids and dense ints 0..n-1, in insertion order."""

    __slots__ = ("_index", "_names")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def get(self, name: str) -> int:
        """The index of `name`, or -1 when it was never interned."""
        return self._index.get(name, -1)

    def getter(self) -> Callable[[str, int], int]:
        """The index's own `get(name, default)`, for hot loops: no Python frame per lookup
        (Reserve looks up two names per line). Valid as long as the map: its dict is never
        replaced."""
        return self._index.get

    def intern(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            index = len(self._names)
            self._index[name] = index
            self._names.append(name)
        return index

    def lookup_many(self, names: list[str]) -> list[int]:
        """The index of each name, -1 for names never interned (one dict pass)."""
        get = self._index.get
        return [get(name, -1) for name in names]

    def intern_many(self, names: list[str]) -> None:
        """Intern names known to be new and distinct, in order."""
        start = len(self._names)
        self._names.extend(names)
        self._index.update(zip(names, range(start, start + len(names)), strict=True))
        assert len(self._index) == len(self._names), "intern_many: a name was not new"

    def name(self, index: int) -> str:
        assert 0 <= index < len(self._names), index
        return self._names[index]

    @property
    def names(self) -> list[str]:
        """All names in index order (the live list: do not mutate)."""
        return self._names


def first_mismatch(pattern: re.Pattern[str], names: list[str], *, allow_empty: bool = False) -> int:
    """The index of the first name that `pattern` does not fully match, or -1 (used to check
    ids read back from disk, which must satisfy the same rules as ids from callers)."""
    fullmatch = pattern.fullmatch
    for index, name in enumerate(names):
        if fullmatch(name) is None and not (allow_empty and name == ""):
            return index
    return -1
