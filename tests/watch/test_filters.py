"""Watch scopes: SKUs, node ids, geo prefix, and the caller (channel, segment) whose ATP the
events carry under a rule set loaded through RulesService.SetRules."""

from __future__ import annotations

from service.harness import NODES, RPC_TIMEOUT_S, World

from atpd.v1 import availability_pb2, watch_pb2

from .support import BACK_IN_STOCK, CHANGED, Api, Watcher, adjust, reserve, set_rules, watch_request

# Every filtered scope below contains (BAG-2, paris), which the last change of each test moves:
# a stream that got it next has sent nothing else in between.
SCOPES: dict[str, watch_pb2.WatchRequest] = {
    "skus": watch_request(skus=["BAG-2", "BAG-3"]),
    "node_ids": watch_request(node_ids=["paris", "berlin"]),
    "geo_prefix": watch_request(geo_prefix="EU/FR"),
    "skus_and_geo": watch_request(skus=["BAG-2"], geo_prefix="EU"),
    "nodes_and_geo": watch_request(node_ids=["paris", "soho"], geo_prefix="EU/FR/Paris"),
}


def in_scope(request: watch_pb2.WatchRequest, sku: str, node_id: str) -> bool:
    if request.skus and sku not in request.skus:
        return False
    if request.node_ids and node_id not in request.node_ids:
        return False
    geo_path = NODES[node_id]
    return not request.geo_prefix or (geo_path + "/").startswith(request.geo_prefix + "/")


def key(event: watch_pb2.WatchEvent) -> tuple[int, int, str, str, int, int]:
    return (event.sequence, event.kind, event.sku, event.node_id, event.old_atp, event.new_atp)


def test_filtered_streams_are_the_unfiltered_stream_restricted_to_their_scope(
    api: Api, world: World
) -> None:
    """Each filtered stream carries exactly the unfiltered stream's events in its scope, with the
    same sequence numbers (skipping the others), nothing outside it."""
    everything = Watcher(api, watch_request())
    everything.sync()
    filtered = {name: Watcher(api, request) for name, request in SCOPES.items()}
    for watcher in filtered.values():
        watcher.sync()
    for sku in ("BAG-1", "BAG-2", "BAG-3"):
        for node_id in NODES:
            world.set_stock(sku, node_id, 5)
    reserve(api, "cart-1", ("BAG-1", "paris", 1), ("BAG-2", "soho", 2), ("BAG-3", "lyon", 3))
    adjust(api, "BAG-2", "berlin", -1)
    world.set_stock("BAG-2", "paris", 9)  # in every scope: the last event of each stream
    reference = everything.take(3 * len(NODES) + 3 + 1 + 1)
    assert (reference[-1].sku, reference[-1].node_id) == ("BAG-2", "paris")
    for name, watcher in filtered.items():
        request = SCOPES[name]
        expected = [key(e) for e in reference if in_scope(request, e.sku, e.node_id)]
        assert len(expected) < len(reference), name  # the scope really filters
        got = [key(e) for e in watcher.take(len(expected))]
        assert got == expected, name
    for watcher in [everything, *filtered.values()]:
        watcher.cancel()


def test_a_position_outside_every_scope_moves_no_filtered_stream(api: Api, world: World) -> None:
    """Changes outside a stream's SKUs, nodes or geo prefix send it nothing: the next event it
    gets is the next change inside its scope."""
    world.set_stock("BAG-2", "paris", 1)
    filtered = {name: Watcher(api, request) for name, request in SCOPES.items()}
    for watcher in filtered.values():
        watcher.sync()
    world.set_stock("OTHER", "soho", 4)  # no scope has OTHER@soho
    adjust(api, "BAG-1", "soho", 2)  # nor BAG-1@soho
    world.set_stock("BAG-2", "paris", 2)
    for name, watcher in filtered.items():
        event = watcher.next()
        assert (event.sku, event.node_id, event.old_atp, event.new_atp) == (
            "BAG-2",
            "paris",
            1,
            2,
        ), name
        assert event.kind == CHANGED
        watcher.cancel()


