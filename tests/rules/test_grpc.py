"""Rules and supply over a real gRPC channel: callers with different rules get different
answers for the same stock, Reserve honours them, SetRules/GetRules round trip, bad rules are
INVALID_ARGUMENT with the old rules kept, and the supply service end to end."""

from __future__ import annotations

from functools import partial

import grpc
import pytest
from service.harness import RPC_TIMEOUT_S, FakeClock, ServerThread, reserve_request, rpc_error

from atpd.v1 import (
    availability_pb2,
    common_pb2,
    inventory_pb2,
    reservations_pb2,
    rules_pb2,
    supply_pb2,
)

from .conftest import Api
from .support import HOUR_MS, SOURCE, rules_text

OK = common_pb2.OUTCOME_OK
INSUFFICIENT = common_pb2.OUTCOME_INSUFFICIENT_STOCK
BAG = "BAG-1"

# Web sees warehouses and the Paris flagship, keeps one unit back, counts purchase orders only;
# VIPs see every store without store safety and count returns in transit; the flagship's last
# unit is kept for VIPs.
SHOP_RULES = rules_text(
    {
        "policy": 'supply = { kinds = ["PURCHASE_ORDER"], horizon_hours = 72 }',
        "channels.web": 'nodes = { kinds = ["WAREHOUSE"], include = ["st-par"] }\nbuffer = 1',
        "segments.vip": (
            'nodes = { kinds = ["WAREHOUSE", "STORE"] }\n'
            "safety = { kinds = { STORE = 0 } }\n"
            'supply = { kinds = ["PURCHASE_ORDER", "RETURN_IN_TRANSIT"], horizon_hours = 72 }'
        ),
        "channels.web.segments.vip": "buffer = 0",
    },
    ('name = "flagship"\nnodes = { tags = ["flagship"] }\nunits = 1\nfor = ["*/vip"]',),
    version="shop-1",
)


