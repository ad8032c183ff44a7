"""The time heap of reservation rows (core/row_heap.py) against a dict model: lazy removal of
any entry (the top included), compaction in place, bulk pops; the minimum is always exact."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from atpd.core import row_heap
from atpd.core.row_heap import RowHeap

ROWS = 12
NAMES = [f"id-{(row * 7) % ROWS:02d}" for row in range(ROWS)]  # not in row order
# (operation, row, key): push a row not in the heap, discard a row, pop every key <= key,
# pop the first entry, pop the first entry of the smallest name among the tied ones.
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["push", "push", "discard", "pop_until", "pop_first", "pop_first_by"]),
        st.integers(0, ROWS - 1),
        st.integers(0, 3),  # few keys: many ties
    ),
    max_size=80,
)


@settings(max_examples=80, deadline=None)
@example(  # three tied at the minimum, the first by name not at the top
    operations=[("push", 1, 1), ("push", 0, 1), ("push", 2, 1), ("pop_first_by", 0, 0)],
    compact_after=0,
    bulk_after=1,
    track_rows=False,
)
@given(
    operations=OPERATIONS,
    compact_after=st.integers(0, 4),
    bulk_after=st.integers(1, 5),
    track_rows=st.booleans(),
)
def test_a_heap_matches_a_dict(
    operations: list[tuple[str, int, int]], compact_after: int, bulk_after: int, track_rows: bool
) -> None:
    """Pushes, discards (of the top too: left stale) and pops give what a dict gives (of tied
    keys, `pop_first_by` takes the first by name); stale entries never show in `min_key`, the
    pops or `entries`, even after a compaction."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(row_heap, "COMPACT_MIN_STALE", compact_after)
        patch.setattr(row_heap, "BULK_POP_AFTER", bulk_after)
        heap = RowHeap(track_rows=track_rows)
        heap.grow_rows(ROWS)
        model: dict[int, int] = {}
        for operation, row, key in operations:
            if operation == "push" and row not in model:
                heap.push(key, row)
                model[row] = key
            elif operation == "discard" and track_rows:  # untracked (retention): no discard
                assert heap.discard(row) == (row in model)
                model.pop(row, None)
            elif operation == "pop_until":
                due = sorted(heap.pop_until(key))
                assert due == sorted(r for r, k in model.items() if k <= key)
                for r in due:
                    del model[r]
            elif operation == "pop_first" and model:
                key, row = heap.pop_first()
                assert key == min(model.values()) and model.pop(row) == key
            elif operation == "pop_first_by" and model:
                key, row = heap.pop_first_by(NAMES.__getitem__)
                assert (key, NAMES[row]) == min((k, NAMES[r]) for r, k in model.items())
                assert model.pop(row) == key
            assert len(heap) == len(model)
            assert heap.min_key() == (min(model.values()) if model else None)
            keys, rows = heap.entries()
            assert sorted(zip(rows.tolist(), keys.tolist(), strict=True)) == sorted(model.items())
            for r in range(ROWS if track_rows else 0):
                assert heap.contains(r) == (r in model)


def test_holds_released_in_order_leave_a_small_heap() -> None:
    """Releasing holds oldest first (each the top when released) leaves at most
    COMPACT_MIN_STALE stale entries: compaction keeps the heap small, and the next expiry
    is still exact."""
    heap = RowHeap(track_rows=True)
    rows = 4 * row_heap.COMPACT_MIN_STALE
    heap.grow_rows(rows + 1)
    heap.push(10**9, rows)  # one hold that stays
    for row in range(rows):
        heap.push(row, row)
        assert heap.discard(row)
        assert len(heap.keys) <= row_heap.COMPACT_MIN_STALE + 2
    assert heap.min_key() == 10**9
    assert heap.pop_until(10**9) == [rows]
    assert heap.min_key() is None and len(heap) == 0
