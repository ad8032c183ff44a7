"""Recovery as the server does it: the recovered state equals the state before the stop.

In-process tests drive `open_durable_state` + Engine + Durability on a fake clock and compare
`AtpState.digest()` before and after recovery (journal only, snapshot + tail, final snapshot,
older snapshot after the newest is lost). Subprocess tests stop `atpd serve` with SIGTERM or
SIGKILL and compare everything it serves before and after the restart, and SIGKILL it while a
forked snapshot is being written.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import warnings
from functools import partial
from pathlib import Path

import grpc
import pytest

from atpd.config import Config
from atpd.core.commands import (
    AdjustStock,
    Command,
    Confirm,
    Fulfil,
    Line,
    NodeKind,
    Release,
    ReservationKind,
    Reserve,
    SetStock,
    UpsertNode,
)
from atpd.persistence.journal import FsyncPolicy
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.persistence.recovery import recover
from atpd.service.durability import SnapshotInfo
from atpd.v1 import common_pb2, inventory_pb2, reservations_pb2

from .server_support import (
    HELD,
    OPEN_STATUSES,
    RPC_TIMEOUT_S,
    Cell,
    DurableEngine,
    FakeClock,
    Stubs,
    assert_stock_consistent,
    child_pids,
    daemon,
    fetch_positions,
    fetch_reservations,
    held_by_cell,
    process_gone,
    recovered_state,
    reserve_request,
    run_cli,
    setup_world,
    status_of,
    subprocess_environment,
    total_atp,
    wait_until,
)

# ---------------------------------------------------------------------------- in-process

NODE_PATHS = {"ST-PAR-01": ("EU", "FR", "Paris"), "ST-BER-01": ("EU", "DE", "Berlin")}
NODE_PATHS["WH-US-01"] = ("NA", "US", "NYC")
CORE_SKUS = ("SKU-A", "SKU-B", "SKU-C")
LONG_TTL_MS = 3_600_000
SMALL_SEGMENT_BYTES = 2048


def world_commands() -> list[tuple[int, Command]]:
    """Nodes, then stock with safety stock in every cell."""
    commands: list[tuple[int, Command]] = [
        (1, UpsertNode(node_id, NodeKind.STORE, path)) for node_id, path in NODE_PATHS.items()
    ]
    for sku in CORE_SKUS:
        for node_id in NODE_PATHS:
            commands.append((1, SetStock(sku, node_id, 40, 1, safety_stock=1)))
    return commands


def traffic_commands(seed: int, count: int, prefix: str) -> list[tuple[int, Command]]:
    """A deterministic mix of every command, with clock advances that make holds expire;
    some are refused (unknown ids, stale counts, too little stock), as in real traffic."""
    rng = random.Random(seed)
    cells = [(sku, node_id) for sku in CORE_SKUS for node_id in NODE_PATHS]
    ids: list[str] = []
    commands: list[tuple[int, Command]] = []
    for index in range(count):
        advance_ms = rng.choice((0, 1, 5, 50, 400, 1500))
        roll = rng.random()
        if roll < 0.4 or not ids:
            reservation_id = f"{prefix}-{index:04d}"
            chosen = rng.sample(cells, rng.choice((1, 1, 2, 3)))
            lines = tuple(Line(sku, node, rng.randint(1, 4)) for sku, node in chosen)
            kind = ReservationKind.POS_SALE if rng.random() < 0.05 else ReservationKind.CART
            ttl_ms = rng.choice((1_000, 2_000, 5_000, LONG_TTL_MS))
            ids.append(reservation_id)
            command: Command = Reserve(reservation_id, lines, ttl_ms, kind, channel="web")
        elif roll < 0.55:
            command = Confirm(rng.choice(ids))
        elif roll < 0.7:
            command = Release(rng.choice(ids))
        elif roll < 0.8:
            command = Fulfil(rng.choice(ids))
        elif roll < 0.85:
            # A partial pick of the first line, releasing the rest.
            reservation_id = rng.choice(ids)
            command = Fulfil(reservation_id, (), release_remainder=True)
        elif roll < 0.92:
            sku, node_id = rng.choice(cells)
            command = AdjustStock(sku, node_id, rng.choice((-2, -1, 3, 5)), "recount")
        elif roll < 0.96:
            sku, node_id = rng.choice(cells)
            command = SetStock(sku, node_id, rng.randint(10, 60), rng.randint(1, count))
        else:
            command = Confirm(f"{prefix}-unknown-{index}")
        commands.append((advance_ms, command))
    return commands


def closing_command(tag: str) -> tuple[int, Command]:
    """A command that certainly changes the state, so the journal's last record carries the
    state's clock (see test_unchanged_last_command_keeps_the_recovered_clock_equal)."""
    return (1, AdjustStock(CORE_SKUS[0], "ST-PAR-01", 1, f"closing {tag}"))


