"""Power-cut cycles: `atpd serve` on the forgetful filesystem, SIGKILLed *and* powered off.

Client threads reserve, confirm, fulfil and release (the SIGKILL crash test's clients, see
tests/persistence/test_server_crash.py), a stock thread sets and adjusts stock, a load thread
streams bulk loads, and snapshots and segment rotations happen every few dozen records. At a
random moment the filesystem loses power (everything not fsynced is gone, the last unsynced
write possibly torn) and the daemon is SIGKILLed; the filesystem is remounted from what was
durable, the directory recovered in-process (consistent, nothing a client never sent), and the
daemon restarted and checked against every answer the clients got.

`always` must lose nothing acknowledged. `everysec` may lose what was acknowledged in the
last sync interval before the cut: the loss is counted, and each lost answer must be younger
than the documented window. `none` may lose anything unsynced, but start-up must then succeed
or refuse with one clear line naming what to repair (and `--repair` then starts).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from persistence.server_support import (
    RPC_TIMEOUT_S,
    Daemon,
    Stubs,
    setup_world,
)
from persistence.test_server_crash import (
    CELLS,
    CLIENT_THREADS,
    JOIN_TIMEOUT_S,
    NODES,
    ON_HAND,
    SAFETY_STOCK,
    SKUS,
    Client,
    Ledger,
    Sent,
    allowed_statuses,
    check_offline,
    check_server,
    consistent_read,
)

from atpd.config import Config
from atpd.persistence.journal_errors import JournalCorrupt
from atpd.v1 import admin_pb2, common_pb2, feeds_pb2, feeds_pb2_grpc, inventory_pb2

from .conftest import requires_fuse
from .forgetful_fs import ForgetfulMount

pytestmark = [pytest.mark.durable, requires_fuse]

STOCK_SKUS = ("STOCK-A", "STOCK-B")
STOCK_CELLS = tuple((sku, node_id) for sku in STOCK_SKUS for node_id in NODES)
LOAD_ROWS = 6
TRAFFIC_SECONDS = (0.2, 1.5)
TEAR_SHARE = 0.5
STOCK_PAUSE_S = 0.005
LOAD_PAUSE_S = (0.05, 0.3)
OPERATIONS_MAX = 100_000
# The journal's everysec interval (journal.SYNC_INTERVAL_S_DEFAULT) plus the time one fsync
# and the FUSE round trips may take on a loaded machine: no lost answer may be older.
EVERYSEC_WINDOW_S = 1.0 + 1.0
CI_CYCLES = 6
CONFIG_TOML = """
snapshot_every_records = 60
snapshot_every_seconds = 1.0
journal_segment_bytes = 4096
"""
SEGMENT_BYTES = 4096
RESULTS_FILE_ENVIRONMENT = "ATPD_POWER_CUT_RESULTS"


@dataclass
class StockCell:
    """What the stock thread knows about one (sku, node)."""

    on_hand: int
    acked_at: float = 0.0
    pending: int | None = None  # the on_hand a request sent without an answer would leave
    last_source_sequence: int = 1


@dataclass
class LoadSent:
    load_id: str
    rows: tuple[tuple[str, str, int], ...]
    acked_at: float | None = None  # None: no answer came back


@dataclass
class PowerLedger:
    """Everything the clients saw, across cycles, and what the cuts cost."""

    crash: Ledger
    stock: dict[tuple[str, str], StockCell] = field(default_factory=dict)
    loads: list[LoadSent] = field(default_factory=list)
    # Reservation id -> when its newest answer arrived (time.monotonic()).
    acked_at: dict[str, float] = field(default_factory=dict)
    lost: int = 0
    lost_age_max_s: float = 0.0
    repaired_starts: int = 0
    cuts: int = 0
    torn_cuts: int = 0


class TimedClient(Client):
    """The crash test's client, noting when each answer arrived (for the everysec window)."""

    acked_at: dict[str, float]

    def reserve(self) -> None:
        super().reserve()
        self.acked_at[self.new[-1].reservation_id] = time.monotonic()

    def lifecycle(self, sent: Sent, action: str) -> None:
        super().lifecycle(sent, action)
        self.acked_at[sent.reservation_id] = time.monotonic()


