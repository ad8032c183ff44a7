"""The handlers of SetNetwork and SetCarrierCapacity, and the network reads built on them
(the compiled network, a date's slots left, a capacity calendar)."""

from __future__ import annotations

from dataclasses import dataclass

from atpd.core.commands import SetCarrierCapacity, SetNetwork
from atpd.core.network import UNLIMITED_SLOTS, CarrierService, NetworkError, parse_date
from atpd.core.network_compile import EPOCH, CompiledNetwork, compile_network, epoch_day
from atpd.core.network_parse import NetworkKnown, parse_network
from atpd.core.results import (
    CarrierCapacityResult,
    InvalidCommand,
    LimitExceeded,
    NetworkResult,
    NotFound,
    Outcome,
)
from atpd.core.state_fields import StateFields, node_index

DAY_MS = 86_400_000
# Capacity of dates before (UTC today - this) is dropped: every time zone's today is at most
# one day behind UTC's, so no origin's current pickup date is ever dropped.
PAST_DAYS_KEPT = 1
# A GetCarrierCapacity range covers at most this many days.
MAX_CAPACITY_RANGE_DAYS = 366


def set_network(state: StateFields, command: SetNetwork, now_ms: int) -> NetworkResult:
    known = NetworkKnown(frozenset(state.node_ids.names), frozenset(state.geo.geo_ids.names))
    try:
        network = parse_network(command.text, command.source, known, command.document)
    except NetworkError as error:
        raise InvalidCommand(f"network: {error}") from None
    previous = state.network
    state.network = network
    state.network_cache = None
    return NetworkResult(Outcome.OK, network.version, previous.version)


def compiled_network(state: StateFields) -> CompiledNetwork:
    """The network compiled against the current nodes (cached until either changes)."""
    cache = state.network_cache
    if cache is None or cache.network is not state.network or cache.node_count != len(state.nodes):
        cache = state.network_cache = compile_network(state.network, state.nodes)
    return cache


def find_service(state: StateFields, service_id: str) -> CarrierService:
    service = state.network.service(service_id)
    if service is None:
        known = ", ".join(s.service_id for s in state.network.services) or "none"
        raise NotFound(f"service: unknown carrier service {service_id!r} (known: {known})")
    return service


def capacity_day(date: str, field: str) -> int:
    try:
        return epoch_day(parse_date(date))
    except ValueError as error:
        raise InvalidCommand(f"{field}: {error}") from None


def set_carrier_capacity(
    state: StateFields, command: SetCarrierCapacity, now_ms: int
) -> CarrierCapacityResult:
    service = find_service(state, command.service)
    node = state.nodes[node_index(state, command.node_id, "node_id")]
    if not service.origin.matches(node):
        raise InvalidCommand(
            f"node_id: node {command.node_id!r} is not an origin of service {command.service!r}"
        )
    if not 0 <= command.slots <= UNLIMITED_SLOTS:
        raise InvalidCommand(f"slots: {command.slots} is not in 0..{UNLIMITED_SLOTS}")
    day = capacity_day(command.date, "date")
    today = now_ms // DAY_MS
    first_kept = today - PAST_DAYS_KEPT
    if day < first_kept:
        raise InvalidCommand(f"date: {command.date} is in the past")
    limits = state.limits
    if day > today + limits.max_capacity_days_ahead:
        raise InvalidCommand(
            f"date: {command.date} is more than max_capacity_days_ahead "
            f"({limits.max_capacity_days_ahead}) days ahead"
        )
    capacity = state.carrier_capacity
    is_new = capacity.get(command.service, command.node_id, day) is None
    stale = capacity.count_before(first_kept)
    if is_new and len(capacity) - stale >= limits.max_capacity_entries:
        raise LimitExceeded(
            f"max_capacity_entries: already {len(capacity) - stale} carrier capacity entries"
        )
    # Checks done: from here on the command changes the state.
    purged = capacity.purge_before(first_kept)
    previous = capacity.set(command.service, command.node_id, day, command.slots)
    entry = capacity.get(command.service, command.node_id, day)
    assert entry is not None
    return CarrierCapacityResult(
        Outcome.OK,
        command.service,
        command.node_id,
        command.date,
        entry.slots,
        entry.held,
        previous,
        changed=bool(purged) or previous != command.slots,
    )


def slots_left(state: StateFields, service_id: str, node_id: str, day: int) -> int:
    """Carrier slots still free for a service at an origin on a day (days since 1970-01-01):
    the TMS's slots less those held, else the service's default, else UNLIMITED_SLOTS."""
    entry = state.carrier_capacity.get(service_id, node_id, day)
    if entry is not None and entry.explicit:
        return entry.left
    service = find_service(state, service_id)
    default = (
        UNLIMITED_SLOTS if service.default_daily_slots is None else service.default_daily_slots
    )
    if entry is None:
        return default
    # Only holds made this entry: the service's default of now applies, less what is taken.
    return max(default - entry.held - entry.used, 0)


@dataclass(frozen=True, slots=True)
class CapacityDay:
    date: str
    slots: int  # UNLIMITED_SLOTS: no limit
    held: int
    left: int
    explicit: bool  # set by SetCarrierCapacity (else the service's default)


def capacity_calendar(
    state: StateFields, service_id: str, node_id: str, first_date: str, last_date: str
) -> list[CapacityDay]:
    """One row per date from `first_date` to `last_date` (inclusive) for a service's origin."""
    service = find_service(state, service_id)
    node_index(state, node_id, "node_id")
    first = capacity_day(first_date, "from_date")
    last = capacity_day(last_date, "to_date")
    if last < first:
        raise InvalidCommand(f"to_date: {last_date} is before from_date {first_date}")
    if last - first + 1 > MAX_CAPACITY_RANGE_DAYS:
        raise InvalidCommand(
            f"to_date: {last - first + 1} days from from_date, more than the "
            f"{MAX_CAPACITY_RANGE_DAYS} allowed"
        )
    default = (
        UNLIMITED_SLOTS if service.default_daily_slots is None else service.default_daily_slots
    )
    rows = []
    for day in range(first, last + 1):
        date = (EPOCH.fromordinal(EPOCH.toordinal() + day)).isoformat()
        entry = state.carrier_capacity.get(service_id, node_id, day)
        if entry is None:
            rows.append(CapacityDay(date, default, 0, default, False))
        elif not entry.explicit:
            taken = entry.held + entry.used
            rows.append(CapacityDay(date, default, taken, max(default - taken, 0), False))
        else:
            rows.append(CapacityDay(date, entry.slots, entry.held, entry.left, True))
    return rows
