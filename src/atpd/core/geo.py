"""Geography: geo paths such as "EU/FR/Paris" and the integer arrays the roll-up kernels use.

Every prefix of every node's path ("EU", "EU/FR", "EU/FR/Paris") is interned as a geo id;
`node_geo[level, node]` is the geo id of the node's prefix at that level (level 0 is the widest),
or -1 when the node's path is shorter.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from atpd.core.ids import IdMap
from atpd.core.limits import MAX_GEO_DEPTH
from atpd.core.text import shown

# Anchored with \A...\Z and used with fullmatch: `$` also matches before a final newline.
GEO_SEGMENT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}\Z")


def parse_geo_path(path: str) -> tuple[str, ...]:
    """Split and check a geo path; raises ValueError saying what is wrong."""
    if not path:
        raise ValueError("is empty")
    segments = tuple(path.split("/"))
    if len(segments) > MAX_GEO_DEPTH:
        raise ValueError(f"has {len(segments)} levels, at most {MAX_GEO_DEPTH} allowed")
    for segment in segments:
        if not GEO_SEGMENT.fullmatch(segment):
            raise ValueError(
                f"segment {shown(segment)} is not 1-40 letters, digits, ' ', '.', '_', '-'"
            )
    return segments


def prefixes(segments: tuple[str, ...]) -> list[str]:
    return ["/".join(segments[: level + 1]) for level in range(len(segments))]


class Geography:
    __slots__ = ("_order", "geo_ids", "geo_level", "node_geo")

    def __init__(self, node_capacity: int) -> None:
        self.geo_ids = IdMap()
        self.geo_level: list[int] = []
        self.node_geo: npt.NDArray[np.int32] = np.full((MAX_GEO_DEPTH, node_capacity), -1, np.int32)
        self._order: list[int] | None = []

    def grow(self, node_capacity: int) -> None:
        old = self.node_geo
        assert node_capacity >= old.shape[1]
        self.node_geo = np.full((MAX_GEO_DEPTH, node_capacity), -1, np.int32)
        self.node_geo[:, : old.shape[1]] = old

    def place(self, node_index: int, segments: tuple[str, ...]) -> None:
        """Put a node at a geo path (replacing where it was)."""
        assert 1 <= len(segments) <= MAX_GEO_DEPTH
        self.node_geo[:, node_index] = -1
        for level, prefix in enumerate(prefixes(segments)):
            geo = self.geo_ids.get(prefix)
            if geo < 0:
                geo = self.geo_ids.intern(prefix)
                self.geo_level.append(level)
                self._order = None
            self.node_geo[level, node_index] = geo

    def ordered(self) -> list[int]:
        """Geo ids in tree order ("AM", "AM/US", "AM/US/Miami", "APAC", ...), for display."""
        if self._order is None:
            names = self.geo_ids.names
            self._order = sorted(range(len(names)), key=lambda geo: names[geo].split("/"))
        return self._order

    def lookup_prefix(self, prefix: str) -> tuple[int, int]:
        """(geo id, level) of a prefix, or (-1, -1) when no node was ever placed under it."""
        geo = self.geo_ids.get(prefix)
        if geo < 0:
            return -1, -1
        return geo, self.geo_level[geo]

    def __len__(self) -> int:
        return len(self.geo_ids)
