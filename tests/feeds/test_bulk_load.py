"""FeedService.BulkLoad over a real channel: FULL and DELTA semantics with open reservations,
source sequences around a load, idempotency, and the load/export round trip."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from service.harness import (
    RPC_TIMEOUT_S,
    ServerThread,
    Stubs,
    reserve_request,
    rpc_error,
)

from atpd.service.feeds import FeedServicer
from atpd.v1 import (
    common_pb2,
    feeds_pb2,
    feeds_pb2_grpc,
    inventory_pb2,
    reservations_pb2,
    watch_pb2,
    watch_pb2_grpc,
)

from .support import (
    DELTA,
    FULL,
    WAIT_ROUNDS,
    WAIT_STEP_S,
    Gate,
    Row,
    chunk,
    commit,
    exported,
    header,
    load,
    rpc_code,
    set_stock,
)


def position(api: Stubs, sku: str, node_id: str) -> inventory_pb2.Position:
    request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
    result: inventory_pb2.Position = api.inventory.GetStock(request, timeout=RPC_TIMEOUT_S).position
    return result


def hold(api: Stubs, reservation_id: str, *lines: tuple[str, str, int]) -> None:
    response = api.reservations.Reserve(
        reserve_request(reservation_id, *lines), timeout=RPC_TIMEOUT_S
    )
    assert response.outcome == common_pb2.OUTCOME_OK, response


def test_delta_load_changes_only_listed_positions_and_keeps_holds(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """DELTA writes the listed positions; reserved is untouched, so ATP nets off open holds."""
    set_stock(api, "X", "paris", 10, 1)
    set_stock(api, "X", "lyon", 10, 1)
    set_stock(api, "Y", "paris", 4, 1)
    hold(api, "cart-1", ("X", "paris", 3), ("Y", "paris", 2))
    response = load(feeds, "d1", DELTA, [("X", "paris", 6, None), ("Z", "berlin", 7, 2)])
    assert (response.rows, response.positions_written, response.positions_changed) == (2, 2, 2)
    assert (response.positions_zeroed, response.skus_created, response.replayed) == (0, 1, False)
    x = position(api, "X", "paris")
    assert (x.on_hand, x.reserved, x.atp) == (6, 3, 3)
    assert position(api, "X", "lyon").on_hand == 10
    y = position(api, "Y", "paris")
    assert (y.on_hand, y.reserved, y.atp) == (4, 2, 2)
    z = position(api, "Z", "berlin")
    assert (z.on_hand, z.safety_stock, z.atp) == (7, 2, 5)
    server.check_invariants()


def test_full_load_zeroes_absent_positions_of_its_nodes_only_and_keeps_holds(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """FULL sets on_hand 0 where its nodes' positions are absent; holds stay, ATP shows them."""
    set_stock(api, "X", "paris", 10, 1)
    set_stock(api, "Y", "paris", 4, 1)
    set_stock(api, "Y", "lyon", 9, 1)
    hold(api, "cart-1", ("X", "paris", 3), ("Y", "paris", 2))
    response = load(feeds, "f1", FULL, [("X", "paris", 8, None)], nodes=["paris", "berlin"])
    assert (response.positions_written, response.positions_zeroed) == (1, 1)
    assert response.positions_changed == 2
    x = position(api, "X", "paris")
    assert (x.on_hand, x.reserved, x.atp) == (8, 3, 5)
    y = position(api, "Y", "paris")
    assert (y.on_hand, y.reserved, y.atp) == (0, 2, 0)
    assert position(api, "Y", "lyon").on_hand == 9  # lyon is not a node of this load
    assert ("Y", "berlin") not in exported(feeds)  # never stocked: stays absent
    release = reservations_pb2.ReleaseRequest(reservation_id="cart-1")
    api.reservations.Release(release, timeout=RPC_TIMEOUT_S)
    assert position(api, "Y", "paris").reserved == 0
    server.check_invariants()


