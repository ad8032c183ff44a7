"""Three `atpd serve --cluster` processes on loopback around a real etcd, and a client that
follows the leader, for the failover tests. Every process is killed by its owner's `finally`;
every wait is a bounded poll."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from persistence.server_support import (
    SERVING_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Stubs,
    free_port,
    subprocess_environment,
)

from atpd.v1 import (
    admin_pb2,
    common_pb2,
    inventory_pb2,
    reservations_pb2,
)

POLL_S = 0.05
RPC_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 1.0
# A liveness bound, not a speed target: the figure (target 5 s) is measured by `make bench`.
FAILOVER_BOUND_S = 15.0
TTL_MS = 600_000
OK = common_pb2.OUTCOME_OK


class Member:
    """One `atpd serve --cluster` process on a fixed port and data directory."""

    def __init__(
        self, index: int, directory: Path, etcd_endpoint: str, cluster: str, extra: Sequence[str]
    ) -> None:
        self.index = index
        self.data_dir = directory / f"member-{index}"
        self.log_dir = directory
        self.port = free_port()
        self.etcd_endpoint = etcd_endpoint
        self.cluster = cluster
        self.extra = tuple(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stubs: Stubs | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"member-{self.index}-{self.starts}.log"

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
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
            "--cluster",
            self.cluster,
            "--etcd",
            self.etcd_endpoint,
            "--advertise",
            self.address,
            *self.extra,
        ]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=subprocess_environment()
            )

    def stubs(self) -> Stubs:
        if self._stubs is None:
            self._stubs = Stubs.connect(self.address)
        return self._stubs

    def status(self) -> admin_pb2.GetStatusResponse | None:
        """GetStatus, or None when the process does not answer."""
        try:
            status: admin_pb2.GetStatusResponse = self.stubs().admin.GetStatus(
                admin_pb2.GetStatusRequest(include_digest=True), timeout=STATUS_TIMEOUT_S
            )
        except grpc.RpcError:
            return None
        return status

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)  # a stopped process dies as well
                self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
            self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.kill()
        if self._stubs is not None:
            self._stubs.channel.close()
            self._stubs = None


class Cluster:
    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def logs(self) -> str:
        return "\n".join(f"--- member {m.index}\n{m.log_text()[-4000:]}" for m in self.members)

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(POLL_S)

    def leader(self, among: Sequence[Member] | None = None) -> Member | None:
        for member in among if among is not None else self.members:
            status = member.status()
            if status is not None and status.role == "primary":
                return member
        return None

    def wait_leader(self, among: Sequence[Member] | None = None) -> Member:
        found: list[Member] = []

        def elected() -> bool:
            leader = self.leader(among)
            if leader is not None:
                found.append(leader)
            return leader is not None

        self.wait(elected, "a leader", SERVING_TIMEOUT_S)
        return found[-1]

    def wait_converged(self, members: Sequence[Member]) -> str:
        """Wait until `members` hold the same journal sequence and state digest."""
        seen: list[str] = []

        def same() -> bool:
            statuses = [member.status() for member in members]
            if any(status is None for status in statuses):
                return False
            pairs = {(s.journal_sequence, s.state_digest) for s in statuses if s is not None}
            if len(pairs) == 1:
                seen.append(pairs.pop()[1])
                return True
            return False

        self.wait(same, "the members to converge", SERVING_TIMEOUT_S)
        return seen[-1]


@contextmanager
def running_cluster(
    directory: Path, etcd_endpoint: str, cluster: str, extra: Sequence[str] = (), size: int = 3
) -> Iterator[Cluster]:
    members = [Member(index, directory, etcd_endpoint, cluster, extra) for index in range(size)]
    try:
        for member in members:
            member.start()
        yield Cluster(members)
    finally:
        for member in members:
            member.close()


def seed(stubs: Stubs, units: int) -> None:
    """One store and one SKU with `units` on hand."""
    stubs.inventory.UpsertNode(
        inventory_pb2.UpsertNodeRequest(
            node=inventory_pb2.Node(
                node_id="paris",
                geo_path="EU/FR/Paris",
                enabled=True,
                kind=common_pb2.NODE_KIND_STORE,
            )
        ),
        timeout=RPC_TIMEOUT_S,
    )
    stubs.inventory.SetStock(
        inventory_pb2.SetStockRequest(
            sku="SKU-1", node_id="paris", on_hand=units, source_sequence=1
        ),
        timeout=RPC_TIMEOUT_S,
    )


def reserve_request(reservation_id: str) -> reservations_pb2.ReserveRequest:
    return reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[reservations_pb2.ReservationLine(sku="SKU-1", node_id="paris", quantity=1)],
        ttl_ms=TTL_MS,
    )


def has_reservation(stubs: Stubs, reservation_id: str) -> bool:
    try:
        answer = stubs.reservations.GetReservation(
            reservations_pb2.GetReservationRequest(reservation_id=reservation_id),
            timeout=RPC_TIMEOUT_S,
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return bool(answer.reservation.reservation_id == reservation_id)