class StockClient:
    """SetStock and AdjustStock on cells no reservation touches, one request at a time."""

    def __init__(self, stubs: Stubs, ledger: PowerLedger, seed: int, stop: threading.Event):
        self.stubs = stubs
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.stop = stop
        self.errors: list[str] = []

    def run(self) -> None:
        for _ in range(OPERATIONS_MAX):
            if self.stop.is_set():
                return
            try:
                self.step()
            except grpc.RpcError:
                return  # the server is gone
            time.sleep(STOCK_PAUSE_S)

    def step(self) -> None:
        cell = self.rng.choice(STOCK_CELLS)
        known = self.ledger.stock[cell]
        if self.rng.random() < 0.4:
            target = self.rng.randint(0, 500)
            known.pending = target
            request = inventory_pb2.SetStockRequest(
                sku=cell[0],
                node_id=cell[1],
                on_hand=target,
                source_sequence=known.last_source_sequence + 1,
            )
            response = self.stubs.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)
            known.last_source_sequence += 1
        else:
            delta = self.rng.randint(-known.on_hand, 50) or 1
            target = known.on_hand + delta
            known.pending = target
            adjust = inventory_pb2.AdjustStockRequest(
                sku=cell[0], node_id=cell[1], delta=delta, reason="power cut test"
            )
            response = self.stubs.inventory.AdjustStock(adjust, timeout=RPC_TIMEOUT_S)
        if response.outcome != common_pb2.OUTCOME_OK or response.position.on_hand != target:
            self.errors.append(f"stock {cell}: {response}")
        known.on_hand = target
        known.pending = None
        known.acked_at = time.monotonic()


class LoadClient:
    """DELTA bulk loads of fresh SKUs, each with its own load id: all-or-nothing, durable
    once answered."""

    def __init__(
        self, stubs: Stubs, ledger: PowerLedger, cycle: int, seed: int, stop: threading.Event
    ):
        self.feeds = feeds_pb2_grpc.FeedServiceStub(stubs.channel)
        self.ledger = ledger
        self.cycle = cycle
        self.rng = random.Random(seed)
        self.stop = stop
        self.errors: list[str] = []

    def run(self) -> None:
        for number in range(OPERATIONS_MAX):
            if self.stop.wait(self.rng.uniform(*LOAD_PAUSE_S)):
                return
            try:
                self.load(number)
            except grpc.RpcError:
                return

    def load(self, number: int) -> None:
        load_id = f"load-{self.cycle:03d}-{number:04d}"
        nodes = list(NODES)
        rows = tuple(
            (
                f"LOAD-{self.cycle:03d}-{number:04d}-{i}",
                nodes[i % len(nodes)],
                self.rng.randint(1, 99),
            )
            for i in range(LOAD_ROWS)
        )
        sent = LoadSent(load_id, rows)
        self.ledger.loads.append(sent)
        messages = [
            feeds_pb2.BulkLoadRequest(
                header=feeds_pb2.BulkLoadHeader(load_id=load_id, mode=feeds_pb2.LOAD_MODE_DELTA)
            ),
            feeds_pb2.BulkLoadRequest(
                chunk=feeds_pb2.PositionChunk(
                    skus=[row[0] for row in rows],
                    node_ids=[row[1] for row in rows],
                    on_hand=[row[2] for row in rows],
                )
            ),
            feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit(rows=len(rows), chunks=1)),
        ]
        response = self.feeds.BulkLoad(iter(messages), timeout=RPC_TIMEOUT_S)
        if response.rows != len(rows) or response.replayed:
            self.errors.append(f"load {load_id}: {response}")
        sent.acked_at = time.monotonic()


# ---------------------------------------------------------------------------- checks


def note_loss(ledger: PowerLedger, acked_at: float, cut_at: float, what: str, fsync: str) -> None:
    """An acknowledged answer the restarted server does not show: fatal under `always`."""
    assert fsync != "always", f"acknowledged and lost on a power cut: {what}"
    ledger.lost += 1
    ledger.lost_age_max_s = max(ledger.lost_age_max_s, cut_at - acked_at)


def reconcile_reservations(stubs: Stubs, ledger: PowerLedger, cut_at: float, fsync: str) -> None:
    """Count the reservations whose acknowledged status the server lost, and take what it
    shows as what the clients know (so check_server then checks everything else)."""
    to_check = [sent for sent in ledger.crash.sent.values() if not sent.settled]
    observed, _, _ = consistent_read(stubs, [sent.reservation_id for sent in to_check])
    for sent in to_check:
        reservation = observed[sent.reservation_id]
        status = None if reservation is None else reservation.status
        if status in allowed_statuses(sent):
            continue
        # A refused Reserve was never journaled: its id existing is a bug under any policy.
        assert not (sent.absent and reservation is not None), (sent, reservation)
        note_loss(ledger, ledger.acked_at[sent.reservation_id], cut_at, repr(sent), fsync)
        sent.absent = reservation is None
        if status is not None:
            sent.acked = status
        sent.pending.clear()
        sent.reserve_unanswered = False


