"""Helpers for the server-level durability tests: `atpd serve` as a real subprocess on a real
data directory, clients on real gRPC channels, and an in-process durable engine on a fake clock.

Every process started here is killed by its owner's `finally` (see `Daemon.close`); every wait
is a bounded poll.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atpd.config import Config
from atpd.core.commands import Command
from atpd.core.results import CommandRejected
from atpd.core.state import AtpState
from atpd.persistence.codec import decode_command
from atpd.persistence.framing import HEADER_BYTES, scan_records
from atpd.service.durability import Durability
from atpd.service.engine import Engine
from atpd.service.server import ServeOptions, open_durable_state
from atpd.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
)

SOURCE_ROOT = Path(__file__).parents[2] / "src"
SERVING_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.02
RPC_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
# Reads issued as futures are sent in batches of this size.
READ_BATCH = 256

HELD = common_pb2.RESERVATION_STATUS_HELD
CONFIRMED = common_pb2.RESERVATION_STATUS_CONFIRMED
FULFILLED = common_pb2.RESERVATION_STATUS_FULFILLED
RELEASED = common_pb2.RESERVATION_STATUS_RELEASED
EXPIRED = common_pb2.RESERVATION_STATUS_EXPIRED
OPEN_STATUSES = frozenset({HELD, CONFIRMED})
# Every status a reservation may legally reach from a given one (itself included).
LATER_STATUSES: dict[int, frozenset[int]] = {
    HELD: frozenset({HELD, CONFIRMED, RELEASED, EXPIRED, FULFILLED}),
    CONFIRMED: frozenset({CONFIRMED, RELEASED, FULFILLED}),
    RELEASED: frozenset({RELEASED}),
    EXPIRED: frozenset({EXPIRED}),
    FULFILLED: frozenset({FULFILLED}),
}

Cell = tuple[str, str]  # (sku, node_id)


def free_port() -> int:
    """A port nobody listens on right now (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def subprocess_environment() -> dict[str, str]:
    """The test's environment with this checkout's src first on the path."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(
        os.environ, PYTHONPATH=f"{SOURCE_ROOT}{os.pathsep}{path}" if path else str(SOURCE_ROOT)
    )


def run_cli(*args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`atpd ARGS...` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=subprocess_environment(),
        check=False,
    )


@dataclass(frozen=True)
class Stubs:
    """One client per service, all on one channel."""

    channel: grpc.Channel
    reservations: reservations_pb2_grpc.ReservationServiceStub
    inventory: inventory_pb2_grpc.InventoryServiceStub
    availability: availability_pb2_grpc.AvailabilityServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def connect(cls, target: str) -> Stubs:
        channel = grpc.insecure_channel(target)
        return cls(
            channel,
            reservations_pb2_grpc.ReservationServiceStub(channel),
            inventory_pb2_grpc.InventoryServiceStub(channel),
            availability_pb2_grpc.AvailabilityServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


class Daemon:
    """`atpd serve` on one data directory, started and stopped many times.

    Each start picks a fresh free port and logs to its own file (`serve-<n>.log`).
    """

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        fsync: str = "always",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.fsync = fsync
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.log_path = log_dir / "serve-0.log"
        self._stubs: Stubs | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, extra_args: Sequence[str] = ()) -> None:
        """Start the process; do not wait for it."""
        assert self.process is None, "already running"
        self.close_channel()
        self.starts += 1
        self.port = free_port()
        self.log_path = self.log_dir / f"serve-{self.starts}.log"
        command = [
            sys.executable,
            "-m",
            "atpd.cli",
            "serve",
            "--port",
            str(self.port),
            "--metrics-port",
            "-1",
            "--data-dir",
            str(self.data_dir),
            "--fsync",
            self.fsync,
            *self.extra_args,
            *extra_args,
        ]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=subprocess_environment(),
            )

    def start(self, extra_args: Sequence[str] = ()) -> Stubs:
        """Start and wait for health SERVING; retries on a port taken meanwhile."""
        for _ in range(START_ATTEMPTS):
            self.spawn(extra_args)
            if self.wait_serving():
                return self.stubs()
            log = self.log_text()
            self.reap()
            assert "cannot bind" in log, f"atpd serve exited early:\n{log}"
        raise AssertionError(f"no free port after {START_ATTEMPTS} attempts")

    def wait_serving(self, timeout_s: float = SERVING_TIMEOUT_S) -> bool:
        """Poll health until SERVING (True) or the process exits (False)."""
        stubs = self.stubs()
        request = health_pb2.HealthCheckRequest()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                response = stubs.health.Check(request, timeout=1.0)
            except grpc.RpcError:
                pass
            else:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"not SERVING after {timeout_s} s:\n{self.log_text()}")

    def stubs(self) -> Stubs:
        if self._stubs is None:
            self._stubs = Stubs.connect(self.target)
        return self._stubs

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, then reap."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.reap()

    def terminate(self) -> int:
        """SIGTERM (graceful: drain, final snapshot), wait, return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
        finally:
            self.reap()
        return code

    def wait_exit(self, timeout_s: float = SERVING_TIMEOUT_S) -> int:
        """Wait for a process that is expected to exit by itself; return its exit code."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout_s)
        finally:
            self.reap()
        return code

    def reap(self) -> None:
        """Forget the process (killed if still alive). The channel stays open until the next
        start, so client threads still using it see RPC errors, not a closed channel."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
            self.process = None

    def close_channel(self) -> None:
        if self._stubs is not None:
            self._stubs.channel.close()
            self._stubs = None

    def close(self) -> None:
        self.reap()
        self.close_channel()


@contextmanager
def daemon(data_dir: Path, log_dir: Path, **kwargs: Any) -> Iterator[Daemon]:
    """A Daemon that is always killed on the way out."""
    server = Daemon(data_dir, log_dir, **kwargs)
    try:
        yield server
    finally:
        server.close()


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Poll `predicate` until true, at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" in line.split()[1] or "X" in line.split()[1]
    return True


def child_pids(pid: int) -> set[int]:
    """Direct children of `pid`, over all its threads."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except FileNotFoundError:
            continue
        children.update(int(child) for child in text.split())
    return children


# ---------------------------------------------------------------------------- requests


def line(sku: str, node_id: str, quantity: int) -> reservations_pb2.ReservationLine:
    return reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity)


def reserve_request(
    reservation_id: str, lines: Iterable[tuple[str, str, int]], ttl_ms: int
) -> reservations_pb2.ReserveRequest:
    return reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[line(*x) for x in lines],
        ttl_ms=ttl_ms,
        kind=common_pb2.RESERVATION_KIND_CART,
    )


def setup_world(
    stubs: Stubs,
    nodes: dict[str, str],
    skus: Sequence[str],
    on_hand: int,
    safety_stock: int = 0,
    kind: int = common_pb2.NODE_KIND_STORE,
) -> None:
    """Upsert the nodes and give every (sku, node) `on_hand` units (source sequence 1)."""
    for node_id, geo_path in nodes.items():
        node = inventory_pb2.Node(
            node_id=node_id,
            kind=kind,  # type: ignore[arg-type]
            geo_path=geo_path,
            ships=True,
            pickup=True,
            enabled=True,
        )
        response = stubs.inventory.UpsertNode(
            inventory_pb2.UpsertNodeRequest(node=node), timeout=RPC_TIMEOUT_S
        )
        assert response.outcome == common_pb2.OUTCOME_OK, response
    for sku in skus:
        for node_id in nodes:
            request = inventory_pb2.SetStockRequest(
                sku=sku,
                node_id=node_id,
                on_hand=on_hand,
                source_sequence=1,
                safety_stock=safety_stock,
            )
            response = stubs.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)
            assert response.outcome == common_pb2.OUTCOME_OK, response


def fetch_reservations(
    stubs: Stubs, reservation_ids: Iterable[str]
) -> dict[str, reservations_pb2.Reservation | None]:
    """GetReservation for every id (None when NOT_FOUND); any other error fails."""
    ids = list(reservation_ids)
    found: dict[str, reservations_pb2.Reservation | None] = {}
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        futures = [
            stubs.reservations.GetReservation.future(
                reservations_pb2.GetReservationRequest(reservation_id=reservation_id),
                timeout=RPC_TIMEOUT_S,
            )
            for reservation_id in batch
        ]
        for reservation_id, future in zip(batch, futures, strict=True):
            try:
                found[reservation_id] = future.result().reservation
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, (reservation_id, error)
                found[reservation_id] = None
    return found


def fetch_positions(stubs: Stubs, cells: Iterable[Cell]) -> dict[Cell, inventory_pb2.Position]:
    positions: dict[Cell, inventory_pb2.Position] = {}
    for sku, node_id in cells:
        request = inventory_pb2.GetStockRequest(sku=sku, node_id=node_id)
        positions[(sku, node_id)] = stubs.inventory.GetStock(
            request, timeout=RPC_TIMEOUT_S
        ).position
    return positions


def total_atp(stubs: Stubs, skus: Sequence[str]) -> dict[str, int]:
    request = availability_pb2.GetAvailabilityRequest(skus=list(skus))
    response = stubs.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
    return {item.sku: item.total_atp for item in response.items}


def status_of(stubs: Stubs) -> admin_pb2.GetStatusResponse:
    response: admin_pb2.GetStatusResponse = stubs.admin.GetStatus(
        admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S
    )
    return response


def held_by_cell(reservations: Iterable[reservations_pb2.Reservation | None]) -> dict[Cell, int]:
    """Units still held per (sku, node) by the open reservations among `reservations`."""
    held: dict[Cell, int] = {}
    for reservation in reservations:
        if reservation is None or reservation.status not in OPEN_STATUSES:
            continue
        fulfilled = {(x.sku, x.node_id): x.quantity for x in reservation.fulfilled}
        for x in reservation.lines:
            cell = (x.sku, x.node_id)
            held[cell] = held.get(cell, 0) + x.quantity - fulfilled.get(cell, 0)
    return held


def assert_stock_consistent(
    positions: dict[Cell, inventory_pb2.Position], held: dict[Cell, int]
) -> None:
    """reserved == sum of open holds in every cell; nothing promised beyond what is there."""
    for cell, position in positions.items():
        assert position.reserved == held.get(cell, 0), (cell, position, held.get(cell, 0))
        free = position.on_hand - position.reserved - position.safety_stock
        assert free >= 0, ("oversold", cell, position)
        assert position.atp == free, (cell, position)
    assert set(held) <= set(positions), set(held) - set(positions)


# ---------------------------------------------------------------------------- journal files


@dataclass(frozen=True)
class JournalEntry:
    """One record of a segment file, located and decoded."""

    path: Path
    offset: int
    size_bytes: int
    sequence: int
    command: Command


def journal_entries(data_dir: Path) -> list[JournalEntry]:
    """Every record in the data directory's segments, in order, with its file offset."""
    entries: list[JournalEntry] = []
    for path in sorted(data_dir.glob("journal-*.seg")):
        data = path.read_bytes()
        first_sequence = int(path.name.removeprefix("journal-").removesuffix(".seg"))
        result = scan_records(data, first_sequence=first_sequence, source_name=path.name)
        offset = 0
        for record in result.records:
            size = HEADER_BYTES + len(record.payload)
            entries.append(
                JournalEntry(path, offset, size, record.sequence, decode_command(record.payload))
            )
            offset += size
    return entries


# ---------------------------------------------------------------------------- in-process


class FakeClock:
    """Milliseconds that move only when the test says so."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> None:
        assert delta_ms >= 0
        self.now_ms += delta_ms


class DurableEngine:
    """What `serve` builds minus gRPC: open_durable_state, an Engine, Durability attached.
    Open and use it inside a running event loop."""

    def __init__(self, config: Config, clock: FakeClock) -> None:
        self.config = config
        self.clock = clock
        state, durability = open_durable_state(config, ServeOptions(), clock)
        assert durability is not None
        self.durability: Durability = durability
        self.engine = Engine(state, clock_ms=clock)
        self.engine.ready = True
        durability.attach(self.engine)

    @property
    def state(self) -> AtpState:
        return self.engine.state

    async def run(self, commands: Iterable[tuple[int, Command]]) -> tuple[int, int]:
        """Execute (advance_ms, command) pairs in order; return (applied, rejected) counts."""
        applied = rejected = 0
        for advance_ms, command in commands:
            self.clock.advance(advance_ms)
            try:
                await self.engine.execute(command)
            except CommandRejected:
                rejected += 1
            else:
                applied += 1
        return applied, rejected

    async def close(self, *, final_snapshot: bool) -> None:
        self.engine.ready = False
        self.engine.stop()
        await self.durability.close(final_snapshot=final_snapshot)


def recovered_state(config: Config) -> AtpState:
    """Recover the data directory the way `serve` does, then release it."""
    state, durability = open_durable_state(config, ServeOptions(), lambda: 0)
    assert durability is not None
    durability.journal.close()
    return state
