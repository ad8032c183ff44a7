"""ExportPositions: the positions of chosen nodes streamed back as PositionChunks.

The export copies the positions it sends (on hand, reserved, safety stock, last source
sequence) straight out of the core's stock table, between two commands, then streams them
chunk by chunk. Their ATP is either the positions' own (the core's `position_rows`, no caller
rules; disabled nodes included, since the export lists every position) or, for a
named channel / segment under a rule set, what that caller is offered (`caller_atp`, one
availability query per ATP_BATCH_SKUS SKUs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt

from atpd.core.limits import Limits
from atpd.core.results import NotFound
from atpd.service import validation
from atpd.service.engine import Engine
from atpd.service.validation import InvalidArgument
from atpd.v1 import feeds_pb2

__all__ = ["ATP_BATCH_SKUS", "caller_atp", "export_chunks"]

# SKUs per availability query when an export computes ATP for a channel / segment.
ATP_BATCH_SKUS = 1000


async def export_chunks(
    engine: Engine, limits: Limits, request: feeds_pb2.ExportPositionsRequest
) -> AsyncIterator[feeds_pb2.PositionChunk]:
    """The positions `request` selects, as PositionChunks of at most chunk_rows rows: one
    consistent copy of the positions taken between two commands, then streamed chunk by chunk."""
    chunk_rows = request.chunk_rows or limits.max_load_chunk_rows
    if chunk_rows > limits.max_load_chunk_rows:
        raise InvalidArgument(
            "chunk_rows", f"must be <= max_load_chunk_rows ({limits.max_load_chunk_rows})"
        )
    channel = validation.name(request.channel, "channel")
    segment = validation.name(request.segment, "segment")
    prefix = validation.geo_prefix(request.geo_prefix)
    for i, node_id in enumerate(request.node_ids):
        validation.node_id(node_id, f"node_ids[{i}]")
    engine.catch_up()
    state = engine.state
    # --- one consistent copy, taken between two commands
    policy = state.policy(channel, segment) if channel or segment else None
    selected = state.node_ids.lookup_many(list(request.node_ids))
    for i, index in enumerate(selected):
        if index < 0:
            raise NotFound(f"node_ids[{i}]: unknown node {request.node_ids[i]!r}")
    nodes = sorted(set(selected)) if selected else list(range(len(state.nodes)))
    if prefix:
        under = {node.index for node in state.list_nodes(prefix)}
        if not under:
            raise NotFound(f"geo_prefix: no node under {prefix!r}")
        nodes = [n for n in nodes if n in under]
    columns = np.array(nodes, np.int64)
    positions = state.position_rows(nodes)
    rows, cols = positions.sku_rows, positions.node_columns
    on_hand, reserved, safety = positions.on_hand, positions.reserved, positions.safety
    sequences = positions.source_sequence
    sku_names = state.skus.names[: len(state.skus)]
    node_names = [state.nodes[n].node_id for n in nodes]
    # --- then chunk by chunk
    for start in range(0, len(rows), chunk_rows):
        end = start + chunk_rows
        sku_rows, sku_index = np.unique(rows[start:end], return_inverse=True)
        skus = [sku_names[r] for r in sku_rows.tolist()]
        if policy is None:
            atp = positions.atp[start:end]
        else:
            atp = caller_atp(engine, skus, sku_index, columns[cols[start:end]], channel, segment)
        yield feeds_pb2.PositionChunk(
            skus=skus,
            sku_index=sku_index.tolist(),
            node_ids=node_names,
            node_index=cols[start:end].tolist(),
            on_hand=on_hand[start:end].tolist(),
            safety_stock=safety[start:end].tolist(),
            reserved=reserved[start:end].tolist(),
            atp=atp.tolist(),
            last_source_sequence=sequences[start:end].tolist(),
        )


def caller_atp(
    engine: Engine,
    skus: list[str],
    sku_index: npt.NDArray[np.int64],
    nodes: npt.NDArray[np.int64],
    channel: str,
    segment: str,
) -> npt.NDArray[np.int64]:
    """ATP per row as `channel`/`segment` is offered it now, ATP_BATCH_SKUS SKUs at a time
    (each batch is one availability query, computed between two commands)."""
    atp = np.zeros(len(sku_index), np.int64)
    state = engine.state
    for first in range(0, len(skus), ATP_BATCH_SKUS):
        view = state.availability(skus[first : first + ATP_BATCH_SKUS], (), "", channel, segment)
        mine = (sku_index >= first) & (sku_index < first + ATP_BATCH_SKUS)
        atp[mine] = view.matrix[sku_index[mine] - first, nodes[mine]]
    return atp
