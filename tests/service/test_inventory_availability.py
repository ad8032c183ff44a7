"""Inventory feeds and availability over gRPC: nodes, counts, deltas, positions, roll-ups."""

from __future__ import annotations

from atpd.v1 import admin_pb2, common_pb2, inventory_pb2

from .harness import (
    FAKE_EPOCH_MS,
    RPC_TIMEOUT_S,
    FakeClock,
    ServerThread,
    Stubs,
    World,
    availability_request,
    node,
    reserve_request,
    seed_nodes,
)

OK = common_pb2.OUTCOME_OK


def geo_rows(item: object) -> list[tuple[str, int, int]]:
    return [(g.geo, g.level, g.atp) for g in item.geo]  # type: ignore[attr-defined]


def stock_everywhere(world: World, sku: str = "SKU-1") -> None:
    world.set_stock(sku, "paris", 5)
    world.set_stock(sku, "lyon", 3)
    world.set_stock(sku, "berlin", 2)
    world.set_stock(sku, "soho", 7)


# ---------------------------------------------------------------------------- nodes


def test_upsert_node_creates_then_replaces(api: Stubs) -> None:
    """UpsertNode answers created=True, then False on replace; ListNodes shows the latest."""
    first = api.inventory.UpsertNode(node("paris", tags=("flagship",)), timeout=RPC_TIMEOUT_S)
    assert (first.outcome, first.created) == (OK, True)
    request = node("paris", kind=common_pb2.NODE_KIND_OUTLET, tags=("outlet", "b", "outlet"))
    second = api.inventory.UpsertNode(request, timeout=RPC_TIMEOUT_S)
    assert (second.outcome, second.created) == (OK, False)
    nodes = api.inventory.ListNodes(inventory_pb2.ListNodesRequest(), timeout=RPC_TIMEOUT_S).nodes
    assert [(n.node_id, n.kind, n.geo_path, list(n.tags)) for n in nodes] == [
        ("paris", common_pb2.NODE_KIND_OUTLET, "EU/FR/Paris", ["b", "outlet"])
    ]


def test_upsert_node_moving_geo_moves_its_stock_in_rollups(
    server: ServerThread, api: Stubs
) -> None:
    """Changing a node's geo path over gRPC moves its stock to the new prefixes at once."""
    world = World(server, api)
    world.add_nodes()
    world.set_stock("SKU-1", "lyon", 3)
    moved = api.inventory.UpsertNode(node("lyon", "EU/DE/Munich"), timeout=RPC_TIMEOUT_S)
    assert (moved.outcome, moved.created) == (OK, False)
    response = api.availability.GetAvailability(availability_request("SKU-1"))
    assert geo_rows(response.items[0]) == [("EU", 1, 3), ("EU/DE", 2, 3), ("EU/DE/Munich", 3, 3)]


def test_disabling_a_node_over_grpc_hides_its_stock(server: ServerThread, api: Stubs) -> None:
    """UpsertNode with enabled=false leaves the node's stock out of availability."""
    world = World(server, api)
    world.add_nodes()
    stock_everywhere(world)
    response = api.inventory.UpsertNode(node("soho", enabled=False), timeout=RPC_TIMEOUT_S)
    assert response.outcome == OK
    assert world.total_atp("SKU-1") == 5 + 3 + 2


def test_list_nodes_filters_on_whole_geo_segments(world: World, api: Stubs) -> None:
    """ListNodes(geo_prefix) keeps nodes under it by whole segments ("EU/F" matches none)."""

    def listed(prefix: str) -> list[str]:
        request = inventory_pb2.ListNodesRequest(geo_prefix=prefix)
        return [n.node_id for n in api.inventory.ListNodes(request, timeout=RPC_TIMEOUT_S).nodes]

    assert listed("") == ["paris", "lyon", "berlin", "soho"]
    assert listed("EU") == ["paris", "lyon", "berlin"]
    assert listed("EU/FR") == ["paris", "lyon"]
    assert listed("NA/US/NYC/SoHo") == ["soho"]
    assert listed("EU/F") == []


# ---------------------------------------------------------------------------- stock feeds


def test_set_stock_then_get_stock(world: World, api: Stubs) -> None:
    """SetStock writes on_hand and safety stock; its answer and GetStock show the same position."""
    response = world.set_stock("SKU-1", "paris", 10, safety_stock=2)
    assert response.outcome == OK
    expected = inventory_pb2.Position(
        sku="SKU-1",
        node_id="paris",
        on_hand=10,
        reserved=0,
        safety_stock=2,
        atp=8,
        last_source_sequence=1,
    )
    assert response.position == expected
    assert response.last_source_sequence == 1
    assert world.position("SKU-1", "paris") == expected
    # A later count without safety_stock keeps the safety stock it had.
    world.set_stock("SKU-1", "paris", 4)
    position = world.position("SKU-1", "paris")
    assert (position.on_hand, position.safety_stock, position.atp) == (4, 2, 2)
    assert position.last_source_sequence == 2


