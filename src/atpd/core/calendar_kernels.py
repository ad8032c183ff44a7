"""Promise dates for many nodes at once: day tables compiled once a day, numba passes over them.

A promise looks at hundreds of nodes and a handful of carrier services; walking calendars day
by day through zoneinfo for each would cost milliseconds. Instead, once per day (and whenever
the network changes) phase B compiles:

- a `NodeDayTable` for all nodes: for each node and each of `days` local dates from
  `first_epoch_day` (the UTC date of "now" minus one, so every zone's local today is inside),
  the minute-to-instant map of the date in the node's zone (`calendar.ZoneDay`, five numbers:
  DST-correct without zoneinfo at query time) and whether the node is open; plus each node's
  opening, cut-off, closing and processing time;
- a `CarrierDayTable` per carrier service: pickup days, the pickup cut-off minute, and its
  business days as a sorted array with a rank per day, so "the k-th business day after d" is
  one lookup.

`ready_many(nodes, now_ms)` then gives every node's ready instant, and
`dates_many(nodes, carrier, ready_ms)` every node's ship, earliest and latest delivery epoch
day for one service, each in one numba pass with no allocation per node. They compute exactly
what `calendar.ready_at_ms`, `ship_epoch_day` and `delivery_epoch_days` compute (tests/promise
pins it); an answer that would need a day past the table is -1: the caller falls back to the
scalar function (rare with 32 days: only very long closures or processing do that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from atpd.core.calendar import (
    MAX_HORIZON_DAYS,
    MINUTES_PER_DAY,
    MS_PER_DAY,
    MS_PER_MINUTE,
    CarrierSchedule,
    NodeCalendar,
    check_range,
    zone_day,
)

Int64Array = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]
# A day's table covers this many local dates unless told otherwise.
DEFAULT_TABLE_DAYS = 32
MAX_TABLE_DAYS = MAX_HORIZON_DAYS
NOT_IN_TABLE = -1


@dataclass(frozen=True, slots=True)
class NodeDayTable:
    """Per node (rows) and local date (columns, `first_epoch_day + column`); the zone columns
    have one more date than `days` so that minute 1440 of the last date can be looked up."""

    first_epoch_day: int
    days: int
    base_ms: Int64Array
    post_base_ms: Int64Array
    gap_ms: Int64Array
    change_start: Int32Array
    change_end: Int32Array
    open_day: BoolArray
    minutes: Int32Array  # (3, nodes): opening, cut-off and closing, local minutes
    processing_ms: Int64Array


@dataclass(frozen=True, slots=True)
class CarrierDayTable:
    """One carrier service over the dates of a NodeDayTable (same first_epoch_day): pickup days
    for the first `days` dates, business days over as many more as transit and spread need."""

    first_epoch_day: int
    days: int
    pickup_day: BoolArray
    # first epoch day, pickup cut-off minute, transit and spread business days
    settings: Int64Array
    delivers: BoolArray
    business_days: Int32Array  # column indices of business days, ascending
    business_rank: Int32Array  # per column: number of business days at or before it


def table_first_day(now_ms: int) -> int:
    """The first date of a table valid for a day whose UTC date contains now_ms."""
    return now_ms // MS_PER_DAY - 1


def compile_node_days(
    calendars: Sequence[NodeCalendar], first_epoch_day: int, days: int = DEFAULT_TABLE_DAYS
) -> NodeDayTable:
    """Tables for these nodes (row i = calendars[i]); zones are shared between nodes."""
    check_range("days", days, 2, MAX_TABLE_DAYS)
    count = len(calendars)
    shape = (count, days + 1)
    base = np.zeros(shape, np.int64)
    post_base = np.zeros(shape, np.int64)
    gap = np.zeros(shape, np.int64)
    change_start = np.zeros(shape, np.int32)
    change_end = np.zeros(shape, np.int32)
    open_day = np.zeros(shape, np.bool_)
    rows_of_zone: dict[str, int] = {}
    for row, node in enumerate(calendars):
        known = rows_of_zone.get(node.tz)
        if known is not None:
            for array in (base, post_base, gap, change_start, change_end):
                array[row] = array[known]
        else:
            rows_of_zone[node.tz] = row
            for column in range(days + 1):
                day = zone_day(node.tz, first_epoch_day + column)
                base[row, column] = day.base_ms
                post_base[row, column] = day.post_base_ms
                gap[row, column] = day.gap_ms
                change_start[row, column] = day.change_start
                change_end[row, column] = day.change_end
        for column in range(days + 1):
            open_day[row, column] = node.is_open(first_epoch_day + column)
    return NodeDayTable(
        first_epoch_day,
        days,
        base,
        post_base,
        gap,
        change_start,
        change_end,
        open_day,
        np.array(
            [
                [node.open_minutes for node in calendars],
                [node.cutoff_minutes for node in calendars],
                [node.close_minutes for node in calendars],
            ],
            np.int32,
        ).reshape(3, count),
        np.array([node.processing_minutes * MS_PER_MINUTE for node in calendars], np.int64),
    )


def compile_carrier_days(
    carrier: CarrierSchedule, first_epoch_day: int, days: int = DEFAULT_TABLE_DAYS
) -> CarrierDayTable:
    check_range("days", days, 2, MAX_TABLE_DAYS)
    pickup = np.array([carrier.picks_up(first_epoch_day + c) for c in range(days)], np.bool_)
    # Enough dates that the last possible ship date still finds its latest delivery date.
    needed = carrier.transit_business_days + carrier.spread_business_days + 1
    delivers: list[bool] = []
    after_last_ship = 0
    while after_last_ship < needed:
        column = len(delivers)
        if column >= days + MAX_HORIZON_DAYS:
            break  # the scalar path reports NoDateWithinHorizon for such dates
        delivers.append(carrier.delivers(first_epoch_day + column))
        if column >= days and delivers[-1]:
            after_last_ship += 1
    delivers_array = np.array(delivers, np.bool_)
    business = np.flatnonzero(delivers_array).astype(np.int32)
    rank = np.cumsum(delivers_array, dtype=np.int32)
    return CarrierDayTable(
        first_epoch_day,
        days,
        pickup,
        np.array(
            [
                first_epoch_day,
                carrier.pickup_cutoff_minutes,
                carrier.transit_business_days,
                carrier.spread_business_days,
            ],
            np.int64,
        ),
        delivers_array,
        business,
        rank,
    )


@njit(nogil=True, cache=True, inline="always")
def instant_at(
    base: Int64Array,
    post_base: Int64Array,
    gap: Int64Array,
    change_start: Int32Array,
    change_end: Int32Array,
    row: int,
    column: int,
    minute: int,
) -> int:
    """Local minute (0..1440) of a date as an instant: calendar.ZoneDay.instant_ms."""
    if minute >= MINUTES_PER_DAY:
        return base[row, column + 1]  # type: ignore[no-any-return]
    if minute < change_start[row, column]:
        return base[row, column] + minute * MS_PER_MINUTE  # type: ignore[no-any-return]
    if minute < change_end[row, column]:
        return gap[row, column]  # type: ignore[no-any-return]
    return post_base[row, column] + minute * MS_PER_MINUTE  # type: ignore[no-any-return]


@njit(nogil=True, cache=True, inline="always")
def column_of(base: Int64Array, row: int, days: int, instant_ms: int) -> int:
    """The column of the local date containing an instant; -1 outside the table."""
    if instant_ms < base[row, 0]:
        return NOT_IN_TABLE
    for column in range(days):
        if instant_ms < base[row, column + 1]:
            return column
    return NOT_IN_TABLE


@njit(nogil=True, cache=True)
def ready_kernel(
    base: Int64Array,
    post_base: Int64Array,
    gap: Int64Array,
    change_start: Int32Array,
    change_end: Int32Array,
    open_day: BoolArray,
    minutes: Int32Array,
    processing_ms: Int64Array,
    now_ms: int,
    out: Int64Array,
) -> None:
    """out[i] = ready instant of node i (calendar.ready_at_ms), -1 past the table.
    `minutes` is (3, nodes): opening, cut-off, closing."""
    days = open_day.shape[1] - 1
    for row in range(open_day.shape[0]):
        out[row] = NOT_IN_TABLE
        column = column_of(base, row, days, now_ms)
        if column < 0:
            continue
        cutoff = instant_at(
            base, post_base, gap, change_start, change_end, row, column, minutes[1, row]
        )
        opening = instant_at(
            base, post_base, gap, change_start, change_end, row, column, minutes[0, row]
        )
        if open_day[row, column] and now_ms < cutoff:
            start = max(now_ms, opening)
        else:
            column += 1
            while column < days and not open_day[row, column]:
                column += 1
            if column >= days:
                continue
            start = instant_at(
                base, post_base, gap, change_start, change_end, row, column, minutes[0, row]
            )
        remaining = processing_ms[row]
        while column < days:
            end = instant_at(
                base, post_base, gap, change_start, change_end, row, column, minutes[2, row]
            )
            if start + remaining <= end:
                out[row] = start + remaining
                break
            remaining -= max(0, end - start)
            column += 1
            while column < days and not open_day[row, column]:
                column += 1
            if column < days:
                start = instant_at(
                    base, post_base, gap, change_start, change_end, row, column, minutes[0, row]
                )


@njit(nogil=True, cache=True, inline="always")
def add_business(
    delivers: BoolArray, business: Int32Array, rank: Int32Array, column: int, count: int
) -> int:
    """calendar.add_business_days over columns; -1 past the table."""
    if count == 0 and delivers[column]:
        return column
    index = rank[column] + max(count, 1) - 1
    if index >= business.shape[0]:
        return NOT_IN_TABLE
    return business[index]  # type: ignore[no-any-return]


@njit(nogil=True, cache=True)
def dates_kernel(
    base: Int64Array,
    post_base: Int64Array,
    gap: Int64Array,
    change_start: Int32Array,
    change_end: Int32Array,
    open_day: BoolArray,
    pickup_day: BoolArray,
    delivers: BoolArray,
    business: Int32Array,
    rank: Int32Array,
    settings: Int64Array,
    ready_ms: Int64Array,
    out: Int32Array,
) -> None:
    """out[i] = (ship, earliest, latest) epoch days of node i for one carrier, -1 past the
    table or where ready_ms[i] is -1. `settings`: first epoch day, pickup cut-off minute,
    transit and spread business days."""
    days = open_day.shape[1] - 1
    first_day = settings[0]
    pickup_cutoff = settings[1]
    for row in range(open_day.shape[0]):
        out[row, 0] = NOT_IN_TABLE
        out[row, 1] = NOT_IN_TABLE
        out[row, 2] = NOT_IN_TABLE
        ready = ready_ms[row]
        if ready < 0:
            continue
        column = column_of(base, row, days, ready)
        if column < 0:
            continue
        ship = NOT_IN_TABLE
        while column < days:
            if pickup_day[column] and open_day[row, column]:
                cutoff = instant_at(
                    base, post_base, gap, change_start, change_end, row, column, pickup_cutoff
                )
                if ready < cutoff:
                    ship = column
                    break
            column += 1
        if ship < 0:
            continue
        earliest = add_business(delivers, business, rank, ship, settings[2])
        if earliest < 0:
            continue
        latest = add_business(delivers, business, rank, earliest, settings[3])
        if latest < 0:
            continue
        out[row, 0] = first_day + ship
        out[row, 1] = first_day + earliest
        out[row, 2] = first_day + latest


def ready_many(nodes: NodeDayTable, now_ms: int, out: Int64Array | None = None) -> Int64Array:
    """Every node's ready instant for an order placed at now_ms (-1: past the table)."""
    if out is None:
        out = np.empty(nodes.base_ms.shape[0], np.int64)
    ready_kernel(
        nodes.base_ms,
        nodes.post_base_ms,
        nodes.gap_ms,
        nodes.change_start,
        nodes.change_end,
        nodes.open_day,
        nodes.minutes,
        nodes.processing_ms,
        now_ms,
        out,
    )
    return out


