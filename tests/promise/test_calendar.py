"""Promise dates (core/calendar.py) against brute-force references (tests/promise/reference.py)
across DST changes, cut-off edges, closures and weekends, plus worked examples."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atpd.core import calendar
from atpd.core.calendar import CarrierSchedule, NodeCalendar, epoch_day, zone_day
from promise import reference
from promise.strategies import ZONES, base_dates, carrier_schedules, instants_near, node_calendars

pytestmark = pytest.mark.core
SLOW_EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PARIS = "Europe/Paris"
WEEKDAYS = frozenset(range(5))


def paris_ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    moment = dt.datetime(year, month, day, hour, minute, tzinfo=calendar.zone(PARIS))
    return int(moment.timestamp() * 1000)


@SLOW_EXAMPLES
@given(st.sampled_from(ZONES), base_dates, st.integers(0, 1440), st.integers(-1, 1))
def test_local_minute_is_the_first_instant_the_wall_clock_shows_it(
    tz: str, date: dt.date, minute: int, shift: int
) -> None:
    """A local minute maps to the first instant at which the zone's wall clock reaches it."""
    date += dt.timedelta(days=shift)
    expected = reference.first_instant_ms(tz, date, minute)
    assert calendar.local_instant_ms(tz, epoch_day(date), minute) == expected


@SLOW_EXAMPLES
@given(st.sampled_from(ZONES), base_dates, st.integers(-86_400_000, 2 * 86_400_000))
def test_local_day_of_an_instant(tz: str, date: dt.date, offset_ms: int) -> None:
    """The local day of an instant is the latest date whose minute 0 is at or before it."""
    instant = calendar.local_instant_ms(tz, epoch_day(date), 0) + offset_ms
    assert calendar.date_of(calendar.local_day(tz, instant)) == reference.local_date(tz, instant)


@SLOW_EXAMPLES
@given(st.data(), base_dates)
def test_ready_at_matches_reference(data: st.DataObject, near: dt.date) -> None:
    """Ready time: cut-off, opening, closures and working-time processing, DST included."""
    node = data.draw(node_calendars(near))
    edges = (node.cutoff_minutes, node.open_minutes, node.close_minutes % 1440)
    now = data.draw(instants_near(node.tz, near, edges))
    assert calendar.ready_at_ms(node, now) == reference.ready_at_ms(node, now)


@SLOW_EXAMPLES
@given(st.data(), base_dates, st.integers(0, 5))
def test_pickup_ready_matches_reference(data: st.DataObject, near: dt.date, lead: int) -> None:
    """Click & collect: ready-by from local stock or after a transfer's lead in open days."""
    node = data.draw(node_calendars(near))
    now = data.draw(instants_near(node.tz, near, (node.cutoff_minutes, node.open_minutes)))
    assert calendar.pickup_ready_ms(node, now, lead) == reference.pickup_ready_ms(node, now, lead)


@SLOW_EXAMPLES
@given(st.data(), base_dates)
def test_ship_and_delivery_dates_match_reference(data: st.DataObject, near: dt.date) -> None:
    """Ship date (pickup days, pickup cut-off, node open) and the delivery range."""
    node = data.draw(node_calendars(near))
    carrier = data.draw(carrier_schedules(near))
    assume(node.open_weekdays & carrier.pickup_weekdays)  # else no ship date exists
    edges = (node.cutoff_minutes, carrier.pickup_cutoff_minutes % 1440)
    now = data.draw(instants_near(node.tz, near, edges))
    assert calendar.ship_date(node, carrier, now) == reference.ship_date(node, carrier, now)
    earliest, latest = calendar.delivery_dates(node, carrier, now)
    assert (earliest, latest) == reference.delivery_dates(node, carrier, now)
    assert earliest <= latest
    assert calendar.delivery_epoch_days(node, carrier, now) == (
        epoch_day(earliest),
        epoch_day(latest),
    )


def test_order_exactly_at_cutoff_is_for_the_next_open_day() -> None:
    """An order at 14:00:00.000 with a 14:00 cut-off starts the next open day (Friday ->
    Monday); one a millisecond earlier starts now."""
    node = NodeCalendar(PARIS, 840, 120, WEEKDAYS, open_minutes=480, close_minutes=1080)
    friday_cutoff = paris_ms(2024, 12, 6, 14, 0)
    assert calendar.ready_at_ms(node, friday_cutoff) == paris_ms(2024, 12, 9, 10, 0)
    assert calendar.ready_at_ms(node, friday_cutoff - 1) == friday_cutoff - 1 + 7_200_000


