"""Snapshot files: round trip, checksum, fallback to an older snapshot, crash leftovers, pruning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from atpd.persistence.snapshot_file import (
    DATA_ALIGNMENT_BYTES,
    FILE_HEADER_BYTES,
    SnapshotCorrupt,
    list_snapshots,
    load_latest_snapshot,
    load_snapshot,
    prune_snapshots,
    snapshot_path,
    write_snapshot,
)


def sample_arrays() -> dict[str, npt.NDArray[np.generic]]:
    grid = np.arange(60, dtype=np.int64).reshape(6, 10)
    return {
        "stock_on_hand": grid,
        "reserved": np.linspace(0, 1, 7, dtype=np.float32),
        "active": np.array([True, False, True]),
        "scalar": np.array(42, dtype=np.int16),
        "empty": np.zeros((0, 4), dtype=np.int32),
        "every_other_column": grid[:, ::2],  # not contiguous: written as a contiguous copy
        "big_endian": np.arange(5, dtype=">u4"),
        "expiry": np.array(["2026-01-01T00:00:00.000"], dtype="datetime64[ms]"),
        "codes": np.array(["FR", "IT", "JP"], dtype="<U2"),
    }


def sample_blobs() -> dict[str, bytes]:
    return {"ids": b"sku-1\x00sku-2\x00", "empty": b"", "meta": bytes(range(256))}


def assert_same_arrays(
    loaded: dict[str, npt.NDArray[np.generic]], expected: dict[str, npt.NDArray[np.generic]]
) -> None:
    assert loaded.keys() == expected.keys()
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name


def test_round_trip_arrays_and_blobs(tmp_path: Path) -> None:
    """Arrays keep dtype, shape and values; blobs keep their bytes; the name has the sequence."""
    arrays, blobs = sample_arrays(), sample_blobs()
    path = write_snapshot(tmp_path, 1234, arrays, blobs)
    assert path == tmp_path / "snapshot-00000000000000001234.snap"
    loaded = load_latest_snapshot(tmp_path)
    assert loaded is not None
    assert loaded.path == path and loaded.last_sequence == 1234
    assert_same_arrays(loaded.arrays, arrays)
    assert loaded.blobs == blobs
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_loaded_arrays_are_writable_aligned_views(tmp_path: Path) -> None:
    """Loading makes no per-array copy: arrays are writable, 64-byte aligned views of one buffer."""
    arrays = {"a": np.arange(1000, dtype=np.int64), "b": np.ones((3, 5), dtype=np.float64)}
    write_snapshot(tmp_path, 1, arrays, {"tag": b"x"})
    loaded = load_snapshot(snapshot_path(tmp_path, 1))
    base_addresses: set[int] = set()
    for array in loaded.arrays.values():
        assert array.flags.writeable and array.flags.c_contiguous
        base = array.base
        assert base is not None
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        base_addresses.add(id(base))
    assert len(base_addresses) == 1
    first_address = loaded.arrays["a"].ctypes.data
    assert (loaded.arrays["b"].ctypes.data - first_address) % DATA_ALIGNMENT_BYTES == 0
    loaded.arrays["a"][0] = -1  # the core mutates loaded state in place


def test_damaged_newest_snapshot_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bit flip in the newest snapshot is detected; the previous one loads, with a warning."""
    write_snapshot(tmp_path, 10, {"a": np.arange(10)}, {})
    newest = write_snapshot(tmp_path, 20, {"a": np.arange(20)}, {})
    data = bytearray(newest.read_bytes())
    data[FILE_HEADER_BYTES + 100] ^= 0x01
    newest.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING, logger="atpd.persistence.snapshot_file")
    loaded = load_latest_snapshot(tmp_path)
    assert loaded is not None and loaded.last_sequence == 10
    assert np.array_equal(loaded.arrays["a"], np.arange(10))
    assert any(newest.name in record.getMessage() for record in caplog.records)
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        load_snapshot(newest)


@pytest.mark.parametrize("keep_bytes", [0, 10, FILE_HEADER_BYTES, FILE_HEADER_BYTES + 50])
def test_truncated_snapshot_is_rejected(tmp_path: Path, keep_bytes: int) -> None:
    """A snapshot cut short anywhere fails validation instead of loading partial state."""
    path = write_snapshot(tmp_path, 5, {"a": np.arange(100)}, {"b": b"blob"})
    path.write_bytes(path.read_bytes()[:keep_bytes])
    with pytest.raises(SnapshotCorrupt):
        load_snapshot(path)
    assert load_latest_snapshot(tmp_path) is None


def test_leftover_temp_file_is_ignored_and_removed(tmp_path: Path) -> None:
    """A temp file from a crash in the middle of a write never loads and is cleaned up."""
    write_snapshot(tmp_path, 7, {"a": np.arange(3)}, {})
    leftover = tmp_path / "snapshot-00000000000000000009.k3j2h1.tmp"
    leftover.write_bytes(b"half a snapshot")
    loaded = load_latest_snapshot(tmp_path)
    assert loaded is not None and loaded.last_sequence == 7
    assert not leftover.exists()


def test_failed_write_leaves_previous_snapshot_and_no_temp(tmp_path: Path) -> None:
    """An error in the middle of write_snapshot removes its temp file and keeps older snapshots."""
    write_snapshot(tmp_path, 7, {"a": np.arange(3)}, {})
    with pytest.raises(AssertionError):
        write_snapshot(tmp_path, 8, {"fine": np.arange(3), "objects": np.array([object()])}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot-00000000000000000007.snap"]


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    """prune_snapshots deletes all but the newest `keep` snapshots, and stray temp files."""
    for sequence in (1, 5, 9, 12):
        write_snapshot(tmp_path, sequence, {"a": np.arange(sequence)}, {})
    (tmp_path / "snapshot-00000000000000000013.x.tmp").write_bytes(b"")
    removed = prune_snapshots(tmp_path, keep=2)
    assert [path.name for path in removed] == [
        "snapshot-00000000000000000001.snap",
        "snapshot-00000000000000000005.snap",
    ]
    assert [sequence for sequence, _ in list_snapshots(tmp_path)] == [9, 12]
    assert not list(tmp_path.glob("*.tmp"))


def test_no_snapshot_loads_as_none(tmp_path: Path) -> None:
    """An empty or missing directory means a fresh start, not an error."""
    assert load_latest_snapshot(tmp_path) is None
    assert load_latest_snapshot(tmp_path / "missing") is None


def test_rewriting_the_same_sequence_replaces_it(tmp_path: Path) -> None:
    """Writing a snapshot twice at one sequence atomically replaces the first."""
    write_snapshot(tmp_path, 3, {"a": np.arange(3)}, {"v": b"1"})
    write_snapshot(tmp_path, 3, {"a": np.arange(4)}, {"v": b"2"})
    loaded = load_latest_snapshot(tmp_path)
    assert loaded is not None and loaded.blobs == {"v": b"2"} and loaded.arrays["a"].size == 4
