"""Crash test: `atpd serve` SIGKILLed again and again under concurrent reservation traffic.

Client threads reserve, confirm, fulfil and release over gRPC and log every answer they get.
After each kill the server restarts on the same data directory and every logged answer is
checked against what it serves: an acknowledged reservation is there in its acknowledged status
or a legal later one, a refused one never exists, reserved equals the sum of open holds in
every cell, on_hand moved only by acknowledged fulfilments, and nothing is oversold. Between
kill and restart the directory is also recovered in-process, to check that it holds no
reservation a client never sent.

Snapshots are taken every few dozen records (forked, in the background) and segments are
small, so kills land in every phase: group commit, rotation, snapshot, segment removal, and
start-up itself.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from atpd.config import Config
from atpd.v1 import common_pb2, inventory_pb2, reservations_pb2

from .server_support import (
    CONFIRMED,
    EXPIRED,
    FULFILLED,
    HELD,
    LATER_STATUSES,
    OPEN_STATUSES,
    RELEASED,
    RPC_TIMEOUT_S,
    Cell,
    Daemon,
    Stubs,
    assert_stock_consistent,
    daemon,
    fetch_positions,
    fetch_reservations,
    held_by_cell,
    recovered_state,
    reserve_request,
    setup_world,
    status_of,
)

NODES = {"ST-PAR-01": "EU/FR/Paris", "ST-LYO-01": "EU/FR/Lyon", "WH-US-01": "NA/US/NYC"}
SKUS = ("BAG-KELLY-01", "SCARF-SILK-02", "BELT-LEATHER-03", "WATCH-STEEL-04")
CELLS: tuple[Cell, ...] = tuple((sku, node_id) for sku in SKUS for node_id in NODES)
ON_HAND = 60
SAFETY_STOCK = 2
TOP_UP_BELOW = 30
CLIENT_THREADS = 4
SHORT_TTL_MS = (1_000, 2_500)
LONG_TTL_MS = 600_000
SHORT_TTL_SHARE = 0.25
TRAFFIC_SECONDS = (0.1, 0.8)
# Kill/restart cycles in `make test` (each restart costs ~2 s of interpreter start-up).
CI_CYCLES = 20
KILL_DURING_START_SHARE = 0.15
KILL_DURING_START_SECONDS = (0.05, 1.5)
OPERATIONS_PER_THREAD_MAX = 100_000
JOIN_TIMEOUT_S = 30.0
CONSISTENT_READ_ATTEMPTS = 10
CONFIG_TOML = """
snapshot_every_records = 60
journal_segment_bytes = 4096
"""
SEGMENT_BYTES = 4096


@dataclass
class Sent:
    """Everything the clients know about one reservation id."""

    reservation_id: str
    owner: int
    lines: tuple[tuple[str, str, int], ...]
    # The status of the last answer received (or of the last check after a restart).
    acked: int | None = None
    # A Reserve got a refusal (or the id was found absent after a crash): must never exist.
    absent: bool = False
    # Statuses that a command sent without an answer may have led to.
    pending: set[int] = field(default_factory=set)
    # A Reserve was sent and no answer came back.
    reserve_unanswered: bool = False
    # Checked after a restart and found absent or terminal: it cannot change any more.
    settled: bool = False
    fulfilled_counted: bool = False


@dataclass
class Ledger:
    """The clients' log of every answer, and the stock on_hand they expect."""

    sent: dict[str, Sent] = field(default_factory=dict)
    expected_on_hand: dict[Cell, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    acknowledged_total: int = 0
    checks: int = 0


class Client:
    """One client thread's traffic for one server run: it stops at its first failed RPC."""

    def __init__(
        self,
        stubs: Stubs,
        ledger: Ledger,
        owner: int,
        cycle: int,
        seed: int,
        stop: threading.Event,
        killed: threading.Event,
    ) -> None:
        self.stubs = stubs
        self.ledger = ledger
        self.owner = owner
        self.cycle = cycle
        self.rng = random.Random(seed)
        self.stop = stop
        self.killed = killed
        self.created = 0
        self.acknowledged = 0
        self.new: list[Sent] = []
        # This owner's reservations that are open as far as the client knows.
        self.open = [
            sent
            for sent in ledger.sent.values()
            if sent.owner == owner and sent.acked in OPEN_STATUSES
        ]

    def run(self) -> None:
        for _ in range(OPERATIONS_PER_THREAD_MAX):
            if self.stop.is_set():
                return
            try:
                self.step()
            except grpc.RpcError as error:
                if not self.killed.is_set():
                    self.ledger.unexpected.append(f"client {self.owner}: {error!r}")
                return
            except AssertionError as error:
                self.ledger.unexpected.append(f"client {self.owner}: {error}")
                return

    def step(self) -> None:
        held = [sent for sent in self.open if sent.acked == HELD]
        confirmed = [sent for sent in self.open if sent.acked == CONFIRMED]
        roll = self.rng.random()
        if roll < 0.45 or not self.open:
            self.reserve()
        elif roll < 0.65 and held:
            self.lifecycle(self.rng.choice(held), "confirm")
        elif roll < 0.88:
            self.lifecycle(self.rng.choice(self.open), "release")
        elif confirmed:
            self.lifecycle(self.rng.choice(confirmed), "fulfil")
        else:
            self.reserve()

    def reserve(self) -> None:
        rng = self.rng
        cells = rng.sample(CELLS, rng.choice((1, 1, 2)))
        lines = tuple((sku, node_id, rng.randint(1, 3)) for sku, node_id in cells)
        short = rng.random() < SHORT_TTL_SHARE
        ttl_ms = rng.randint(*SHORT_TTL_MS) if short else LONG_TTL_MS
        self.created += 1
        reservation_id = f"r{self.cycle:03d}-{self.owner}-{self.created:05d}"
        sent = Sent(reservation_id, self.owner, lines, reserve_unanswered=True)
        self.new.append(sent)
        request = reserve_request(reservation_id, lines, ttl_ms)
        response = self.stubs.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)
        sent.reserve_unanswered = False
        self.acknowledged += 1
        if response.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK:
            sent.absent = True
            return
        assert response.outcome == common_pb2.OUTCOME_OK, response
        assert not response.replayed, response
        assert response.reservation.status == HELD, response
        sent.acked = HELD
        self.open.append(sent)

    def lifecycle(self, sent: Sent, action: str) -> None:
        assert sent.acked is not None
        methods = {
            "confirm": (
                self.stubs.reservations.Confirm,
                reservations_pb2.ConfirmRequest(reservation_id=sent.reservation_id),
                CONFIRMED,
            ),
            "release": (
                self.stubs.reservations.Release,
                reservations_pb2.ReleaseRequest(reservation_id=sent.reservation_id),
                RELEASED,
            ),
            "fulfil": (
                self.stubs.reservations.Fulfil,
                reservations_pb2.FulfilRequest(reservation_id=sent.reservation_id),
                FULFILLED,
            ),
        }
        method, request, target = methods[action]
        sent.pending.add(target)
        response = method(request, timeout=RPC_TIMEOUT_S)
        sent.pending.discard(target)
        self.acknowledged += 1
        status = response.reservation.status
        assert status in LATER_STATUSES[sent.acked], (sent, response)
        assert status in (target, EXPIRED), (action, response)
        sent.acked = status
        if status not in OPEN_STATUSES:
            self.open.remove(sent)


