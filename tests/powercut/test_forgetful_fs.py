"""The forgetful filesystem against a reference: which files and bytes survive a power cut at
each point of scripted sequences, on the model directly and through a real FUSE mount."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import requires_fuse
from .forgetful_fs import SECTOR_BYTES, ForgetfulModel, mounted, torn_prefix_bytes

Tree = dict[str, bytes]  # path relative to the root -> content; directories end with "/"


def backing_tree(root: Path) -> Tree:
    """What the disk holds: every file with its bytes, every directory as "name/"."""
    tree: Tree = {}
    for directory, names, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        prefix = "" if relative == "." else relative + "/"
        for name in names:
            tree[prefix + name + "/"] = b""
        for name in files:
            tree[prefix + name] = (Path(directory) / name).read_bytes()
    return tree


class Script:
    """Named steps over a model; `handles` holds the files opened by earlier steps."""

    def __init__(self, model: ForgetfulModel) -> None:
        self.model = model
        self.handles: dict[str, int] = {}

    def create(self, path: str) -> None:
        self.handles[path] = self.model.create(path, 0o644)

    def write(self, path: str, data: bytes, offset: int) -> None:
        self.model.write(self.handles[path], data, offset)

    def fsync(self, path: str) -> None:
        self.model.fsync(self.handles[path], datasync=False)

    def fdatasync(self, path: str) -> None:
        self.model.fsync(self.handles[path], datasync=True)


Step = Callable[[Script], None]

# The journal's and the snapshot's patterns: create, write, fsync, rename, fsync the directory.
SCRIPT: list[tuple[Step, Tree]] = [
    # (step, what survives a cut right after it)
    (lambda s: s.create("/seg"), {}),
    (lambda s: s.write("/seg", b"aaaa", 0), {}),
    (lambda s: s.fdatasync("/seg"), {}),  # data durable, but no name points at it yet
    (lambda s: s.model.fsyncdir("/"), {"seg": b"aaaa"}),
    (lambda s: s.write("/seg", b"bbbb", 4), {"seg": b"aaaa"}),
    (lambda s: s.model.mkdir("/dir", 0o755), {"seg": b"aaaa"}),
    (lambda s: s.create("/dir/tmp"), {"seg": b"aaaa"}),
    (lambda s: s.write("/dir/tmp", b"snap", 0), {"seg": b"aaaa"}),
    (lambda s: s.fsync("/dir/tmp"), {"seg": b"aaaa"}),
    (lambda s: s.model.fsyncdir("/dir"), {"seg": b"aaaa"}),  # dir itself not yet in "/"
    (lambda s: s.model.fsyncdir("/"), {"seg": b"aaaa", "dir/": b"", "dir/tmp": b"snap"}),
    (
        lambda s: s.model.rename("/dir/tmp", "/snap"),
        {"seg": b"aaaa", "dir/": b"", "dir/tmp": b"snap"},
    ),
    # The link in "/" is durable, the unlink from "/dir" not yet: both names survive.
    (
        lambda s: s.model.fsyncdir("/"),
        {"seg": b"aaaa", "dir/": b"", "dir/tmp": b"snap", "snap": b"snap"},
    ),
    (lambda s: s.model.fsyncdir("/dir"), {"seg": b"aaaa", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.fsync("/seg"), {"seg": b"aaaabbbb", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.model.truncate("/seg", 2), {"seg": b"aaaabbbb", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.fdatasync("/seg"), {"seg": b"aa", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.model.unlink("/snap"), {"seg": b"aa", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.model.rmdir("/dir"), {"seg": b"aa", "dir/": b"", "snap": b"snap"}),
    (lambda s: s.model.fsyncdir("/"), {"seg": b"aa"}),
]


@pytest.mark.parametrize("cut_after", range(len(SCRIPT)))
def test_scripted_cut_keeps_exactly_the_durable_files(tmp_path: Path, cut_after: int) -> None:
    """A cut after each step of the script leaves exactly the reference's files and bytes."""
    model = ForgetfulModel(tmp_path / "disk")
    script = Script(model)
    for step, _ in SCRIPT[: cut_after + 1]:
        step(script)
    model.cut()
    assert backing_tree(tmp_path / "disk") == SCRIPT[cut_after][1]


def test_reads_see_the_volatile_view_before_a_cut(tmp_path: Path) -> None:
    """Unsynced writes, creations and renames are visible to reads until the power goes."""
    model = ForgetfulModel(tmp_path / "disk")
    handle = model.create("/a", 0o644)
    model.write(handle, b"hello", 0)
    model.rename("/a", "/b")
    assert model.readdir("/") == [".", "..", "b"]
    assert model.read(model.open("/b", os.O_RDONLY), 100, 0) == b"hello"
    assert model.getattr("/b")["st_size"] == 5
    assert backing_tree(tmp_path / "disk") == {}


