"""Snapshot and recovery figures (issue 4): how long a snapshot of a big state takes and how
long a restart takes to recover it. (What the journal costs a write: bench/suites/durability.py.)

- `snapshot_seconds` / `recovery_seconds`: a child process builds 10M stock positions and 1M
  open reservations in-process, writes a snapshot (timed), appends a 100k-record journal tail;
  then fresh child processes run `atpd.persistence.recovery.recover` on that directory. The
  full size takes about a minute on the 2-core machine (building 1M reservations through
  `apply` ~20 s, each recovery ~4 s); `--quick` uses 1M positions (10k SKUs x 100 nodes) and
  100k reservations, with the same 100k-record tail.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import servers
from bench.registry import Context, Figure, Target, benchmark

# The build and each recovery run in a child process (`python -c`), so the bench process stays
# small and the recovery includes a cold interpreter and every import.

BASE_MS = 1_764_000_000_000  # a realistic epoch-ms clock for the built state
RESERVATION_TTL_MS = 6 * 24 * 3600 * 1000  # nothing expires during the build or the tail
SEGMENT_BYTES = 64 << 20
CHUNK_SKUS = 8192


def _build_state(
    data_dir: Path, sku_count: int, node_count: int, reservation_count: int, tail: int
) -> dict[str, Any]:
    """Child process: the state, its snapshot (timed) and a journal tail. Returns figures."""
    import numpy as np

    from atpd.core.commands import Line, Release, Reserve
    from atpd.core.results import Outcome, ReservationResult, ReserveResult
    from atpd.core.state import AtpState
    from atpd.core.stock import FIELD_ON_HAND, FIELD_RESERVED, FIELD_SAFETY
    from atpd.persistence.codec import encode_command
    from atpd.persistence.journal import FsyncPolicy, Journal
    from atpd.persistence.snapshot_file import write_snapshot
    from atpd.persistence.state_snapshot import export_state
    from bench.fixtures import synthetic_network

    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    state = AtpState()
    now_ms = BASE_MS
    network = synthetic_network(node_count)
    for node in network:
        assert state.apply(node, now_ms).outcome is Outcome.OK
    names = [f"SKU-{i:08d}" for i in range(sku_count)]
    for name in names:
        state.skus.intern(name)
    stock = state.stock
    stock.ensure(sku_count, node_count)
    rng = np.random.default_rng(7)
    for start in range(0, sku_count, CHUNK_SKUS):
        stop = min(sku_count, start + CHUNK_SKUS)
        on_hand = rng.integers(5, 40, (stop - start, node_count), dtype=np.int32)
        stock.cells[start:stop, FIELD_ON_HAND, :node_count] = on_hand
        stock.cells[start:stop, FIELD_SAFETY, :node_count] = on_hand // 10
        stock.source_seq[start:stop, :node_count] = 1
        stock.present[start:stop, :node_count] = 1
    stock.position_count = sku_count * node_count
    figures["stock_build_s"] = round(time.perf_counter() - t0, 2)

    # Reservations of 1 or 2 lines (alternately) on random positions, 1 unit each: with at
    # least 5 units on hand everywhere, every one of them succeeds.
    node_ids = [node.node_id for node in network]
    total_lines = reservation_count + reservation_count // 2 + tail
    picks_sku = rng.integers(0, sku_count, total_lines).tolist()
    picks_node = rng.integers(0, node_count, total_lines).tolist()
    cursor = 0

    def reserve_command(reservation_id: str, lines: int) -> Reserve:
        nonlocal cursor
        chosen: list[Line] = []
        for _ in range(lines):
            sku, node = picks_sku[cursor], picks_node[cursor]
            cursor += 1
            if chosen and chosen[0].sku == names[sku]:
                sku = (sku + 1) % sku_count
            chosen.append(Line(names[sku], node_ids[node], 1))
        return Reserve(reservation_id, tuple(chosen), RESERVATION_TTL_MS)

    t1 = time.perf_counter()
    apply = state.apply
    for i in range(reservation_count):
        now_ms += 1
        command = reserve_command(f"cart-{i:08d}", 1 + i % 2)
        assert apply(command, now_ms).outcome is Outcome.OK
    figures["reserve_build_s"] = round(time.perf_counter() - t1, 2)
    figures["reserve_build_per_s"] = round(reservation_count / (time.perf_counter() - t1))
    assert state.open_reservations == reservation_count

    # The snapshot, as `write_snapshot_now` takes it: export (copies), write, fsync, rename.
    snapshot_sequence = len(network) + reservation_count  # as if the build had been journaled
    gc.collect()
    t2 = time.perf_counter()
    arrays, blobs = export_state(state)
    t3 = time.perf_counter()
    path = write_snapshot(data_dir, snapshot_sequence, arrays, blobs)
    t4 = time.perf_counter()
    figures["snapshot_s"] = round(t4 - t2, 3)
    figures["snapshot_export_s"] = round(t3 - t2, 3)
    figures["snapshot_write_fsync_s"] = round(t4 - t3, 3)
    figures["snapshot_bytes"] = path.stat().st_size
    figures["snapshot_array_bytes"] = {k: int(v.nbytes) for k, v in arrays.items()}
    del arrays, blobs

    # The journal tail: Reserve (new ids) and Release (of build reservations) alternately,
    # each applied to the state first (only applied commands are journaled), time increasing.
    release_order = rng.permutation(reservation_count).tolist()

    async def append_tail() -> int:
        nonlocal now_ms
        journal = Journal.open(
            data_dir,
            fsync_policy=FsyncPolicy.NONE,
            segment_bytes=SEGMENT_BYTES,
            snapshot_sequence=snapshot_sequence,
        )
        sequence = snapshot_sequence
        for i in range(tail):
            now_ms += 1
            command: Reserve | Release
            result: ReserveResult | ReservationResult
            if i % 2 == 0:
                command = reserve_command(f"tail-{i:08d}", 1 + (i // 2) % 2)
                result = apply(command, now_ms)
            else:
                command = Release(f"cart-{release_order[i // 2]:08d}")
                result = apply(command, now_ms)
            assert result.outcome is Outcome.OK and result.changed, result
            sequence = journal.append(encode_command(command), now_ms)
            if i % 1000 == 999:
                await journal.wait_durable(sequence)
        await journal.wait_durable(sequence)
        await journal.aclose()
        return sequence

    t5 = time.perf_counter()
    last_sequence = asyncio.run(append_tail())
    figures["tail_append_s"] = round(time.perf_counter() - t5, 2)
    assert last_sequence == snapshot_sequence + tail
    figures["journal_bytes"] = sum(
        p.stat().st_size for p in data_dir.iterdir() if p.name.startswith("journal-")
    )
    figures["expected"] = _state_checks(state, FIELD_RESERVED)
    t6 = time.perf_counter()
    figures["expected"]["digest"] = state.digest()
    figures["digest_s"] = round(time.perf_counter() - t6, 2)
    figures["snapshot_sequence"] = snapshot_sequence
    figures["last_sequence"] = last_sequence
    return figures


def _state_checks(state: Any, field_reserved: int) -> dict[str, Any]:
    sku_count, node_count = len(state.skus), len(state.nodes)
    return {
        "positions": int(state.stock.position_count),
        "open_reservations": int(state.open_reservations),
        "reservations": len(state.reservations),
        "reserved_units": int(state.stock.cells[:sku_count, field_reserved, :node_count].sum()),
        "now_ms": int(state.now_ms),
    }


def _recover_once(data_dir: Path, spawned_at: float, digest: bool) -> dict[str, Any]:
    """Child process: `recover()` timed as a whole and in its parts (snapshot load, replay)."""
    started = time.perf_counter()
    from atpd.core.limits import Limits
    from atpd.core.stock import FIELD_RESERVED
    from atpd.persistence import recovery
    from atpd.persistence.journal import FsyncPolicy

    imported = time.perf_counter()
    parts: dict[str, float] = {}
    collections = [0.0, 0.0, 0]  # start of the current one, total seconds, count

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections[0] = time.perf_counter()
        else:
            collections[1] += time.perf_counter() - collections[0]
            collections[2] += 1

    gc.callbacks.append(on_gc)

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                parts[name] = round(time.perf_counter() - t0, 3)

        return wrapper

    recovery.load_snapshot_state = timed("snapshot_load_s", recovery.load_snapshot_state)
    recovery.replay = timed("replay_s", recovery.replay)
    recovered = recovery.recover(
        data_dir, limits=Limits(), fsync_policy=FsyncPolicy.NONE, segment_bytes=SEGMENT_BYTES
    )
    done_wall = time.time()
    done = time.perf_counter()
    gc.callbacks.remove(on_gc)
    recovered.journal.close()
    result: dict[str, Any] = {
        "process_wall_s": round(done_wall - spawned_at, 3),
        "imports_s": round(imported - started, 3),
        "recover_s": round(done - imported, 3),
        "recover_reported_s": round(recovered.seconds, 3),
        "replayed": recovered.replayed,
        "gc_s": round(collections[1], 3),
        "gc_collections": collections[2],
        **parts,
        "checks": _state_checks(recovered.state, FIELD_RESERVED),
    }
    if digest:
        result["checks"]["digest"] = recovered.state.digest()
    return result


def _child(ctx: Context, call: str, timeout_s: float) -> dict[str, Any]:
    """Run `call` (an expression on this module) in a fresh interpreter; its JSON result."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bench.suites import recovery as d\n"
        f"print('RESULT ' + json.dumps({call}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=servers.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def _evict_page_cache(directory: Path) -> None:
    """Drop the page cache of every file in `directory` (fsync, then POSIX_FADV_DONTNEED):
    only these files' pages, no root needed, nothing else on the machine is touched."""
    for path in directory.iterdir():
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _cold_read_mib_per_s(directory: Path) -> float:
    """Read every file of `directory` from disk (page cache evicted before and after)."""
    _evict_page_cache(directory)
    buffer = bytearray(16 << 20)
    total = 0
    t0 = time.perf_counter()
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb", buffering=0) as source:
                while count := source.readinto(buffer):
                    total += count
    seconds = time.perf_counter() - t0
    _evict_page_cache(directory)
    return round(total / 2**20 / seconds)


