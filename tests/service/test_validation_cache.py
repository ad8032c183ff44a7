"""Request validation remembers ids and names it accepted (service/validation.py): the memory
only skips a regex for a value already found valid, never lets a bad value through, and stays
bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atpd.core.commands import Line
from atpd.core.ids import ID_PATTERN
from atpd.core.limits import Limits
from atpd.service import validation
from atpd.service.validation import InvalidArgument
from atpd.v1 import reservations_pb2

LIMITS = Limits(max_lines_per_reservation=4)


def line(sku: str, node_id: str, quantity: int = 1) -> reservations_pb2.ReservationLine:
    return reservations_pb2.ReservationLine(sku=sku, node_id=node_id, quantity=quantity)


def test_valid_ids_accepted_again_and_bad_ones_still_named() -> None:
    """Ids accepted before pass again; a bad id after them is refused, naming its field."""
    good = [line("SKU-1", "node-1"), line("SKU-2", "node-1")]
    for _ in range(3):
        assert validation.lines(good, LIMITS, allow_empty=False) == (
            Line("SKU-1", "node-1", 1),
            Line("SKU-2", "node-1", 1),
        )
    with pytest.raises(InvalidArgument) as refused:
        validation.lines([*good, line("bad sku", "node-1")], LIMITS, allow_empty=False)
    assert refused.value.field == "lines[2].sku"
    with pytest.raises(InvalidArgument) as refused:
        validation.lines([line("SKU-1", "node 1")], LIMITS, allow_empty=False)
    assert refused.value.field == "lines[0].node_id"
    with pytest.raises(InvalidArgument) as refused:
        validation.lines([line("SKU-1", "node-1", 0)], LIMITS, allow_empty=False)
    assert refused.value.field == "lines[0].quantity"
    with pytest.raises(InvalidArgument) as refused:
        validation.lines([good[0], line("SKU-3", "node-1"), good[0]], LIMITS, allow_empty=False)
    assert refused.value.field == "lines[2]" and "duplicate" in str(refused.value)


def test_names_remembered_only_when_valid() -> None:
    """A channel refused once is refused every time; a valid one is accepted every time."""
    for _ in range(2):
        assert validation.name("store", "channel") == "store"
        with pytest.raises(InvalidArgument, match="channel"):
            validation.name("Store!", "channel")


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The remembered ids never exceed VALID_NAMES_CACHE_MAX."""
    monkeypatch.setattr(validation, "VALID_NAMES_CACHE_MAX", 8)
    monkeypatch.setattr(validation, "remembered_sku_ids", set())
    for number in range(50):
        validation.lines([line(f"SKU-{number}", "node-1")], LIMITS, allow_empty=False)
        assert len(validation.remembered_sku_ids) <= 8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=6))
def test_property_remembering_never_changes_an_answer(skus: list[str]) -> None:
    """For any SKUs, asking twice gives the same answer as the regex alone."""
    for sku in skus * 2:
        expected = bool(sku) and ID_PATTERN.fullmatch(sku) is not None
        try:
            validation.lines([line(sku, "node-1")], LIMITS, allow_empty=False)
            accepted = True
        except InvalidArgument as error:
            assert error.field == "lines[0].sku"
            accepted = False
        assert accepted == expected, sku
