"""Regression tests for what the power-cut cycles found: directories that atpd creates must be
durable in their parent before anything inside them is acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from atpd.core.bulk import BulkLoad, LoadColumns, LoadMode
from atpd.persistence.journal import FsyncPolicy, Journal
from atpd.persistence.load_file import new_file_name, read_load_file, write_load_file

from .conftest import requires_fuse
from .forgetful_fs import ForgetfulMount

pytestmark = [pytest.mark.durable, requires_fuse]

SEGMENT_BYTES = 4096


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[ForgetfulMount]:
    """A mounted forgetful filesystem, unmounted at the end."""
    mount = ForgetfulMount(tmp_path / "disk", tmp_path / "mnt")
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()


def reboot(mount: ForgetfulMount) -> None:
    """Power cut, then mount again what was durable."""
    mount.cut()
    mount.unmount()
    mount.mount()


def test_journal_in_a_new_data_directory_survives_a_power_cut(forgetful: ForgetfulMount) -> None:
    """An acknowledged record in a data directory the journal created itself survives a cut
    (the directory's own entry is fsynced in its parent)."""
    directory = forgetful.mount_point / "data" / "journal"

    async def append_one() -> None:
        journal = Journal.open(
            directory, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=SEGMENT_BYTES
        )
        sequence = journal.append(b"acknowledged", timestamp_ms=1)
        await journal.wait_durable(sequence)
        forgetful.cut()
        journal.close()

    asyncio.run(append_one())
    forgetful.unmount()
    forgetful.mount()
    journal = Journal.open(directory, fsync_policy=FsyncPolicy.ALWAYS, segment_bytes=SEGMENT_BYTES)
    try:
        assert [record.payload for record in journal.records_after(0)] == [b"acknowledged"]
    finally:
        journal.close()


def test_load_file_in_a_new_loads_directory_survives_a_power_cut(
    forgetful: ForgetfulMount,
) -> None:
    """The first load file ever written (which creates loads/) is still there after a cut."""
    data_dir = forgetful.mount_point
    columns = LoadColumns(
        ["A"],
        np.array([0], np.int32),
        ["paris"],
        np.array([0], np.int32),
        np.array([7], np.int32),
        np.array([-1], np.int32),
    )
    command = BulkLoad.create("first", LoadMode.DELTA, 0, (), columns)
    stored = write_load_file(data_dir, command, new_file_name("first"))
    reboot(forgetful)
    resolved = read_load_file(data_dir, stored)
    assert resolved.fingerprint == command.fingerprint