def allowed_statuses(sent: Sent) -> set[int | None]:
    """What a restarted server may show for `sent`, given the answers the clients got."""
    if sent.absent:
        return {None}
    if sent.acked is None:
        assert sent.reserve_unanswered, sent
        return {None, HELD, EXPIRED}
    reachable = {sent.acked, EXPIRED, *sent.pending}
    return set(LATER_STATUSES[sent.acked] & reachable)


def consistent_read(
    stubs: Stubs, reservation_ids: list[str]
) -> tuple[dict[str, Any], dict[Cell, Any], Any]:
    """Reservations, positions and status read while no hold could expire (else retried, after
    waiting out the holds that fell due during the reads)."""
    for _ in range(CONSISTENT_READ_ATTEMPTS):
        read_from_ms = time.time_ns() // 1_000_000
        observed = fetch_reservations(stubs, reservation_ids)
        positions = fetch_positions(stubs, CELLS)
        status = status_of(stubs)
        read_until_ms = time.time_ns() // 1_000_000
        held = [r for r in observed.values() if r is not None and r.status == HELD]
        # Reads apply due expiries first: no read shows a hold already due when it started.
        stale = [r for r in held if r.expires_at_ms <= read_from_ms]
        assert not stale, stale[:3]
        due = [r.expires_at_ms for r in held if r.expires_at_ms <= read_until_ms]
        if not due:
            return observed, positions, status
        time.sleep((max(due) - read_from_ms) / 1000 + 0.01)
    raise AssertionError("holds kept expiring during every read")


def check_server(stubs: Stubs, ledger: Ledger, *, everything: bool) -> None:
    """Compare a freshly restarted server with the ledger, then adopt what it shows as the
    new baseline (everything it serves now is durable) and top up low stock."""
    if everything:
        to_check = list(ledger.sent.values())
    else:
        to_check = [sent for sent in ledger.sent.values() if not sent.settled]
    observed, positions, status = consistent_read(stubs, [sent.reservation_id for sent in to_check])
    ledger.checks += 1

    for sent in to_check:
        reservation = observed[sent.reservation_id]
        status_seen = None if reservation is None else reservation.status
        assert status_seen in allowed_statuses(sent), (sent, reservation)
        if reservation is None:
            sent.absent = True
            sent.settled = True
        else:
            lines = tuple((x.sku, x.node_id, x.quantity) for x in reservation.lines)
            assert lines == sent.lines, (sent, reservation)
            if reservation.status == EXPIRED:
                assert reservation.expires_at_ms < time.time_ns() // 1_000_000, reservation
                assert reservation.updated_at_ms == reservation.expires_at_ms, reservation
            sent.acked = reservation.status
            sent.settled = reservation.status not in OPEN_STATUSES
            if reservation.status == FULFILLED and not sent.fulfilled_counted:
                sent.fulfilled_counted = True
                for x in reservation.fulfilled:
                    ledger.expected_on_hand[(x.sku, x.node_id)] -= x.quantity
        sent.pending.clear()
        sent.reserve_unanswered = False

    open_seen = [r for r in observed.values() if r is not None and r.status in OPEN_STATUSES]
    # Every open reservation the server holds is one a client sent.
    assert status.open_reservations == len(open_seen), (status, len(open_seen))
    assert_stock_consistent(positions, held_by_cell(open_seen))
    for cell, position in positions.items():
        assert position.on_hand == ledger.expected_on_hand[cell], (cell, position)
        assert position.safety_stock == SAFETY_STOCK, position

    for (sku, node_id), position in positions.items():
        if position.on_hand >= TOP_UP_BELOW:
            continue
        request = inventory_pb2.SetStockRequest(
            sku=sku,
            node_id=node_id,
            on_hand=ON_HAND,
            source_sequence=position.last_source_sequence + 1,
        )
        response = stubs.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_OK, response
        ledger.expected_on_hand[(sku, node_id)] = ON_HAND


