"""ExportPositions: filters, chunking, errors, and ATP as a channel / segment is offered it."""

from __future__ import annotations

import grpc
from service.harness import RPC_TIMEOUT_S, ServerThread, Stubs, rpc_error

from atpd.core.commands import SetRules
from atpd.v1 import availability_pb2, feeds_pb2, feeds_pb2_grpc

from .support import DELTA, Row, exported, load, rpc_code

ROWS: list[Row] = [
    (f"SKU-{i}", node, 3 + i, i % 2)
    for i in range(6)
    for node in ("paris", "lyon", "berlin", "soho")
]
RULES = """
version = "t-1"
[defaults]
channel = "web"
segment = "standard"
[policy]
[channels.web]
buffer = 1
[channels.marketplace]
nodes = { include = ["paris", "lyon"] }
buffer = 2
[segments.standard]
"""


def test_export_streams_every_position_in_bounded_chunks(
    feeds: feeds_pb2_grpc.FeedServiceStub,
) -> None:
    """chunk_rows bounds each chunk; together they hold every position once."""
    load(feeds, "all", DELTA, ROWS, chunk_rows=10)
    request = feeds_pb2.ExportPositionsRequest(chunk_rows=7)
    sizes = [len(c.on_hand) for c in feeds.ExportPositions(request, timeout=RPC_TIMEOUT_S)]
    assert sizes == [7, 7, 7, 3]
    assert len(exported(feeds)) == len(ROWS)


def test_export_filters_by_nodes_and_geo_prefix(feeds: feeds_pb2_grpc.FeedServiceStub) -> None:
    """node_ids and geo_prefix narrow the export to those nodes."""
    load(feeds, "all", DELTA, ROWS, chunk_rows=10)
    assert {n for _, n in exported(feeds, node_ids=["soho", "lyon"])} == {"soho", "lyon"}
    assert {n for _, n in exported(feeds, geo_prefix="EU/FR")} == {"paris", "lyon"}


def test_export_refuses_unknown_nodes_and_bad_requests(
    feeds: feeds_pb2_grpc.FeedServiceStub,
) -> None:
    """Unknown node or geo prefix is NOT_FOUND; an oversized chunk_rows is INVALID_ARGUMENT."""
    cases = [
        (feeds_pb2.ExportPositionsRequest(node_ids=["oslo"]), grpc.StatusCode.NOT_FOUND),
        (feeds_pb2.ExportPositionsRequest(geo_prefix="AF"), grpc.StatusCode.NOT_FOUND),
        (feeds_pb2.ExportPositionsRequest(chunk_rows=11), grpc.StatusCode.INVALID_ARGUMENT),
        (feeds_pb2.ExportPositionsRequest(channel="Web!"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, code in cases:

        def export(r: feeds_pb2.ExportPositionsRequest = request) -> object:
            return list(feeds.ExportPositions(r, timeout=RPC_TIMEOUT_S))

        error = rpc_error(export)
        assert rpc_code(error) == code, request


def test_export_atp_for_a_channel_is_what_availability_offers_it(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """With a channel, each position's ATP equals GetAvailability's per-node ATP for it."""
    load(feeds, "all", DELTA, ROWS, chunk_rows=10)
    engine = server.app.engine
    server.call(lambda: engine.state.apply(SetRules(RULES, "test"), engine.now_ms()))
    own = exported(feeds)
    for channel in ("web", "marketplace"):
        offered = exported(feeds, channel=channel)
        assert {k: v[:3] for k, v in offered.items()} == {k: v[:3] for k, v in own.items()}
        request = availability_pb2.GetAvailabilityRequest(
            skus=sorted({s for s, _ in own}), channel=channel, include_nodes=True
        )
        reply = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
        per_node = {(i.sku, n.node_id): n.atp for i in reply.items for n in i.nodes}
        for key, values in offered.items():
            assert values[3] == per_node.get(key, 0), (channel, key)
    assert offered[("SKU-0", "soho")][3] == 0  # marketplace does not see soho
    assert own[("SKU-0", "soho")][3] == 3
