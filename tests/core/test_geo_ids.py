"""Geo paths, dense id maps, and node registration."""

from __future__ import annotations

import pytest

from atpd.core.commands import NodeKind, SetStock, UpsertNode
from atpd.core.geo import Geography, parse_geo_path, prefixes
from atpd.core.ids import ID_PATTERN, NODE_ID_PATTERN, IdMap
from atpd.core.limits import MAX_GEO_DEPTH, Limits
from atpd.core.results import LimitExceeded, Outcome
from atpd.core.state import AtpState

from .support import make_state


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("EU", ("EU",)),
        ("EU/FR/Paris", ("EU", "FR", "Paris")),
        ("NA/US/New York/SoHo-2", ("NA", "US", "New York", "SoHo-2")),
        ("a" * 40, ("a" * 40,)),
    ],
)
def test_parse_geo_path_splits_on_slash(path: str, segments: tuple[str, ...]) -> None:
    """A valid geo path splits into its segments, widest first."""
    assert parse_geo_path(path) == segments


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "is empty"),
        ("A/B/C/D/E", "5 levels"),
        ("EU//FR", "segment ''"),
        ("EU/", "segment ''"),
        ("/EU", "segment ''"),
        ("EU/ FR", "segment ' FR'"),
        ("EU/F*R", "segment 'F\\*R'"),
        ("a" * 41, "is not 1-40"),
    ],
)
def test_parse_geo_path_rejects_bad_paths(path: str, message: str) -> None:
    """Empty, too deep, empty-segment or bad-character paths raise ValueError saying why."""
    with pytest.raises(ValueError, match=message):
        parse_geo_path(path)


def test_max_geo_depth_is_four() -> None:
    """Geo paths go four levels deep at most (region / country / city / district)."""
    assert MAX_GEO_DEPTH == 4
    assert parse_geo_path("A/B/C/D") == ("A", "B", "C", "D")


def test_prefixes_lists_every_level() -> None:
    """prefixes() gives every prefix of a path, widest first."""
    assert prefixes(("EU", "FR", "Paris")) == ["EU", "EU/FR", "EU/FR/Paris"]


def test_geography_interns_each_prefix_once_with_its_level() -> None:
    """Placing nodes interns every new prefix once; node_geo holds the id per level or -1."""
    geography = Geography(4)
    geography.place(0, ("EU", "FR", "Paris"))
    geography.place(1, ("EU", "DE"))
    assert len(geography) == 4
    assert geography.geo_ids.names == ["EU", "EU/FR", "EU/FR/Paris", "EU/DE"]
    assert geography.geo_level == [0, 1, 2, 1]
    assert geography.node_geo[:, 0].tolist() == [0, 1, 2, -1]
    assert geography.node_geo[:, 1].tolist() == [0, 3, -1, -1]
    assert geography.node_geo[:, 2].tolist() == [-1] * MAX_GEO_DEPTH
    assert geography.lookup_prefix("EU/DE") == (3, 1)
    assert geography.lookup_prefix("EU/IT") == (-1, -1)


def test_geography_place_replaces_a_node_path() -> None:
    """Re-placing a node clears its old levels; old prefixes stay interned."""
    geography = Geography(2)
    geography.place(0, ("EU", "FR", "Paris"))
    geography.place(0, ("NA",))
    assert geography.node_geo[:, 0].tolist() == [3, -1, -1, -1]
    assert geography.lookup_prefix("EU/FR") == (1, 1)


def test_geography_grow_keeps_placements() -> None:
    """Growing node capacity keeps every placed node's geo ids."""
    geography = Geography(1)
    geography.place(0, ("EU", "FR"))
    geography.grow(8)
    assert geography.node_geo.shape == (MAX_GEO_DEPTH, 8)
    assert geography.node_geo[:, 0].tolist() == [0, 1, -1, -1]
    assert (geography.node_geo[:, 1:] == -1).all()


def test_id_map_is_dense_and_stable() -> None:
    """IdMap gives 0..n-1 in first-seen order, the same index on re-intern, -1 when unknown."""
    ids = IdMap()
    assert ids.intern("b") == 0
    assert ids.intern("a") == 1
    assert ids.intern("b") == 0
    assert len(ids) == 2
    assert ids.get("a") == 1
    assert ids.get("zz") == -1
    assert "a" in ids and "zz" not in ids
    assert ids.name(1) == "a"
    assert ids.names == ["b", "a"]