def test_after_a_cut_every_call_fails_with_eio(tmp_path: Path) -> None:
    """A cut filesystem behaves as a dead disk: EIO, nothing more changes on the disk."""
    model = ForgetfulModel(tmp_path / "disk")
    handle = model.create("/a", 0o644)
    model.fsyncdir("/")
    model.cut()
    for call in (
        lambda: model.write(handle, b"x", 0),
        lambda: model.fsync(handle, datasync=False),
        lambda: model.readdir("/"),
        lambda: model.create("/b", 0o644),
    ):
        with pytest.raises(OSError) as raised:
            call()
        assert raised.value.errno == errno.EIO
    assert backing_tree(tmp_path / "disk") == {"a": b""}


def test_a_new_model_reads_the_disk_as_durable(tmp_path: Path) -> None:
    """After the reboot what was on the disk is durable: a cut right away keeps all of it."""
    model = ForgetfulModel(tmp_path / "disk")
    model.mkdir("/d", 0o755)
    handle = model.create("/d/f", 0o644)
    model.write(handle, b"kept", 0)
    model.fsync(handle, datasync=True)
    model.fsyncdir("/d")
    model.fsyncdir("/")
    model.cut()
    rebooted = ForgetfulModel(tmp_path / "disk")
    handle = rebooted.open("/d/f", os.O_RDWR)
    assert rebooted.read(handle, 10, 0) == b"kept"
    rebooted.write(handle, b"lost", 0)
    rebooted.cut()
    assert backing_tree(tmp_path / "disk") == {"d/": b"", "d/f": b"kept"}


def test_torn_prefix_is_whole_sectors_from_the_write_start() -> None:
    """A torn write keeps 0 bytes, the part up to a sector boundary, or all of it."""
    rng = random.Random(7)
    seen: set[int] = set()
    for _ in range(200):
        kept = torn_prefix_bytes(100, 1200, rng)
        seen.add(kept)
        assert kept in (0, SECTOR_BYTES - 100, 2 * SECTOR_BYTES - 100, 1200)
    assert seen == {0, 412, 924, 1200}
    assert {torn_prefix_bytes(0, 512, rng) for _ in range(50)} == {0, 512}


def test_cut_with_tear_lands_a_prefix_of_the_last_unsynced_write(tmp_path: Path) -> None:
    """A torn cut adds a sector prefix of the newest unsynced write over the durable bytes,
    with a hole of zeros where earlier unsynced writes were lost."""
    outcomes: set[bytes] = set()
    for seed in range(40):
        disk = tmp_path / f"disk-{seed}"
        model = ForgetfulModel(disk)
        handle = model.create("/f", 0o644)
        model.write(handle, b"d" * 10, 0)
        model.fsync(handle, datasync=True)
        model.fsyncdir("/")
        model.write(handle, b"e" * 502, 10)  # unsynced, then overtaken by a later write
        model.write(handle, b"n" * 1024, 512)
        model.cut(tear_seed=seed)
        content = (disk / "f").read_bytes()
        outcomes.add(content)
    full = b"d" * 10 + bytes(502) + b"n" * 1024
    assert outcomes == {b"d" * 10, full[:1024], full}


def test_fsync_of_another_file_makes_nothing_else_durable(tmp_path: Path) -> None:
    """fsync is per file: a sibling's unsynced bytes and the directory's changes stay volatile."""
    model = ForgetfulModel(tmp_path / "disk")
    first = model.create("/first", 0o644)
    second = model.create("/second", 0o644)
    model.fsyncdir("/")
    model.write(first, b"1", 0)
    model.write(second, b"2", 0)
    model.fsync(second, datasync=False)
    model.create("/third", 0o644)
    model.cut()
    assert backing_tree(tmp_path / "disk") == {"first": b"", "second": b"2"}


@requires_fuse
def test_mounted_filesystem_forgets_what_real_system_calls_did_not_sync(tmp_path: Path) -> None:
    """Through a real FUSE mount: fsync, fdatasync and a directory fsync (FSYNCDIR) are what
    make bytes and names survive a cut; the rest vanishes, and a remount shows the disk."""
    backing = tmp_path / "disk"
    mount_point = tmp_path / "mnt"
    with mounted(backing, mount_point) as mount:
        kept = os.open(mount_point / "kept", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(kept, b"synced")
        os.fdatasync(kept)
        os.write(kept, b"-unsynced")
        os.close(kept)
        (mount_point / "sub").mkdir()
        temp = mount_point / "sub" / "tmp"
        temp.write_bytes(b"published")
        with temp.open("rb+") as file:
            os.fsync(file.fileno())
        os.replace(temp, mount_point / "published")
        directory = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(directory)
        os.close(directory)
        (mount_point / "never-synced").write_bytes(b"x")
        assert (mount_point / "kept").read_bytes() == b"synced-unsynced"
        counters = mount.stats()
        assert counters["directory_fsyncs"] == 1, counters
        assert counters["fdatasyncs"] + counters["fsyncs"] == 2, counters
        mount.cut()
        with pytest.raises(OSError) as raised:
            (mount_point / "kept").stat()
        assert raised.value.errno == errno.EIO
    assert backing_tree(backing) == {"kept": b"synced", "sub/": b"", "published": b"published"}
    with mounted(backing, mount_point):
        assert sorted(os.listdir(mount_point)) == ["kept", "published", "sub"]
        assert (mount_point / "kept").read_bytes() == b"synced"
        assert os.listdir(mount_point / "sub") == []
