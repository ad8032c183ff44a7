"""The demo answers the README tour shows: the same cart promised to a standard customer and a
VIP, a pickup at a Paris store, and the associate view from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from network.support import NOW_MS

from atpd.core.commands import NodeKind, SetNetwork, SetRules
from atpd.core.promise import promise
from atpd.core.promise_pickup import associate
from atpd.core.state import AtpState
from atpd.demo.dataset import load_demo

DEMO = Path(__file__).resolve().parents[2] / "src" / "atpd" / "demo"
CART = [("BAG-RIVA-BLK-000031", 1), ("KNT-MONO-BLK-M-000001", 1)]


@pytest.fixture(scope="module")
def demo() -> AtpState:
    """The demo data set with its rules and network, as a first `serve --demo` loads them."""
    state = AtpState()
    load_demo(state, NOW_MS)
    state.apply(SetRules((DEMO / "rules.toml").read_text(), "rules.toml"), NOW_MS)
    state.apply(SetNetwork((DEMO / "network.toml").read_text(), "network.toml"), NOW_MS)
    return state


def kind_of(state: AtpState, node_id: str) -> NodeKind:
    return state.nodes[state.node_ids.get(node_id)].kind


def test_standard_ships_one_parcel_from_a_warehouse(demo: AtpState) -> None:
    """A standard web customer: every option is one parcel from a warehouse."""
    answer = promise(demo, CART, NOW_MS, "FR", "75008")
    assert answer.options and answer.destination == "fr-paris"
    for option in answer.options:
        assert len(option.shipments) == 1
        assert kind_of(demo, option.shipments[0].node_id) is NodeKind.WAREHOUSE


def test_vip_is_served_from_a_boutique_sooner(demo: AtpState) -> None:
    """A VIP's fastest option comes from a boutique and arrives no later than the standard's."""
    standard = promise(demo, CART, NOW_MS, "FR", "75008")
    vip = promise(demo, CART, NOW_MS, "FR", "75008", segment="vip")
    fastest = min(option.delivery_earliest_day for option in vip.options)
    assert fastest <= min(option.delivery_earliest_day for option in standard.options)
    nodes = {s.node_id for option in vip.options for s in option.shipments}
    assert any(kind_of(demo, node_id) is NodeKind.STORE for node_id in nodes)


def test_pickup_and_associate_view(demo: AtpState) -> None:
    """A pickup at ST-PAR-01 and the associate view from it list the store first."""
    pickup = promise(demo, CART[:1], NOW_MS, pickup_node_id="ST-PAR-01", segment="vip")
    assert pickup.pickup_options
    assert pickup.pickup_options[0].source_node_id == "ST-PAR-01"
    zone, rows = associate(demo, CART[0][0], "ST-PAR-01", NOW_MS, "store", "", "FR", "75008")
    assert zone == "fr-paris" and rows[0].node_id == "ST-PAR-01"
