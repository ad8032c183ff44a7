"""A hot rule swap under concurrent reservations and reads, over real gRPC channels: every
answer is computed under exactly one complete rule set (never half old, half new), and the
state's invariants hold at the end."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from functools import partial

import grpc
from service.harness import RPC_TIMEOUT_S, ServerThread, reserve_request

from atpd.v1 import (
    availability_pb2,
    common_pb2,
    inventory_pb2,
    reservations_pb2,
    rules_pb2,
)

from .conftest import Api
from .support import NODES, STORES, WAREHOUSES, rules_text

OK = common_pb2.OUTCOME_OK
INSUFFICIENT = common_pb2.OUTCOME_INSUFFICIENT_STOCK
SKU = "BAG-1"
SWAPS = 30
READERS = 2
RESERVERS = 2
RESERVER_ROUNDS = 40

# A: web sees warehouses only; B: web sees stores only (with a buffer). The store channel sees
# every node under both.
RULES = {
    "A": rules_text({"channels.web": 'nodes = { kinds = ["WAREHOUSE"] }'}, version="A"),
    "B": rules_text({"channels.web": 'nodes = { kinds = ["STORE"] }\nbuffer = 5'}, version="B"),
}
VISIBLE = {"A": WAREHOUSES, "B": STORES}


def geo_prefixes(node_ids: frozenset[str]) -> set[str]:
    return {
        "/".join(NODES[n][1][: level + 1]) for n in node_ids for level in range(len(NODES[n][1]))
    }


class Swap:
    """Shared between threads: reads completed (so the swapper can wait for reads that started
    after its last swap), answers seen, and problems found."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.reads = 0
        self.stop = False
        self.seen: Counter[str] = Counter()
        self.errors: list[str] = []

    def read_done(self, version: str) -> None:
        with self.condition:
            self.reads += 1
            self.seen[version] += 1
            self.condition.notify_all()

    def fail(self, message: str) -> None:
        with self.condition:
            self.errors.append(message)


def check_availability(response: availability_pb2.GetAvailabilityResponse, swap: Swap) -> str:
    version = response.rules_version
    if version not in VISIBLE:
        swap.fail(f"unknown rules_version {version!r}")
        return version
    item = response.items[0]
    listed = frozenset(n.node_id for n in item.nodes)
    if item.nodes and listed != VISIBLE[version]:
        swap.fail(f"version {version} answered for nodes {sorted(listed)}")
    if any(n.atp <= 0 for n in item.nodes):
        swap.fail(f"version {version}: a visible node without ATP: {item}")
    if item.nodes and item.total_atp != sum(n.atp for n in item.nodes):
        swap.fail(f"version {version}: total {item.total_atp} is not the sum of its nodes")
    if {g.geo for g in item.geo} != geo_prefixes(VISIBLE[version]):
        swap.fail(f"version {version} rolled up {sorted(g.geo for g in item.geo)}")
    if version == "B" and item.nodes:
        buffers = {n.buffer for n in item.nodes}
        if buffers != {5}:
            swap.fail(f"version B explained buffers {buffers}")
    return version


def reader(api: Api, swap: Swap, index: int) -> None:
    explain = index % 2 == 0
    while not swap.stop:
        request = availability_pb2.GetAvailabilityRequest(
            skus=[SKU], channel="web", include_nodes=explain, explain=explain
        )
        response = api.core.availability.GetAvailability(request, timeout=RPC_TIMEOUT_S)
        swap.read_done(check_availability(response, swap))


