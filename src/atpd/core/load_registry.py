"""The applied bulk loads the state remembers by id, so a retried load answers its summary."""

from __future__ import annotations

import json
from dataclasses import asdict

from atpd.core.load_command import LoadMode, LoadSummary


class LoadRegistry:
    """Summaries of applied loads by id, oldest first, bounded by max_remembered_loads."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, LoadSummary] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, load_id: str) -> LoadSummary | None:
        return self._by_id.get(load_id)

    def add(self, summary: LoadSummary, keep: int) -> None:
        assert summary.load_id not in self._by_id, summary.load_id
        assert keep >= 1
        self._by_id[summary.load_id] = summary
        for _ in range(len(self._by_id) - keep):
            del self._by_id[next(iter(self._by_id))]
        assert len(self._by_id) <= keep

    def to_json(self) -> bytes:
        rows = []
        for summary in self._by_id.values():
            row = asdict(summary)
            row["mode"] = int(summary.mode)
            row["node_ids"] = list(summary.node_ids)
            rows.append(row)
        return json.dumps(rows, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LoadRegistry:
        registry = cls()
        for row in json.loads(data):
            row["mode"] = LoadMode(row["mode"])
            row["node_ids"] = tuple(row["node_ids"])
            summary = LoadSummary(**row)
            registry._by_id[summary.load_id] = summary
        return registry
