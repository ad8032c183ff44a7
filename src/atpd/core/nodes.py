"""Nodes: stores, warehouses and the like, where stock sits."""

from __future__ import annotations

from dataclasses import dataclass

from atpd.core.commands import NodeKind


@dataclass(slots=True)
class Node:
    node_id: str
    index: int
    kind: NodeKind
    geo_path: tuple[str, ...]
    ships: bool
    pickup: bool
    enabled: bool
    tags: tuple[str, ...]

    @property
    def geo(self) -> str:
        return "/".join(self.geo_path)

    def under(self, prefix: tuple[str, ...]) -> bool:
        """True when the node's geo path starts with `prefix` (whole segments)."""
        return self.geo_path[: len(prefix)] == prefix
