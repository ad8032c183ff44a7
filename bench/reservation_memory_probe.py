"""Child process of `memory_bytes_per_reservation`: hold N open 3-line reservations in a fresh
AtpState and print the process's RSS growth per reservation as one JSON object.

Run in its own interpreter so nothing else the benchmark run allocated is counted. The nodes and
stock (2,000 SKUs at each of 50 nodes, plenty on hand) are set up through `apply` and the RSS is
read; then N `Reserve` commands (ids "cart-00000001": 13 characters; 3 lines on distinct
positions, 1 unit each; TTL one hour; the clock 1 ms later each time, so nothing expires) go
through `apply` one at a time, each command dropped once applied, as a server would; then the
RSS is read again after a full collection. The difference, divided by N, is the figure: the
reservation table's rows, lines, ids, id index and expiry heap, with their growth slack.
"""

from __future__ import annotations

import gc
import json
import sys

from atpd.core.commands import Line, NodeKind, Reserve, SetStock, UpsertNode
from atpd.core.reservation_columns import memory_bytes
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from bench.memory_probe import status_kib

SKU_COUNT = 2_000
NODE_COUNT = 50
TTL_MS = 60 * 60 * 1000


def main(count: int) -> dict[str, object]:
    state = AtpState()
    now_ms = 1_764_000_000_000
    for node in range(NODE_COUNT):
        state.apply(UpsertNode(f"node-{node:02d}", NodeKind.STORE, ("EU", "FR")), now_ms)
    for sku in range(SKU_COUNT):
        for node in range(NODE_COUNT):
            state.apply(SetStock(f"SKU-{sku:05d}", f"node-{node:02d}", 10**6, 1), now_ms)
    skus = [f"SKU-{sku:05d}" for sku in range(SKU_COUNT)]
    nodes = [f"node-{node:02d}" for node in range(NODE_COUNT)]
    gc.collect()
    rss_before_kib = status_kib("VmRSS")
    apply = state.apply
    for i in range(count):
        now_ms += 1
        lines = tuple(
            Line(skus[(i + 7 * j) % SKU_COUNT], nodes[(i // 7 + j) % NODE_COUNT], 1)
            for j in range(3)
        )
        result = apply(Reserve(f"cart-{i:08d}", lines, TTL_MS), now_ms)
        assert result.outcome is Outcome.OK, result
    assert state.open_reservations == count
    del result, lines
    gc.collect()
    rss_after_kib = status_kib("VmRSS")
    delta = (rss_after_kib - rss_before_kib) * 1024
    parts = memory_bytes(state.reservations)
    return {
        "reservations": count,
        "lines_per_reservation": 3,
        "id_characters": len(f"cart-{0:08d}"),
        "rss_before_mib": round(rss_before_kib / 1024, 1),
        "rss_after_mib": round(rss_after_kib / 1024, 1),
        "rss_delta_bytes": delta,
        "bytes_per_reservation": round(delta / count, 1),
        "array_bytes_per_reservation": {k: round(v / count, 1) for k, v in parts.items()},
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
