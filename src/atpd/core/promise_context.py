"""What every promise read needs, built once per request: the caller's policy and sourcing
rules, the compiled network, the nodes the caller may be served from, node calendars and
carrier schedules, the caller's ATP per line and node (exactly GetAvailability's numbers) and
when each line's quantity is there (time-phased: stock now, then supply by ETA).

Pure: reads the state, never changes it; `now_ms` is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from atpd.core import calendar_kernels, time_phased
from atpd.core.calendar import (
    CarrierSchedule,
    NodeCalendar,
    delivery_epoch_days_after_ship,
    ready_at_ms,
    ship_day_after_ready,
)
from atpd.core.caller_atp import caller_policy
from atpd.core.handlers_network import compiled_network
from atpd.core.network import Network
from atpd.core.network_compile import CompiledNetwork
from atpd.core.reads import availability
from atpd.core.results import InvalidCommand, LimitExceeded
from atpd.core.rules_compile import CompiledPolicy
from atpd.core.rules_sourcing import Sourcing
from atpd.core.state_fields import StateFields

NOT_AVAILABLE = -1  # `available_ms` of a (line, node) the caller cannot have the quantity from
# Network costs are in the house currency; the search adds integers (minor units, cents).
MINOR_UNITS_PER_UNIT = 100
# Calendars of the last networks seen (a network is replaced whole, rarely).
CALENDAR_CACHE_SIZE = 4


class NoNetwork(Exception):
    """No fulfilment network is configured: promises cannot be computed (FAILED_PRECONDITION)."""


@dataclass(frozen=True, slots=True)
class Calendars:
    network: Network
    nodes: dict[int, NodeCalendar]  # node index -> calendar (nodes the network lists)


calendar_cache: dict[int, Calendars] = {}


@dataclass(slots=True)
class DayTables:
    """The day tables of calendar_kernels for one network, node list and day: every node's
    row (a placeholder calendar where the network has none) and carrier tables per (service,
    zone), compiled on first use."""

    network: Network
    node_count: int
    first_day: int
    nodes: calendar_kernels.NodeDayTable
    carriers: dict[tuple[int, int], calendar_kernels.CarrierDayTable] = field(default_factory=dict)


table_cache: dict[int, DayTables] = {}
# A node the network does not list gets this row (it is never an origin).
PLACEHOLDER_CALENDAR = NodeCalendar("UTC", 0, 0, frozenset(range(7)))


def day_tables(calendars: Calendars, node_count: int, now_ms: int) -> DayTables:
    """The tables valid for the day of now_ms (rebuilt once a day and on network changes)."""
    first_day = calendar_kernels.table_first_day(now_ms)
    cached = table_cache.get(id(calendars.network))
    if (
        cached is not None
        and cached.network is calendars.network
        and cached.node_count == node_count
        and cached.first_day == first_day
    ):
        return cached
    rows = [calendars.nodes.get(node, PLACEHOLDER_CALENDAR) for node in range(node_count)]
    tables = DayTables(
        calendars.network,
        node_count,
        first_day,
        calendar_kernels.compile_node_days(rows, first_day),
    )
    if len(table_cache) >= CALENDAR_CACHE_SIZE:
        table_cache.clear()
    table_cache[id(calendars.network)] = tables
    return tables


def calendars_of(state: StateFields, compiled: CompiledNetwork) -> Calendars:
    """Node calendars of the compiled network (cached per network object)."""
    cached = calendar_cache.get(id(compiled.network))
    if cached is not None and cached.network is compiled.network:
        return cached
    nodes: dict[int, NodeCalendar] = {}
    for logistics in compiled.network.nodes:
        index = state.node_ids.get(logistics.node_id)
        if index < 0:
            continue
        nodes[index] = NodeCalendar(
            logistics.time_zone,
            logistics.cutoff_minutes,
            logistics.processing_minutes,
            frozenset(logistics.open_weekdays),
            frozenset(logistics.closed_dates),
            logistics.open_minutes,
            logistics.close_minutes,
        )
    if len(calendar_cache) >= CALENDAR_CACHE_SIZE:
        calendar_cache.clear()
    calendars = calendar_cache[id(compiled.network)] = Calendars(compiled.network, nodes)
    return calendars


@dataclass(slots=True)
class PromiseContext:
    state: StateFields
    now_ms: int
    channel: str
    segment: str
    policy: CompiledPolicy | None
    sourcing: Sourcing
    network: CompiledNetwork
    calendars: Calendars
    visible: npt.NDArray[np.bool_]  # [node]: the caller sees it (and it is enabled)
    ship_from: npt.NDArray[np.bool_]  # [node]: visible, in the network, ships, allowed kind
    penalty: npt.NDArray[np.float64]  # [node]: sourcing penalty per shipment
    # (node, service, available_ms) -> (ship day, earliest, latest delivery day) or None
    dates_memo: dict[tuple[int, int, int], tuple[int, int, int] | None] = field(
        default_factory=dict
    )
    # Goods on hand now: every node's dates per (service, zone) in one kernel pass each.
    tables: DayTables | None = None
    ready_now: npt.NDArray[np.int64] | None = None
    dates_now: dict[tuple[int, int], npt.NDArray[np.int32]] = field(default_factory=dict)

    def dates_on_hand(self, service: int, zone: int) -> npt.NDArray[np.int32]:
        """[node, 3]: ship, earliest and latest delivery day of goods on hand now (-1 where
        the day table does not reach: the scalar functions answer those)."""
        found = self.dates_now.get((service, zone))
        if found is not None:
            return found
        if self.tables is None or self.ready_now is None:
            self.tables = day_tables(self.calendars, len(self.state.nodes), self.now_ms)
            self.ready_now = calendar_kernels.ready_many(self.tables.nodes, self.now_ms)
        carrier = self.tables.carriers.get((service, zone))
        if carrier is None:
            carrier = calendar_kernels.compile_carrier_days(
                self.carrier(service, zone), self.tables.first_day
            )
            self.tables.carriers[(service, zone)] = carrier
        found = calendar_kernels.dates_many(self.tables.nodes, carrier, self.ready_now)
        self.dates_now[(service, zone)] = found
        return found

    def node_id(self, node: int) -> str:
        return self.state.nodes[node].node_id

    def carrier(self, service: int, zone: int) -> CarrierSchedule:
        model = self.network.network.services[service]
        return CarrierSchedule(
            frozenset(model.pickup_weekdays),
            model.pickup_cutoff_minutes,
            int(self.network.transit_days[service, zone]),
        )

    def dates(
        self, node: int, service: int, zone: int, available_ms: int
    ) -> tuple[int, int, int] | None:
        """(ship day, earliest, latest delivery day) of goods available at `node` at
        `available_ms`, shipped with `service` to `zone`; None past the calendar horizon."""
        if available_ms <= self.now_ms and node in self.calendars.nodes:
            ship_day, earliest, latest = self.dates_on_hand(service, zone)[node].tolist()
            if ship_day >= 0 and latest >= 0:
                return ship_day, earliest, latest
        key = (node, service, available_ms)
        if key in self.dates_memo:
            return self.dates_memo[key]
        calendar = self.calendars.nodes.get(node)
        answer: tuple[int, int, int] | None = None
        if calendar is not None:
            carrier = self.carrier(service, zone)
            try:
                ship_day = ship_day_after_ready(
                    calendar, carrier, ready_at_ms(calendar, max(available_ms, self.now_ms))
                )
                earliest, latest = delivery_epoch_days_after_ship(carrier, ship_day)
                answer = (ship_day, earliest, latest)
            except ValueError:
                answer = None  # no date within the calendar horizon: not a candidate
        self.dates_memo[key] = answer
        return answer


def promise_context(state: StateFields, channel: str, segment: str, now_ms: int) -> PromiseContext:
    """The caller's view for one promise. Raises NoNetwork, InvalidCommand (unknown caller)."""
    if not state.network.version:
        raise NoNetwork(
            "no fulfilment network is configured: load one with `atpd network set FILE` "
            "(SetNetwork) before asking for promises"
        )
    policy = caller_policy(state, channel, segment)
    network = compiled_network(state)
    node_count = len(state.nodes)
    enabled = state.enabled_mask[:node_count]
    visible = enabled.copy() if policy is None else policy.visible[:node_count] & enabled
    sourcing = Sourcing() if policy is None else policy.policy.sourcing
    ship_from = visible & network.in_network & network.ships
    penalty = np.zeros(node_count, np.float64)
    if sourcing.ship_from_kinds or sourcing.exclude or sourcing.penalties:
        kinds = set(sourcing.ship_from_kinds)
        for node in state.nodes:
            if (kinds and node.kind not in kinds) or node.node_id in sourcing.exclude:
                ship_from[node.index] = False
        for node_id, amount in sourcing.penalties:
            index = state.node_ids.get(node_id)
            if index >= 0:
                penalty[index] = amount
    if policy is not None:
        channel, segment = policy.channel, policy.segment  # the names the defaults resolve to
    return PromiseContext(
        state,
        now_ms,
        channel,
        segment,
        policy,
        sourcing,
        network,
        calendars_of(state, network),
        visible,
        ship_from,
        penalty,
    )


