"""Watch delivers every change of ATP, in order, gap-free, with old_atp -> new_atp chaining
exactly as GetStock sees the positions move."""

from __future__ import annotations

import threading
from collections.abc import Callable

from service.harness import NODES, RPC_TIMEOUT_S, FakeClock, World

from atpd.v1 import reservations_pb2, watch_pb2

from .support import (
    BACK_IN_STOCK,
    CHANGED,
    LOW_STOCK,
    OUT_OF_STOCK,
    Api,
    Watcher,
    adjust,
    atp_of,
    release,
    reserve,
    watch_request,
)

SKUS = ("BAG-1", "BAG-2")
POSITIONS = [(sku, node_id) for sku in SKUS for node_id in NODES]


class Tracker:
    """Runs one action at a time and checks the events it caused against GetStock: for every
    position whose ATP moved, exactly one event old -> new; none for the rest."""

    def __init__(self, api: Api, watcher: Watcher, clock: FakeClock) -> None:
        self.api = api
        self.watcher = watcher
        self.clock = clock
        sync = watcher.sync()
        self.epoch = sync.epoch
        self.last_sequence = sync.sequence
        self.atp = atp_of(api, POSITIONS)
        self.events: list[watch_pb2.WatchEvent] = []

    def step(
        self, action: Callable[[], object], *, contiguous: bool = True
    ) -> list[watch_pb2.WatchEvent]:
        """`contiguous`: every position the action touches changes ATP, so the unfiltered
        stream's sequences follow on from the previous event by exactly one each."""
        action()
        after = atp_of(self.api, POSITIONS)  # a read: applies expiries that are due
        moved = {p: (self.atp[p], after[p]) for p in POSITIONS if self.atp[p] != after[p]}
        events = self.watcher.take(len(moved))
        assert {(e.sku, e.node_id): (e.old_atp, e.new_atp) for e in events} == moved
        for event in events:
            if contiguous:
                assert event.sequence == self.last_sequence + 1, (self.last_sequence, event)
            assert event.sequence > self.last_sequence, (self.last_sequence, event)
            assert (event.epoch, event.time_ms) == (self.epoch, self.clock()), event
            self.last_sequence = event.sequence
            contiguous = True
        self.atp = after
        self.events.extend(events)
        return events


def test_every_change_in_order_with_chained_old_and_new_atp(
    api: Api, world: World, clock: FakeClock
) -> None:
    """SetStock, AdjustStock, multi-line Reserve, Release, Fulfil and expiry each yield one event
    per position whose ATP moved, sequences strictly increasing and gap-free, old = previous new."""
    watcher = Watcher(api, watch_request())
    tracker = Tracker(api, watcher, clock)
    steps: list[tuple[Callable[[], object], bool]] = [
        (lambda: world.set_stock("BAG-1", "paris", 10), True),
        (lambda: world.set_stock("BAG-1", "lyon", 4), True),
        (lambda: world.set_stock("BAG-2", "berlin", 7), True),
        (lambda: world.set_stock("BAG-2", "soho", 3), True),
        (
            lambda: reserve(
                api, "cart-1", ("BAG-1", "paris", 3), ("BAG-2", "berlin", 2), ("BAG-1", "lyon", 1)
            ),
            True,
        ),
        (lambda: adjust(api, "BAG-1", "paris", -2), True),
        (lambda: world.set_stock("BAG-2", "soho", 3, safety_stock=1), True),
        (lambda: release(api, "cart-1"), True),
        (lambda: reserve(api, "cart-2", ("BAG-1", "paris", 5), ttl_ms=5_000), True),
        (lambda: reserve(api, "cart-3", ("BAG-2", "berlin", 7), ttl_ms=6_000), True),
        # Fulfil takes on_hand and reserved down together: ATP does not move, no event (the
        # position change still takes a sequence number, so the next event may skip one).
        (lambda: fulfil(api, "cart-2", ("BAG-1", "paris", 2)), True),
        (lambda: clock.advance(5_000), False),  # cart-2 expires: 3 units back at paris
        (lambda: clock.advance(1_000), True),  # cart-3 expires: berlin back in stock
        (lambda: adjust(api, "BAG-2", "berlin", 1), True),
        (lambda: world.set_stock("BAG-1", "lyon", 0), True),
    ]
    counts = [len(tracker.step(action, contiguous=contiguous)) for action, contiguous in steps]
    assert counts == [1, 1, 1, 1, 3, 1, 1, 3, 1, 1, 0, 1, 1, 1, 1]
    # The multi-line reservation's events come in the order of its lines.
    assert [(e.sku, e.node_id) for e in tracker.events[4:7]] == [
        ("BAG-1", "paris"),
        ("BAG-2", "berlin"),
        ("BAG-1", "lyon"),
    ]
    # Per position, each event starts where the previous one ended (first from 0), and the last
    # one ends at what GetStock says now.
    last_atp: dict[tuple[str, str], int] = {}
    for event in tracker.events:
        position = (event.sku, event.node_id)
        assert event.old_atp == last_atp.get(position, 0), event
        last_atp[position] = event.new_atp
    final = atp_of(api, POSITIONS)
    assert {p: final[p] for p in last_atp} == last_atp
    kinds = [event.kind for event in tracker.events]
    assert kinds.count(BACK_IN_STOCK) == 5  # four first stockings + berlin after expiry
    assert OUT_OF_STOCK in kinds and CHANGED in kinds and LOW_STOCK not in kinds  # no threshold
    watcher.cancel()


def fulfil(api: Api, reservation_id: str, *lines: tuple[str, str, int]) -> None:
    request = reservations_pb2.FulfilRequest(
        reservation_id=reservation_id,
        lines=[reservations_pb2.ReservationLine(sku=s, node_id=n, quantity=q) for s, n, q in lines],
    )
    api.base.reservations.Fulfil(request, timeout=RPC_TIMEOUT_S)


def test_concurrent_writers_yield_a_gap_free_stream(api: Api, world: World) -> None:
    """Two-line reservations from four client threads at once: the unfiltered stream carries
    one event per line, sequences 1 apart throughout, and per position an unbroken ATP chain."""
    skus = [f"SKU-{i}" for i in range(8)]
    stores = ("paris", "lyon", "berlin")
    positions = [(sku, node_id) for sku in skus for node_id in NODES]
    for sku, node_id in positions:
        world.set_stock(sku, node_id, 1_000)
    watcher = Watcher(api, watch_request())
    sync = watcher.sync()
    clients = [Api.on(world.server) for _ in range(4)]
    per_client = 25
    failures: list[BaseException] = []

    def run(index: int, client: Api) -> None:
        try:
            for k in range(per_client):
                first = (skus[(index + k) % len(skus)], stores[k % len(stores)], 1)
                reserve(client, f"c{index}-{k}", first, (skus[k % len(skus)], "soho", 1))
        except BaseException as error:  # reported by the test thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RPC_TIMEOUT_S)
        assert not thread.is_alive()
    assert failures == []
    events = watcher.take(len(clients) * per_client * 2)
    assert [e.sequence for e in events] == list(
        range(sync.sequence + 1, sync.sequence + 1 + len(events))
    )
    last_atp: dict[tuple[str, str], int] = {}
    for event in events:
        position = (event.sku, event.node_id)
        assert event.old_atp == last_atp.get(position, 1_000), event
        assert event.new_atp == event.old_atp - 1, event
        last_atp[position] = event.new_atp
    final = atp_of(api, positions)
    assert {p: last_atp.get(p, 1_000) for p in positions} == final
    watcher.cancel()