async def take_snapshot(durable: DurableEngine) -> SnapshotInfo:
    """Durability.snapshot(): a forked child writes it, the server publishes it."""
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a threaded process; the child only writes the
        # snapshot and calls os._exit, which is the safe use the warning is not about.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        return await durable.durability.snapshot()


def snapshot_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("snapshot-*.snap"))


def segment_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("journal-*.seg"))


def config_for(data_dir: Path, segment_bytes: int = 64 * 1024 * 1024) -> Config:
    return Config(data_dir=data_dir, fsync="always", journal_segment_bytes=segment_bytes)


def test_journal_only_recovery_reproduces_the_digest(tmp_path: Path) -> None:
    """With no snapshot at all, replaying the journal gives back the exact state digest."""
    config = config_for(tmp_path)

    async def run() -> str:
        durable = DurableEngine(config, FakeClock())
        applied, rejected = await durable.run(
            [*world_commands(), *traffic_commands(1, 400, "a"), closing_command("a")]
        )
        assert applied > 300 and rejected > 0
        durable.state.check_invariants()
        digest = durable.state.digest()
        await durable.close(final_snapshot=False)
        return digest

    live_digest = asyncio.run(run())
    assert snapshot_files(tmp_path) == []
    state = recovered_state(config)
    state.check_invariants()
    assert state.digest() == live_digest
    # The workload really went through expiries, fulfilments and releases.
    statuses = {r.status.name for r in state.reservations.values()}
    assert {"HELD", "CONFIRMED", "EXPIRED", "RELEASED", "FULFILLED"} <= statuses, statuses


def test_final_snapshot_recovery_replays_nothing_and_matches(tmp_path: Path) -> None:
    """A graceful close snapshots everything: recovery replays 0 records, same digest."""
    config = config_for(tmp_path)

    async def run() -> str:
        durable = DurableEngine(config, FakeClock())
        await durable.run([*world_commands(), *traffic_commands(2, 300, "b")])
        digest = durable.state.digest()
        await durable.close(final_snapshot=True)
        return digest

    live_digest = asyncio.run(run())
    assert len(snapshot_files(tmp_path)) == 1
    recovered = recover(
        tmp_path,
        limits=config.limits,
        fsync_policy=FsyncPolicy.ALWAYS,
        segment_bytes=config.journal_segment_bytes,
    )
    try:
        assert recovered.replayed == 0
        assert recovered.state.digest() == live_digest
    finally:
        recovered.journal.close()


def test_snapshot_plus_tail_equals_journal_only(tmp_path: Path) -> None:
    """Snapshot + tail and the whole journal alone recover the same digest as the live state."""
    config = config_for(tmp_path)

    async def run() -> tuple[str, int]:
        durable = DurableEngine(config, FakeClock())
        await durable.run([*world_commands(), *traffic_commands(3, 250, "c")])
        info = await take_snapshot(durable)
        await durable.run([*traffic_commands(4, 250, "d"), closing_command("d")])
        digest = durable.state.digest()
        await durable.close(final_snapshot=False)
        return digest, info.last_sequence

    live_digest, snapshot_sequence = asyncio.run(run())
    assert snapshot_sequence > 0
    # One big segment: a snapshot never removes the tail segment, so the journal is whole.
    assert [path.name for path in segment_files(tmp_path)] == ["journal-00000000000000000001.seg"]

    recovered = recover(
        tmp_path,
        limits=config.limits,
        fsync_policy=FsyncPolicy.ALWAYS,
        segment_bytes=config.journal_segment_bytes,
    )
    try:
        assert recovered.snapshot_sequence == snapshot_sequence
        assert recovered.replayed > 0
        assert recovered.state.digest() == live_digest
    finally:
        recovered.journal.close()

    for path in snapshot_files(tmp_path):
        path.unlink()
    journal_only = recovered_state(config)
    assert journal_only.digest() == live_digest


