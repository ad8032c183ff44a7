"""`atpd node ...`, `atpd load --kind nodes|supply`, `atpd discrepancies` and `atpd inspection`
against a live server: line-numbered validation, nothing sent on errors, idempotent re-runs,
one atomic step per file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from service.harness import RPC_TIMEOUT_S, ServerThread

from atpd.cli import main
from atpd.cli.catalogue_files import parse_eta_ms
from atpd.v1 import inventory_pb2, supply_pb2, supply_pb2_grpc

from .support import StoreApi, sale_request

NODES_CSV = """node_id,kind,geo_path,ships,pickup,enabled,tags
ST-MIL-01,store,EU/IT/Milan,no,yes,,flagship;milan
WH-IT-01,warehouse,EU/IT/Turin,,,,
"""
SUPPLY_CSV = """supply_id,sku,node_id,quantity,eta,kind
PO-1,bag,ST-MIL-01,5,2026-12-03,po
ASN-7,bag,WH-IT-01,40,2026-12-01T08:00:00+01:00,asn
TR-2,belt,paris,2,1796000000000,transfer
"""


def run(server: ServerThread, *args: str) -> int:
    return main([*args, "--target", server.target])


def nodes_of(store: StoreApi) -> dict[str, inventory_pb2.Node]:
    listed = store.base.inventory.ListNodes(inventory_pb2.ListNodesRequest(), timeout=RPC_TIMEOUT_S)
    return {node.node_id: node for node in listed.nodes}


def supplies(server: ServerThread) -> dict[str, supply_pb2.Supply]:
    stub = supply_pb2_grpc.SupplyServiceStub(server.channel())
    listed = stub.ListSupply(supply_pb2.ListSupplyRequest(), timeout=RPC_TIMEOUT_S)
    return {x.supply_id: x for x in listed.supplies}


def test_nodes_then_supply_files_load_once(
    server: ServerThread, store: StoreApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nodes file creates its nodes, a supply file (PO, ASN, transfer) its supply with the
    ETAs given; running either again answers the stored summary and changes nothing."""
    nodes_file = tmp_path / "nodes.csv"
    nodes_file.write_text(NODES_CSV)
    supply_file = tmp_path / "supply.csv"
    supply_file.write_text(SUPPLY_CSV)
    assert run(server, "load", str(nodes_file), "--kind", "nodes") == 0
    assert re.search(r"nodes created +2\n", capsys.readouterr().out)
    milan = nodes_of(store)["ST-MIL-01"]
    assert (milan.geo_path, milan.ships, milan.pickup, milan.enabled) == (
        "EU/IT/Milan",
        False,
        True,
        True,
    )
    assert list(milan.tags) == ["flagship", "milan"]
    assert run(server, "load", str(supply_file), "--kind", "supply") == 0
    found = supplies(server)
    assert found["PO-1"].eta_ms == parse_eta_ms("2026-12-03") == 1796256000000
    assert found["ASN-7"].eta_ms == 1796108400000
    assert found["TR-2"].kind == supply_pb2.SUPPLY_KIND_TRANSFER
    digest = server.digest()
    capsys.readouterr()
    assert run(server, "load", str(supply_file), "--kind", "supply") == 0
    assert run(server, "load", str(nodes_file), "--kind", "nodes") == 0
    assert "already applied: stored summary" in capsys.readouterr().out
    assert server.digest() == digest