def check_lines(lines: Sequence[tuple[str, int]], max_lines: int, max_quantity: int) -> None:
    """Bad lines are refused naming the line and the field."""
    if not lines:
        raise InvalidCommand("lines: at least one line is needed")
    if len(lines) > max_lines:
        raise LimitExceeded(
            f"lines: {len(lines)} lines, at most {max_lines} (max_lines_per_reservation)"
        )
    seen: set[str] = set()
    for index, (sku, quantity) in enumerate(lines):
        if not sku:
            raise InvalidCommand(f"lines[{index}].sku: empty")
        if sku in seen:
            raise InvalidCommand(f"lines[{index}].sku: {sku!r} is on another line already")
        seen.add(sku)
        if not 1 <= quantity <= max_quantity:
            raise InvalidCommand(f"lines[{index}].quantity: {quantity} is not in 1..{max_quantity}")


def atp_matrix(
    context: PromiseContext, skus: Sequence[str]
) -> tuple[list[int], npt.NDArray[np.int64]]:
    """(SKU rows (-1: unknown), caller's ATP [line, node]) as GetAvailability computes it."""
    view = availability(
        context.state, skus, channel=context.channel, segment=context.segment, policy=context.policy
    )
    return view.sku_rows.tolist(), view.matrix[:, : view.node_count]