def test_processing_continues_in_the_next_working_window() -> None:
    """Two hours of processing started at 17:00 with an 18:00 closing end at 09:00 next
    open day, skipping a closed date."""
    node = NodeCalendar(PARIS, 1080, 120, WEEKDAYS, frozenset({dt.date(2024, 12, 25)}), 480, 1080)
    assert calendar.ready_at_ms(node, paris_ms(2024, 12, 24, 17, 0)) == paris_ms(2024, 12, 26, 9, 0)


def test_spring_forward_counts_real_minutes() -> None:
    """Processing across the Paris spring-forward gap takes real time: 01:30 + 60 min is
    03:30 local (the hour 02:00-03:00 does not exist)."""
    node = NodeCalendar(PARIS, 1440, 60, frozenset(range(7)))
    assert calendar.ready_at(node, paris_ms(2024, 3, 31, 1, 30)).hour == 3
    day = zone_day(PARIS, epoch_day(dt.date(2024, 3, 31)))
    assert day.instant_ms(150) == day.instant_ms(180) == paris_ms(2024, 3, 31, 3, 0)


def test_ship_and_delivery_example() -> None:
    """Friday 15:00 ready, pickup 17:00 Mon-Fri, 2 business days Mon-Sat, spread 1: ships
    Friday, delivered Monday (Saturday counts, Sunday not) to Tuesday."""
    node = NodeCalendar(PARIS, 840, 120, frozenset(range(6)), open_minutes=480)
    carrier = CarrierSchedule(WEEKDAYS, 1020, 2, spread_business_days=1)
    now = paris_ms(2024, 12, 6, 13, 0)
    assert calendar.ship_date(node, carrier, now) == dt.date(2024, 12, 6)
    assert calendar.delivery_dates(node, carrier, now) == (
        dt.date(2024, 12, 9),
        dt.date(2024, 12, 10),
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tz": "Mars/Olympus"}, "tz: unknown time zone"),
        ({"open_weekdays": frozenset()}, "open_weekdays: no weekday"),
        ({"open_weekdays": frozenset({7})}, "open_weekdays: weekday 7"),
        ({"cutoff_minutes": 1441}, "cutoff_minutes: 1441"),
        ({"processing_minutes": -1}, "processing_minutes: -1"),
        ({"open_minutes": 600, "cutoff_minutes": 500}, "cutoff_minutes: 500"),
        ({"close_minutes": 0}, "close_minutes: 0"),
    ],
)
def test_bad_node_calendar_is_refused_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    """A node calendar with a bad field is refused at construction, naming the field."""
    arguments: dict[str, object] = {
        "tz": PARIS,
        "cutoff_minutes": 840,
        "processing_minutes": 60,
        "open_weekdays": WEEKDAYS,
    }
    arguments.update(fields)
    with pytest.raises(ValueError, match=message):
        NodeCalendar(**arguments)  # type: ignore[arg-type]


def test_bad_carrier_schedule_is_refused_naming_the_field() -> None:
    """A carrier schedule with a bad field is refused at construction, naming the field."""
    with pytest.raises(ValueError, match="transit_business_days: 61"):
        CarrierSchedule(WEEKDAYS, 1020, 61)
    with pytest.raises(ValueError, match="delivery_weekdays: no weekday"):
        CarrierSchedule(WEEKDAYS, 1020, 1, delivery_weekdays=frozenset())


def test_search_is_bounded_by_the_horizon() -> None:
    """A node closed on every open weekday for over a year finds no date: a clear error."""
    first = dt.date(2024, 12, 2)  # a Monday
    mondays = frozenset(first + dt.timedelta(weeks=week) for week in range(60))
    node = NodeCalendar("UTC", 600, 60, frozenset({0}), mondays)
    with pytest.raises(calendar.NoDateWithinHorizon, match="no open day within 366 days"):
        calendar.ready_at_ms(node, paris_ms(2024, 12, 1, 12, 0))
