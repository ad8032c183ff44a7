"""Freezing the state's objects out of the cyclic GC's full passes (service/gc_pauses.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from atpd.core.commands import Line, NodeKind, Release, Reserve, SetStock, UpsertNode
from atpd.core.reservations import ReservationStatus
from atpd.core.state import AtpState
from atpd.metrics import Metrics
from atpd.service.gc_pauses import FreezeSurvivors, freeze_survivors

RESERVATIONS = 2_000


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen, so no other test inherits its freeze."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def retained_state() -> AtpState:
    """A state holding RESERVATIONS finished reservations (kept for idempotent retries)."""
    state = AtpState()
    state.apply(UpsertNode("WH-1", NodeKind.WAREHOUSE, ("EU",)), 1)
    state.apply(SetStock("SKU-1", "WH-1", 1_000_000, 1), 1)
    for i in range(RESERVATIONS):
        state.apply(Reserve(f"cart-{i}", (Line("SKU-1", "WH-1", 1),), 60_000), 2 + i)
        state.apply(Release(f"cart-{i}"), 2 + i)
    return state


def test_survivors_leave_the_oldest_generation(unfrozen: None) -> None:
    """After freeze_survivors the state's objects are no longer in any generation a full
    collection walks, and the state is still there and intact."""
    state = retained_state()
    gc.collect()  # everything alive is now in the oldest generation
    node = state.nodes[0]
    assert any(obj is node for obj in gc.get_objects(generation=2))
    frozen = freeze_survivors()
    assert frozen > 0
    assert not any(obj is node for obj in gc.get_objects(generation=2))
    state.check_invariants()
    assert state.reservation("cart-7").status is ReservationStatus.RELEASED


def test_retained_reservations_add_no_objects_to_walk(unfrozen: None) -> None:
    """Finished reservations kept for retries are rows of arrays: thousands more of them add
    next to no object the cyclic collector walks."""
    state = retained_state()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(RESERVATIONS, 2 * RESERVATIONS):
        state.apply(Reserve(f"cart-{i}", (Line("SKU-1", "WH-1", 1),), 60_000), 2 + i)
        state.apply(Release(f"cart-{i}"), 2 + i)
    gc.collect()
    assert len(state.reservations) == 2 * RESERVATIONS
    assert len(gc.get_objects()) - before < RESERVATIONS // 20


def test_young_cycles_are_collected_before_the_freeze(unfrozen: None) -> None:
    """Short-lived reference cycles that are already garbage are freed, not frozen."""

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    collected: list[int] = []

    def make_cycle(tag: int) -> None:
        a, b = Node(), Node()
        a.other, b.other = b, a
        weakref.finalize(a, collected.append, tag)

    gc.collect()
    gc.disable()
    try:
        for tag in range(10):
            make_cycle(tag)
        freeze_survivors()
    finally:
        gc.enable()
    assert sorted(collected) == list(range(10))


def test_the_freezer_runs_on_its_interval_until_stopped(unfrozen: None) -> None:
    """FreezeSurvivors freezes on the running loop every interval, and not after stop()."""

    async def scenario() -> tuple[int, int, int]:
        freezer = FreezeSurvivors(0.01)
        before = gc.get_freeze_count()
        keep = [{"n": i} for i in range(1_000)]  # survivors to freeze
        freezer.start()
        await asyncio.sleep(0.2)
        during = gc.get_freeze_count()
        freezer.stop()
        gc.unfreeze()
        await asyncio.sleep(0.1)
        after = gc.get_freeze_count()
        assert keep
        return before, during, after

    before, during, after = asyncio.run(scenario())
    assert before == 0
    assert during >= 1_000
    assert after == 0


def test_the_frozen_count_is_a_metric(unfrozen: None) -> None:
    """atpd_gc_frozen_objects reports gc.get_freeze_count() at scrape time."""
    metrics = Metrics()
    freeze_survivors()
    value = metrics.registry.get_sample_value("atpd_gc_frozen_objects")
    assert value == gc.get_freeze_count() > 0
