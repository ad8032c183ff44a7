"""`atpd load` / `atpd export` against a live server: validation by line number, nothing sent
on errors unless --skip-invalid, exact round trips, idempotent re-runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from service.harness import ServerThread, Stubs

from atpd.cli import main
from atpd.v1 import feeds_pb2_grpc

from .support import exported, set_stock

GOOD_CSV = """sku,node_id,on_hand,safety_stock
KNT-1,paris,5,1
KNT-1,lyon,3,
KNT-2,paris,0,2
BAG-9,soho,12,0
"""


def run(server: ServerThread, *args: str) -> int:
    return main([*args, "--target", server.target])


def test_invalid_rows_are_reported_by_line_and_nothing_is_sent(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad row is listed with its line number and reason; the server is not touched."""
    path = tmp_path / "stock.csv"
    path.write_text(
        "sku,node_id,on_hand\n"
        "A-1,paris,4\n"  # line 2
        "A-2,paris,many\n"  # line 3
        "A 3,paris,1\n"  # line 4
        "A-4,oslo,1\n"  # line 5
        "A-1,paris,9\n"  # line 6: again
        "A-5,lyon,-2\n"  # line 7
        "A-6,lyon\n"  # line 8
        "A-7,soho,1000000001\n"  # line 9
        "A-8,soho,3\n"
    )
    digest = server.digest()
    assert run(server, "load", str(path), "--mode", "delta") == 1
    err = capsys.readouterr().err
    for expected in (
        "line 3: on_hand: 'many' is not an integer",
        "line 4: sku: 'A 3' is not",
        "line 5: node_id: unknown node 'oslo'",
        "line 6: position listed again (first at line 2)",
        "line 7: on_hand: -2 is not in 0..1000000000",
        "line 8: 2 fields, the header has 3",
        "line 9: on_hand: 1000000001 is not in",
        "7 problem(s) on 7 of 9 rows; 2 rows are valid",
        "nothing was sent",
    ):
        assert expected in err, expected
    assert err.index("line 3:") < err.index("line 9:")
    assert server.digest() == digest


def test_skip_invalid_loads_the_valid_rows(
    server: ServerThread,
    feeds: feeds_pb2_grpc.FeedServiceStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --skip-invalid the valid rows are loaded (a repeated position keeps its first)."""
    path = tmp_path / "stock.csv"
    path.write_text("sku,node_id,on_hand\nA-1,paris,4\nA-2,paris,x\nA-1,paris,9\nA-3,lyon,2\n")
    assert run(server, "load", str(path), "--mode", "delta", "--skip-invalid") == 0
    out = capsys.readouterr().out
    assert "rows skipped as invalid" in out
    assert {k: v[0] for k, v in exported(feeds).items()} == {
        ("A-1", "paris"): 4,
        ("A-3", "lyon"): 2,
    }


def test_header_problems_refuse_the_file(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header without a required column, or with an unknown one, is refused at line 1."""
    path = tmp_path / "stock.csv"
    path.write_text("sku,node,on_hand\nA,paris,1\n")
    assert run(server, "load", str(path), "--mode", "delta") == 1
    assert "line 1: the header lacks node_id" in capsys.readouterr().err
    path.write_text("sku,node_id,on_hand,saftey_stock\nA,paris,1,1\n")
    assert run(server, "load", str(path), "--mode", "delta") == 1
    assert "line 1: unknown column(s) saftey_stock" in capsys.readouterr().err


def test_full_load_then_export_then_load_round_trips_exactly(
    server: ServerThread,
    api: Stubs,
    feeds: feeds_pb2_grpc.FeedServiceStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """load FILE -> export A -> load A -> export B: A and B are the same bytes, and the file's
    positions are exactly what the server holds."""
    set_stock(api, "GONE", "paris", 8, 1)  # a FULL load of paris zeroes it
    source = tmp_path / "stock.csv"
    source.write_text(GOOD_CSV)
    assert run(server, "load", str(source), "--mode", "full", "--source-sequence", "10") == 0
    out = capsys.readouterr().out
    assert "FULL applied" in out and "positions zeroed" in out
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run(server, "export", str(first)) == 0
    assert run(server, "load", str(first), "--mode", "full", "--source-sequence", "11") == 0
    assert run(server, "export", str(second)) == 0
    assert first.read_bytes() == second.read_bytes()
    lines = first.read_text().splitlines()
    assert lines[0] == "sku,node_id,on_hand,safety_stock,reserved,atp"
    assert set(lines[1:]) == {
        "KNT-1,paris,5,1,0,4",
        "KNT-1,lyon,3,0,0,3",
        "KNT-2,paris,0,2,0,0",
        "BAG-9,soho,12,0,0,12",
        "GONE,paris,0,0,0,0",
    }
    assert exported(feeds)[("KNT-1", "paris")][4] == 11


def test_running_the_same_load_twice_applies_it_once(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default load id comes from the file and options: a re-run prints the stored summary."""
    path = tmp_path / "stock.csv"
    path.write_text(GOOD_CSV)
    assert run(server, "load", str(path), "--mode", "delta") == 0
    digest = server.digest()
    capsys.readouterr()
    assert run(server, "load", str(path), "--mode", "delta") == 0
    assert "DELTA already applied: stored summary" in capsys.readouterr().out
    assert server.digest() == digest


def test_full_load_limited_to_named_nodes_refuses_rows_elsewhere(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --nodes, rows at other nodes are invalid rows (by line), not silently ignored."""
    path = tmp_path / "stock.csv"
    path.write_text(GOOD_CSV)
    assert run(server, "load", str(path), "--mode", "full", "--nodes", "paris,lyon") == 1
    assert "line 5: node_id: 'soho' is not one of --nodes" in capsys.readouterr().err


def test_export_filters_by_node_and_writes_to_stdout(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export - --nodes N writes only that node's positions as CSV on stdout."""
    path = tmp_path / "stock.csv"
    path.write_text(GOOD_CSV)
    assert run(server, "load", str(path), "--mode", "delta") == 0
    capsys.readouterr()
    assert run(server, "export", "-", "--nodes", "paris") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "sku,node_id,on_hand,safety_stock,reserved,atp",
        "KNT-1,paris,5,1,0,4",
        "KNT-2,paris,0,2,0,0",
    ]
