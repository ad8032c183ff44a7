"""Ids are checked by full match and errors stay small (issue 9, items 1 and 5), over real gRPC.

Every id field refuses a trailing newline, control characters, unicode lookalikes and overlong
values with INVALID_ARGUMENT naming the field; no status message is over 1 kB, however large
the value it is about or the list it would enumerate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from atpd.core.rules import MAX_RULES_CHANNELS
from atpd.core.text import MAX_MESSAGE_BYTES
from atpd.v1 import (
    availability_pb2,
    feeds_pb2,
    feeds_pb2_grpc,
    inventory_pb2,
    reservations_pb2,
    rules_pb2,
    rules_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
)

from .harness import RPC_TIMEOUT_S, ServerThread, Stubs, World, line, node, rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_IDS = {
    "trailing newline": "EVIL\n",
    "trailing carriage return": "EVIL\r",
    "embedded newline": "EV\nIL",
    "nul": "EV\x00IL",
    "tab": "EVIL\t",
    "fullwidth lookalike": "\uff25VIL",
    "dotted capital I": "EV\u0130L",
    "cyrillic lookalike": "\u0415VIL",
    "leading space": " EVIL",
}
LONG_SKU = "S" * 65
LONG_RESERVATION_ID = "R" * 129
HUGE_ID = "X" * 100_000


def set_stock(value: str) -> Callable[[Stubs, grpc.Channel], Any]:
    return lambda api, _: api.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku=value, node_id="paris", on_hand=1, source_sequence=1),
        timeout=RPC_TIMEOUT_S,
    )


def set_stock_node(value: str) -> Callable[[Stubs, grpc.Channel], Any]:
    return lambda api, _: api.inventory.SetStock(
        inventory_pb2.SetStockRequest(sku="SKU-1", node_id=value, on_hand=1, source_sequence=1),
        timeout=RPC_TIMEOUT_S,
    )


def reserve(**fields: Any) -> Callable[[Stubs, grpc.Channel], Any]:
    sku = fields.pop("sku", "SKU-1")
    node_id = fields.pop("node_id", "paris")
    request = reservations_pb2.ReserveRequest(
        reservation_id=fields.pop("reservation_id", "cart-1"),
        lines=[line(sku, node_id, 1)],
        ttl_ms=60_000,
        **fields,
    )
    return lambda api, _: api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S)


def upsert(**fields: Any) -> Callable[[Stubs, grpc.Channel], Any]:
    request = node("rome", "EU/IT/Rome")
    for name, value in fields.items():
        if name == "tags":
            request.node.tags[:] = value
        else:
            setattr(request.node, name, value)
    return lambda api, _: api.inventory.UpsertNode(request, timeout=RPC_TIMEOUT_S)


def availability(**fields: Any) -> Callable[[Stubs, grpc.Channel], Any]:
    request = availability_pb2.GetAvailabilityRequest(skus=fields.pop("skus", ["SKU-1"]), **fields)
    return lambda api, _: api.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)


def add_supply(value: str) -> Callable[[Stubs, grpc.Channel], Any]:
    request = supply_pb2.AddSupplyRequest(
        supply_id=value,
        sku="SKU-1",
        node_id="paris",
        quantity=1,
        eta_ms=1,
        kind=supply_pb2.SUPPLY_KIND_PURCHASE_ORDER,
    )
    return lambda _, channel: supply_pb2_grpc.SupplyServiceStub(channel).AddSupply(
        request, timeout=RPC_TIMEOUT_S
    )


def bulk_load(load_id: str = "load-1", sku: str = "SKU-1") -> Callable[[Stubs, grpc.Channel], Any]:
    def messages() -> Iterator[feeds_pb2.BulkLoadRequest]:
        yield feeds_pb2.BulkLoadRequest(
            header=feeds_pb2.BulkLoadHeader(
                load_id=load_id, mode=feeds_pb2.LOAD_MODE_DELTA, source_sequence=1
            )
        )
        yield feeds_pb2.BulkLoadRequest(
            chunk=feeds_pb2.PositionChunk(skus=[sku], node_ids=["paris"], on_hand=[1])
        )
        yield feeds_pb2.BulkLoadRequest(commit=feeds_pb2.BulkLoadCommit())

    return lambda _, channel: feeds_pb2_grpc.FeedServiceStub(channel).BulkLoad(
        messages(), timeout=RPC_TIMEOUT_S
    )


# (field named in the details, request builder taking the bad value)
ID_FIELDS: dict[str, tuple[str, Callable[[str], Callable[[Stubs, grpc.Channel], Any]]]] = {
    "SetStock.sku": ("sku", set_stock),
    "SetStock.node_id": ("node_id", set_stock_node),
    "Reserve.reservation_id": ("reservation_id", lambda v: reserve(reservation_id=v)),
    "Reserve.lines.sku": ("lines[0].sku", lambda v: reserve(sku=v)),
    "Reserve.lines.node_id": ("lines[0].node_id", lambda v: reserve(node_id=v)),
    "Reserve.channel": ("channel", lambda v: reserve(channel=v.lower())),
    "UpsertNode.node_id": ("node.node_id", lambda v: upsert(node_id=v)),
    "UpsertNode.geo_path": ("node.geo_path", lambda v: upsert(geo_path=f"EU/{v}")),
    "UpsertNode.tags": ("node.tags[0]", lambda v: upsert(tags=[v])),
    "GetAvailability.skus": ("skus[0]", lambda v: availability(skus=[v])),
    "GetAvailability.segment": ("segment", lambda v: availability(segment=v.lower())),
    "AddSupply.supply_id": ("supply_id", add_supply),
    "BulkLoad.load_id": ("header.load_id", lambda v: bulk_load(load_id=v)),
    "BulkLoad.sku": ("chunks[0].rows[0].sku", lambda v: bulk_load(sku=v)),
}


def check_refused(
    server: ServerThread, api: Stubs, call: Callable[[Stubs, grpc.Channel], Any], field: str
) -> str:
    before = server.digest()
    error = rpc_error(lambda: call(api, server.channel()))
    details = error.details() or ""
    assert error.code() == INVALID, (error.code(), details[:200])
    assert details.startswith(field), details[:200]
    assert len(details.encode()) <= MAX_MESSAGE_BYTES, len(details.encode())
    assert server.digest() == before
    return details


@pytest.mark.parametrize("bad", list(BAD_IDS))
@pytest.mark.parametrize("target", list(ID_FIELDS))
def test_id_with_control_or_lookalike_characters_is_refused_naming_the_field(
    target: str, bad: str, server: ServerThread, world: World, api: Stubs
) -> None:
    """Every id field refuses newlines, control characters and lookalikes (INVALID_ARGUMENT)."""
    field, build = ID_FIELDS[target]
    check_refused(server, api, build(BAD_IDS[bad]), field)


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("SetStock.sku", LONG_SKU),
        ("SetStock.node_id", "N" * 65),
        ("Reserve.reservation_id", LONG_RESERVATION_ID),
        ("AddSupply.supply_id", LONG_RESERVATION_ID),
        ("BulkLoad.load_id", "L" * 129),
        ("Reserve.channel", "c" * 33),
    ],
)
def test_overlong_id_is_refused_naming_the_field(
    target: str, value: str, server: ServerThread, world: World, api: Stubs
) -> None:
    """An id one character over its limit is INVALID_ARGUMENT naming the field."""
    field, build = ID_FIELDS[target]
    check_refused(server, api, build(value), field)


@pytest.mark.parametrize("target", list(ID_FIELDS))
def test_a_100_kb_id_gets_an_error_of_at_most_1_kb(
    target: str, server: ServerThread, world: World, api: Stubs
) -> None:
    """A 100 kB id is refused as INVALID_ARGUMENT with a short, truncated echo of it."""
    field, build = ID_FIELDS[target]
    value = HUGE_ID.lower() if target.endswith(("channel", "segment")) else HUGE_ID
    details = check_refused(server, api, build(value), field)
    assert "100000 characters" in details or "characters" in details, details


def test_unknown_channel_among_many_lists_a_few_known_ones(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """With the most channels a rule set may have, an unknown channel's error lists a few names
    and "and N more" rather than all of them."""
    channels = "".join(f"[channels.c{i}]\n" for i in range(MAX_RULES_CHANNELS))
    text = f'version = "many"\n[defaults]\nchannel = "c0"\nsegment = "s"\n[segments.s]\n{channels}'
    rules = rules_pb2_grpc.RulesServiceStub(server.channel())
    rules.SetRules(rules_pb2.SetRulesRequest(text=text, source="many"), timeout=60.0)
    details = check_refused(server, api, availability(channel="nope"), "channel")
    assert "unknown channel 'nope'" in details, details
    assert f"and {MAX_RULES_CHANNELS - 5} more" in details, details
