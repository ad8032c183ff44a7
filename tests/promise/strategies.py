"""Hypothesis strategies for promise dates: zones with and without DST (30-minute and
midnight changes included), instants near offset changes, calendars with closures."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from atpd.core.calendar import CarrierSchedule, NodeCalendar, epoch_day, local_instant_ms

ZONES = (
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "Australia/Lord_Howe",  # 30-minute change
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Honolulu",
)
# Dates on which some zone above changes its offset.
CHANGE_DATES = (
    dt.date(2024, 3, 10),
    dt.date(2024, 3, 31),
    dt.date(2024, 4, 7),
    dt.date(2024, 9, 8),
    dt.date(2024, 9, 29),
    dt.date(2024, 10, 6),
    dt.date(2024, 10, 27),
    dt.date(2024, 11, 3),
    dt.date(2025, 3, 30),
    dt.date(2025, 4, 6),
)

base_dates = st.one_of(
    st.sampled_from(CHANGE_DATES), st.dates(dt.date(2024, 1, 1), dt.date(2026, 12, 31))
)
weekday_sets = st.frozensets(st.integers(0, 6), min_size=1)


@st.composite
def node_calendars(draw: st.DrawFn, near: dt.date, tz: str | None = None) -> NodeCalendar:
    open_minutes = draw(st.sampled_from([0, 0, 90, 480, 600, 1200]))
    close_minutes = draw(
        st.sampled_from([1440, 1440, 1080, 1320, 150]).filter(lambda m: m > open_minutes)
        | st.integers(open_minutes + 1, 1440)
    )
    cutoff = draw(
        st.sampled_from([open_minutes, close_minutes, 840, 120, 150]).filter(
            lambda m: open_minutes <= m <= close_minutes
        )
        | st.integers(open_minutes, close_minutes)
    )
    closed = draw(
        st.frozensets(st.integers(-3, 12).map(lambda days: near + dt.timedelta(days)), max_size=5)
    )
    return NodeCalendar(
        tz=tz or draw(st.sampled_from(ZONES)),
        cutoff_minutes=cutoff,
        # At most four working windows of processing, so answers stay within weeks.
        processing_minutes=draw(
            st.sampled_from([0, 1, 60, 120, 600]) | st.integers(0, 3000)
        ).__mod__(4 * (close_minutes - open_minutes) + 1),
        open_weekdays=draw(weekday_sets),
        closed_dates=closed,
        open_minutes=open_minutes,
        close_minutes=close_minutes,
    )


@st.composite
def carrier_schedules(draw: st.DrawFn, near: dt.date) -> CarrierSchedule:
    closed = draw(
        st.frozensets(st.integers(-3, 15).map(lambda days: near + dt.timedelta(days)), max_size=4)
    )
    return CarrierSchedule(
        pickup_weekdays=draw(weekday_sets),
        pickup_cutoff_minutes=draw(st.sampled_from([0, 1020, 1440, 150]) | st.integers(0, 1440)),
        transit_business_days=draw(st.integers(0, 6)),
        delivery_weekdays=draw(weekday_sets),
        closed_dates=closed,
        spread_business_days=draw(st.integers(0, 3)),
    )


@st.composite
def instants_near(draw: st.DrawFn, tz: str, near: dt.date, cutoffs: tuple[int, ...]) -> int:
    """An instant within a few days of `near`: anywhere, or exactly at (or 1 ms around) a
    local minute that matters (a cut-off, an opening)."""
    day = epoch_day(near) + draw(st.integers(-2, 2))
    if draw(st.booleans()):
        minute = draw(st.sampled_from(cutoffs))
        return local_instant_ms(tz, day, minute) + draw(st.sampled_from([-1, 0, 0, 1]))
    return local_instant_ms(tz, day, 0) + draw(st.integers(0, 86_400_000 - 1))