def check_offline(config: Config, ledger: Ledger) -> None:
    """Recover the stopped server's directory in-process: consistent, and holding no
    reservation that no client ever sent."""
    state = recovered_state(config)
    state.check_invariants()
    unknown = set(state.reservations) - set(ledger.sent)
    assert not unknown, sorted(unknown)[:10]


def run_traffic(
    server: Daemon, stubs: Stubs, ledger: Ledger, cycle: int, rng: random.Random
) -> None:
    """Client threads run for a random while, then the server is SIGKILLed under them."""
    stop = threading.Event()
    killed = threading.Event()
    clients = [
        Client(stubs, ledger, owner, cycle, rng.getrandbits(64), stop, killed)
        for owner in range(CLIENT_THREADS)
    ]
    threads = [
        threading.Thread(target=client.run, name=f"crash-client-{client.owner}")
        for client in clients
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(rng.uniform(*TRAFFIC_SECONDS))
    finally:
        killed.set()
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    for client in clients:
        for sent in client.new:
            ledger.sent[sent.reservation_id] = sent
        ledger.acknowledged_total += client.acknowledged
    assert not ledger.unexpected, ledger.unexpected


def crash_cycles(tmp_path: Path, *, cycles: int, seed: int, fsync: str) -> Ledger:
    """Run `cycles` kill/restart cycles; return the ledger of what the clients saw."""
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config_path = tmp_path / "atpd.toml"
    config_path.write_text(CONFIG_TOML)
    config = Config(data_dir=data_dir, fsync=fsync, journal_segment_bytes=SEGMENT_BYTES)
    ledger = Ledger(expected_on_hand=dict.fromkeys(CELLS, ON_HAND))
    with daemon(data_dir, tmp_path, fsync=fsync, extra_args=("--config", str(config_path))) as (
        server
    ):
        for cycle in range(cycles):
            if cycle > 0 and rng.random() < KILL_DURING_START_SHARE:
                server.spawn()
                time.sleep(rng.uniform(*KILL_DURING_START_SECONDS))
                server.kill()
                check_offline(config, ledger)
            stubs = server.start()
            if cycle == 0:
                setup_world(stubs, NODES, SKUS, ON_HAND, SAFETY_STOCK)
            else:
                check_server(stubs, ledger, everything=False)
            run_traffic(server, stubs, ledger, cycle, rng)
            check_offline(config, ledger)
        stubs = server.start()
        check_server(stubs, ledger, everything=True)
        server.kill()
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("serve-*.log"))
    assert "Traceback" not in logs, logs[-4000:]
    # The kills really did land across snapshots and segment rotations.
    assert "snapshot at sequence" in logs
    assert len(list(data_dir.glob("journal-*.seg"))) >= 1
    return ledger


def test_sigkill_cycles_lose_no_acknowledged_reservation(tmp_path: Path) -> None:
    """Over 20 SIGKILL/restart cycles every acknowledged answer holds and stock stays exact."""
    ledger = crash_cycles(tmp_path, cycles=CI_CYCLES, seed=20260415, fsync="always")
    assert ledger.checks == CI_CYCLES
    statuses = {sent.acked for sent in ledger.sent.values()}
    # The traffic exercised every transition, including expiry across restarts.
    assert {HELD, CONFIRMED, RELEASED, EXPIRED, FULFILLED} <= statuses, statuses
    assert any(sent.absent for sent in ledger.sent.values())
    assert ledger.acknowledged_total > CI_CYCLES * CLIENT_THREADS


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("fsync", "cycles", "seed"),
    [("always", 150, 1), ("everysec", 60, 2), ("none", 60, 3)],
    ids=["always", "everysec", "none"],
)
def test_sigkill_soak_loses_no_acknowledged_reservation(
    tmp_path: Path, fsync: str, cycles: int, seed: int
) -> None:
    """Soak: many SIGKILL cycles per fsync policy; a process crash loses nothing acknowledged."""
    ledger = crash_cycles(tmp_path, cycles=cycles, seed=seed, fsync=fsync)
    assert ledger.checks == cycles
