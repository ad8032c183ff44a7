"""The vectorised promise dates (core/calendar_kernels.py) equal the scalar ones
(core/calendar.py), and say -1 only for answers past their day table."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atpd.core import calendar, calendar_kernels
from atpd.core.calendar import epoch_day
from promise.strategies import base_dates, carrier_schedules, instants_near, node_calendars

pytestmark = pytest.mark.core
EXAMPLES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EXAMPLES
@given(st.data(), base_dates, st.integers(1, 6), st.sampled_from([3, 8, 32]))
def test_vectorised_dates_equal_scalar(
    data: st.DataObject, near: dt.date, count: int, days: int
) -> None:
    """ready_many / dates_many give each node what ready_at_ms / ship and delivery epoch days
    give it, or -1 exactly when the answer lies past the table."""
    nodes = [data.draw(node_calendars(near)) for _ in range(count)]
    carrier = data.draw(carrier_schedules(near))
    assume(all(node.open_weekdays & carrier.pickup_weekdays for node in nodes))
    now = data.draw(instants_near(nodes[0].tz, near, (nodes[0].cutoff_minutes,)))
    first = calendar_kernels.table_first_day(now)
    table = calendar_kernels.compile_node_days(nodes, first, days)
    carrier_table = calendar_kernels.compile_carrier_days(carrier, first, days)
    ready = calendar_kernels.ready_many(table, now)
    dates = calendar_kernels.dates_many(table, carrier_table, ready)
    last_day = first + days - 1
    for row, node in enumerate(nodes):
        expected_ready = calendar.ready_at_ms(node, now)
        if ready[row] == calendar_kernels.NOT_IN_TABLE:
            assert calendar.local_day(node.tz, expected_ready) > last_day
            assert (dates[row] == -1).all()
            continue
        assert ready[row] == expected_ready
        ship = calendar.ship_epoch_day(node, carrier, now)
        if dates[row, 0] == calendar_kernels.NOT_IN_TABLE:
            assert ship > last_day
            continue
        earliest, latest = calendar.delivery_epoch_days(node, carrier, now)
        assert tuple(dates[row]) == (ship, earliest, latest)


def test_three_hundred_nodes_one_pass() -> None:
    """A day table of 300 nodes over several zones answers every node in one call, equal to
    the scalar form."""
    zones = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "UTC")
    nodes = [
        calendar.NodeCalendar(
            zones[index % len(zones)],
            600 + index % 480,
            30 * (index % 7),
            frozenset(range(5 + index % 3)),
            frozenset({dt.date(2024, 12, 25)}),
        )
        for index in range(300)
    ]
    carrier = calendar.CarrierSchedule(frozenset(range(5)), 1020, 2, spread_business_days=1)
    now = 1_735_050_000_000  # 2024-12-24 14:20 UTC
    first = calendar_kernels.table_first_day(now)
    table = calendar_kernels.compile_node_days(nodes, first)
    dates = calendar_kernels.dates_many(
        table,
        calendar_kernels.compile_carrier_days(carrier, first),
        calendar_kernels.ready_many(table, now),
    )
    expected = np.array(
        [
            (
                calendar.ship_epoch_day(node, carrier, now),
                *calendar.delivery_epoch_days(node, carrier, now),
            )
            for node in nodes
        ],
        np.int32,
    )
    assert (dates == expected).all()
    assert (dates[:, 0] >= epoch_day(dt.date(2024, 12, 24))).all()


def test_table_days_bounded() -> None:
    """A day table longer than the horizon is refused naming the field."""
    node = calendar.NodeCalendar("UTC", 600, 60, frozenset(range(5)))
    with pytest.raises(ValueError, match="days: 400"):
        calendar_kernels.compile_node_days([node], 20_000, 400)
