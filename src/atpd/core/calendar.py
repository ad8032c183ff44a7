"""Promise dates: when an order is packed at a node, when it ships, when it is delivered.

Pure functions over two small frozen dataclasses; no I/O and no clock (`now_ms`, epoch
milliseconds UTC, is an argument). Phase B feeds them from the network model.

`NodeCalendar` (a fulfilment node, in its own IANA time zone `tz`):
- `open_weekdays` (0 = Monday) and `closed_dates` (public holidays, stocktakes) say which
  local days the node works. A day is *open* when its weekday is open and it is not closed.
- On an open day the node works from `open_minutes` to `close_minutes` (local minutes after
  midnight; defaults 0 and 1440: the whole day). `cutoff_minutes` is the day's order cut-off
  (open <= cut-off <= close).
- `processing_minutes` is the time to pick and pack an order, counted in *working time*:
  only the minutes inside an open day's working window count, so two hours of processing
  that starts at 17:00 in a window closing at 18:00 ends one hour into the next open day.

`ready_at(node, now_ms)`: an order placed before the cut-off of an open day starts at
`max(now, opening)` that day; one placed at or after the cut-off, or on a closed day, starts
at the opening of the next open day. Ready = start + processing in working time.

A carrier (`CarrierSchedule`) picks up at the origin on its `pickup_weekdays` (not on its
`closed_dates`, and only on days the node is open) up to `pickup_cutoff_minutes` (local time at
the origin). `ship_date`: the first such day whose pickup cut-off is after the ready time.
Delivery: `transit_business_days` carrier business days (its `delivery_weekdays`, Mon-Sat by
default, minus its `closed_dates`) after the ship date (0: same day, or the next business day
when the ship date is not one), and the latest date `spread_business_days` business days after
the earliest. Delivery dates are plain dates (no time zone: a day is a day on both ends).

One rule for every cut-off: something that happens exactly at a cut-off misses it ("order
before 14:00": an order at 14:00:00.000 is for tomorrow; a parcel ready at the pickup cut-off
waits for the next pickup).

Local time is DST-correct (zoneinfo), with one definition: local minute `m` of local date `d`
is *the first instant at which a wall clock in the zone shows (d, m) or later*. So in a
spring-forward gap every missing minute maps to the instant of the jump, and in a fall-back
fold a minute means its first occurrence; each working window is one interval of real time,
counted in real (elapsed) minutes. The local day containing an instant is the latest date whose
minute 0 is at or before it.

Dates are `datetime.date`; every function also has an epoch-day form (days since 1970-01-01,
`epoch_day(date)`) for the vectorised code in `core/calendar_kernels.py`, which computes ship
and delivery epoch days for hundreds of nodes in one numba pass over tables compiled once a
day (see that module).

Every search is bounded: at most `MAX_HORIZON_DAYS` days ahead; a calendar that finds no date
within it raises `NoDateWithinHorizon` (a `ValueError`). Bad configuration raises `ValueError`
naming the field at construction.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTES_PER_DAY = 1440
MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
# Searches for an open day, a pickup day or a business day look at most this far ahead.
MAX_HORIZON_DAYS = 366
# Processing longer than this is a transfer or a made-to-order item, not picking and packing.
MAX_PROCESSING_MINUTES = 30 * MINUTES_PER_DAY
MAX_CLOSED_DATES = 1_000
MAX_TRANSIT_BUSINESS_DAYS = 60
MAX_SPREAD_BUSINESS_DAYS = 30
MAX_TRANSFER_LEAD_DAYS = 60
EPOCH = dt.date(1970, 1, 1)
MONDAY_TO_SATURDAY = frozenset(range(6))
MONDAY_TO_FRIDAY = frozenset(range(5))


class NoDateWithinHorizon(ValueError):
    """No open, pickup or business day within MAX_HORIZON_DAYS."""


def epoch_day(date: dt.date) -> int:
    """Days since 1970-01-01."""
    return date.toordinal() - EPOCH.toordinal()


def date_of(epoch_days: int) -> dt.date:
    return dt.date.fromordinal(EPOCH.toordinal() + epoch_days)


def weekday_of(epoch_days: int) -> int:
    """0 = Monday (1970-01-01 was a Thursday)."""
    return (epoch_days + 3) % 7


def check_weekdays(name: str, weekdays: frozenset[int]) -> None:
    if not weekdays:
        raise ValueError(f"{name}: no weekday given (a calendar needs at least one)")
    bad = sorted(day for day in weekdays if not 0 <= day <= 6)
    if bad:
        raise ValueError(f"{name}: weekday {bad[0]} is not in 0..6 (0 = Monday)")


def check_closed_dates(name: str, closed_dates: frozenset[dt.date]) -> None:
    if len(closed_dates) > MAX_CLOSED_DATES:
        raise ValueError(f"{name}: {len(closed_dates)} dates, at most {MAX_CLOSED_DATES}")


def check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is not in {low}..{high}")


@functools.lru_cache(maxsize=256)
def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"tz: unknown time zone {tz!r} (an IANA name such as Europe/Paris)"
        ) from None


@dataclass(frozen=True, slots=True)
class NodeCalendar:
    tz: str
    cutoff_minutes: int
    processing_minutes: int
    open_weekdays: frozenset[int]
    closed_dates: frozenset[dt.date] = frozenset()
    open_minutes: int = 0
    close_minutes: int = MINUTES_PER_DAY

    def __post_init__(self) -> None:
        zone(self.tz)
        check_weekdays("open_weekdays", self.open_weekdays)
        check_closed_dates("closed_dates", self.closed_dates)
        check_range("open_minutes", self.open_minutes, 0, MINUTES_PER_DAY - 1)
        check_range("close_minutes", self.close_minutes, self.open_minutes + 1, MINUTES_PER_DAY)
        check_range("cutoff_minutes", self.cutoff_minutes, self.open_minutes, self.close_minutes)
        check_range("processing_minutes", self.processing_minutes, 0, MAX_PROCESSING_MINUTES)

    def is_open(self, epoch_days: int) -> bool:
        return (
            weekday_of(epoch_days) in self.open_weekdays
            and date_of(epoch_days) not in self.closed_dates
        )


@dataclass(frozen=True, slots=True)
class CarrierSchedule:
    pickup_weekdays: frozenset[int]
    pickup_cutoff_minutes: int
    transit_business_days: int
    delivery_weekdays: frozenset[int] = MONDAY_TO_SATURDAY
    closed_dates: frozenset[dt.date] = frozenset()
    spread_business_days: int = 0

    def __post_init__(self) -> None:
        check_weekdays("pickup_weekdays", self.pickup_weekdays)
        check_weekdays("delivery_weekdays", self.delivery_weekdays)
        check_closed_dates("closed_dates", self.closed_dates)
        check_range("pickup_cutoff_minutes", self.pickup_cutoff_minutes, 0, MINUTES_PER_DAY)
        check_range(
            "transit_business_days", self.transit_business_days, 0, MAX_TRANSIT_BUSINESS_DAYS
        )
        check_range("spread_business_days", self.spread_business_days, 0, MAX_SPREAD_BUSINESS_DAYS)

    def picks_up(self, epoch_days: int) -> bool:
        return (
            weekday_of(epoch_days) in self.pickup_weekdays
            and date_of(epoch_days) not in self.closed_dates
        )

    def delivers(self, epoch_days: int) -> bool:
        return (
            weekday_of(epoch_days) in self.delivery_weekdays
            and date_of(epoch_days) not in self.closed_dates
        )


# --- local time: (date, minute) -> instant, one day at a time --------------------------------


@dataclass(frozen=True, slots=True)
class ZoneDay:
    """How local minutes of one date map to instants, in O(1):

        instant(m) = base_ms + m * MS_PER_MINUTE        if m < change_start
                   = gap_ms                             if change_start <= m < change_end
                   = post_base_ms + m * MS_PER_MINUTE   if m >= change_end

    With no offset change that day, change_start = change_end = 1440. A spring-forward gap is
    [change_start, change_end) (every missing minute is the jump, gap_ms); a fall-back has
    change_start = change_end (the wall minute from which the later offset applies)."""

    base_ms: int
    post_base_ms: int
    gap_ms: int
    change_start: int
    change_end: int

    def instant_ms(self, minute: int) -> int:
        if minute < self.change_start:
            return self.base_ms + minute * MS_PER_MINUTE
        if minute < self.change_end:
            return self.gap_ms
        return self.post_base_ms + minute * MS_PER_MINUTE


def first_instant_ms(tz: ZoneInfo, date: dt.date, minute: int) -> int:
    """The first instant at which the wall clock shows (date, minute) or later (zoneinfo)."""
    hour, rest = divmod(minute, 60)
    wall = dt.datetime(date.year, date.month, date.day, hour, rest)
    naive_utc_ms = (epoch_day(date) * MINUTES_PER_DAY + minute) * MS_PER_MINUTE
    earlier = wall.replace(tzinfo=tz)  # fold=0: the first occurrence, or in a gap the old offset
    offset = earlier.utcoffset()
    assert offset is not None
    instant = naive_utc_ms - int(offset.total_seconds() * 1000)
    back = dt.datetime.fromtimestamp(instant / 1000, tz).replace(tzinfo=None)
    if back == wall:
        return instant
    # In a gap: the old offset overshoots past the jump; the jump is the first instant whose
    # wall clock is past this minute. Search it between the new and the old offset's readings.
    later = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert later is not None
    low = naive_utc_ms - int(later.total_seconds() * 1000)  # before the jump
    high = instant  # after it
    assert low < high
    while high - low > MS_PER_MINUTE:
        middle = low + (high - low) // 2 // MS_PER_MINUTE * MS_PER_MINUTE
        middle = max(middle, low + MS_PER_MINUTE)
        shown = dt.datetime.fromtimestamp(middle / 1000, tz).replace(tzinfo=None)
        if shown >= wall:
            high = middle
        else:
            low = middle
    return high


@functools.lru_cache(maxsize=65_536)
def zone_day(tz: str, epoch_days: int) -> ZoneDay:
    """The minute-to-instant map of one local date in one zone (assumes at most one offset
    change a day, true of every zone in tzdata since 1970; asserted)."""
    info = zone(tz)
    date = date_of(epoch_days)
    start = first_instant_ms(info, date, 0)
    last = first_instant_ms(info, date, MINUTES_PER_DAY - 1)
    if last - start == (MINUTES_PER_DAY - 1) * MS_PER_MINUTE:
        noon = first_instant_ms(info, date, 720)
        assert noon - start == 720 * MS_PER_MINUTE, (tz, date)
        return ZoneDay(start, start, start, MINUTES_PER_DAY, MINUTES_PER_DAY)
    post_base = last - (MINUTES_PER_DAY - 1) * MS_PER_MINUTE

    def on_post_line(minute: int) -> bool:
        return first_instant_ms(info, date, minute) == post_base + minute * MS_PER_MINUTE

    def off_pre_line(minute: int) -> bool:
        return first_instant_ms(info, date, minute) != start + minute * MS_PER_MINUTE

    change_end = first_true(on_post_line, 1, MINUTES_PER_DAY - 1)
    change_start = first_true(off_pre_line, 1, change_end)
    gap = first_instant_ms(info, date, change_start)
    day = ZoneDay(start, post_base, gap, change_start, change_end)
    for minute in (0, change_start - 1, change_start, change_end - 1, change_end, 1439):
        assert day.instant_ms(minute) == first_instant_ms(info, date, minute), (tz, date)
    return day


def first_true(predicate: Callable[[int], bool], low: int, high: int) -> int:
    """Smallest m in [low, high] with predicate(m) (monotone; high when only high holds)."""
    while low < high:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle + 1
    return low


def local_instant_ms(tz: str, epoch_days: int, minute: int) -> int:
    """The instant of local minute `minute` (0..1440; 1440 is the next day's 0) of a date."""
    assert 0 <= minute <= MINUTES_PER_DAY
    if minute == MINUTES_PER_DAY:
        return zone_day(tz, epoch_days + 1).base_ms
    return zone_day(tz, epoch_days).instant_ms(minute)


def local_day(tz: str, instant_ms: int) -> int:
    """The epoch day of the local date containing an instant (the latest date whose minute 0
    is at or before it)."""
    shown = dt.datetime.fromtimestamp(instant_ms / 1000, zone(tz)).date()
    day = epoch_day(shown)
    if zone_day(tz, day + 1).base_ms <= instant_ms:
        return day + 1  # a fall-back across midnight shows the previous date again
    assert zone_day(tz, day).base_ms <= instant_ms
    return day


def to_local(tz: str, instant_ms: int) -> dt.datetime:
    """An instant as an aware datetime in the zone (for display and tests)."""
    return dt.datetime.fromtimestamp(instant_ms / 1000, zone(tz))


# --- the node: ready time -----------------------------------------------------------------


def next_open_day(node: NodeCalendar, after_day: int) -> int:
    """The first open day strictly after `after_day`."""
    for day in range(after_day + 1, after_day + 1 + MAX_HORIZON_DAYS):
        if node.is_open(day):
            return day
    raise NoDateWithinHorizon(f"node calendar: no open day within {MAX_HORIZON_DAYS} days")


def start_day_ms(node: NodeCalendar, now_ms: int) -> tuple[int, int]:
    """(day, instant) at which work on an order placed at now_ms starts."""
    today = local_day(node.tz, now_ms)
    if node.is_open(today) and now_ms < local_instant_ms(node.tz, today, node.cutoff_minutes):
        return today, max(now_ms, local_instant_ms(node.tz, today, node.open_minutes))
    day = next_open_day(node, today)
    return day, local_instant_ms(node.tz, day, node.open_minutes)


def work_from(node: NodeCalendar, day: int, start_ms: int) -> int:
    """The instant at which processing that starts at start_ms on open `day` is done."""
    remaining_ms = node.processing_minutes * MS_PER_MINUTE
    horizon = day + MAX_HORIZON_DAYS
    while True:
        end_ms = local_instant_ms(node.tz, day, node.close_minutes)
        if start_ms + remaining_ms <= end_ms:
            return start_ms + remaining_ms
        remaining_ms -= max(0, end_ms - start_ms)
        day = next_open_day(node, day)
        if day > horizon:
            raise NoDateWithinHorizon(f"processing: not done within {MAX_HORIZON_DAYS} days")
        start_ms = local_instant_ms(node.tz, day, node.open_minutes)


def ready_at_ms(node: NodeCalendar, now_ms: int) -> int:
    """When an order placed at now_ms is packed and ready at the node (epoch ms)."""
    day, start_ms = start_day_ms(node, now_ms)
    return work_from(node, day, start_ms)


def ready_at(node: NodeCalendar, now_ms: int) -> dt.datetime:
    """`ready_at_ms` as an aware datetime in the node's zone."""
    return to_local(node.tz, ready_at_ms(node, now_ms))


def pickup_ready_ms(node: NodeCalendar, now_ms: int, transfer_lead_days: int = 0) -> int:
    """Click & collect: when an order placed at now_ms can be collected at this store.

    From local stock (lead 0) it is `ready_at_ms`. Stock that comes by a transfer lane with a
    lead time of L business days arrives at the opening of the store's L-th open day after
    the day work on the order would start (the store's cut-off applies), and is processed
    from there."""
    check_range("transfer_lead_days", transfer_lead_days, 0, MAX_TRANSFER_LEAD_DAYS)
    day, start_ms = start_day_ms(node, now_ms)
    for _ in range(transfer_lead_days):
        day = next_open_day(node, day)
        start_ms = local_instant_ms(node.tz, day, node.open_minutes)
    return work_from(node, day, start_ms)


def pickup_ready(node: NodeCalendar, now_ms: int, transfer_lead_days: int = 0) -> dt.datetime:
    return to_local(node.tz, pickup_ready_ms(node, now_ms, transfer_lead_days))


# --- the carrier: ship and delivery dates ---------------------------------------------------


def ship_day_after_ready(node: NodeCalendar, carrier: CarrierSchedule, ready_ms: int) -> int:
    """The epoch day of the first pickup (carrier day, node open) after a parcel is ready."""
    first = local_day(node.tz, ready_ms)
    for day in range(first, first + MAX_HORIZON_DAYS):
        if not (carrier.picks_up(day) and node.is_open(day)):
            continue
        if ready_ms < local_instant_ms(node.tz, day, carrier.pickup_cutoff_minutes):
            return day
    raise NoDateWithinHorizon(f"carrier: no pickup day within {MAX_HORIZON_DAYS} days")


def ship_epoch_day(node: NodeCalendar, carrier: CarrierSchedule, now_ms: int) -> int:
    return ship_day_after_ready(node, carrier, ready_at_ms(node, now_ms))


def ship_date(node: NodeCalendar, carrier: CarrierSchedule, now_ms: int) -> dt.date:
    """The local date at the origin on which an order placed at now_ms leaves with the carrier."""
    return date_of(ship_epoch_day(node, carrier, now_ms))


def add_business_days(carrier: CarrierSchedule, day: int, count: int) -> int:
    """The count-th carrier business day after `day`; with count 0, `day` itself when it is a
    business day, else the next one."""
    assert count >= 0
    if count == 0 and carrier.delivers(day):
        return day
    found = 0
    for candidate in range(day + 1, day + 1 + MAX_HORIZON_DAYS):
        if carrier.delivers(candidate):
            found += 1
            if found >= max(count, 1):
                return candidate
    raise NoDateWithinHorizon(f"carrier: no delivery day within {MAX_HORIZON_DAYS} days")


def delivery_epoch_days_after_ship(carrier: CarrierSchedule, ship_day: int) -> tuple[int, int]:
    earliest = add_business_days(carrier, ship_day, carrier.transit_business_days)
    return earliest, add_business_days(carrier, earliest, carrier.spread_business_days)


def delivery_epoch_days(
    node: NodeCalendar, carrier: CarrierSchedule, now_ms: int
) -> tuple[int, int]:
    """(earliest, latest) delivery epoch days for an order placed at now_ms."""
    return delivery_epoch_days_after_ship(carrier, ship_epoch_day(node, carrier, now_ms))


def delivery_dates(
    node: NodeCalendar, carrier: CarrierSchedule, now_ms: int
) -> tuple[dt.date, dt.date]:
    """(earliest, latest) delivery dates for an order placed at now_ms."""
    earliest, latest = delivery_epoch_days(node, carrier, now_ms)
    return date_of(earliest), date_of(latest)
