"""Test tiers: every test is exactly one of `core`, `grpc` or `durable` (README, "Tests").

- core: in this process only: no server, no files written, no subprocess (the pure core, the
  wire encoders, the argument parser). `pytest -m core` runs them alone in seconds.
- grpc: a server in this process (a real channel on port 0, or grpc_testing); no files.
- durable: files on disk (journal, snapshots, load files, CSVs), subprocesses, crashes.

A test is in the highest tier it needs. A tier marker on the test, its class or its module
(`pytestmark`) says so explicitly; without one, the tier follows from the fixtures the test
uses: a server fixture makes it grpc, a temporary directory or a disk fault makes it durable,
neither makes it core. A test that starts a server or a process by itself (not through a
fixture) carries its marker explicitly. A marker that contradicts the fixtures is an error.
"""

from __future__ import annotations

import pytest

TIERS = ("core", "grpc", "durable")
# Fixtures that start a server in this process (api, feeds, world, ... build on these).
SERVER_FIXTURES = frozenset(
    {
        "server",
        "live_server",
        "start_server",
        "quick_server",
        "export_server",
        "small_server",
        "testing_server",
    }
)
# Fixtures that write files or fault the disk.
DISK_FIXTURES = frozenset({"tmp_path", "tmp_path_factory", "disk_fault"})


def tier_from_fixtures(fixture_names: frozenset[str]) -> str:
    if fixture_names & DISK_FIXTURES:
        return "durable"
    if fixture_names & SERVER_FIXTURES:
        return "grpc"
    return "core"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test its tier marker; refuse a marker below what its fixtures need."""
    for item in items:
        fixture_names = frozenset(getattr(item, "fixturenames", ()))
        needed = tier_from_fixtures(fixture_names)
        marked = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if len(marked) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier marker: {sorted(marked)}")
        if not marked:
            item.add_marker(needed)
            continue
        tier = marked.pop()
        if TIERS.index(tier) < TIERS.index(needed):
            raise pytest.UsageError(
                f"{item.nodeid}: marked {tier} but its fixtures make it {needed}"
            )