def available_ms(
    context: PromiseContext, row: int, atp_row: npt.NDArray[np.int64], quantity: int
) -> npt.NDArray[np.int64]:
    """[node]: the earliest instant the caller can have `quantity` of the SKU at each node
    (now, or when counted supply arrives), NOT_AVAILABLE where its ATP never reaches it."""
    now_ms = context.now_ms
    out = np.where(atp_row >= quantity, now_ms, NOT_AVAILABLE).astype(np.int64)
    state = context.state
    entries = state.supply.by_sku.get(row) if row >= 0 else None
    if not entries or context.policy is None:
        return out  # no counted supply: what the caller has is on hand now
    kinds = context.policy.policy.supply_kinds
    horizon = context.policy.policy.supply_horizon_ms
    for node in {entry.node_index for entry in entries}:
        if node >= out.shape[0] or out[node] == NOT_AVAILABLE:
            continue
        counted = time_phased.counted_supply(entries, node, kinds, state.eval_ms, horizon)
        if not counted:
            continue
        schedule = time_phased.schedule(
            int(atp_row[node]), [(max(eta, now_ms), units) for eta, units in counted], now_ms
        )
        earliest = schedule.earliest_ms_for(quantity)
        out[node] = NOT_AVAILABLE if earliest is None else earliest
    return out
