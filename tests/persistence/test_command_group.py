"""A CommandBatch's reservation commands are journaled together as CommandGroup records
(journal field 14): the codec writes exactly what protobuf would, refuses what a group may not
hold, and replaying the journal rebuilds the state the batches left, expiries and refusals
between the grouped commands included."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atpd.core.commands import (
    CommandGroup,
    Confirm,
    Fulfil,
    Line,
    Maker,
    NodeKind,
    Release,
    ReservationKind,
    Reserve,
    SetStock,
    UpsertNode,
)
from atpd.core.limits import Limits
from atpd.persistence.codec import (
    UndecodableRecord,
    decode_command,
    encode_command,
    encode_group,
    encode_reserve_request,
)
from atpd.persistence.framing import encode_record
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.journal_scan import segment_path
from atpd.persistence.recovery import recover
from atpd.service import validation
from atpd.service.batch_commands import BatchRunner
from atpd.service.durability import JournalLog
from atpd.service.engine import Engine
from atpd.v1 import batch_pb2, common_pb2, inventory_pb2, journal_pb2, reservations_pb2

pytestmark = pytest.mark.durable

NOW_MS = 1_700_000_000_000
LIMITS = Limits(max_lines_per_reservation=4, min_ttl_ms=1_000, max_ttl_ms=86_400_000)
NODES = {"paris": ("EU", "FR", "Paris"), "lyon": ("EU", "FR", "Lyon")}
SKUS = ("sku-1", "sku-2")
IDS = ("r1", "r2", "r3", "r4")

ids = st.from_regex(r"[a-z0-9][a-z0-9._:@#-]{0,19}", fullmatch=True)
lines = st.lists(
    st.builds(Line, st.sampled_from(SKUS), st.sampled_from(tuple(NODES)), st.integers(1, 9)),
    min_size=1,
    max_size=3,
    unique_by=lambda line: (line.sku, line.node_id),
).map(tuple)
makers = st.none() | st.builds(
    Maker, st.sampled_from(("web", "till-7")), st.sampled_from(("storefront", "store"))
)
grouped = st.one_of(
    st.builds(
        Reserve,
        ids,
        lines,
        st.integers(1_000, 100_000),
        st.sampled_from((ReservationKind.CART, ReservationKind.ORDER)),
        st.sampled_from(("", "web", "store")),
        st.sampled_from(("", "vip")),
        makers,
    ),
    st.builds(Confirm, ids),
    st.builds(Release, ids),
    st.builds(Fulfil, ids, st.just(()), st.booleans()),
)


@given(st.lists(grouped, min_size=1, max_size=8))
def test_group_record_is_what_protobuf_writes_and_reads_back(members: list[Reserve]) -> None:
    """encode_group concatenates its members' records into the bytes protobuf writes for the
    same CommandGroupRecord, and decoding gives the same commands back in order."""
    payloads = [encode_command(member) for member in members]
    expected = journal_pb2.JournalCommand()
    for payload in payloads:
        expected.group.commands.add().ParseFromString(payload)
    assert encode_group(payloads) == expected.SerializeToString()
    assert decode_command(encode_group(payloads)) == CommandGroup(tuple(members))


@given(
    reservation_id=ids,
    lines=lines,
    ttl_ms=st.integers(1_000, 86_400_000),
    kind=st.sampled_from((0, 1, 2)),
    channel=st.sampled_from(("", "web")),
    segment=st.sampled_from(("", "vip")),
)
def test_reserve_record_from_the_request_decodes_to_the_validated_command(
    reservation_id: str,
    lines: tuple[Line, ...],
    ttl_ms: int,
    kind: int,
    channel: str,
    segment: str,
) -> None:
    """The record a batch writes from a plain ReserveRequest's bytes replays as exactly the
    command validation made of that request."""
    request = reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[
            reservations_pb2.ReservationLine(sku=x.sku, node_id=x.node_id, quantity=x.quantity)
            for x in lines
        ],
        ttl_ms=ttl_ms,
        kind=kind,  # type: ignore[arg-type]
        channel=channel,
        segment=segment,
    )
    command = validation.reserve(request, LIMITS)
    assert decode_command(encode_reserve_request(request.SerializeToString())) == command


def test_group_holding_another_command_or_nothing_is_refused() -> None:
    """A group may hold only Reserve, Confirm, Fulfil and Release, and at least one."""
    stock = encode_command(SetStock("sku-1", "paris", 5, 1))
    with pytest.raises(UndecodableRecord, match=r"commands\[1\] is a SetStock"):
        decode_command(encode_group([encode_command(Release("r1")), stock]))
    with pytest.raises(UndecodableRecord, match="the group is empty"):
        decode_command(encode_group([]))


def test_group_member_refused_on_replay_stops_recovery(tmp_path: Path) -> None:
    """A group whose second command cannot be applied (a Release of an unknown id) stops
    recovery naming the record and the member, instead of keeping half of the group."""
    node = UpsertNode("paris", NodeKind.STORE, ("EU", "FR", "Paris"))
    stock = SetStock("sku-1", "paris", 5, 1)
    reserve = Reserve("r1", (Line("sku-1", "paris", 1),), 60_000)
    group = encode_group([encode_command(reserve), encode_command(Release("nope"))])
    data = b"".join(
        encode_record(sequence, NOW_MS, payload)
        for sequence, payload in enumerate(
            (encode_command(node), encode_command(stock), group), start=1
        )
    )
    tmp_path.mkdir(exist_ok=True)
    segment_path(tmp_path, 1).write_bytes(data)
    with pytest.raises(JournalCorrupt, match=r"record 3 .*commands\[1\] \(Release\) was rejected"):
        recover(tmp_path, limits=LIMITS, fsync_policy=FsyncPolicy.NONE, segment_bytes=1 << 20)


# ---------------------------------------------------------------------------- batches replayed


def reserve_command(rid: str, sku: str, node: str, quantity: int, ttl_ms: int, pos: bool) -> Any:
    kind = common_pb2.RESERVATION_KIND_POS_SALE if pos else common_pb2.RESERVATION_KIND_UNSPECIFIED
    request = reservations_pb2.ReserveRequest(
        reservation_id=rid,
        lines=[reservations_pb2.ReservationLine(sku=sku, node_id=node, quantity=quantity)],
        ttl_ms=ttl_ms,
        kind=kind,
    )
    return batch_pb2.BatchCommand(reserve=request)


batch_commands = st.one_of(
    st.builds(
        reserve_command,
        st.sampled_from(IDS),
        st.sampled_from(SKUS),
        st.sampled_from(tuple(NODES)),
        st.integers(0, 4),
        st.sampled_from((1_000, 5_000, 60_000)),
        st.booleans(),
    ),
    st.builds(
        lambda rid: batch_pb2.BatchCommand(
            release=reservations_pb2.ReleaseRequest(reservation_id=rid)
        ),
        st.sampled_from(IDS),
    ),
    st.builds(
        lambda rid: batch_pb2.BatchCommand(
            confirm=reservations_pb2.ConfirmRequest(reservation_id=rid)
        ),
        st.sampled_from(IDS),
    ),
    st.builds(
        lambda rid: batch_pb2.BatchCommand(
            fulfil=reservations_pb2.FulfilRequest(reservation_id=rid)
        ),
        st.sampled_from(IDS),
    ),
    st.builds(
        lambda sku, node, delta: batch_pb2.BatchCommand(
            adjust_stock=inventory_pb2.AdjustStockRequest(sku=sku, node_id=node, delta=delta)
        ),
        st.sampled_from(SKUS),
        st.sampled_from(tuple(NODES)),
        st.integers(-3, 3),
    ),
)


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def __call__(self) -> int:
        return self.now_ms


async def run_batches(
    data_dir: Path,
    batches: list[tuple[int, list[batch_pb2.BatchCommand]]],
    on_record: Callable[[int], None] | None = None,
) -> tuple[str, int, int]:
    """Apply `batches` (each after moving the clock) on an engine journaling into `data_dir`;
    (the live digest, records journaled, commands that changed the state)."""
    recovered = recover(
        data_dir, limits=LIMITS, fsync_policy=FsyncPolicy.NONE, segment_bytes=1 << 20
    )
    clock = Clock()
    journal: Journal = recovered.journal
    engine = Engine(recovered.state, JournalLog(journal), clock_ms=clock)
    engine.ready = True
    for node_id, path in NODES.items():
        await engine.execute(UpsertNode(node_id, NodeKind.STORE, path))
    for sku in SKUS:
        for node_id in NODES:
            await engine.execute(SetStock(sku, node_id, 6, 1))
    engine.on_record = on_record
    runner = BatchRunner(engine, None, 64)
    changed = 0
    for advance_ms, commands in batches:
        clock.now_ms += advance_ms
        applied = await runner.apply(commands, None)
        answer = await runner.finish(applied, None)
        changed += sum(1 for r in answer.results if r.WhichOneof("result") != "error")
    digest = engine.state.digest()
    records = journal.last_sequence
    await journal.aclose()
    return digest, records, changed


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from((0, 500, 2_000, 10_000)),
            st.lists(batch_commands, min_size=1, max_size=10),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_replay_of_batches_rebuilds_the_state_they_left(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[tuple[int, list[batch_pb2.BatchCommand]]],
) -> None:
    """Batches mixing reserves (some POS sales), confirms, releases, fulfils and stock
    adjustments, with holds expiring between them, journal group records that replay to the
    same state digest."""
    data_dir = tmp_path_factory.mktemp("group")
    digest, _, _ = asyncio.run(run_batches(data_dir, batches))
    replayed = recover(
        data_dir, limits=LIMITS, fsync_policy=FsyncPolicy.NONE, segment_bytes=1 << 20
    )
    replayed.journal.close()
    assert replayed.state.digest() == digest


def test_a_batch_of_reserves_is_one_record(tmp_path: Path) -> None:
    """Twenty-four reserves in one batch are journaled as one record, not twenty-four."""
    commands = [
        reserve_command(f"r{sku}-{node}-{i}", sku, node, 1, 60_000, False)
        for sku in SKUS
        for node in NODES
        for i in range(6)
    ]
    recorded: list[int] = []
    _, records, changed = asyncio.run(run_batches(tmp_path, [(0, commands)], recorded.append))
    assert changed == 24
    # Two nodes and four stock counts, one record each; then the whole batch.
    assert records == 6 + 1
    # Snapshots are scheduled by commands: the group record counts as its 24.
    assert recorded == [24]