def test_bad_files_are_reported_by_line_and_nothing_is_sent(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad header stops the load; bad rows (unknown node, bad ETA, bad kind, repeated id)
    are listed by line number; the server is not touched."""
    digest = server.digest()
    header = tmp_path / "bad-header.csv"
    header.write_text("supply_id,sku,node,quantity,eta\nPO-1,bag,paris,1,2026-12-03\n")
    assert run(server, "load", str(header), "--kind", "supply") == 1
    assert "line 1: header: missing column 'node_id'" in capsys.readouterr().err
    rows = tmp_path / "supply.csv"
    rows.write_text(
        "supply_id,sku,node_id,quantity,eta\n"
        "PO-1,bag,paris,1,2026-12-03\n"  # line 2: fine
        "PO-2,bag,oslo,1,2026-12-03\n"  # line 3: unknown node
        "PO-3,bag,paris,1,next week\n"  # line 4: bad ETA
        "PO-4,bag,paris,1,2026-12-03T10:00:00\n"  # line 5: no zone
        "PO-1,bag,paris,2,2026-12-04\n"  # line 6: repeated id
        "PO-5,bag,paris,0,2026-12-03\n"  # line 7: quantity
    )
    assert run(server, "load", str(rows), "--kind", "supply") == 1
    err = capsys.readouterr().err
    for expected in (
        "line 3: node_id: unknown node 'oslo': add it first: `atpd node add`",
        "line 4: eta: 'next week' is not a date",
        "line 5: eta: '2026-12-03T10:00:00' has no time zone",
        "line 6: supply_id: 'PO-1' is listed again (first at line 2)",
        "line 7: quantity: 0 is not in",
        "5 problem(s) on 5 of 6 rows",
        "nothing was sent",
    ):
        assert expected in err, expected
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("node_id,kind,geo_path\nST-1,shop,EU/FR\nST-2,store,/EU\n")
    assert run(server, "load", str(nodes), "--kind", "nodes") == 1
    err = capsys.readouterr().err
    assert "line 2: kind: 'shop' is not one of" in err and "line 3: geo_path" in err
    assert server.digest() == digest


def test_node_commands(
    server: ServerThread, store: StoreApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """node add creates (refused if it exists), update keeps what is not given, disable and
    enable flip the flag, update of an unknown node is refused."""
    assert run(server, "node", "add", "ST-NEW", "--kind", "store", "--geo", "EU/FR/Nice") == 0
    assert run(server, "node", "add", "ST-NEW", "--kind", "store", "--geo", "EU/FR/Nice") == 2
    assert "exists already" in capsys.readouterr().err
    assert run(server, "node", "update", "ST-NEW", "--pickup", "--tag", "sea") == 0
    assert run(server, "node", "disable", "ST-NEW") == 0
    node = nodes_of(store)["ST-NEW"]
    assert (node.geo_path, node.ships, node.pickup, node.enabled, list(node.tags)) == (
        "EU/FR/Nice",
        True,
        True,
        False,
        ["sea"],
    )
    assert run(server, "node", "enable", "ST-NEW") == 0
    assert nodes_of(store)["ST-NEW"].enabled
    assert run(server, "node", "update", "ST-NOPE", "--pickup") == 2
    assert "unknown node 'ST-NOPE': add it with `atpd node add`" in capsys.readouterr().err
    assert run(server, "node", "list", "--geo", "EU/FR/Nice") == 0
    assert "ST-NEW" in capsys.readouterr().out


def test_discrepancies_and_inspection_commands(
    server: ServerThread, store: StoreApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """atpd discrepancies lists forced short sales with what was missing; paging hints."""
    store.set_stock("bag", "paris", 1)
    store.sale(sale_request("r-1", ("bag", 3), force=True))
    store.sale(sale_request("r-2", ("bag", 1), force=True))
    assert run(server, "discrepancies", "--node", "paris", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "r-1" in out and "r-2" not in out and "more: --after 1" in out
    assert run(server, "inspection") == 0
    assert "to inspect" in capsys.readouterr().out


def test_amend_command(
    server: ServerThread, store: StoreApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """atpd amend changes a cart (exit 0), reports a refusal with the shortage (exit 3, cart
    unchanged) and refuses a malformed line before calling (exit 2)."""
    store.set_stock("bag", "paris", 2)
    assert run(server, "reserve", "cart-9", "bag@paris=1") == 0
    assert run(server, "amend", "cart-9", "bag@paris=2", "--ttl", "30m") == 0
    assert "OK" in capsys.readouterr().out
    assert run(server, "amend", "cart-9", "bag@paris=5") == 3
    out = capsys.readouterr().out
    assert "INSUFFICIENT_STOCK" in out and "the cart is unchanged" in out
    with pytest.raises(SystemExit) as exited:
        run(server, "amend", "cart-9", "bag-paris-5")
    assert exited.value.code == 2
    assert "is not a line like SKU@NODE=QTY" in capsys.readouterr().err