def dates_many(
    nodes: NodeDayTable,
    carrier: CarrierDayTable,
    ready_ms: Int64Array,
    out: Int32Array | None = None,
) -> Int32Array:
    """(nodes, 3) ship, earliest and latest delivery epoch days for one carrier service from
    each node, given each node's ready instant (`ready_many`); -1 past the table."""
    assert carrier.first_epoch_day == nodes.first_epoch_day, "tables of different days"
    assert carrier.days == nodes.days
    if out is None:
        out = np.empty((nodes.base_ms.shape[0], 3), np.int32)
    dates_kernel(
        nodes.base_ms,
        nodes.post_base_ms,
        nodes.gap_ms,
        nodes.change_start,
        nodes.change_end,
        nodes.open_day,
        carrier.pickup_day,
        carrier.delivers,
        carrier.business_days,
        carrier.business_rank,
        carrier.settings,
        ready_ms,
        out,
    )
    return out


def warm_up() -> None:
    """Compile (or load from cache) the kernels before the first promise."""
    node = NodeCalendar("UTC", 600, 60, frozenset(range(5)))
    carrier = CarrierSchedule(frozenset(range(5)), 960, 1)
    now_ms = 1_764_000_000_000
    first = table_first_day(now_ms)
    table = compile_node_days([node], first, 4)
    dates_many(table, compile_carrier_days(carrier, first, 4), ready_many(table, now_ms))
