"""Durable write figures (issue 4): what the journal costs a reservation and what an fsync
costs on this disk. (Snapshot and recovery times: bench/suites/recovery.py.)

- `durable_reserve_throughput_ratio`: two `atpd serve --demo` subprocesses, `--fsync always` and
  `--fsync none`, each with its own data dir, pinned to one CPU; the same multi-process Python
  grpc.aio load (64 concurrent clients reserving one line under a unique id, then releasing it)
  on the other CPU, in alternating rounds of one run. Only OK reserves are counted.
- `durable_reserve_us_p50`: one client, sequential, against `--fsync always` (and, for
  comparison, `--fsync none`); next to it, `os.fdatasync` after a small append on the same
  filesystem (`fsync_us_p50`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import servers
from bench.registry import Context, Figure, Target, benchmark
from bench.timing import percentile

RESERVE_PATH = "/atpd.v1.ReservationService/Reserve"
RELEASE_PATH = "/atpd.v1.ReservationService/Release"
AVAILABILITY_PATH = "/atpd.v1.AvailabilityService/GetAvailability"
# The caller the load reserves as: boutiques (endless aisle) see every warehouse, store and
# outlet under the demo rules, so every demo position with stock is reservable for them.
CHANNEL, SEGMENT = "store", "standard"
TTL_MS = 15 * 60_000
CLIENT_PROCESSES = 4
STREAMS_PER_PROCESS = 16  # 4 x 16 = 64 concurrent clients
OUTCOME_OK = 1
LINE_POOL = 20_000


# ------------------------------------------------------------------------------ servers


def _start_atpd(
    ctx: Context, name: str, fsync: str, cpus: set[int]
) -> tuple[servers.ServerProcess, Path]:
    """`atpd serve --demo --fsync FSYNC` on a fresh data dir of its own (demo + snapshot at
    start); the caller stops it in a finally."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-data-", dir=ctx.scratch))
    port = servers.free_port()
    command = [*servers.atpd_command(port, data_dir), "--fsync", fsync]
    return servers.start(name, command, port, cpus, ctx.scratch), data_dir


def _status(target: str) -> Any:
    import grpc

    from atpd.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=10)


def _reservable_lines(count: int) -> list[tuple[str, str, int]]:
    """Popularity- and traffic-weighted demo lines (`demo_reservation_lines`) that the
    store/standard caller may reserve on a fresh demo server (demo rules applied)."""
    from atpd.core.commands import SetRules
    from atpd.core.state import AtpState
    from atpd.demo import dataset

    now_ms = 1_000_000
    state = AtpState()
    dataset.load_demo(state, now_ms)
    rules = Path(dataset.__file__).with_name("rules.toml")
    state.apply(SetRules(rules.read_text(), str(rules)), now_ms)
    policy = state.policy(CHANNEL, SEGMENT)
    assert policy is not None
    cap = policy.policy.max_per_line or 1 << 30
    lines = []
    for line in dataset.demo_reservation_lines(count * 2, seed=29):
        row, node = state.skus.get(line.sku), state.node_ids.get(line.node_id)
        if line.quantity <= min(cap, state.caller_atp(policy, row, node)):
            lines.append((line.sku, line.node_id, line.quantity))
            if len(lines) == count:
                break
    assert len(lines) == count, len(lines)
    return lines


# ------------------------------------------------------------------------------ clients
# Run in spawned client processes pinned to the load CPU(s); module-level so they pickle.

_LINES: list[tuple[str, str, int]] = []


def _client_init(cpus: set[int], lines: list[tuple[str, str, int]]) -> None:
    os.sched_setaffinity(0, cpus)
    _LINES[:] = lines


def _reserve_body(reservation_id: str, line: tuple[str, str, int]) -> bytes:
    from atpd.v1 import reservations_pb2

    sku, node_id, quantity = line
    return reservations_pb2.ReserveRequest(
        reservation_id=reservation_id,
        lines=[reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity)],
        ttl_ms=TTL_MS,
        channel=CHANNEL,
        segment=SEGMENT,
    ).SerializeToString()


