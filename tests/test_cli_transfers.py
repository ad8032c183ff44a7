"""`atpd transfer ...` and `atpd restock ...` against an in-process server, and their usage
errors."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from service.harness import FakeClock, ServerThread, World, running_server

from atpd.cli.entry import build_parser
from atpd.config import Config
from atpd.v1 import rules_pb2, rules_pb2_grpc

COMMAND_TIMEOUT_S = 60.0
TODAY = "2023-11-14"  # the fake clock's day
RULES = """
version = "cli"
[defaults]
channel = "web"
segment = "standard"
[[restock.targets]]
kinds = ["STORE"]
min_days = 7
max_days = 14
"""


def atpd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def world() -> Iterator[tuple[ServerThread, World]]:
    with running_server(Config(port=0, metrics_port=-1), FakeClock()) as server:
        world = World(server, server.stubs())
        world.add_nodes()
        world.set_stock("BAG-1", "paris", 40)
        world.set_stock("BAG-1", "lyon", 2)
        yield server, world


@pytest.mark.parametrize(
    "args",
    [
        ["transfer", "create", "T-1", "--from", "paris", "BAG-1=2"],  # no --to
        ["transfer", "create", "T-1", "--from", "a", "--to", "b", "BAG-1"],  # no =QTY
        ["transfer", "receive", "T-1", "R-1", "BAG-1=x"],
        ["transfer", "list", "--status", "lost"],
        ["restock", "plan", "--horizon", "0"],
        ["restock", "apply"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed transfer and restock arguments are usage errors (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.durable
def test_transfer_commands_end_to_end(world: tuple[ServerThread, World]) -> None:
    """create, ship, receive (one damaged), list print what happened; cancel after shipping
    exits 1 with FAILED_PRECONDITION."""
    server, _ = world
    target = ("--target", server.target)
    created = atpd(
        "transfer", "create", "T-1", "--from", "paris", "--to", "lyon", "BAG-1=3",
        "--ship-date", TODAY, *target,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "transfer T-1: paris -> lyon, CREATED" in created.stdout
    explained = atpd("availability", "BAG-1", "--explain", *target)
    assert "lyon: 3 inbound from paris, ETA Nov 16" in explained.stdout, explained.stdout
    assert atpd("transfer", "ship", "T-1", *target).returncode == 0
    received = atpd("transfer", "receive", "T-1", "R-1", "BAG-1=2+1", *target)
    assert received.returncode == 0, received.stderr
    assert re.search(r"^BAG-1\s+3\s+0\s+3\s+2\s+1\s+0\s+0$", received.stdout, re.MULTILINE)
    listed = atpd("transfer", "list", "--node", "lyon", *target)
    assert re.search(r"^T-1\s+paris\s+lyon\s+RECEIVED", listed.stdout, re.MULTILINE)
    cancelled = atpd("transfer", "cancel", "T-1", *target)
    assert cancelled.returncode == 1
    assert cancelled.stderr.startswith("atpd: FAILED_PRECONDITION: transfer_id:")


def test_restock_plan_csv_and_apply(world: tuple[ServerThread, World], tmp_path: Path) -> None:
    """`restock plan --csv` prints the lanes and writes every move; `restock apply` creates
    the transfers."""
    server, world_ = world
    rules_pb2_grpc.RulesServiceStub(server.channel()).SetRules(
        rules_pb2.SetRulesRequest(text=RULES), timeout=COMMAND_TIMEOUT_S
    )
    # Sales at lyon give it demand; it is then short of cover.
    world_.set_stock("BAG-1", "lyon", 12)
    from service.harness import reserve_request

    from atpd.v1 import common_pb2

    for i in range(10):
        request = reserve_request(f"sale-{i}", ("BAG-1", "lyon", 1))
        request.kind = common_pb2.RESERVATION_KIND_POS_SALE
        world_.api.reservations.Reserve(request, timeout=COMMAND_TIMEOUT_S)
    target = ("--target", server.target)
    path = tmp_path / "plan.csv"
    planned = atpd("restock", "plan", "--geo", "EU", "--csv", str(path), *target)
    assert planned.returncode == 0, planned.stderr
    assert re.search(r"^paris\s+lyon\s+\S+\s+2\s+1\s+\d+", planned.stdout, re.MULTILINE)
    plan_id = re.search(r"apply with: atpd restock apply (\S+)", planned.stdout)
    assert plan_id is not None, planned.stdout
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["from_node_id"], r["to_node_id"], r["sku"]) for r in rows] == [
        ("paris", "lyon", "BAG-1")
    ]
    applied = atpd("restock", "apply", plan_id.group(1), *target)
    assert applied.returncode == 0, applied.stderr
    assert f"plan {plan_id.group(1)}: OK, 1 transfers" in applied.stdout