def test_get_stock_of_unknown_sku_is_an_empty_position(world: World) -> None:
    """GetStock for a SKU never written answers zeros (not an error) at a known node."""
    position = world.position("NEVER-WRITTEN", "paris")
    assert position == inventory_pb2.Position(sku="NEVER-WRITTEN", node_id="paris")


def test_stale_set_stock_is_refused_and_changes_nothing(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """SetStock with a sequence not above the last is STALE, with that sequence; nothing changes."""
    world.set_stock("SKU-1", "paris", 10)
    world.set_stock("SKU-1", "paris", 9)  # sequence 2
    before = server.digest()
    for sequence in (2, 1):
        request = inventory_pb2.SetStockRequest(
            sku="SKU-1", node_id="paris", on_hand=1, source_sequence=sequence
        )
        response = api.inventory.SetStock(request, timeout=RPC_TIMEOUT_S)
        assert response.outcome == common_pb2.OUTCOME_STALE
        assert response.last_source_sequence == 2
        assert (response.position.on_hand, response.position.last_source_sequence) == (9, 2)
    assert server.digest() == before
    # Sequences are per position: another node starts from scratch.
    request = inventory_pb2.SetStockRequest(
        sku="SKU-1", node_id="lyon", on_hand=1, source_sequence=1
    )
    assert api.inventory.SetStock(request, timeout=RPC_TIMEOUT_S).outcome == OK


def test_adjust_stock_applies_deltas(world: World, api: Stubs) -> None:
    """AdjustStock adds and subtracts on_hand (a first receipt registers the SKU), sequence kept."""

    def adjust(delta: int, sku: str = "SKU-1") -> inventory_pb2.AdjustStockResponse:
        request = inventory_pb2.AdjustStockRequest(
            sku=sku, node_id="paris", delta=delta, reason="receipt"
        )
        response: inventory_pb2.AdjustStockResponse = api.inventory.AdjustStock(
            request, timeout=RPC_TIMEOUT_S
        )
        return response

    received = adjust(+7, sku="NEW-SKU")
    assert received.outcome == OK
    assert (received.position.on_hand, received.position.atp) == (7, 7)
    world.set_stock("SKU-1", "paris", 10)
    assert adjust(+5).position.on_hand == 15
    damaged = adjust(-3)
    assert damaged.outcome == OK
    assert (damaged.position.on_hand, damaged.position.last_source_sequence) == (12, 1)
    assert world.position("SKU-1", "paris").on_hand == 12


def test_adjust_below_zero_is_negative_on_hand_and_changes_nothing(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """AdjustStock below zero is NEGATIVE_ON_HAND with the position unchanged; nothing changes."""
    world.set_stock("SKU-1", "paris", 4)
    before = server.digest()
    request = inventory_pb2.AdjustStockRequest(sku="SKU-1", node_id="paris", delta=-5)
    response = api.inventory.AdjustStock(request, timeout=RPC_TIMEOUT_S)
    assert response.outcome == common_pb2.OUTCOME_NEGATIVE_ON_HAND
    assert response.position.on_hand == 4
    unknown = inventory_pb2.AdjustStockRequest(sku="NEVER-WRITTEN", node_id="paris", delta=-1)
    response = api.inventory.AdjustStock(unknown, timeout=RPC_TIMEOUT_S)
    assert response.outcome == common_pb2.OUTCOME_NEGATIVE_ON_HAND
    assert response.position.on_hand == 0
    assert server.digest() == before


# ---------------------------------------------------------------------------- availability


def test_availability_per_node_and_geo_rollups(world: World, api: Stubs) -> None:
    """GetAvailability rolls ATP up every geo prefix in tree order, totals it, lists nodes."""
    stock_everywhere(world)
    world.set_stock("SKU-1", "paris", 6, safety_stock=1)  # ATP 5 at paris still
    request = availability_request("SKU-1", include_nodes=True)
    response = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
    assert response.as_of_ms == FAKE_EPOCH_MS
    [item] = response.items
    assert (item.sku, item.known, item.total_atp) == ("SKU-1", True, 17)
    assert geo_rows(item) == [
        ("EU", 1, 10),
        ("EU/DE", 2, 2),
        ("EU/DE/Berlin", 3, 2),
        ("EU/FR", 2, 8),
        ("EU/FR/Lyon", 3, 3),
        ("EU/FR/Paris", 3, 5),
        ("NA", 1, 7),
        ("NA/US", 2, 7),
        ("NA/US/NYC", 3, 7),
        ("NA/US/NYC/SoHo", 4, 7),
    ]
    nodes = {n.node_id: (n.atp, n.on_hand, n.reserved, n.safety_stock) for n in item.nodes}
    assert nodes == {
        "paris": (5, 6, 0, 1),
        "lyon": (3, 3, 0, 0),
        "berlin": (2, 2, 0, 0),
        "soho": (7, 7, 0, 0),
    }
    # Without include_nodes only the roll-ups come back.
    plain = api.availability.GetAvailability(availability_request("SKU-1"))
    assert plain.items[0].total_atp == 17
    assert not plain.items[0].nodes


def test_availability_geo_prefix_scopes_the_rollup(world: World, api: Stubs) -> None:
    """geo_prefix restricts the answer to nodes under it; geo entries with zero ATP are left out."""
    stock_everywhere(world)
    request = availability_request("SKU-1", geo_prefix="EU/FR", include_nodes=True)
    [item] = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S).items
    assert item.total_atp == 8
    assert geo_rows(item) == [
        ("EU", 1, 8),
        ("EU/FR", 2, 8),
        ("EU/FR/Lyon", 3, 3),
        ("EU/FR/Paris", 3, 5),
    ]
    assert sorted(n.node_id for n in item.nodes) == ["lyon", "paris"]
    assert world.total_atp("SKU-1", geo_prefix="NA") == 7


def test_availability_node_ids_scope_the_rollup(world: World, api: Stubs) -> None:
    """node_ids restricts the answer to those nodes, and combines with geo_prefix."""
    stock_everywhere(world)
    request = availability_request("SKU-1", node_ids=("paris", "soho"), include_nodes=True)
    [item] = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S).items
    assert item.total_atp == 12
    assert sorted(n.node_id for n in item.nodes) == ["paris", "soho"]
    assert [g.geo for g in item.geo if g.level == 1] == ["EU", "NA"]
    assert world.total_atp("SKU-1", node_ids=("paris", "soho"), geo_prefix="EU") == 5