# web/standard sees only the paris store, with 1 unit of store safety; vip sees every store
# with no store safety.
RULES = """version = "watch-v1"
[defaults]
channel = "web"
segment = "standard"
[policy]
safety = { kinds = { STORE = 1 } }
[channels.web]
nodes = { kinds = ["WAREHOUSE"], include = ["paris"] }
[channels.store]
[segments.standard]
[segments.vip]
nodes = { kinds = ["WAREHOUSE", "STORE"] }
safety = { kinds = { STORE = 0 } }
"""


def test_vip_sees_stores_and_atp_a_standard_web_caller_does_not(api: Api, world: World) -> None:
    """Under rules, each stream carries its own caller's ATP: VIP hears of every store with no
    safety; standard web (named or by default) only of paris, less its safety, and nothing when
    its ATP stays put."""
    set_rules(api, RULES)
    vip = Watcher(api, watch_request(channel="web", segment="vip"))
    standard = Watcher(api, watch_request(channel="web", segment="standard"))
    default = Watcher(api, watch_request())  # the rules' defaults: web/standard
    for watcher in (vip, standard, default):
        watcher.sync()
    world.set_stock("BAG-1", "lyon", 5)  # a store web does not see
    world.set_stock("BAG-1", "paris", 1)  # standard: 1 - 1 safety = 0, no change
    world.set_stock("BAG-1", "paris", 4)
    vip_events = vip.take(3)
    assert [(e.node_id, e.old_atp, e.new_atp, e.kind) for e in vip_events] == [
        ("lyon", 0, 5, BACK_IN_STOCK),
        ("paris", 0, 1, BACK_IN_STOCK),
        ("paris", 1, 4, CHANGED),
    ]
    for watcher in (standard, default):
        event = watcher.next()
        assert (event.node_id, event.old_atp, event.new_atp, event.kind) == (
            "paris",
            0,
            3,
            BACK_IN_STOCK,
        )
        assert event.sequence == vip_events[2].sequence  # the same position change
    # A VIP reservation at lyon moves only VIP's view; one at paris moves both.
    reserve(api, "vip-1", ("BAG-1", "lyon", 2), channel="web", segment="vip")
    reserve(api, "vip-2", ("BAG-1", "paris", 1), channel="web", segment="vip")
    assert [(e.node_id, e.old_atp, e.new_atp) for e in vip.take(2)] == [
        ("lyon", 5, 3),
        ("paris", 4, 3),
    ]
    for watcher in (standard, default):
        event = watcher.next()
        assert (event.node_id, event.old_atp, event.new_atp) == ("paris", 3, 2)
    # What the streams say last is what GetAvailability answers each caller now.
    assert caller_atp(api, "BAG-1", "vip") == {"paris": 3, "lyon": 3}
    assert caller_atp(api, "BAG-1", "standard") == {"paris": 2}
    for watcher in (vip, standard, default):
        watcher.cancel()


def caller_atp(api: Api, sku: str, segment: str) -> dict[str, int]:
    """GetAvailability's per-node ATP for web/`segment` (stocked nodes the caller sees)."""
    request = availability_pb2.GetAvailabilityRequest(
        skus=[sku], channel="web", segment=segment, include_nodes=True
    )
    reply = api.base.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
    return {node.node_id: node.atp for node in reply.items[0].nodes}


def test_rules_without_a_watched_segment_keep_writes_working(api: Api, world: World) -> None:
    """A rule set that drops a segment someone once watched (VIP, since disconnected) is
    accepted, and stock writes and reservations still succeed afterwards."""
    set_rules(api, RULES)
    world.set_stock("BAG-1", "paris", 5)
    vip = Watcher(api, watch_request(segment="vip"))
    vip.sync()
    world.set_stock("BAG-1", "paris", 6)
    assert vip.next().new_atp == 6
    vip.cancel()
    without_vip = RULES.replace("[segments.vip]\n", "[segments.gold]\n")
    without_vip = without_vip.replace('version = "watch-v1"', 'version = "watch-v2"')
    set_rules(api, without_vip)
    world.set_stock("BAG-1", "paris", 7)  # INVALID_ARGUMENT "segment: unknown segment 'vip'"
    reserve(api, "after-rules", ("BAG-1", "paris", 1))
    position = world.position("BAG-1", "paris")
    assert (position.on_hand, position.reserved) == (7, 1)