class Client:
    """Terse calls with per-position source sequences."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.sequence: dict[tuple[str, str], int] = {}

    def set_rules(self, text: str, source: str = SOURCE) -> rules_pb2.SetRulesResponse:
        request = rules_pb2.SetRulesRequest(text=text, source=source)
        response: rules_pb2.SetRulesResponse = self.api.rules.SetRules(
            request, timeout=RPC_TIMEOUT_S
        )
        return response

    def get_rules(self) -> rules_pb2.GetRulesResponse:
        response: rules_pb2.GetRulesResponse = self.api.rules.GetRules(
            rules_pb2.GetRulesRequest(), timeout=RPC_TIMEOUT_S
        )
        return response

    def stock(self, sku: str, node_id: str, on_hand: int, safety: int | None = None) -> None:
        sequence = self.sequence[(sku, node_id)] = self.sequence.get((sku, node_id), 0) + 1
        request = inventory_pb2.SetStockRequest(
            sku=sku, node_id=node_id, on_hand=on_hand, source_sequence=sequence
        )
        if safety is not None:
            request.safety_stock = safety
        assert self.api.core.inventory.SetStock(request, timeout=RPC_TIMEOUT_S).outcome == OK

    def availability(
        self, *skus: str, channel: str = "", segment: str = "", nodes: bool = True
    ) -> availability_pb2.GetAvailabilityResponse:
        request = availability_pb2.GetAvailabilityRequest(
            skus=list(skus),
            channel=channel,
            segment=segment,
            include_nodes=nodes,
            explain=nodes,
        )
        response: availability_pb2.GetAvailabilityResponse = (
            self.api.core.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
        )
        return response

    def reserve(
        self,
        reservation_id: str,
        *lines: tuple[str, str, int],
        channel: str = "",
        segment: str = "",
    ) -> reservations_pb2.ReserveResponse:
        request = reserve_request(reservation_id, *lines, channel=channel, segment=segment)
        response: reservations_pb2.ReserveResponse = self.api.core.reservations.Reserve(
            request, timeout=RPC_TIMEOUT_S
        )
        return response

    def add_supply(
        self, supply_id: str, sku: str, node_id: str, quantity: int, eta_ms: int, kind: int
    ) -> supply_pb2.SupplyResponse:
        request = supply_pb2.AddSupplyRequest(
            supply_id=supply_id,
            sku=sku,
            node_id=node_id,
            quantity=quantity,
            eta_ms=eta_ms,
            kind=kind,  # type: ignore[arg-type]
        )
        response: supply_pb2.SupplyResponse = self.api.supply.AddSupply(
            request, timeout=RPC_TIMEOUT_S
        )
        return response

    def list_supply(self, sku: str = "") -> list[supply_pb2.Supply]:
        request = supply_pb2.ListSupplyRequest(sku=sku)
        return list(self.api.supply.ListSupply(request, timeout=RPC_TIMEOUT_S).supplies)


def node_atp(response: availability_pb2.GetAvailabilityResponse) -> dict[str, int]:
    return {n.node_id: n.atp for n in response.items[0].nodes if n.atp}


@pytest.fixture
def client(api: Api) -> Client:
    return Client(api)


@pytest.fixture
def shop(client: Client, clock: FakeClock) -> Client:
    """SHOP_RULES in force; bags: 10 at wh-par, 3 at the flagship st-par, 2 at st-lyo (store
    safety 1); 2 bags returning to st-lyo tomorrow."""
    assert client.set_rules(SHOP_RULES).version == "shop-1"
    client.stock(BAG, "wh-par", 10)
    client.stock(BAG, "st-par", 3, safety=1)
    client.stock(BAG, "st-lyo", 2, safety=1)
    response = client.add_supply(
        "ret-1", BAG, "st-lyo", 2, clock() + 24 * HOUR_MS, supply_pb2.SUPPLY_KIND_RETURN_IN_TRANSIT
    )
    assert response.outcome == OK
    return client


def test_vip_and_standard_web_callers_get_different_answers(shop: Client) -> None:
    """VIP and standard web callers get different, explained answers for the same stock."""
    standard = shop.availability(BAG, channel="web", segment="standard")
    vip = shop.availability(BAG, channel="web", segment="vip")
    assert (standard.channel, standard.segment, standard.rules_version) == (
        "web",
        "standard",
        "shop-1",
    )
    assert (vip.channel, vip.segment, vip.rules_version) == ("web", "vip", "shop-1")
    # web/standard: wh-par 10 - buffer 1; st-par 3 - safety 1 - buffer 1 - protected 1.
    assert node_atp(standard) == {"wh-par": 9}
    assert standard.items[0].total_atp == 9
    # web/vip: wh-par 10; st-par 3 (store safety 0, the protection is theirs); st-lyo 2 + 2.
    assert node_atp(vip) == {"wh-par": 10, "st-par": 3, "st-lyo": 4}
    assert vip.items[0].total_atp == 17
    explained = {n.node_id: n for n in standard.items[0].nodes}
    flagship = explained["st-par"]
    assert (flagship.on_hand, flagship.reserved, flagship.safety_stock) == (3, 0, 1)
    assert (flagship.buffer, flagship.supply, flagship.protected_for_others) == (1, 0, 1)
    assert "st-lyo" not in explained  # not visible to web/standard
    vip_lyon = {n.node_id: n for n in vip.items[0].nodes}["st-lyo"]
    assert (vip_lyon.safety_stock, vip_lyon.supply, vip_lyon.atp) == (0, 2, 4)
    # The compact answer (no per-node entries) has the same totals and roll-ups.
    compact = shop.availability(BAG, channel="web", segment="vip", nodes=False)
    assert compact.items[0].total_atp == 17
    assert {g.geo: g.atp for g in compact.items[0].geo} == {g.geo: g.atp for g in vip.items[0].geo}
    assert (compact.channel, compact.segment, compact.rules_version) == ("web", "vip", "shop-1")
    # Empty names are the defaults.
    default = shop.availability(BAG)
    assert (default.channel, default.segment) == ("web", "standard")
    assert node_atp(default) == node_atp(standard)


def test_reserve_honours_the_callers_rules(shop: Client, server: ServerThread) -> None:
    """Reserve over gRPC applies the caller's rules and records the caller."""
    hidden = shop.reserve("w1", (BAG, "st-lyo", 1), channel="web", segment="standard")
    assert hidden.outcome == INSUFFICIENT
    assert [(s.node_id, s.requested, s.available) for s in hidden.shortages] == [("st-lyo", 1, 0)]
    protected = shop.reserve("w2", (BAG, "st-par", 1), channel="web", segment="standard")
    assert protected.outcome == INSUFFICIENT
    assert [s.available for s in protected.shortages] == [0]
    vip = shop.reserve("v1", (BAG, "st-lyo", 4), (BAG, "st-par", 3), channel="web", segment="vip")
    assert vip.outcome == OK, vip
    assert (vip.reservation.channel, vip.reservation.segment) == ("web", "vip")
    assert node_atp(shop.availability(BAG, channel="web", segment="vip")) == {"wh-par": 10}
    server.check_invariants()