@pytest.mark.parametrize(
    ("value", "sku_ok", "node_ok"),
    [
        ("SKU-123", True, True),
        ("brand:bag/large.01", True, False),
        ("-leading", False, False),
        ("", False, False),
        ("a" * 64, True, True),
        ("a" * 65, False, False),
        ("has space", False, False),
    ],
)
def test_id_patterns(value: str, sku_ok: bool, node_ok: bool) -> None:
    """SKU ids allow ':' and '/', node ids do not; both are 1-64 printable characters."""
    assert bool(ID_PATTERN.match(value)) is sku_ok
    assert bool(NODE_ID_PATTERN.match(value)) is node_ok


def test_upsert_node_creates_then_updates() -> None:
    """UpsertNode reports created once, then updates kind, path, capabilities and tags in place."""
    state = AtpState()
    first = state.apply(UpsertNode("n1", NodeKind.STORE, ("EU", "FR")), 0)
    assert first.outcome is Outcome.OK and first.created
    second = state.apply(
        UpsertNode(
            "n1",
            NodeKind.OUTLET,
            ("EU", "IT", "Milan"),
            ships=False,
            pickup=True,
            enabled=False,
            tags=("vip",),
        ),
        0,
    )
    assert second.outcome is Outcome.OK and not second.created
    assert len(state.nodes) == 1
    node = state.nodes[0]
    assert (node.kind, node.geo, node.ships, node.pickup, node.enabled, node.tags) == (
        NodeKind.OUTLET,
        "EU/IT/Milan",
        False,
        True,
        False,
        ("vip",),
    )
    assert state.enabled_mask.tolist() == [False]


def test_upsert_node_with_same_content_changes_nothing() -> None:
    """Re-sending a node exactly as stored answers OK with changed=False and the same digest."""
    state = make_state()
    before = state.digest()
    result = state.apply(UpsertNode("paris", NodeKind.STORE, ("EU", "FR", "Paris")), 0)
    assert result.outcome is Outcome.OK
    assert not result.created and not result.changed
    assert state.digest() == before
    changed = state.apply(UpsertNode("paris", NodeKind.STORE, ("EU", "FR")), 0)
    assert changed.changed


def test_list_nodes_by_whole_segment_prefix() -> None:
    """list_nodes(prefix) returns nodes whose path starts with the prefix's whole segments."""
    state = make_state()
    assert [n.node_id for n in state.list_nodes()] == ["paris", "lyon", "berlin", "soho"]
    assert [n.node_id for n in state.list_nodes("EU/FR")] == ["paris", "lyon"]
    assert [n.node_id for n in state.list_nodes("EU/F")] == []
    assert [n.node_id for n in state.list_nodes("NA/US/NYC/SoHo")] == ["soho"]


def test_node_limit() -> None:
    """Creating a node beyond max_nodes raises LimitExceeded; updating an existing one is fine."""
    state = AtpState(Limits(max_nodes=2))
    state.apply(UpsertNode("n1", NodeKind.STORE, ("EU",)), 0)
    state.apply(UpsertNode("n2", NodeKind.STORE, ("EU",)), 0)
    before = state.digest()
    with pytest.raises(LimitExceeded, match="max_nodes"):
        state.apply(UpsertNode("n3", NodeKind.STORE, ("EU",)), 0)
    assert state.digest() == before
    assert state.apply(UpsertNode("n2", NodeKind.STORE, ("NA",)), 0).outcome is Outcome.OK


def test_sku_limit() -> None:
    """Registering a SKU beyond max_skus raises LimitExceeded and changes nothing."""
    state = make_state(Limits(max_skus=1))
    state.apply(SetStock("s1", "paris", 1, 1), 0)
    before = state.digest()
    with pytest.raises(LimitExceeded, match="max_skus"):
        state.apply(SetStock("s2", "paris", 1, 1), 0)
    assert state.digest() == before
    assert state.apply(SetStock("s1", "lyon", 1, 1), 0).outcome is Outcome.OK


def test_digest_tracks_state_and_only_state() -> None:
    """Equal histories give equal digests; any change of stock, nodes or clock changes it."""
    one, two = make_state(), make_state()
    assert one.digest() == two.digest()
    one.apply(SetStock("s1", "paris", 1, 1), 0)
    assert one.digest() != two.digest()
    two.apply(SetStock("s1", "paris", 1, 1), 0)
    assert one.digest() == two.digest()
    two.apply(UpsertNode("paris", NodeKind.STORE, ("EU", "FR", "Paris"), tags=("x",)), 0)
    assert one.digest() != two.digest()
    one.apply(UpsertNode("paris", NodeKind.STORE, ("EU", "FR", "Paris"), tags=("x",)), 5)
    assert one.digest() != two.digest()  # the clock is part of the state