def reserver(api: Api, swap: Swap, index: int) -> None:
    """Two-line holds as web (one warehouse line, one store line) can never both be visible:
    exactly one line is short, the one the version in force hides. Single-line holds as web and
    as store come and go meanwhile."""
    reservations = api.core.reservations
    for round_ in range(RESERVER_ROUNDS):
        both = reservations.Reserve(
            reserve_request(
                f"both-{index}-{round_}", (SKU, "wh-par", 1), (SKU, "st-lyo", 1), channel="web"
            ),
            timeout=RPC_TIMEOUT_S,
        )
        short = sorted(s.node_id for s in both.shortages)
        if both.outcome != INSUFFICIENT or short not in (["st-lyo"], ["wh-par"]):
            swap.fail(f"two-line web hold answered {both.outcome} short {short}")
        elif any(s.available != 0 for s in both.shortages):
            swap.fail(f"a hidden node offered stock: {both.shortages}")
        for channel, node_id in (("web", "wh-nyc"), ("web", "st-ber"), ("store", "out-ber")):
            reservation_id = f"one-{index}-{round_}-{node_id}"
            one = reservations.Reserve(
                reserve_request(reservation_id, (SKU, node_id, 1), channel=channel),
                timeout=RPC_TIMEOUT_S,
            )
            if channel == "store" and one.outcome != OK:
                swap.fail(f"store channel refused at {node_id}: {one}")
            if one.outcome == OK and round_ % 2 == 0:
                reservations.Release(
                    reservations_pb2.ReleaseRequest(reservation_id=reservation_id),
                    timeout=RPC_TIMEOUT_S,
                )


def swapper(api: Api, swap: Swap) -> None:
    """Alternate A and B; after each swap wait for reads that started after it, so every
    version is read while in force."""
    current = "A"
    for _ in range(SWAPS):
        new = "B" if current == "A" else "A"
        response = api.rules.SetRules(
            rules_pb2.SetRulesRequest(text=RULES[new], source=f"{new}.toml"),
            timeout=RPC_TIMEOUT_S,
        )
        if (response.version, response.previous_version) != (new, current):
            swap.fail(f"swap to {new} answered {response}")
        current = new
        with swap.condition:
            mark = swap.reads

            def readers_moved(m: int = mark) -> bool:
                return swap.reads >= m + READERS + 1

            if not swap.condition.wait_for(readers_moved, timeout=RPC_TIMEOUT_S):
                swap.fail("readers made no progress")
                return


def run(target: Callable[[], None], swap: Swap) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except grpc.RpcError as error:
            swap.fail(f"{target}: {error}")

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread


def test_hot_rule_swap_never_gives_a_half_old_half_new_answer(
    server: ServerThread, api: Api
) -> None:
    """Under concurrent load, every answer is wholly rule set A's or wholly B's."""
    api.rules.SetRules(rules_pb2.SetRulesRequest(text=RULES["A"]), timeout=RPC_TIMEOUT_S)
    for node_id in NODES:
        api.core.inventory.SetStock(
            inventory_pb2.SetStockRequest(
                sku=SKU, node_id=node_id, on_hand=1000, source_sequence=1
            ),
            timeout=RPC_TIMEOUT_S,
        )
    swap = Swap()
    channels = [server.channel() for _ in range(READERS + RESERVERS + 1)]
    for channel in channels:  # connected first, so the race is between requests
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
    clients = [Api.on(channel) for channel in channels]
    readers = [run(partial(reader, clients[i], swap, i), swap) for i in range(READERS)]
    reservers = [
        run(partial(reserver, clients[READERS + i], swap, i), swap) for i in range(RESERVERS)
    ]
    swapping = run(lambda: swapper(clients[-1], swap), swap)
    for thread in (swapping, *reservers):
        thread.join(RPC_TIMEOUT_S * 4)
    swap.stop = True
    for thread in readers:
        thread.join(RPC_TIMEOUT_S)
    assert not any(t.is_alive() for t in (swapping, *reservers, *readers))
    assert swap.errors == []
    assert swap.seen["A"] >= SWAPS // 2 and swap.seen["B"] >= SWAPS // 2, swap.seen
    server.check_invariants()

    state = server.app.engine.state
    open_ids = server.call(
        lambda: [r.reservation_id for r in state.reservations.values() if r.status.is_open]
    )
    assert open_ids
    for reservation_id in open_ids:
        released = api.core.reservations.Release(
            reservations_pb2.ReleaseRequest(reservation_id=reservation_id), timeout=RPC_TIMEOUT_S
        )
        assert released.outcome == OK
    server.check_invariants()
    for node_id in NODES:
        position = api.core.inventory.GetStock(
            inventory_pb2.GetStockRequest(sku=SKU, node_id=node_id), timeout=RPC_TIMEOUT_S
        ).position
        assert (position.on_hand, position.reserved) == (1000, 0)