def _recovery_data(ctx: Context) -> dict[str, Any]:
    """Build (once per run) the data dir the recovery and snapshot figures share."""

    def build() -> dict[str, Any]:
        sku_count = ctx.size(100_000, 10_000)
        reservations = ctx.size(1_000_000, 100_000)
        tail = 100_000
        data_dir = Path(tempfile.mkdtemp(prefix="recovery-data-", dir=ctx.scratch))
        ctx.log(
            f"recovery: building {sku_count * 100:,} positions, {reservations:,} reservations, "
            f"snapshot and a {tail:,}-record journal tail in a child process"
        )
        t0 = time.perf_counter()
        figures = _child(
            ctx,
            f"d._build_state(Path({str(data_dir)!r}), {sku_count}, 100, {reservations}, {tail})",
            3600,
        )
        figures["build_wall_s"] = round(time.perf_counter() - t0, 1)
        figures.update(
            data_dir=str(data_dir),
            skus=sku_count,
            nodes=100,
            tail=tail,
            reservations_built=reservations,
        )
        ctx.log(
            f"  built in {figures['build_wall_s']} s (reserves {figures['reserve_build_s']} s, "
            f"snapshot {figures['snapshot_s']} s, tail {figures['tail_append_s']} s)"
        )
        return figures

    return ctx.fixture(f"recovery_data_{ctx.quick}", build)  # type: ignore[no-any-return]