def check_stock(stubs: Stubs, ledger: PowerLedger, cut_at: float, fsync: str) -> None:
    """Each stock cell shows its last acknowledged on_hand (or an unanswered request's)."""
    for cell, known in ledger.stock.items():
        request = inventory_pb2.GetStockRequest(sku=cell[0], node_id=cell[1])
        position = stubs.inventory.GetStock(request, timeout=RPC_TIMEOUT_S).position
        if position.on_hand not in (known.on_hand, known.pending):
            note_loss(ledger, known.acked_at, cut_at, f"stock {cell} {known} {position}", fsync)
        assert position.on_hand >= 0 and position.reserved == 0, position
        known.on_hand = position.on_hand
        known.pending = None
        known.last_source_sequence = position.last_source_sequence


def check_loads(stubs: Stubs, ledger: PowerLedger, cut_at: float, fsync: str) -> None:
    """A load is all there or not at all; an acknowledged one is all there."""
    for sent in ledger.loads:
        present = 0
        for sku, node_id, on_hand in sent.rows:
            request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
            try:
                position = stubs.inventory.GetStock(request, timeout=RPC_TIMEOUT_S).position
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, error
                continue
            if position.on_hand == on_hand:
                present += 1
            else:
                assert position.on_hand == 0, (sent, position)
        assert present in (0, len(sent.rows)), ("a load applied in part", sent, present)
        if present == 0 and sent.acked_at is not None:
            note_loss(ledger, sent.acked_at, cut_at, f"load {sent.load_id}", fsync)
    ledger.loads = []  # settled: nothing touches these SKUs again


def start_after_cut(server: Daemon, ledger: PowerLedger, fsync: str) -> Stubs:
    """Start the daemon; where a cut left damage that start-up refuses, the refusal must be
    one clear line naming the repair, and the repair must then start it."""
    server.spawn()
    if server.wait_serving():
        # Start-up after a cut never crashes (later tracebacks may be a snapshot child that
        # the power cut stopped mid-write: a dead disk, logged as such).
        assert "Traceback" not in server.log_text(), server.log_text()
        return server.stubs()
    log = server.log_text()
    server.reap()
    assert fsync != "always", f"start-up refused after a power cut under always:\n{log}"
    assert "Traceback" not in log, log
    assert "refusing to start" in log and "--repair" in log, log
    ledger.repaired_starts += 1
    server.spawn(("--repair",))
    assert server.wait_serving(), server.log_text()
    return server.stubs()


# ---------------------------------------------------------------------------- cycles


def run_until_cut(
    server: Daemon,
    mount: ForgetfulMount,
    stubs: Stubs,
    ledger: PowerLedger,
    cycle: int,
    rng: random.Random,
) -> float:
    """Traffic for a random while, then the power goes and the daemon is SIGKILLed; returns
    the time of the cut."""
    stop = threading.Event()
    killed = threading.Event()
    clients = [
        TimedClient(stubs, ledger.crash, owner, cycle, rng.getrandbits(64), stop, killed)
        for owner in range(CLIENT_THREADS)
    ]
    for client in clients:
        client.acked_at = ledger.acked_at
    stock = StockClient(stubs, ledger, rng.getrandbits(64), stop)
    loads = LoadClient(stubs, ledger, cycle, rng.getrandbits(64), stop)
    threads = [threading.Thread(target=client.run) for client in clients]
    threads += [threading.Thread(target=stock.run), threading.Thread(target=loads.run)]
    for thread in threads:
        thread.start()
    tear = rng.random() < TEAR_SHARE
    try:
        time.sleep(rng.uniform(*TRAFFIC_SECONDS))
    finally:
        killed.set()
        # Power first: from here the disk keeps only what was durable; answers already sent
        # were for durable records, and every later write fails (EIO) so nothing more is sent.
        cut_at = time.monotonic()
        mount.cut(rng.getrandbits(32) if tear else None)
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    ledger.cuts += 1
    ledger.torn_cuts += tear
    for client in clients:
        for sent in client.new:
            ledger.crash.sent[sent.reservation_id] = sent
        ledger.crash.acknowledged_total += client.acknowledged
    # A client error after the cut is the cut; before it, a bug (checked in the answers).
    assert not stock.errors and not loads.errors, stock.errors + loads.errors
    return cut_at