async def _load_loop(
    target: str, prefix: str, offset: int, start_at: float, seconds: float, streams: int
) -> dict[str, Any]:
    import grpc

    from atpd.v1 import reservations_pb2

    parse = reservations_pb2.ReserveResponse.FromString
    release_body = reservations_pb2.ReleaseRequest
    lines = _LINES
    counts = {"ok": 0, "refused": 0, "errors": 0, "release_errors": 0}
    error_codes: dict[str, int] = {}
    latencies: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        reserve = channel.unary_unary(RESERVE_PATH, None, None)  # bytes in, bytes out
        release = channel.unary_unary(RELEASE_PATH, None, None)
        await channel.channel_ready()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        deadline = started + seconds
        cpu_before = time.process_time()

        async def worker(number: int) -> None:
            position = (offset + number * 997) % len(lines)
            serial = 0
            while time.perf_counter() < deadline:
                line = lines[position]
                position = (position + 1) % len(lines)
                serial += 1
                reservation_id = f"{prefix}-{number}-{serial}"
                body = _reserve_body(reservation_id, line)
                t0 = time.perf_counter_ns()
                try:
                    reply = parse(await reserve(body, timeout=30))
                except grpc.aio.AioRpcError as error:
                    counts["errors"] += 1
                    code = error.code().name
                    error_codes[code] = error_codes.get(code, 0) + 1
                    continue
                latencies.append(time.perf_counter_ns() - t0)
                if reply.outcome != OUTCOME_OK:
                    counts["refused"] += 1
                    continue
                counts["ok"] += 1
                try:
                    request = release_body(reservation_id=reservation_id).SerializeToString()
                    await release(request, timeout=30)
                except grpc.aio.AioRpcError:
                    counts["release_errors"] += 1

        await asyncio.gather(*(worker(i) for i in range(streams)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
    return counts | {
        "elapsed_s": elapsed,
        "client_cpu_s": cpu,
        "error_codes": error_codes,
        "latency_ms_p50": round(percentile(latencies, 0.5) / 1e6, 2) if latencies else 0.0,
        "latency_ms_p99": round(percentile(latencies, 0.99) / 1e6, 2) if latencies else 0.0,
    }


def _load_process(args: tuple[str, str, int, float, float, int]) -> dict[str, Any]:
    return asyncio.run(_load_loop(*args))


def _sequential_latencies(target: str, prefix: str, count: int) -> dict[str, list[int]]:
    """One client, one call at a time: Reserve (1 line, unique id), then Release of it, then a
    GetAvailability of the same SKU (a read: the gRPC round trip without the journal), each
    timed alone."""
    import grpc

    from atpd.v1 import availability_pb2, reservations_pb2

    parse = reservations_pb2.ReserveResponse.FromString
    lines = _LINES
    timings: dict[str, list[int]] = {"reserve": [], "release": [], "get_availability": []}
    with grpc.insecure_channel(target) as channel:
        reserve = channel.unary_unary(RESERVE_PATH, None, None)
        release = channel.unary_unary(RELEASE_PATH, None, None)
        read = channel.unary_unary(AVAILABILITY_PATH, None, None)
        for i in range(count + 50):  # 50 untimed warm-up rounds
            reservation_id = f"{prefix}-{i}"
            line = lines[(i * 7) % len(lines)]
            body = _reserve_body(reservation_id, line)
            release_body = reservations_pb2.ReleaseRequest(reservation_id=reservation_id)
            read_body = availability_pb2.GetAvailabilityRequest(skus=[line[0]])
            t0 = time.perf_counter_ns()
            reply = parse(reserve(body, timeout=30))
            t1 = time.perf_counter_ns()
            if reply.outcome != OUTCOME_OK:
                raise RuntimeError(f"reserve {reservation_id} refused: {reply}")
            release_bytes = release_body.SerializeToString()
            t2 = time.perf_counter_ns()
            release(release_bytes, timeout=30)
            t3 = time.perf_counter_ns()
            read_bytes = read_body.SerializeToString()
            t4 = time.perf_counter_ns()
            read(read_bytes, timeout=30)
            t5 = time.perf_counter_ns()
            if i >= 50:
                timings["reserve"].append(t1 - t0)
                timings["release"].append(t3 - t2)
                timings["get_availability"].append(t5 - t4)
    return timings


def _fsync_latencies(directory: str, count: int, record_bytes: int = 128) -> list[int]:
    """`os.write` of a small record appended to a file, then `os.fdatasync` (what the journal
    does per group commit), `count` times; the fdatasync alone is timed."""
    path = os.path.join(directory, "bench-fsync-probe.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = os.urandom(record_bytes)
    timings = []
    try:
        for _ in range(count):
            os.write(fd, record)
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            timings.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return timings


def _client_pool(ctx: Context, processes: int, cpus: set[int]) -> multiprocessing.pool.Pool:
    lines = ctx.fixture("durability_lines", lambda: _reservable_lines(LINE_POOL))
    context = multiprocessing.get_context("spawn")
    return context.Pool(processes, initializer=_client_init, initargs=(cpus, lines))


# ------------------------------------------------------------------------------ throughput


def _load_round(
    pool: multiprocessing.pool.Pool,
    server: servers.ServerProcess,
    label: str,
    seconds: float,
) -> dict[str, Any]:
    start_at = time.time() + 0.5
    args = [
        (
            server.target,
            f"{label}-p{i}",
            i * (LINE_POOL // CLIENT_PROCESSES),
            start_at,
            seconds,
            STREAMS_PER_PROCESS,
        )
        for i in range(CLIENT_PROCESSES)
    ]
    sequence_before = _status(server.target).journal_sequence
    cpu_before = server.cpu_seconds()
    results = pool.map(_load_process, args)
    server_cpu = server.cpu_seconds() - cpu_before
    sequence_after = _status(server.target).journal_sequence
    totals = {k: sum(r[k] for r in results) for k in ("ok", "refused", "errors", "release_errors")}
    elapsed = max(r["elapsed_s"] for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    return totals | {
        "rate": totals["ok"] / elapsed,
        "elapsed_s": elapsed,
        "server_cpu_s": server_cpu,
        "client_cpu_s": sum(r["client_cpu_s"] for r in results),
        "journal_records": sequence_after - sequence_before,
        "latency_ms_p50": statistics.median(r["latency_ms_p50"] for r in results),
        "latency_ms_p99": max(r["latency_ms_p99"] for r in results),
        "error_codes": codes,
    }


@benchmark("durable_reserve_throughput_ratio", "ratio", Target(">=", 0.8))
def durable_reserve_throughput_ratio(ctx: Context) -> Figure:
    """OK reservations per second against `atpd serve --demo --fsync always` divided by the
    same load against `--fsync none` (64 concurrent clients in 4 Python grpc.aio processes,
    1-line reserve with a unique id then release), alternating rounds of one run; servers on
    one core, clients on the other."""
    rounds = ctx.size(5, 1)
    seconds = ctx.size(5, 3)
    server_cpus, load_cpus = servers.cpu_split()
    ctx.log("durable throughput: choosing reservable demo lines")
    pool = _client_pool(ctx, CLIENT_PROCESSES, load_cpus)
    started: list[servers.ServerProcess] = []
    measured: dict[str, list[dict[str, Any]]] = {"none": [], "always": []}
    try:
        for fsync in ("none", "always"):
            server, data_dir = _start_atpd(ctx, f"atpd-throughput-{fsync}", fsync, server_cpus)
            started.append(server)
            ready_s = server.wait_serving(180)
            status = _status(server.target)
            assert status.fsync_policy.lower() == fsync, status.fsync_policy
            ctx.log(f"  {server.name} SERVING after {ready_s:.1f} s ({data_dir})")
        by_name = {"none": started[0], "always": started[1]}
        for fsync, server in by_name.items():  # warm-up: connections, first-call paths
            warm = _load_round(pool, server, f"warm-{fsync}", 1.5)
            ctx.log(f"  warm-up {fsync:6s} {warm['rate']:7.0f} reserves/s")
        for number in range(rounds):
            for fsync, server in by_name.items():
                result = _load_round(pool, server, f"r{number}-{fsync}", seconds)
                measured[fsync].append(result)
                ctx.log(
                    f"  {fsync:6s} {result['rate']:7.0f} OK reserves/s ({result['refused']} "
                    f"refused, {result['errors']} errors) p50 {result['latency_ms_p50']} ms, "
                    f"server CPU {result['server_cpu_s']:.1f} s, client CPU "
                    f"{result['client_cpu_s']:.1f} s in {result['elapsed_s']:.1f} s"
                )
    finally:
        for server in started:
            server.stop()
        pool.terminate()
        pool.join()
    for fsync, results in measured.items():
        for result in results:
            attempts = result["ok"] + result["refused"] + result["errors"]
            if result["errors"] > 0.01 * attempts or result["ok"] < 0.9 * attempts:
                raise RuntimeError(f"{fsync}: too many failed reserves: {result}")
    rate = {k: statistics.median(r["rate"] for r in v) for k, v in measured.items()}
    ratios = [
        a["rate"] / n["rate"] for a, n in zip(measured["always"], measured["none"], strict=True)
    ]

    def per_reservation(key: str, fsync: str, scale: float) -> float:
        return round(float(statistics.median(r[key] / r["ok"] for r in measured[fsync])) * scale, 1)

    details: dict[str, Any] = {
        "always_reserves_per_s": round(rate["always"]),
        "none_reserves_per_s": round(rate["none"]),
        "round_ratios": [round(r, 3) for r in ratios],
        "always_server_cpu_us_per_reservation": per_reservation("server_cpu_s", "always", 1e6),
        "none_server_cpu_us_per_reservation": per_reservation("server_cpu_s", "none", 1e6),
        "client_cpu_share_of_load_core": round(
            statistics.median(
                r["client_cpu_s"] / r["elapsed_s"] / len(load_cpus)
                for v in measured.values()
                for r in v
            ),
            2,
        ),
        "always_reserve_latency_ms_p50": round(
            statistics.median(r["latency_ms_p50"] for r in measured["always"]), 1
        ),
        "none_reserve_latency_ms_p50": round(
            statistics.median(r["latency_ms_p50"] for r in measured["none"]), 1
        ),
        "journal_records_per_reservation": per_reservation("journal_records", "always", 1.0),
        "refused_fraction": round(
            sum(r["refused"] for v in measured.values() for r in v)
            / sum(r["ok"] + r["refused"] for v in measured.values() for r in v),
            4,
        ),
        "rpc_errors": sum(r["errors"] + r["release_errors"] for v in measured.values() for r in v),
        "concurrency": f"{CLIENT_PROCESSES} processes x {STREAMS_PER_PROCESS} streams",
        "caller": f"{CHANNEL}/{SEGMENT}",
        "rounds": rounds,
        "seconds_per_round": seconds,
        "summary_keys": [
            "always_reserves_per_s",
            "none_reserves_per_s",
            "round_ratios",
            "always_reserve_latency_ms_p50",
            "none_reserve_latency_ms_p50",
            "always_server_cpu_us_per_reservation",
            "none_server_cpu_us_per_reservation",
        ],
    }
    return Figure(
        round(rate["always"] / rate["none"], 3),
        details,
        f"median OK reserves/s with --fsync always over median with --fsync none, {rounds} "
        f"alternating rounds of {seconds} s, {CLIENT_PROCESSES}x{STREAMS_PER_PROCESS} Python "
        f"grpc.aio clients each reserving 1 line (unique id) then releasing it",
    )


# ------------------------------------------------------------------------------ latency


@benchmark("durable_reserve_us_p50", "us", None)
def durable_reserve_us_p50(ctx: Context) -> Figure:
    """Reserve round trip from one sequential Python gRPC client (1 line, unique id; released
    untimed) against `atpd serve --demo --fsync always`: p50; next to it the same against
    `--fsync none` and the p50 of `os.fdatasync` after a small append on the same filesystem."""
    count = ctx.size(2000, 300)
    fsync_count = ctx.size(2000, 300)
    server_cpus, load_cpus = servers.cpu_split()
    pool = _client_pool(ctx, 1, load_cpus)
    started: list[servers.ServerProcess] = []
    timings: dict[str, dict[str, list[int]]] = {}
    fsyncs: list[int] = []
    try:
        data_dirs = {}
        for fsync in ("always", "none"):
            server, data_dir = _start_atpd(ctx, f"atpd-latency-{fsync}", fsync, server_cpus)
            started.append(server)
            data_dirs[fsync] = data_dir
        for server in started:
            ready_s = server.wait_serving(180)
            ctx.log(f"  {server.name} SERVING after {ready_s:.1f} s")
        # fsync probe before and after the reserves, on the always server's filesystem.
        probe_dir = str(data_dirs["always"])
        fsyncs += pool.apply(_fsync_latencies, (probe_dir, fsync_count // 2))
        for server, fsync in zip(started, ("always", "none"), strict=True):
            timings[fsync] = pool.apply(
                _sequential_latencies, (server.target, f"seq-{fsync}", count)
            )
        fsyncs += pool.apply(_fsync_latencies, (probe_dir, fsync_count - fsync_count // 2))
    finally:
        for server in started:
            server.stop()
        pool.terminate()
        pool.join()

    def us(values: list[int], fraction: float) -> float:
        return round(percentile(values, fraction) / 1000, 1)

    half = fsync_count // 2
    always, none = timings["always"], timings["none"]
    details: dict[str, Any] = {
        "reserve_us_p50": us(always["reserve"], 0.5),
        "reserve_us_p90": us(always["reserve"], 0.9),
        "reserve_us_p99": us(always["reserve"], 0.99),
        "fsync_us_p50": us(fsyncs, 0.5),
        "fsync_us_p90": us(fsyncs, 0.9),
        "fsync_us_p99": us(fsyncs, 0.99),
        "fsync_us_p50_before_after": [us(fsyncs[:half], 0.5), us(fsyncs[half:], 0.5)],
        "release_us_p50": us(always["release"], 0.5),
        "get_availability_us_p50": us(always["get_availability"], 0.5),
        "none_reserve_us_p50": us(none["reserve"], 0.5),
        "none_reserve_us_p99": us(none["reserve"], 0.99),
        "none_release_us_p50": us(none["release"], 0.5),
        "none_get_availability_us_p50": us(none["get_availability"], 0.5),
        "always_minus_none_reserve_us_p50": round(
            us(always["reserve"], 0.5) - us(none["reserve"], 0.5), 1
        ),
        "reserves_timed": count,
        "fsyncs_timed": fsync_count,
        "caller": f"{CHANNEL}/{SEGMENT}",
        "filesystem": _filesystem_of(Path(probe_dir)),
        "summary_keys": [
            "fsync_us_p50",
            "fsync_us_p99",
            "none_reserve_us_p50",
            "get_availability_us_p50",
            "reserve_us_p99",
            "always_minus_none_reserve_us_p50",
        ],
    }
    return Figure(
        details["reserve_us_p50"],
        details,
        "p50 of single Reserve round trips (one sequential sync-gRPC client on the other core, "
        "each timed with perf_counter_ns) against --fsync always; none_* = the same against "
        "--fsync none, get_availability_* = a read round trip (no journal) from the same client; "
        "fsync_us_* = os.fdatasync after a 128-byte append on the data dir's filesystem",
    )


def _filesystem_of(path: Path) -> str:
    """The mount (device, type) holding `path`, from /proc/self/mounts."""
    best = ("", "", "")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount, kind = line.split()[:3]
                if str(path.resolve()).startswith(mount) and len(mount) > len(best[1]):
                    best = (device, mount, kind)
    except OSError:
        return "unknown"
    return f"{best[0]} on {best[1]} ({best[2]})"
