"""Event kinds: LOW_STOCK once per crossing below the request's threshold (`0 < new <
threshold <= old`), OUT_OF_STOCK at 0, BACK_IN_STOCK from 0, CHANGED otherwise; and no event
at all when the subscriber's ATP did not move."""

from __future__ import annotations

from service.harness import RPC_TIMEOUT_S, World

from atpd.v1 import common_pb2, reservations_pb2

from .support import (
    BACK_IN_STOCK,
    CHANGED,
    LOW_STOCK,
    OUT_OF_STOCK,
    Api,
    Watcher,
    adjust,
    reserve,
    watch_request,
)

# (ATP after the step, kind with threshold 3, kind with threshold 0) from an ATP of 5.
WALK = [
    (4, CHANGED, CHANGED),
    (3, CHANGED, CHANGED),  # at the threshold: not below it yet
    (2, LOW_STOCK, CHANGED),  # crossed below 3
    (1, CHANGED, CHANGED),  # still below: no second LOW_STOCK
    (2, CHANGED, CHANGED),
    (0, OUT_OF_STOCK, OUT_OF_STOCK),
    (2, BACK_IN_STOCK, BACK_IN_STOCK),  # from 0: back in stock, not low stock
    (3, CHANGED, CHANGED),  # back up to the threshold
    (1, LOW_STOCK, CHANGED),  # crossed again: fires again
    (6, CHANGED, CHANGED),
    (0, OUT_OF_STOCK, OUT_OF_STOCK),  # straight to 0 is out of stock, not low stock
    (5, BACK_IN_STOCK, BACK_IN_STOCK),
    (1, LOW_STOCK, CHANGED),  # a jump over the threshold still crosses it
]


def test_kinds_along_an_atp_walk_for_two_thresholds(api: Api, world: World) -> None:
    """The same position changes read with threshold 3 and with none (0): LOW_STOCK exactly on
    each crossing from >= 3 to 1..2, never with threshold 0; OUT_OF_STOCK / BACK_IN_STOCK at 0."""
    world.set_stock("BAG-1", "paris", 5)
    low = Watcher(api, watch_request(skus=["BAG-1"], low_stock_threshold=3))
    plain = Watcher(api, watch_request(skus=["BAG-1"]))
    low.sync()
    plain.sync()
    atp = 5
    for new_atp, _, _ in WALK:
        adjust(api, "BAG-1", "paris", new_atp - atp)
        atp = new_atp
    previous = 5
    for new_atp, low_kind, plain_kind in WALK:
        a, b = low.next(), plain.next()
        assert (a.old_atp, a.new_atp, a.kind) == (previous, new_atp, low_kind), a
        assert (b.old_atp, b.new_atp, b.kind) == (previous, new_atp, plain_kind), b
        assert a.sequence == b.sequence
        previous = new_atp
    low.cancel()
    plain.cancel()


def test_low_stock_threshold_one_never_fires(api: Api, world: World) -> None:
    """With threshold 1 nothing is both below it and above 0: 2 -> 1 -> 0 -> 1 gives CHANGED,
    OUT_OF_STOCK, BACK_IN_STOCK."""
    world.set_stock("BAG-1", "paris", 2)
    watcher = Watcher(api, watch_request(low_stock_threshold=1))
    watcher.sync()
    for delta in (-1, -1, 1):
        adjust(api, "BAG-1", "paris", delta)
    assert [e.kind for e in watcher.take(3)] == [CHANGED, OUT_OF_STOCK, BACK_IN_STOCK]
    watcher.cancel()


def test_changes_that_leave_atp_unchanged_send_nothing(api: Api, world: World) -> None:
    """Fulfil (on_hand and reserved drop together), a count that raises on_hand and safety
    alike, a refused reservation and a replayed one send no event: the next event is the next
    real change, and its sequence still comes after theirs."""
    world.set_stock("BAG-1", "paris", 10, safety_stock=0)
    reserve(api, "cart-1", ("BAG-1", "paris", 4))  # ATP 6
    watcher = Watcher(api, watch_request(low_stock_threshold=3))
    sync = watcher.sync()
    fulfil = reservations_pb2.FulfilRequest(
        reservation_id="cart-1",
        lines=[reservations_pb2.ReservationLine(sku="BAG-1", node_id="paris", quantity=2)],
    )
    api.base.reservations.Fulfil(fulfil, timeout=RPC_TIMEOUT_S)  # on_hand 8, reserved 2
    world.set_stock("BAG-1", "paris", 9, safety_stock=1)  # ATP still 6
    refused = reservations_pb2.ReserveRequest(
        reservation_id="too-big",
        lines=[reservations_pb2.ReservationLine(sku="BAG-1", node_id="paris", quantity=7)],
        ttl_ms=60_000,
    )
    reply = api.base.reservations.Reserve(refused, timeout=RPC_TIMEOUT_S)
    assert reply.outcome == common_pb2.OUTCOME_INSUFFICIENT_STOCK, reply
    assert reserve(api, "cart-1", ("BAG-1", "paris", 4)).replayed  # a retry: nothing changes
    adjust(api, "BAG-1", "paris", -4)  # ATP 6 -> 2: the first event
    event = watcher.next()
    assert (event.old_atp, event.new_atp, event.kind) == (6, 2, LOW_STOCK), event
    assert event.sequence > sync.sequence
    watcher.cancel()