def test_older_snapshot_and_kept_segments_recover_after_newest_is_lost(tmp_path: Path) -> None:
    """Losing or damaging the newest snapshot recovers the same digest; losing both is refused."""
    config = config_for(tmp_path, SMALL_SEGMENT_BYTES)

    async def run() -> tuple[str, list[int]]:
        durable = DurableEngine(config, FakeClock())
        sequences = []
        await durable.run(world_commands())
        for part in range(4):
            await durable.run(traffic_commands(10 + part, 150, f"e{part}"))
            sequences.append((await take_snapshot(durable)).last_sequence)
        await durable.run([*traffic_commands(20, 150, "tail"), closing_command("tail")])
        digest = durable.state.digest()
        await durable.close(final_snapshot=False)
        return digest, sequences

    live_digest, sequences = asyncio.run(run())
    kept = snapshot_files(tmp_path)
    assert [int(path.name[9:29]) for path in kept] == sequences[-2:]
    segments = segment_files(tmp_path)
    first_kept_sequence = int(segments[0].name[8:28])
    # Earlier segments went away, but none that the older kept snapshot still needs.
    assert 1 < first_kept_sequence <= sequences[-2] + 1
    assert recovered_state(config).digest() == live_digest

    newest = kept[-1]
    damaged = bytearray(newest.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    newest.write_bytes(bytes(damaged))
    assert recovered_state(config).digest() == live_digest  # falls back to the older one

    newest.unlink()
    assert recovered_state(config).digest() == live_digest

    kept[0].unlink()
    with pytest.raises(JournalCorrupt, match="records are missing"):
        recovered_state(config)


def test_unchanged_last_command_keeps_the_recovered_clock_equal(tmp_path: Path) -> None:
    """A trailing answer that changed nothing (refused Reserve) leaves recovery digest-equal."""
    config = config_for(tmp_path)

    async def run() -> tuple[str, int]:
        durable = DurableEngine(config, FakeClock())
        await durable.run(world_commands())
        lines = (Line(CORE_SKUS[0], "ST-PAR-01", 1_000),)
        # INSUFFICIENT_STOCK is an answer, not a change: nothing is journaled for it.
        await durable.run([(250, Reserve("too-big", lines, LONG_TTL_MS))])
        digest = durable.state.digest()
        now_ms = durable.state.now_ms
        await durable.close(final_snapshot=False)
        return digest, now_ms

    live_digest, live_now_ms = asyncio.run(run())
    state = recovered_state(config)
    assert "too-big" not in state.reservations
    assert (state.now_ms, state.digest()) == (live_now_ms, live_digest)


# ---------------------------------------------------------------------------- subprocess

SERVER_NODES = {"QA-PAR-01": "EU/FR/Paris", "QA-MIL-01": "EU/IT/Milan"}
SERVER_SKUS = ("BAG-01", "SHOE-02", "SCARF-03")
SERVER_CELLS: tuple[Cell, ...] = tuple((s, n) for s in SERVER_SKUS for n in SERVER_NODES)
SNAPSHOT_KILL_ATTEMPTS = 4
STAGING_TIMEOUT_S = 60.0
WRITER_WARM_UP = 20
# The child writes for a few hundred milliseconds: poll often enough to see it.
STAGING_POLL_S = 0.002


def grpc_traffic(stubs: Stubs, seed: int, count: int, prefix: str) -> list[str]:
    """Sequential reserve / confirm / fulfil / release / adjust calls with one-hour holds (so
    that nothing expires across a restart); returns every reservation id sent."""
    rng = random.Random(seed)
    ids: list[str] = []
    reservations = stubs.reservations
    for index in range(count):
        roll = rng.random()
        if roll < 0.45 or not ids:
            reservation_id = f"{prefix}-{index:04d}"
            cells = rng.sample(SERVER_CELLS, rng.choice((1, 2)))
            lines = [(sku, node_id, rng.randint(1, 3)) for sku, node_id in cells]
            request = reserve_request(reservation_id, lines, LONG_TTL_MS)
            reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
            ids.append(reservation_id)
        elif roll < 0.65:
            request_id = rng.choice(ids)
            reservations.Confirm(
                reservations_pb2.ConfirmRequest(reservation_id=request_id), timeout=RPC_TIMEOUT_S
            )
        elif roll < 0.8:
            request_id = rng.choice(ids)
            reservations.Release(
                reservations_pb2.ReleaseRequest(reservation_id=request_id), timeout=RPC_TIMEOUT_S
            )
        elif roll < 0.9:
            request_id = rng.choice(ids)
            reservations.Fulfil(
                reservations_pb2.FulfilRequest(reservation_id=request_id), timeout=RPC_TIMEOUT_S
            )
        else:
            sku, node_id = rng.choice(SERVER_CELLS)
            adjust = inventory_pb2.AdjustStockRequest(
                sku=sku, node_id=node_id, delta=rng.choice((2, 5)), reason="delivery"
            )
            stubs.inventory.AdjustStock(adjust, timeout=RPC_TIMEOUT_S)
    return ids


def served_view(stubs: Stubs, ids: list[str]) -> tuple[object, ...]:
    """Everything the server says about these reservations and the world's stock."""
    reservations = fetch_reservations(stubs, ids)
    positions = fetch_positions(stubs, SERVER_CELLS)
    open_seen = [r for r in reservations.values() if r is not None and r.status in OPEN_STATUSES]
    assert_stock_consistent(positions, held_by_cell(open_seen))
    status = status_of(stubs)
    assert status.open_reservations == len(open_seen)
    return (
        {key: value.SerializeToString() if value else None for key, value in reservations.items()},
        {key: value.SerializeToString() for key, value in positions.items()},
        total_atp(stubs, SERVER_SKUS),
        (status.nodes, status.skus, status.positions, status.open_reservations),
    )


@pytest.mark.parametrize("stop", ["sigterm", "sigkill", "sigkill_after_snapshot"])
def test_restart_serves_the_same_views(tmp_path: Path, stop: str) -> None:
    """After SIGTERM (final snapshot) or SIGKILL (journal tail) a restart serves the same views."""
    data_dir = tmp_path / "data"
    with daemon(data_dir, tmp_path) as server:
        stubs = server.start()
        setup_world(stubs, SERVER_NODES, SERVER_SKUS, on_hand=50, safety_stock=1)
        ids = grpc_traffic(stubs, 7, 150, "first")
        snapshot_sequence = 0
        if stop == "sigkill_after_snapshot":
            result = run_cli("snapshot", "--target", server.target)
            assert result.returncode == 0, result.stderr
            assert "snapshot at sequence" in result.stdout, result.stdout
            snapshot_sequence = int(result.stdout.split("snapshot at sequence ")[1].split(":")[0])
            ids += grpc_traffic(stubs, 8, 100, "second")
        before = served_view(stubs, ids)
        journal_sequence = status_of(stubs).journal_sequence
        if stop == "sigterm":
            assert server.terminate() == 0
            assert "stopped" in server.log_text()
        else:
            server.kill()

        stubs = server.start()
        assert served_view(stubs, ids) == before
        log = server.log_text()
        if stop == "sigterm":
            # The final snapshot covers everything: nothing left to replay.
            assert f"(sequence {journal_sequence}), 0 journal records replayed" in log, log
        else:
            replayed = journal_sequence - snapshot_sequence
            assert f"(sequence {snapshot_sequence}), {replayed} journal records replayed" in log
        server.kill()


def staging_temp_files(data_dir: Path) -> list[Path]:
    staging = data_dir / ".staging"
    try:
        return [path for path in staging.iterdir() if path.is_file()]
    except FileNotFoundError:
        return []


class Writer:
    """A client thread reserving one unit at a time until the server goes away."""

    def __init__(self, stubs: Stubs, prefix: str) -> None:
        self.stubs = stubs
        self.prefix = prefix
        self.acknowledged: dict[str, tuple[str, str, int]] = {}
        self.unanswered: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"writer-{prefix}")

    def run(self) -> None:
        for index in range(1_000_000):
            if self.stop.is_set():
                return
            sku, node_id = SERVER_CELLS[index % len(SERVER_CELLS)]
            reservation_id = f"{self.prefix}-{index:06d}"
            request = reserve_request(reservation_id, [(sku, node_id, 1)], LONG_TTL_MS)
            try:
                response = self.stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
            except grpc.RpcError:
                self.unanswered.append(reservation_id)
                return
            if response.outcome != common_pb2.OUTCOME_OK:
                self.errors.append(f"{reservation_id}: {response}")
                return
            self.acknowledged[reservation_id] = (sku, node_id, 1)

    def running_with_acknowledgements(self) -> bool:
        """True once some reservations are acknowledged (or the thread stopped early)."""
        return len(self.acknowledged) >= WRITER_WARM_UP or not self.thread.is_alive()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(RPC_TIMEOUT_S * 3)
        assert not self.thread.is_alive(), "writer thread hung"