def test_availability_of_unknown_sku_is_known_false(world: World, api: Stubs) -> None:
    """An unknown SKU is answered in place (request order kept) with known=false and zero ATP."""
    stock_everywhere(world)
    request = availability_request("NOPE", "SKU-1", include_nodes=True)
    items = api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S).items
    assert [(i.sku, i.known, i.total_atp) for i in items] == [
        ("NOPE", False, 0),
        ("SKU-1", True, 17),
    ]
    assert not items[0].geo
    assert not items[0].nodes


def test_availability_leaves_out_disabled_nodes(server: ServerThread, world: World) -> None:
    """A disabled node's stock is not offered in any roll-up."""
    stock_everywhere(world)
    seed_nodes(server, {"soho": "NA/US/NYC/SoHo"}, enabled=False)
    assert world.total_atp("SKU-1") == 10
    assert world.total_atp("SKU-1", geo_prefix="NA") == 0


def test_availability_reflects_reservations(world: World, api: Stubs) -> None:
    """ATP drops by what is held, and GetStock shows the reserved quantity."""
    stock_everywhere(world)
    response = api.reservations.Reserve(
        reserve_request("cart-1", ("SKU-1", "paris", 4), ("SKU-1", "soho", 7)),
        timeout=RPC_TIMEOUT_S,
    )
    assert response.outcome == OK
    [item] = api.availability.GetAvailability(availability_request("SKU-1")).items
    assert item.total_atp == 17 - 11
    assert ("NA", 1, 7) not in geo_rows(item)
    assert not [g for g in item.geo if g.geo.startswith("NA")]
    position = world.position("SKU-1", "paris")
    assert (position.on_hand, position.reserved, position.atp) == (5, 4, 1)


def test_get_status_counts(
    server: ServerThread, world: World, api: Stubs, clock: FakeClock
) -> None:
    """GetStatus reports nodes, SKUs, positions, open reservations and the server time."""
    stock_everywhere(world)
    world.set_stock("SKU-2", "paris", 1)
    api.reservations.Reserve(reserve_request("cart-1", ("SKU-1", "paris", 1)))
    status = api.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT_S)
    assert (status.nodes, status.skus, status.positions, status.open_reservations) == (4, 2, 5, 1)
    assert status.now_ms == clock()
    assert status.version
    seed_nodes(server, {"rome": "EU/IT/Rome"})
    assert api.admin.GetStatus(admin_pb2.GetStatusRequest()).nodes == 5
