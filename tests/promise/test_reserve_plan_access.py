"""Who may reserve an option: a scoped principal only options within its nodes and channels
(the access gate sees no nodes in a Reserve by token); and capacity rows of snapshots written
before holds were spent (5 fields) still load."""

from __future__ import annotations

import json

import pytest

from atpd.core.checks import digest
from atpd.persistence.state_snapshot import export_state, import_state
from atpd.service.option_reserve import check_plan_access
from atpd.service.ownership import PermissionDenied
from atpd.service.principals import Principal, Scope

from .reserve_plan_support import plan_world, two_shipment_plan

GEO = {"WH-1": ("EU", "FR", "Lyon"), "ST-PAR": ("EU", "FR", "Paris")}


def test_scoped_principal_limited_to_its_nodes_and_channels() -> None:
    """A principal scoped to Paris may not reserve an option shipping from WH-1 (Lyon); one
    scoped to EU/FR may; a principal limited to the "store" channel may not reserve a web one."""
    plan = two_shipment_plan()
    paris = Principal("till", "checkout", "token", Scope(frozenset({"ST-PAR"}), ()))
    with pytest.raises(PermissionDenied, match="node 'WH-1'"):
        check_plan_access(paris, plan, GEO.get)
    france = Principal("web", "checkout", "token", Scope(frozenset(), (("EU", "FR"),)))
    check_plan_access(france, plan, GEO.get)
    store_channel = Principal("pos", "checkout", "token", channels=frozenset({"store"}))
    with pytest.raises(PermissionDenied, match="channel 'web'"):
        check_plan_access(store_channel, plan, GEO.get)
    check_plan_access(None, plan, GEO.get)


def test_older_capacity_rows_load() -> None:
    """Carrier capacity rows of 5 fields (no used, no explicit flag) load as explicit, unused."""
    state = plan_world(slots=3)
    arrays, blobs = export_state(state)
    rows = json.loads(blobs["carrier_capacity"])
    blobs["carrier_capacity"] = json.dumps([row[:5] for row in rows]).encode()
    loaded = import_state(arrays, blobs)
    assert digest(loaded) == digest(state)