@benchmark("snapshot_seconds", "s", None)
def snapshot_seconds(ctx: Context) -> Figure:
    """Snapshot of 10M stock positions (100k SKUs x 100 nodes) and 1M open reservations:
    `export_state` + `write_snapshot` (write, fsync, rename, directory fsync), in one process."""
    data = _recovery_data(ctx)
    details: dict[str, Any] = {
        "export_s": data["snapshot_export_s"],
        "write_fsync_s": data["snapshot_write_fsync_s"],
        "snapshot_mib": round(data["snapshot_bytes"] / 2**20, 1),
        "write_mib_per_s": round(data["snapshot_bytes"] / 2**20 / data["snapshot_write_fsync_s"]),
        "array_mib": {k: round(v / 2**20, 1) for k, v in data["snapshot_array_bytes"].items()},
        "positions": data["expected"]["positions"],
        "open_reservations": data["reservations_built"],
        "reserve_build_s": data["reserve_build_s"],
        "reserve_build_per_s": data["reserve_build_per_s"],
        "summary_keys": [
            "export_s",
            "write_fsync_s",
            "snapshot_mib",
            "positions",
            "open_reservations",
        ],
    }
    return Figure(
        data["snapshot_s"],
        details,
        f"export_state (copies arrays, reservations to columnar tables) + write_snapshot (temp "
        f"file, fsync, rename, dir fsync) of {data['expected']['positions']:,} positions and "
        f"{data['reservations_built']:,} open reservations, one run in a child process (its data "
        f"dir is then recovered by recovery_seconds)",
    )