def test_sigkill_during_a_snapshot_write_recovers_everything(tmp_path: Path) -> None:
    """SIGKILL mid snapshot write: child dies, staging is cleaned, every acked hold survives."""
    data_dir = tmp_path / "data"
    acknowledged: dict[str, tuple[str, str, int]] = {}
    unanswered: list[str] = []
    hits = 0
    with daemon(data_dir, tmp_path) as server:
        stubs = server.start(["--demo"])  # ~26 MB of state: a snapshot takes a while
        # Warehouses: the demo rules promise warehouse stock to every channel.
        warehouse = common_pb2.NODE_KIND_WAREHOUSE
        setup_world(stubs, SERVER_NODES, SERVER_SKUS, on_hand=100_000, kind=warehouse)
        for attempt in range(SNAPSHOT_KILL_ATTEMPTS):
            published_before = snapshot_files(data_dir)
            snapshot_cli: subprocess.Popen[str] | None = None
            children: set[int] = set()
            with Writer(stubs, f"w{attempt}") as writer:
                wait_until(writer.running_with_acknowledgements, 60.0, "acknowledgements")
                assert not writer.errors and not writer.unanswered, writer.errors
                try:
                    snapshot_cli = subprocess.Popen(
                        [sys.executable, "-m", "atpd.cli", "snapshot", "--target", server.target],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=subprocess_environment(),
                    )

                    def writing(pid: int = server.pid, seen: set[int] = children) -> bool:
                        seen.update(child_pids(pid))
                        return bool(staging_temp_files(data_dir))

                    wait_until(writing, STAGING_TIMEOUT_S, "the snapshot child", STAGING_POLL_S)
                    server.kill()
                    cli_out, cli_err = snapshot_cli.communicate(timeout=60)
                finally:
                    if snapshot_cli is not None and snapshot_cli.poll() is None:
                        snapshot_cli.kill()
                        snapshot_cli.wait()
            acknowledged.update(writer.acknowledged)
            unanswered += writer.unanswered
            assert not writer.errors, writer.errors
            # The snapshot child dies with its parent (PR_SET_PDEATHSIG), writing nothing more.
            assert children, "no snapshot child seen"
            for child in children:
                wait_until(partial(process_gone, child), 30.0, f"snapshot child {child} to die")
            hit = bool(staging_temp_files(data_dir))
            if hit:
                hits += 1
                assert snapshot_cli.returncode != 0, (cli_out, cli_err)
                assert "UNAVAILABLE" in cli_err, cli_err
                assert snapshot_files(data_dir) == published_before

            stubs = server.start()
            assert not (data_dir / ".staging").exists()
            reservations = fetch_reservations(stubs, [*acknowledged, *unanswered])
            for reservation_id, expected_line in acknowledged.items():
                reservation = reservations[reservation_id]
                assert reservation is not None and reservation.status == HELD, reservation_id
                lines = [(x.sku, x.node_id, x.quantity) for x in reservation.lines]
                assert lines == [expected_line]
            for reservation_id in unanswered:
                reservation = reservations[reservation_id]
                assert reservation is None or reservation.status == HELD
            present = [r for r in reservations.values() if r is not None]
            positions = fetch_positions(stubs, SERVER_CELLS)
            assert_stock_consistent(positions, held_by_cell(present))
            if hit:
                break
        server.kill()
    assert hits == 1, "no SIGKILL landed while the snapshot was being written"