def power_cut_cycles(tmp_path: Path, *, cycles: int, seed: int, fsync: str) -> PowerLedger:
    """Run `cycles` power-cut/restart cycles; return what the clients saw and lost."""
    rng = random.Random(seed)
    backing = tmp_path / "disk"
    mount_point = tmp_path / "mnt"
    # A directory the daemon creates itself: its own entry must be made durable too.
    data_dir = mount_point / "data"
    config_path = tmp_path / "atpd.toml"
    config_path.write_text(CONFIG_TOML)
    config = Config(data_dir=data_dir, fsync=fsync, journal_segment_bytes=SEGMENT_BYTES)
    ledger = PowerLedger(Ledger(expected_on_hand=dict.fromkeys(CELLS, ON_HAND)))
    mount = ForgetfulMount(backing, mount_point)
    server = Daemon(data_dir, tmp_path, fsync=fsync, extra_args=("--config", str(config_path)))
    cut_at = 0.0
    try:
        for cycle in range(cycles + 1):
            mount.mount()
            if cycle > 0:
                try:
                    check_offline(config, ledger.crash)
                except JournalCorrupt:
                    # Without fsync a torn write can leave a hole before records that did
                    # land: start-up refuses, naming the repair (checked next).
                    assert fsync != "always", "journal damaged by a power cut under always"
            stubs = start_after_cut(server, ledger, fsync)
            if cycle == 0:
                setup_world(stubs, NODES, SKUS, ON_HAND, SAFETY_STOCK)
                setup_world(stubs, NODES, STOCK_SKUS, ON_HAND)
                ledger.stock = {cell: StockCell(ON_HAND) for cell in STOCK_CELLS}
            else:
                if fsync != "always":
                    reconcile_reservations(stubs, ledger, cut_at, fsync)
                check_server(stubs, ledger.crash, everything=cycle == cycles)
                check_stock(stubs, ledger, cut_at, fsync)
                check_loads(stubs, ledger, cut_at, fsync)
            if fsync != "always":
                # The baseline just adopted (and check_server's top-ups) must survive the next
                # cut for the next check to hold: a snapshot is fsynced whatever the policy.
                stubs.admin.Snapshot(admin_pb2.SnapshotRequest(), timeout=RPC_TIMEOUT_S)
            if cycle == cycles:
                server.kill()
                break
            cut_at = run_until_cut(server, mount, stubs, ledger, cycle, rng)
            mount.unmount()
    finally:
        server.close()
        mount.unmount()
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("serve-*.log"))
    assert "snapshot at sequence" in logs
    return ledger


def record_results(ledger: PowerLedger, fsync: str, cycles: int) -> None:
    """Append this run's figures to the file named by ATPD_POWER_CUT_RESULTS, if set."""
    path = os.environ.get(RESULTS_FILE_ENVIRONMENT)
    if not path:
        return
    figures = {
        "fsync": fsync,
        "cycles": cycles,
        "torn_cuts": ledger.torn_cuts,
        "acknowledged": ledger.crash.acknowledged_total,
        "lost": ledger.lost,
        "lost_age_max_s": round(ledger.lost_age_max_s, 3),
        "repaired_starts": ledger.repaired_starts,
    }
    with open(path, "a") as file:
        file.write(json.dumps(figures) + "\n")


def test_power_cuts_lose_no_acknowledged_answer(tmp_path: Path) -> None:
    """A few power cuts under `always`: every acknowledged answer survives, stock stays exact."""
    ledger = power_cut_cycles(tmp_path, cycles=CI_CYCLES, seed=20260501, fsync="always")
    assert ledger.crash.checks == CI_CYCLES
    assert ledger.lost == 0 and ledger.repaired_starts == 0
    assert ledger.crash.acknowledged_total > CI_CYCLES * CLIENT_THREADS


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("fsync", "cycles", "seed"),
    [("always", 100, 11), ("everysec", 30, 12), ("none", 20, 13)],
    ids=["always", "everysec", "none"],
)
def test_power_cut_soak(tmp_path: Path, fsync: str, cycles: int, seed: int) -> None:
    """Soak: per policy, what a power cut may lose (always: nothing; everysec: only answers
    younger than the sync window; none: anything unsynced, but start-up never crashes)."""
    ledger = power_cut_cycles(tmp_path, cycles=cycles, seed=seed, fsync=fsync)
    record_results(ledger, fsync, cycles)
    print(f"power cuts {fsync}: {ledger}")
    assert ledger.crash.checks == cycles
    if fsync == "always":
        assert ledger.lost == 0 and ledger.repaired_starts == 0
    if fsync == "everysec":
        assert ledger.lost_age_max_s <= EVERYSEC_WINDOW_S, ledger.lost_age_max_s
