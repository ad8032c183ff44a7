"""`atpd promise`: the cart argument's shape, and the tables it prints against a real server
(delivery, VIP, pickup, associate view, listing)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
from service.harness import ServerThread

from atpd.cli.entry import main
from atpd.cli.promise import cart, destination

from .test_promise_grpc import start


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """The promise test server (network, rules, stock) on a fake clock."""
    yield from start(with_network=True)


def test_cart_and_destination_shapes() -> None:
    """A cart is SKU=QTY,... (a SKU alone is 1); a destination is CC:POSTAL; bad ones say why."""
    assert cart("A=2,B") == [("A", 2), ("B", 1)]
    assert destination("fr:75008") == ("FR", "75008")
    for bad in ("A=0", "A=x", "=2", "A,,B"):
        with pytest.raises(argparse.ArgumentTypeError):
            cart(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="COUNTRY:POSTAL_CODE"):
        destination("France:75008")


def run(server: ServerThread, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["promise", *args, "--target", server.target])
    output = capsys.readouterr()
    assert code == 0, output.err
    return output.out


def test_promise_tables(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    """Each mode prints its table: options with shipments, pickups, the associate view and
    the listing; a VIP split shows two shipments."""
    out = run(server, capsys, "BAG-1=1", "--to", "FR:75008")
    assert "promise to fr-paris for web/standard" in out and "WH-1" in out
    out = run(server, capsys, "BAG-1=2,SHOE-1", "--to", "FR:75008", "--segment", "vip")
    assert "2 shipment(s)" in out
    out = run(server, capsys, "BAG-1=2,SHOE-1", "--to", "FR:75008")
    assert "no option:" in out
    out = run(server, capsys, "BAG-1", "--pickup", "ST-PAR")
    assert "ST-PAR" in out and "lead days" in out
    out = run(server, capsys, "BAG-1", "--from-store", "ST-PAR", "--to", "FR:75008")
    assert "BAG-1 seen from ST-PAR, delivery to fr-paris" in out
    out = run(server, capsys, "BAG-1,NOPE", "--listing", "--to", "FR:75008")
    assert "unavailable" in out


def test_promise_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --to, --pickup or --from-store the command exits 2 saying what is missing."""
    assert main(["promise", "BAG-1", "--target", "127.0.0.1:1"]) == 2
    assert "--to COUNTRY:POSTAL_CODE" in capsys.readouterr().err
