"""Brute-force references for promise dates: scan real time minute by minute through zoneinfo
and walk the calendar date by date, with none of the shortcuts of core/calendar.py."""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

from atpd.core.calendar import CarrierSchedule, NodeCalendar

MINUTE_MS = 60_000


def wall(tz: str, instant_ms: int) -> tuple[dt.date, int]:
    shown = dt.datetime.fromtimestamp(instant_ms / 1000, ZoneInfo(tz))
    return shown.date(), shown.hour * 60 + shown.minute


@functools.lru_cache(maxsize=100_000)
def first_instant_ms(tz: str, date: dt.date, minute: int) -> int:
    """The first whole-minute instant whose wall clock shows (date, minute) or later, found by
    scanning real time one minute at a time from well before any zone's reading of it."""
    if minute == 1440:
        return first_instant_ms(tz, date + dt.timedelta(days=1), 0)
    naive = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC) + dt.timedelta(
        minutes=minute
    )
    instant = int(naive.timestamp() * 1000) - 15 * 3_600_000
    for _ in range(30 * 60):
        if wall(tz, instant) >= (date, minute):
            return instant
        instant += MINUTE_MS
    raise AssertionError("no instant found")


def local_date(tz: str, instant_ms: int) -> dt.date:
    shown, _ = wall(tz, instant_ms)
    for candidate in (shown + dt.timedelta(days=1), shown, shown - dt.timedelta(days=1)):
        if first_instant_ms(tz, candidate, 0) <= instant_ms:
            return candidate
    raise AssertionError("no local date")


def node_open(node: NodeCalendar, date: dt.date) -> bool:
    return date.weekday() in node.open_weekdays and date not in node.closed_dates


def next_open(node: NodeCalendar, date: dt.date) -> dt.date:
    date += dt.timedelta(days=1)
    while not node_open(node, date):
        date += dt.timedelta(days=1)
    return date


def start(node: NodeCalendar, now_ms: int) -> tuple[dt.date, int]:
    today = local_date(node.tz, now_ms)
    if node_open(node, today) and now_ms < first_instant_ms(node.tz, today, node.cutoff_minutes):
        return today, max(now_ms, first_instant_ms(node.tz, today, node.open_minutes))
    day = next_open(node, today)
    return day, first_instant_ms(node.tz, day, node.open_minutes)


def process(node: NodeCalendar, day: dt.date, start_ms: int) -> int:
    """Count working minutes one by one (whole minutes; processing is in minutes and windows
    start on minute boundaries, but `start_ms` may not)."""
    remaining = node.processing_minutes * MINUTE_MS
    instant = start_ms
    while True:
        end = first_instant_ms(node.tz, day, node.close_minutes)
        while instant < end and remaining > 0:
            step = min(remaining, end - instant, MINUTE_MS - instant % MINUTE_MS)
            instant += step
            remaining -= step
        if remaining == 0:
            return instant
        day = next_open(node, day)
        instant = first_instant_ms(node.tz, day, node.open_minutes)


def ready_at_ms(node: NodeCalendar, now_ms: int) -> int:
    day, start_ms = start(node, now_ms)
    return process(node, day, start_ms)


def pickup_ready_ms(node: NodeCalendar, now_ms: int, lead_days: int) -> int:
    day, start_ms = start(node, now_ms)
    for _ in range(lead_days):
        day = next_open(node, day)
        start_ms = first_instant_ms(node.tz, day, node.open_minutes)
    return process(node, day, start_ms)


def ship_date(node: NodeCalendar, carrier: CarrierSchedule, now_ms: int) -> dt.date:
    ready = ready_at_ms(node, now_ms)
    day = local_date(node.tz, ready)
    while True:
        picks = day.weekday() in carrier.pickup_weekdays and day not in carrier.closed_dates
        if (
            picks
            and node_open(node, day)
            and ready < first_instant_ms(node.tz, day, carrier.pickup_cutoff_minutes)
        ):
            return day
        day += dt.timedelta(days=1)


def delivers(carrier: CarrierSchedule, day: dt.date) -> bool:
    return day.weekday() in carrier.delivery_weekdays and day not in carrier.closed_dates


def business_days_after(carrier: CarrierSchedule, day: dt.date, count: int) -> dt.date:
    if count == 0:
        while not delivers(carrier, day):
            day += dt.timedelta(days=1)
        return day
    while count > 0:
        day += dt.timedelta(days=1)
        if delivers(carrier, day):
            count -= 1
    return day


def delivery_dates(
    node: NodeCalendar, carrier: CarrierSchedule, now_ms: int
) -> tuple[dt.date, dt.date]:
    earliest = business_days_after(
        carrier, ship_date(node, carrier, now_ms), carrier.transit_business_days
    )
    return earliest, business_days_after(carrier, earliest, carrier.spread_business_days)