def test_unknown_caller_is_invalid_argument(shop: Client) -> None:
    """An unknown or malformed channel/segment is INVALID_ARGUMENT naming it."""
    for channel, segment, named in (
        ("marketplace", "", "marketplace"),
        ("web", "gold", "gold"),
        ("Web!", "", "channel"),
    ):
        error = rpc_error(partial(shop.availability, BAG, channel=channel, segment=segment))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (error.details() or "")
        error = rpc_error(
            partial(shop.reserve, "x", (BAG, "wh-par", 1), channel=channel, segment=segment)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (error.details() or "")


def test_set_and_get_rules_round_trip(client: Client) -> None:
    """SetRules then GetRules shows text, version, callers and defaults; versions chain."""
    empty = client.get_rules()
    assert (empty.version, empty.text, list(empty.channels)) == ("", "", [])
    first = client.set_rules(SHOP_RULES)
    assert (first.outcome, first.version, first.previous_version) == (OK, "shop-1", "")
    shown = client.get_rules()
    assert shown.text == SHOP_RULES
    assert shown.version == "shop-1"
    assert list(shown.channels) == ["store", "web"]
    assert list(shown.segments) == ["standard", "vip"]
    assert (shown.default_channel, shown.default_segment) == ("web", "standard")
    second = client.set_rules(rules_text(version="shop-2"))
    assert (second.version, second.previous_version) == ("shop-2", "shop-1")
    assert client.get_rules().version == "shop-2"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (rules_text({"channels.web": "bufer = 1"}, version="bad"), "channels.web: unknown key"),
        (rules_text({"channels.web": 'buffer = "x"'}, version="bad"), "channels.web.buffer"),
        ('version = "bad"\n[channels.web\n', "line 2"),
        (
            rules_text({"segments.vip": 'supply = { kinds = ["GIFT"] }'}, version="bad"),
            "segments.vip.supply.kinds[0]",
        ),
    ],
)
def test_bad_rules_are_invalid_argument_and_keep_the_old_rules(
    shop: Client, server: ServerThread, text: str, named: str
) -> None:
    """Bad rules are INVALID_ARGUMENT naming source and key; the old rules stay in force."""
    before = server.digest()
    answer = node_atp(shop.availability(BAG, channel="web", segment="vip"))
    error = rpc_error(lambda: shop.set_rules(text))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert SOURCE in details and named in details, details
    assert shop.get_rules().version == "shop-1"
    assert shop.get_rules().text == SHOP_RULES
    assert node_atp(shop.availability(BAG, channel="web", segment="vip")) == answer
    assert server.digest() == before


