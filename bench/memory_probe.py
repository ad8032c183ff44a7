"""Child process of `memory_bytes_per_position`: fill a fresh AtpState with SKU_COUNT x
NODE_COUNT stock positions and print the process's RSS growth as one JSON object.

Run in its own interpreter so nothing else the benchmark run allocated is counted. How the
positions are written:
1. the nodes go in through `apply(UpsertNode)`;
2. every SKU is registered by a real `apply(SetStock)` at the first node (so the SKU id map,
   growth by doubling and the first position per SKU follow the production path);
3. the remaining (NODE_COUNT - 1) positions per SKU are written straight into the numpy arrays
   (on_hand, safety stock, source sequence, presence flag, position count), in chunks, as a
   bulk load would; this is the only shortcut, taken because 10M `apply` calls take minutes;
4. a sample of the bulk-written positions is then re-counted through `apply(SetStock)` to
   check that the core sees them as real positions.
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np

from atpd.core.commands import SetStock
from atpd.core.results import Outcome
from atpd.core.state import AtpState
from atpd.core.stock import FIELD_ON_HAND, FIELD_SAFETY
from bench.fixtures import synthetic_network

CHUNK_SKUS = 8192


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main(sku_count: int, node_count: int) -> dict[str, object]:
    gc.collect()
    rss_before_kib = status_kib("VmRSS")
    hwm_before_kib = status_kib("VmHWM")
    now_ms = 1_000_000
    state = AtpState()
    network = synthetic_network(node_count)
    for node in network:
        assert state.apply(node, now_ms).outcome is Outcome.OK
    first_node = network[0].node_id
    apply = state.apply
    for i in range(sku_count):
        result = apply(SetStock(f"SKU-{i:08d}", first_node, 10 + i % 7, 1), now_ms)
        assert result.outcome is Outcome.OK
    stock = state.stock
    assert stock.position_count == sku_count
    rng = np.random.default_rng(1)
    for start in range(0, sku_count, CHUNK_SKUS):
        stop = min(sku_count, start + CHUNK_SKUS)
        on_hand = rng.integers(0, 25, (stop - start, node_count - 1), dtype=np.int32)
        stock.cells[start:stop, FIELD_ON_HAND, 1:node_count] = on_hand
        stock.cells[start:stop, FIELD_SAFETY, 1:node_count] = on_hand // 10
        stock.source_seq[start:stop, 1:node_count] = 1
        stock.present[start:stop, 1:node_count] = 1
        del on_hand
    stock.position_count += sku_count * (node_count - 1)
    positions = stock.position_count
    assert positions == sku_count * node_count
    # Spot checks through the real path: re-counts (sequence 2) are accepted, repeats are STALE.
    for i in rng.integers(0, sku_count, 1000).tolist():
        node_id = network[1 + i % (node_count - 1)].node_id
        sku = f"SKU-{i:08d}"
        if state.position(sku, node_id).last_source_sequence == 1:
            assert apply(SetStock(sku, node_id, 5, 2), now_ms).outcome is Outcome.OK
        assert apply(SetStock(sku, node_id, 5, 2), now_ms).outcome is Outcome.STALE
    assert stock.position_count == positions
    total_atp = int(state.availability([f"SKU-{sku_count - 1:08d}"]).matrix[0, -1])
    assert total_atp > 0
    gc.collect()
    rss_after_kib = status_kib("VmRSS")
    hwm_after_kib = status_kib("VmHWM")
    delta = (rss_after_kib - rss_before_kib) * 1024
    return {
        "positions": positions,
        "skus": sku_count,
        "nodes": node_count,
        "rss_before_mib": round(rss_before_kib / 1024, 1),
        "rss_after_mib": round(rss_after_kib / 1024, 1),
        "rss_delta_bytes": delta,
        "bytes_per_position": round(delta / positions, 2),
        "peak_rss_delta_bytes_per_position": round(
            (hwm_after_kib - max(hwm_before_kib, rss_before_kib)) * 1024 / positions, 2
        ),
        "array_bytes_per_position": round(stock.nbytes() / positions, 2),
        "array_capacity": [stock.sku_capacity, stock.node_capacity],
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