@benchmark("recovery_seconds", "s", Target("<=", 3.0))
def recovery_seconds(ctx: Context) -> Figure:
    """Restart time for 10M stock positions and 1M open reservations: a fresh Python process
    runs `recover()` on a snapshot + 100k-record journal tail (spawn, imports and recovery
    included); page cache warm (headline) and evicted (cold)."""
    data = _recovery_data(ctx)
    data_dir = Path(data["data_dir"])
    expected = data["expected"]
    runs: dict[str, list[dict[str, Any]]] = {"warm": [], "cold": []}
    cold_read = 0.0
    plan = ["warm", "cold", "warm", "warm"] if not ctx.quick else ["warm", "cold", "warm"]
    for number, cache in enumerate(plan):
        if cache == "cold":
            cold_read = _cold_read_mib_per_s(data_dir)  # leaves the page cache evicted
        digest = number == 0
        spawned_at = time.time()
        result = _child(
            ctx, f"d._recover_once(Path({str(data_dir)!r}), {spawned_at!r}, {digest})", 1800
        )
        checks = result.pop("checks")
        for key, value in checks.items():
            if expected[key] != value:
                raise RuntimeError(f"recovered state differs: {key} {value} != {expected[key]}")
        if result["replayed"] != data["tail"]:
            raise RuntimeError(f"replayed {result['replayed']} records, not {data['tail']}")
        runs[cache].append(result)
        ctx.log(
            f"  {cache}: {result['process_wall_s']} s wall from spawn (imports "
            f"{result['imports_s']} s, snapshot load {result['snapshot_load_s']} s, replay "
            f"{result['replay_s']} s of {result['replayed']} records)"
        )
    warm = runs["warm"]
    cold = runs["cold"][0]
    value = statistics.median(r["process_wall_s"] for r in warm)

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in warm)), 3)

    replay_s = median("replay_s")
    details: dict[str, Any] = {
        "page_cache": "warm (files just written); cold = pages evicted with POSIX_FADV_DONTNEED",
        "warm_process_wall_s": [r["process_wall_s"] for r in warm],
        "cold_process_wall_s": cold["process_wall_s"],
        "recover_call_s": median("recover_s"),
        "imports_s": median("imports_s"),
        "gc_s": median("gc_s"),
        "snapshot_load_s": median("snapshot_load_s"),
        "cold_snapshot_load_s": cold["snapshot_load_s"],
        "cold_read_mib_per_s": cold_read,
        "replay_s": replay_s,
        "replay_records_per_s": round(data["tail"] / replay_s),
        "journal_open_and_rest_s": round(
            median("recover_s") - median("snapshot_load_s") - replay_s, 3
        ),
        "replayed_records": data["tail"],
        "positions": expected["positions"],
        "open_reservations_after_tail": expected["open_reservations"],
        "snapshot_mib": round(data["snapshot_bytes"] / 2**20, 1),
        "journal_mib": round(data["journal_bytes"] / 2**20, 1),
        "state_digest_matches": True,
        "summary_keys": [
            "cold_process_wall_s",
            "snapshot_load_s",
            "replay_s",
            "replay_records_per_s",
            "gc_s",
            "positions",
        ],
    }
    return Figure(
        round(value, 2),
        details,
        f"median wall time from spawning a fresh interpreter to recover() returning (imports "
        f"included), {len(warm)} warm-cache runs; {data['skus']:,} SKUs x 100 nodes, "
        f"{data['reservations_built']:,} reservations in the snapshot, {data['tail']:,}-record "
        f"tail; recovered state checked against the builder's digest and counts",
    )
