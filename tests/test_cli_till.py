"""`atpd sale`, `atpd return` and `atpd release-inspection` against an in-process server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service.harness import FakeClock, ServerThread, World, running_server

from atpd.cli.entry import build_parser, main
from atpd.config import Config


@pytest.fixture
def world() -> Iterator[tuple[ServerThread, World]]:
    with running_server(Config(port=0, metrics_port=-1), FakeClock()) as server:
        world = World(server, server.stubs())
        world.add_nodes()
        world.set_stock("BAG-1", "paris", 1)
        yield server, world


def run(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> tuple[int, str]:
    code = main([*args, "--target", target])
    return code, capsys.readouterr().out


@pytest.mark.grpc
def test_forced_sale_return_to_inspection_and_release(
    world: tuple[ServerThread, World], capsys: pytest.CaptureFixture[str]
) -> None:
    """A short sale is refused (exit 3) unless forced, which keeps a discrepancy; a return to
    inspection is listed until released; each command replays by its id."""
    server, _ = world
    target = server.target
    code, out = run(capsys, target, "sale", "R-1", "paris", "BAG-1=2")
    assert code == 3 and "INSUFFICIENT_STOCK" in out and "--force" in out
    code, out = run(capsys, target, "sale", "R-1", "paris", "BAG-1=2", "--force")
    assert code == 0 and "sold 2 BAG-1 with 1 in the system (1 missing)" in out, out
    code, out = run(capsys, target, "sale", "R-1", "paris", "BAG-1=2", "--force")
    assert code == 0 and "replayed" in out
    code, out = run(capsys, target, "discrepancies", "--node", "paris")
    assert "R-1" in out
    code, out = run(capsys, target, "return", "RT-1", "paris", "BAG-1=1", "--inspect")
    assert code == 0 and "set aside to inspect" in out
    code, out = run(capsys, target, "inspection", "--node", "paris")
    assert "BAG-1" in out
    code, out = run(capsys, target, "release-inspection", "IN-1", "paris", "BAG-1=1", "--restock")
    assert code == 0 and "back on the shelf" in out
    code, out = run(capsys, target, "inspection", "--node", "paris")
    assert "BAG-1" not in out


@pytest.mark.parametrize(
    "args",
    [
        ["sale", "R-1", "paris"],  # no line
        ["sale", "R-1", "paris", "BAG-1"],  # no =QTY
        ["return", "RT-1", "paris", "BAG-1=x"],
        ["release-inspection", "IN-1", "paris", "BAG-1=1"],  # neither --restock nor --write-off
        ["release-inspection", "IN-1", "paris", "BAG-1=1", "--restock", "--write-off"],
    ],
)
def test_till_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed till arguments are usage errors (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