def test_rules_naming_an_unknown_node_are_refused_as_documented(
    shop: Client, server: ServerThread
) -> None:
    """An unknown node is refused in the README's form `rules: FILE: KEY: unknown node`."""
    before = server.digest()
    text = rules_text({"channels.web": 'nodes = { include = ["ST-NOPE-01"] }'}, version="bad")
    error = rpc_error(lambda: shop.set_rules(text, "shop.toml"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert shop.get_rules().version == "shop-1"
    assert server.digest() == before
    expected = "rules: shop.toml: channels.web.nodes.include[0]: unknown node 'ST-NOPE-01'"
    assert expected in (error.details() or ""), error.details()


def test_supply_service_end_to_end(client: Client, clock: FakeClock) -> None:
    """AddSupply/ListSupply/ReceiveSupply/CancelSupply over gRPC, with their error codes."""
    client.set_rules(SHOP_RULES)
    client.stock(BAG, "wh-par", 1)
    now = clock()
    po = supply_pb2.SUPPLY_KIND_PURCHASE_ORDER
    first = client.add_supply("po-1", BAG, "wh-par", 5, now + HOUR_MS, po)
    assert first.outcome == OK
    assert (first.supply.quantity, first.supply.received, first.supply.counted) == (5, 0, True)
    assert client.add_supply("po-1", BAG, "wh-par", 5, now + HOUR_MS, po).outcome == OK
    error = rpc_error(lambda: client.add_supply("po-1", BAG, "wh-par", 6, now + HOUR_MS, po))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    client.add_supply(
        "tr-1", "WCH-1", "wh-nyc", 2, now + 2 * HOUR_MS, supply_pb2.SUPPLY_KIND_TRANSFER
    )
    assert [x.supply_id for x in client.list_supply()] == ["po-1", "tr-1"]
    assert [x.supply_id for x in client.list_supply("WCH-1")] == ["tr-1"]
    assert client.list_supply("NONE-1") == []
    assert node_atp(client.availability(BAG, channel="web", segment="standard")) == {"wh-par": 5}

    partial = client.api.supply.ReceiveSupply(
        supply_pb2.ReceiveSupplyRequest(supply_id="po-1", quantity=2), timeout=RPC_TIMEOUT_S
    )
    assert (partial.supply.quantity, partial.supply.received) == (3, 2)
    stock = client.api.core.inventory.GetStock(
        inventory_pb2.GetStockRequest(sku=BAG, node_id="wh-par"), timeout=RPC_TIMEOUT_S
    )
    assert stock.position.on_hand == 3
    assert node_atp(client.availability(BAG, channel="web", segment="standard")) == {"wh-par": 5}
    full = client.api.supply.ReceiveSupply(
        supply_pb2.ReceiveSupplyRequest(supply_id="po-1"), timeout=RPC_TIMEOUT_S
    )
    assert (full.supply.quantity, full.supply.received) == (0, 5)
    assert [x.supply_id for x in client.list_supply()] == ["tr-1"]
    cancelled = client.api.supply.CancelSupply(
        supply_pb2.CancelSupplyRequest(supply_id="tr-1"), timeout=RPC_TIMEOUT_S
    )
    assert cancelled.outcome == OK
    assert client.list_supply() == []

    for call, code in (
        (
            lambda: client.api.supply.ReceiveSupply(
                supply_pb2.ReceiveSupplyRequest(supply_id="tr-1"), timeout=RPC_TIMEOUT_S
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: client.add_supply("x-1", BAG, "ghost", 1, now + HOUR_MS, po),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: client.add_supply("x-2", BAG, "wh-par", 1, now + HOUR_MS, 0),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: client.add_supply("x-3", BAG, "wh-par", 0, now + HOUR_MS, po),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: client.add_supply("x-4", BAG, "wh-par", 1, 0, po),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ):
        assert rpc_error(call).code() == code


def test_supply_past_its_eta_is_not_counted_by_get_availability(
    shop: Client, clock: FakeClock
) -> None:
    """GetAvailability stops counting supply as soon as its ETA has passed."""
    assert node_atp(shop.availability(BAG, channel="web", segment="vip"))["st-lyo"] == 4
    clock.advance(25 * HOUR_MS)
    listed = {x.supply_id: x for x in shop.list_supply()}
    assert not listed["ret-1"].counted
    answer = shop.availability(BAG, channel="web", segment="vip")
    lyon = {n.node_id: n for n in answer.items[0].nodes}["st-lyo"]
    assert (lyon.supply, lyon.atp) == (0, 2), lyon
    # Reserve (which applies the current time) agrees.
    refused = shop.reserve("v", (BAG, "st-lyo", 3), channel="web", segment="vip")
    assert [s.available for s in refused.shortages] == [2]