def test_safety_stock_minus_one_or_absent_column_keeps_the_positions_safety_stock(
    api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """Safety stock is replaced only where a row gives one (-1 or no column: kept)."""
    load(feeds, "s1", DELTA, [("X", "paris", 5, 3), ("X", "lyon", 5, 2)])
    load(feeds, "s2", DELTA, [("X", "paris", 6, None), ("X", "lyon", 6, 1)], chunk_rows=1)
    assert position(api, "X", "paris").safety_stock == 3
    assert position(api, "X", "lyon").safety_stock == 1


def test_per_row_and_dictionary_encodings_load_the_same_positions(
    feeds: feeds_pb2_grpc.FeedServiceStub,
) -> None:
    """A chunk may list ids one per row or as a dictionary plus indexes: same positions."""
    rows: list[Row] = [
        (f"S{i}", node, i + 1, i % 3) for i in range(4) for node in ("paris", "soho")
    ]
    load(feeds, "plain", DELTA, rows, dictionary=False)
    plain = exported(feeds)
    load(feeds, "zero", FULL, [("S0", "paris", 0, 0)], nodes=["paris", "soho"])
    load(feeds, "dict", DELTA, rows, dictionary=True)
    dictionary = exported(feeds)
    assert {k: v[:4] for k, v in plain.items()} == {k: v[:4] for k, v in dictionary.items()}
    assert len(plain) == len(rows)


def test_load_then_export_then_full_load_of_the_export_is_exact(
    api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """Export returns exactly what was loaded; loading an export back changes nothing."""
    rows: list[Row] = [
        (f"SKU-{i:03d}", node, (i * 7 + len(node)) % 50, (i % 4) or None)
        for i in range(9)
        for node in ("paris", "lyon", "berlin", "soho")
        if (i + len(node)) % 3
    ]
    load(feeds, "r1", DELTA, rows, sequence=4)
    hold(api, "cart-9", (rows[0][0], rows[0][1], 1))
    first = exported(feeds)
    assert {k: (v[0], v[1]) for k, v in first.items()} == {
        (s, n): (q, f or 0) for s, n, q, f in rows
    }
    back: list[Row] = [(s, n, v[0], v[1]) for (s, n), v in first.items()]
    response = load(feeds, "r2", FULL, back, sequence=5, nodes=["paris", "lyon", "berlin", "soho"])
    assert (response.positions_changed, response.positions_zeroed) == (0, 0)
    second = exported(feeds)
    assert {k: v[:4] for k, v in second.items()} == {k: v[:4] for k, v in first.items()}
    assert all(v[4] == 5 for v in second.values())


def test_source_sequences_decide_between_a_full_load_and_deltas_that_race_it(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """During a FULL load at S=5, a newer SetStock survives it, an older one is overwritten;
    afterwards a count at <= 5 is STALE."""
    set_stock(api, "X", "paris", 10, 3)
    set_stock(api, "Y", "paris", 5, 8)  # newer than the load before it even starts

    def requests() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("full-5", FULL, 5, ["paris"])
        yield chunk([("X", "paris", 20, None), ("Y", "paris", 30, None)])
        # While the load streams (nothing of it applied yet):
        assert set_stock(api, "Z", "paris", 99, 9).outcome == common_pb2.OUTCOME_OK  # newer
        assert set_stock(api, "X", "paris", 11, 4).outcome == common_pb2.OUTCOME_OK  # older
        assert set_stock(api, "W", "paris", 6, 2).outcome == common_pb2.OUTCOME_OK  # absent
        assert position(api, "X", "paris").on_hand == 11
        yield chunk([("Z", "paris", 40, None)])
        yield commit(3, 2)

    response = feeds.BulkLoad(requests(), timeout=RPC_TIMEOUT_S)
    assert (response.positions_written, response.positions_stale) == (1, 2)
    assert response.positions_zeroed == 1
    expected = {"X": (20, 5), "Y": (5, 8), "Z": (99, 9), "W": (0, 5)}
    for sku, (on_hand, sequence) in expected.items():
        seen = position(api, sku, "paris")
        assert (seen.on_hand, seen.last_source_sequence) == (on_hand, sequence), sku
    assert set_stock(api, "X", "paris", 1, 5).outcome == common_pb2.OUTCOME_STALE
    assert set_stock(api, "W", "paris", 1, 6).outcome == common_pb2.OUTCOME_OK
    server.check_invariants()


def test_an_unsequenced_load_overwrites_and_keeps_sequences(
    api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """source_sequence 0 writes every listed position and leaves last sequences as they were."""
    set_stock(api, "X", "paris", 10, 7)
    response = load(feeds, "u1", DELTA, [("X", "paris", 3, None), ("Y", "paris", 4, None)])
    assert (response.positions_written, response.positions_stale) == (2, 0)
    x = position(api, "X", "paris")
    assert (x.on_hand, x.last_source_sequence) == (3, 7)
    assert set_stock(api, "X", "paris", 8, 8).outcome == common_pb2.OUTCOME_OK


def test_the_same_load_id_again_returns_the_stored_summary_without_applying(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """A retried load (same id, same rows, any chunking) is answered, not re-applied."""
    rows: list[Row] = [("X", "paris", 5, None), ("Y", "lyon", 6, 1), ("Z", "soho", 7, None)]
    first = load(feeds, "same", DELTA, rows, sequence=3)
    set_stock(api, "X", "paris", 1, 4)
    digest = server.digest()
    again = load(feeds, "same", DELTA, rows, sequence=3, chunk_rows=1)
    assert again.replayed and not first.replayed
    assert (again.rows, again.positions_written, again.positions_changed) == (3, 3, 3)
    assert server.digest() == digest
    assert position(api, "X", "paris").on_hand == 1


@pytest.mark.parametrize(
    ("rows", "sequence"),
    [
        ([("X", "paris", 5, None), ("Y", "lyon", 6, 1), ("Z", "soho", 8, None)], 3),
        ([("X", "paris", 5, None), ("Y", "lyon", 6, 1)], 3),
        ([("X", "paris", 5, None), ("Y", "lyon", 6, 1), ("Z", "soho", 7, None)], 4),
    ],
    ids=["one-quantity", "one-row-fewer", "other-sequence"],
)
def test_the_same_load_id_with_other_content_is_already_exists(
    server: ServerThread,
    feeds: feeds_pb2_grpc.FeedServiceStub,
    rows: list[Row],
    sequence: int,
) -> None:
    """Reusing a load id for a different load is refused, and nothing of it is applied."""
    load(
        feeds,
        "once",
        DELTA,
        [("X", "paris", 5, None), ("Y", "lyon", 6, 1), ("Z", "soho", 7, None)],
        sequence=3,
    )
    digest = server.digest()
    error = rpc_error(lambda: load(feeds, "once", DELTA, rows, sequence=sequence))
    assert rpc_code(error) == grpc.StatusCode.ALREADY_EXISTS
    assert "once" in (error.details() or "")
    assert server.digest() == digest


def _wait_streaming(server: ServerThread, servicer: FeedServicer, load_id: str) -> None:
    for _ in range(WAIT_ROUNDS):
        if server.call(lambda: load_id in servicer._streaming):
            return
        time.sleep(WAIT_STEP_S)
    raise AssertionError(f"load {load_id} never started streaming")


def test_a_second_stream_for_a_load_id_still_streaming_is_aborted(
    server: ServerThread,
    feeds: feeds_pb2_grpc.FeedServiceStub,
    servicers: list[FeedServicer],
) -> None:
    """Two concurrent streams with one load id: the second is ABORTED, the first applies."""
    gate = Gate.new()

    def slow() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("twice", DELTA)
        yield chunk([("X", "paris", 5, None)])
        gate.wait_here()
        yield chunk([("Y", "paris", 6, None)])
        yield commit(2, 2)

    first = feeds.BulkLoad.future(slow(), timeout=RPC_TIMEOUT_S)
    try:
        assert gate.reached.wait(RPC_TIMEOUT_S)
        _wait_streaming(server, servicers[-1], "twice")
        error = rpc_error(lambda: load(feeds, "twice", DELTA, [("Z", "paris", 1, None)]))
        assert rpc_code(error) == grpc.StatusCode.ABORTED
    finally:
        gate.opened.set()
    assert first.result(RPC_TIMEOUT_S).rows == 2
    assert set(exported(feeds)) == {("X", "paris"), ("Y", "paris")}


def test_nothing_of_a_load_is_visible_until_its_stream_ends(
    server: ServerThread,
    api: Stubs,
    feeds: feeds_pb2_grpc.FeedServiceStub,
    servicers: list[FeedServicer],
) -> None:
    """Reads during the stream see the state before the load; after the end, all of it."""
    set_stock(api, "X", "paris", 10, 1)
    before = server.digest()
    gate = Gate.new()

    def requests() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield header("atomic", FULL, 2, ["paris"])
        yield chunk([("Y", "paris", 5, None)])
        gate.wait_here()
        yield chunk([("Z", "paris", 6, None)])
        yield commit(2, 2)

    future = feeds.BulkLoad.future(requests(), timeout=RPC_TIMEOUT_S)
    try:
        assert gate.reached.wait(RPC_TIMEOUT_S)
        _wait_streaming(server, servicers[-1], "atomic")
        assert server.digest() == before
        assert position(api, "X", "paris").on_hand == 10
    finally:
        gate.opened.set()
    assert future.result(RPC_TIMEOUT_S).positions_zeroed == 1
    assert {k: v[0] for k, v in exported(feeds).items()} == {
        ("X", "paris"): 0,
        ("Y", "paris"): 5,
        ("Z", "paris"): 6,
    }


def test_a_watch_subscriber_is_told_to_resync_after_a_load(
    server: ServerThread, api: Stubs, feeds: feeds_pb2_grpc.FeedServiceStub
) -> None:
    """A load moves many positions at once: subscribers get one RESYNC_REQUIRED, not silence."""
    set_stock(api, "X", "paris", 10, 1)
    events = watch_pb2_grpc.WatchServiceStub(server.channel()).Watch(
        watch_pb2.WatchRequest(), timeout=RPC_TIMEOUT_S
    )
    try:
        assert next(events).kind == watch_pb2.WATCH_EVENT_KIND_SYNC
        load(feeds, "w1", DELTA, [("X", "paris", 3, None)])
        event = next(events)
        assert event.kind == watch_pb2.WATCH_EVENT_KIND_RESYNC_REQUIRED
        assert "BulkLoad" in event.reason
    finally:
        events.cancel()
