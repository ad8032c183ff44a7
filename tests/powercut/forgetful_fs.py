"""A filesystem that forgets, on a power cut, everything that was not made durable.

What is durable follows the rules an application may rely on (POSIX plus what Linux file
systems actually guarantee, as the ALICE study and Jepsen's LazyFS model them):

- A file's content (its bytes and its size, so writes and truncates) becomes durable only on
  fsync or fdatasync of that file.
- A directory's entries (create, mkdir, rename, unlink, rmdir) become durable only on fsync of
  that directory. A rename between two directories is an unlink in one and a link in the
  other; each half is durable once its own directory is fsynced. A file whose entry is durable
  but whose content never was comes back empty.
- Reads always see the latest (volatile) view, as a page cache does.

The model (`ForgetfulModel`) keeps both views in memory, by inode, and applies the durable view
to a backing directory at every fsync: the backing directory always holds exactly what would
survive a power cut right now. `cut()` stops the filesystem (every later call fails with EIO,
as a dead disk does) after optionally tearing the last unsynced write: a random prefix of it,
by 512-byte sectors, lands on disk as a partial write would.

`python -m powercut.forgetful_fs BACKING MOUNT` serves the model over FUSE (libfuse3 through
mfusepy) in the foreground and takes commands on stdin, one per line, answering each on stdout:
`cut`, `cut tear SEED` (answer `ok`), `stats` (answer a JSON object of counters). On start it
prints `ready` once mounted. `ForgetfulMount` drives that process from a test.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTOR_BYTES = 512
ROOT_INODE = 1
# Open file handles at once: a leak in the code under test shows as EMFILE, not memory growth.
OPEN_HANDLES_MAX = 100_000
READY_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.02
# The bound on directory walks (depth and entries), so no loop here is unbounded.
TREE_ENTRIES_MAX = 1_000_000


def _error(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path)


@dataclass
class Inode:
    """A file or a directory, in its volatile (latest) and durable (survives a cut) forms."""

    number: int
    mode: int
    # Files: the bytes. Directories: name -> inode number.
    data: bytearray = field(default_factory=bytearray)
    durable_data: bytes = b""
    entries: dict[str, int] = field(default_factory=dict)
    durable_entries: dict[str, int] = field(default_factory=dict)
    # Bumped whenever durable_data changes, so the backing copy is rewritten only then.
    durable_version: int = 0
    mtime_ns: int = 0

    @property
    def is_directory(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Counters:
    writes: int = 0
    fsyncs: int = 0
    fdatasyncs: int = 0
    directory_fsyncs: int = 0
    cuts: int = 0
    torn_bytes_kept: int = -1  # -1: no write was torn


class ForgetfulModel:
    """The filesystem's state, without FUSE: every method is one system call's effect.

    Paths are absolute within the filesystem ("/", "/a/b"). Errors are OSError with the errno
    the kernel would pass back. Thread-safe: one lock around everything.
    """

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.lock = threading.RLock()
        self.inodes: dict[int, Inode] = {}
        self.handles: dict[int, int] = {}  # file handle -> inode number
        self.next_inode = ROOT_INODE
        self.next_handle = 1
        self.dead = False
        self.counters = Counters()
        # (inode, offset, bytes) of the newest write not yet fsynced: what `cut` may tear.
        self.last_unsynced_write: tuple[int, int, bytes] | None = None
        # What the backing directory holds now: file path -> (inode, durable version).
        self.materialized_files: dict[str, tuple[int, int]] = {}
        self.materialized_directories: set[str] = {"/"}
        self._load_backing()

    # ------------------------------------------------------------------ loading and the disk

    def _new_inode(self, mode: int) -> Inode:
        inode = Inode(self.next_inode, mode, mtime_ns=time.time_ns())
        self.inodes[inode.number] = inode
        self.next_inode += 1
        return inode

    def _load_backing(self) -> None:
        """Everything in the backing directory is durable: it is the disk after a reboot."""
        self.backing.mkdir(parents=True, exist_ok=True)
        root = self._new_inode(stat.S_IFDIR | 0o755)
        assert root.number == ROOT_INODE
        pending: list[tuple[Path, Inode, str]] = [(self.backing, root, "/")]
        for _ in range(TREE_ENTRIES_MAX):
            if not pending:
                break
            directory, inode, path = pending.pop()
            for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
                child_path = _join(path, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    child = self._new_inode(stat.S_IFDIR | 0o755)
                    pending.append((Path(entry.path), child, child_path))
                    self.materialized_directories.add(child_path)
                else:
                    child = self._new_inode(stat.S_IFREG | 0o644)
                    content = Path(entry.path).read_bytes()
                    child.data = bytearray(content)
                    child.durable_data = content
                    self.materialized_files[child_path] = (child.number, 0)
                inode.entries[entry.name] = child.number
            inode.durable_entries = dict(inode.entries)
        else:
            raise AssertionError("backing directory too large")

    def _durable_tree(self) -> tuple[dict[str, int], set[str]]:
        """What survives a cut: files (path -> inode) and directories reachable from the root
        through durable entries only."""
        files: dict[str, int] = {}
        directories: set[str] = {"/"}
        pending: list[tuple[str, int]] = [("/", ROOT_INODE)]
        for _ in range(TREE_ENTRIES_MAX):
            if not pending:
                return files, directories
            path, number = pending.pop()
            for name, child_number in self.inodes[number].durable_entries.items():
                child = self.inodes.get(child_number)
                if child is None:
                    continue
                child_path = _join(path, name)
                if child.is_directory:
                    if child_path not in directories:
                        directories.add(child_path)
                        pending.append((child_path, child_number))
                else:
                    files[child_path] = child_number
        raise AssertionError("durable tree too large")

    def _materialize(self) -> None:
        """Make the backing directory hold exactly the durable view."""
        files, directories = self._durable_tree()
        for path, (number, _) in list(self.materialized_files.items()):
            if files.get(path) != number:
                (self.backing / path.lstrip("/")).unlink(missing_ok=True)
                del self.materialized_files[path]
        for path in sorted(self.materialized_directories - directories, key=len, reverse=True):
            shutil.rmtree(self.backing / path.lstrip("/"), ignore_errors=True)
            self.materialized_directories.discard(path)
            for file_path in [p for p in self.materialized_files if p.startswith(path + "/")]:
                del self.materialized_files[file_path]
        for path in sorted(directories - self.materialized_directories, key=len):
            (self.backing / path.lstrip("/")).mkdir(exist_ok=True)
            self.materialized_directories.add(path)
        for path, number in files.items():
            inode = self.inodes[number]
            if self.materialized_files.get(path) != (number, inode.durable_version):
                (self.backing / path.lstrip("/")).write_bytes(inode.durable_data)
                self.materialized_files[path] = (number, inode.durable_version)

    # ------------------------------------------------------------------ lookups

    def _check_alive(self) -> None:
        if self.dead:
            raise _error(errno.EIO)

    def _lookup(self, path: str) -> Inode:
        inode = self.inodes[ROOT_INODE]
        for name in _parts(path):
            if not inode.is_directory:
                raise _error(errno.ENOTDIR, path)
            number = inode.entries.get(name)
            if number is None:
                raise _error(errno.ENOENT, path)
            inode = self.inodes[number]
        return inode

    def _parent(self, path: str) -> tuple[Inode, str]:
        parts = _parts(path)
        if not parts:
            raise _error(errno.EBUSY, path)
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not parent.is_directory:
            raise _error(errno.ENOTDIR, path)
        return parent, parts[-1]

    def _handle(self, handle: int) -> Inode:
        number = self.handles.get(handle)
        if number is None:
            raise _error(errno.EBADF)
        return self.inodes[number]

    def _open_handle(self, inode: Inode) -> int:
        if len(self.handles) >= OPEN_HANDLES_MAX:
            raise _error(errno.EMFILE)
        handle = self.next_handle
        self.next_handle += 1
        self.handles[handle] = inode.number
        return handle

    # ------------------------------------------------------------------ system calls

    def getattr(self, path: str | None, handle: int | None = None) -> dict[str, Any]:
        with self.lock:
            self._check_alive()
            if path is None:
                assert handle is not None
                inode = self._handle(handle)
            else:
                inode = self._lookup(path)
            size = len(inode.data) if not inode.is_directory else 4096
            links = 2 + sum(
                self.inodes[n].is_directory for n in inode.entries.values() if n in self.inodes
            )
            return {
                "st_mode": inode.mode,
                "st_ino": inode.number,
                "st_nlink": links if inode.is_directory else 1,
                "st_size": size,
                "st_blocks": (size + SECTOR_BYTES - 1) // SECTOR_BYTES,
                "st_blksize": 4096,
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_atime": inode.mtime_ns,
                "st_mtime": inode.mtime_ns,
                "st_ctime": inode.mtime_ns,
            }

    def readdir(self, path: str) -> list[str]:
        with self.lock:
            self._check_alive()
            inode = self._lookup(path)
            if not inode.is_directory:
                raise _error(errno.ENOTDIR, path)
            return [".", "..", *inode.entries]

    def mkdir(self, path: str, mode: int) -> None:
        with self.lock:
            self._check_alive()
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _error(errno.EEXIST, path)
            child = self._new_inode(stat.S_IFDIR | (mode & 0o7777))
            parent.entries[name] = child.number
            parent.mtime_ns = time.time_ns()

    def rmdir(self, path: str) -> None:
        with self.lock:
            self._check_alive()
            parent, name = self._parent(path)
            inode = self._lookup(path)
            if not inode.is_directory:
                raise _error(errno.ENOTDIR, path)
            if inode.entries:
                raise _error(errno.ENOTEMPTY, path)
            del parent.entries[name]

    def create(self, path: str, mode: int) -> int:
        with self.lock:
            self._check_alive()
            parent, name = self._parent(path)
            number = parent.entries.get(name)
            if number is not None:
                inode = self.inodes[number]
                if inode.is_directory:
                    raise _error(errno.EISDIR, path)
                return self._open_handle(inode)
            inode = self._new_inode(stat.S_IFREG | (mode & 0o7777))
            parent.entries[name] = inode.number
            parent.mtime_ns = time.time_ns()
            return self._open_handle(inode)

    def open(self, path: str, flags: int) -> int:
        with self.lock:
            self._check_alive()
            inode = self._lookup(path)
            if flags & os.O_TRUNC and not inode.is_directory:
                self._truncate(inode, 0)
            return self._open_handle(inode)

    def release(self, handle: int) -> None:
        with self.lock:
            self.handles.pop(handle, None)

    def read(self, handle: int, size: int, offset: int) -> bytes:
        with self.lock:
            self._check_alive()
            inode = self._handle(handle)
            return bytes(inode.data[offset : offset + size])

    def write(self, handle: int, data: bytes, offset: int) -> int:
        with self.lock:
            self._check_alive()
            inode = self._handle(handle)
            if offset > len(inode.data):
                inode.data.extend(bytes(offset - len(inode.data)))
            inode.data[offset : offset + len(data)] = data
            inode.mtime_ns = time.time_ns()
            self.counters.writes += 1
            self.last_unsynced_write = (inode.number, offset, bytes(data))
            return len(data)

    def _truncate(self, inode: Inode, length: int) -> None:
        if inode.is_directory:
            raise _error(errno.EISDIR)
        if length < len(inode.data):
            del inode.data[length:]
        else:
            inode.data.extend(bytes(length - len(inode.data)))
        inode.mtime_ns = time.time_ns()
        if self.last_unsynced_write is not None and self.last_unsynced_write[0] == inode.number:
            # A torn write must not resurrect bytes the truncate removed.
            self.last_unsynced_write = None

    def truncate(self, path: str | None, length: int, handle: int | None = None) -> None:
        with self.lock:
            self._check_alive()
            if handle is not None:
                inode = self._handle(handle)
            else:
                assert path is not None
                inode = self._lookup(path)
            self._truncate(inode, length)

    def unlink(self, path: str) -> None:
        with self.lock:
            self._check_alive()
            parent, name = self._parent(path)
            inode = self._lookup(path)
            if inode.is_directory:
                raise _error(errno.EISDIR, path)
            del parent.entries[name]
            parent.mtime_ns = time.time_ns()

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            self._check_alive()
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            moved = self._lookup(old)
            if moved.is_directory and (new + "/").startswith(old + "/"):
                raise _error(errno.EINVAL, new)
            replaced_number = new_parent.entries.get(new_name)
            if replaced_number is not None:
                replaced = self.inodes[replaced_number]
                if replaced.is_directory and not moved.is_directory:
                    raise _error(errno.EISDIR, new)
                if moved.is_directory and not replaced.is_directory:
                    raise _error(errno.ENOTDIR, new)
                if replaced.is_directory and replaced.entries:
                    raise _error(errno.ENOTEMPTY, new)
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = moved.number
            old_parent.mtime_ns = new_parent.mtime_ns = time.time_ns()

    def utimens(self, path: str, times: tuple[int, int] | None) -> None:
        with self.lock:
            self._check_alive()
            inode = self._lookup(path)
            inode.mtime_ns = times[1] if times is not None else time.time_ns()

    def chmod(self, path: str, mode: int) -> None:
        with self.lock:
            self._check_alive()
            inode = self._lookup(path)
            inode.mode = (inode.mode & ~0o7777) | (mode & 0o7777)

    def fsync(self, handle: int, datasync: bool) -> None:
        """fsync / fdatasync of a file: its content (bytes and size) becomes durable."""
        with self.lock:
            self._check_alive()
            inode = self._handle(handle)
            if inode.is_directory:
                self._sync_directory(inode)
                return
            if datasync:
                self.counters.fdatasyncs += 1
            else:
                self.counters.fsyncs += 1
            if inode.durable_data != inode.data:
                inode.durable_data = bytes(inode.data)
                inode.durable_version += 1
            if self.last_unsynced_write is not None and self.last_unsynced_write[0] == (
                inode.number
            ):
                self.last_unsynced_write = None
            self._materialize()

    def fsyncdir(self, path: str) -> None:
        """fsync of a directory: its entries become durable (not its children's content)."""
        with self.lock:
            self._check_alive()
            inode = self._lookup(path)
            if not inode.is_directory:
                raise _error(errno.ENOTDIR, path)
            self._sync_directory(inode)

    def _sync_directory(self, inode: Inode) -> None:
        self.counters.directory_fsyncs += 1
        inode.durable_entries = dict(inode.entries)
        self._materialize()

    def statfs(self) -> dict[str, int]:
        free_blocks = 1 << 30
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": free_blocks,
            "f_bfree": free_blocks,
            "f_bavail": free_blocks,
            "f_files": TREE_ENTRIES_MAX,
            "f_ffree": TREE_ENTRIES_MAX - len(self.inodes),
            "f_favail": TREE_ENTRIES_MAX - len(self.inodes),
            "f_namemax": 255,
        }

    # ------------------------------------------------------------------ power

    def cut(self, tear_seed: int | None = None) -> None:
        """Power cut: from now on every call fails with EIO and only the durable view is left
        (in the backing directory). With `tear_seed`, a random sector-aligned prefix of the
        newest unsynced write reaches the disk first, as a write cut short would."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
            self.counters.cuts += 1
            if tear_seed is not None and self.last_unsynced_write is not None:
                number, offset, data = self.last_unsynced_write
                kept = torn_prefix_bytes(offset, len(data), random.Random(tear_seed))
                self.counters.torn_bytes_kept = kept
                if kept > 0:  # with nothing of it on the disk, not even the size changed
                    inode = self.inodes[number]
                    durable = bytearray(inode.durable_data)
                    if offset > len(durable):
                        durable.extend(bytes(offset - len(durable)))
                    durable[offset : offset + kept] = data[:kept]
                    inode.durable_data = bytes(durable)
                    inode.durable_version += 1
            self.last_unsynced_write = None
            self._materialize()


def torn_prefix_bytes(offset: int, size_bytes: int, rng: random.Random) -> int:
    """How many bytes of a write at `offset` reach the disk when it is cut: whole sectors from
    its start (the first one possibly partial), so the kept part ends on a sector boundary or
    at the write's end."""
    ends = [0]
    boundary = (offset // SECTOR_BYTES + 1) * SECTOR_BYTES
    for _ in range(size_bytes // SECTOR_BYTES + 2):
        if boundary >= offset + size_bytes:
            break
        ends.append(boundary - offset)
        boundary += SECTOR_BYTES
    ends.append(size_bytes)
    return rng.choice(ends)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


# ---------------------------------------------------------------------- FUSE adapter


class FuseOperations:
    """The mfusepy operations object over a model (no base class: mfusepy only looks the
    methods up, and leaving one out leaves the kernel's default, e.g. local file locks)."""

    use_ns = True

    def __init__(self, model: ForgetfulModel) -> None:
        self.model = model

    def init(self, path: str) -> None:
        print("ready", flush=True)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        return self.model.getattr(path, fh)

    def readdir(self, path: str, fh: int) -> list[str]:
        return self.model.readdir(path)

    def mkdir(self, path: str, mode: int) -> int:
        self.model.mkdir(path, mode)
        return 0

    def rmdir(self, path: str) -> int:
        self.model.rmdir(path)
        return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        return self.model.create(path, mode)

    def open(self, path: str, flags: int) -> int:
        return self.model.open(path, flags)

    def release(self, path: str | None, fh: int) -> int:
        self.model.release(fh)
        return 0

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.model.read(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.model.write(fh, data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.model.truncate(path, length, fh)
        return 0

    def unlink(self, path: str) -> int:
        self.model.unlink(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.model.rename(old, new)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self.model.utimens(path, times)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        self.model.chmod(path, mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close() is not a durability point

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.model.fsync(fh, bool(datasync))
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.model.fsyncdir(path)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return self.model.statfs()


def _serve_commands(model: ForgetfulModel) -> None:
    """The control channel: one command per stdin line, one answer per stdout line."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "cut":
            seed = int(words[2]) if len(words) == 3 and words[1] == "tear" else None
            model.cut(seed)
            print("ok", flush=True)
        elif words[0] == "stats":
            with model.lock:
                print(json.dumps(model.counters.__dict__), flush=True)
        else:
            print(f"error unknown command {words[0]!r}", flush=True)


def main(arguments: list[str]) -> int:
    import mfusepy  # only the FUSE process needs libfuse

    backing, mount_point = (Path(argument) for argument in arguments)
    model = ForgetfulModel(backing)
    threading.Thread(target=_serve_commands, args=(model,), daemon=True).start()
    # hard_remove: an unlinked open file is dropped at once, not renamed to .fuse_hidden*
    # (which would be a namespace change of its own). Attribute and entry caching stay on:
    # every change goes through this process, so the kernel's copies stay exact.
    mfusepy.FUSE(
        FuseOperations(model),
        str(mount_point),
        foreground=True,
        fsname="forgetful",
        hard_remove=True,
    )
    return 0


# ---------------------------------------------------------------------- driving it from a test


def fuse_unavailable_reason() -> str | None:
    """Why no FUSE filesystem can be mounted here, or None when it can."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine: FUSE filesystems cannot be mounted"
    return None


class ForgetfulMount:
    """The forgetful filesystem served by a child process at `mount_point`, its durable view
    in `backing`. `mount()` again after `cut()` + `unmount()` is the reboot."""

    def __init__(self, backing: Path, mount_point: Path) -> None:
        self.backing = backing
        self.mount_point = mount_point
        self.process: subprocess.Popen[str] | None = None

    def mount(self) -> None:
        assert self.process is None, "already mounted"
        self.mount_point.mkdir(parents=True, exist_ok=True)
        tests_root = str(Path(__file__).parents[1])
        path = os.environ.get("PYTHONPATH", "")
        environment = dict(
            os.environ, PYTHONPATH=f"{tests_root}{os.pathsep}{path}" if path else tests_root
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "powercut.forgetful_fs",
                str(self.backing),
                str(self.mount_point),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        answer = self._answer(READY_TIMEOUT_S)
        assert answer == "ready", f"forgetful filesystem did not start: {answer!r}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not os.path.ismount(self.mount_point):
            assert time.monotonic() < deadline, "forgetful filesystem never appeared mounted"
            time.sleep(POLL_INTERVAL_S)

    def _answer(self, timeout_s: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout_s)
        if not result:
            raise AssertionError(f"forgetful filesystem gave no answer in {timeout_s} s")
        return result[0].strip()

    def command(self, line: str) -> str:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer(COMMAND_TIMEOUT_S)

    def cut(self, tear_seed: int | None = None) -> None:
        """Power cut: everything not durable is gone from the backing directory; the mount
        answers EIO until it is unmounted."""
        answer = self.command("cut" if tear_seed is None else f"cut tear {tear_seed}")
        assert answer == "ok", answer

    def stats(self) -> dict[str, int]:
        counters: dict[str, int] = json.loads(self.command("stats"))
        return counters

    def unmount(self) -> None:
        if self.process is None:
            return
        try:
            result = subprocess.run(
                ["fusermount3", "-u", str(self.mount_point)], capture_output=True, check=False
            )
            if result.returncode != 0:
                # Something still holds a file open (a process being reaped): detach lazily.
                subprocess.run(
                    ["fusermount3", "-u", "-z", str(self.mount_point)],
                    capture_output=True,
                    check=False,
                )
            self.process.wait(EXIT_TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(EXIT_TIMEOUT_S)
                subprocess.run(["umount", "-l", str(self.mount_point)], check=False)
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self.process = None


@contextmanager
def mounted(backing: Path, mount_point: Path) -> Iterator[ForgetfulMount]:
    """A mounted ForgetfulMount, always unmounted on the way out."""
    mount = ForgetfulMount(backing, mount_point)
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
