"""The engine: the one writer. Applies commands to the core, journals them, and replies only
once the journal says they are durable.

Everything here runs on the asyncio loop grpc.aio serves on, so commands are applied one at a
time in arrival order with no locks: a check-then-act race cannot exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from atpd.core.command_base import CommandOf, Result
from atpd.core.commands import Command, CommandGroup, GroupedCommand, SetRules, Tick, UpsertNode
from atpd.core.commands_store import NodeLoad
from atpd.core.load_command import BulkLoad
from atpd.core.results import CommandRejected, TickResult
from atpd.core.state import AtpState
from atpd.metrics import Metrics
from atpd.persistence.codec import encode_command, encode_group
from atpd.service.lease_fence import LeadershipLostUnacknowledged, LeaseFence, LeaseLost
from atpd.service.option_tokens import OptionTokens
from atpd.service.table_growth import TableGrowth

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=Result)


# A CommandGroup record is journaled once its members' records reach this size (a batch of
# 8,192 many-line reservations would otherwise pass the journal's record size bound).
GROUP_MAX_BYTES = 256 << 10


class PendingGroup:
    """Records of grouped commands applied at `now_ms` and not journaled yet (one batch's run
    of reservation commands: Engine.apply_grouped, flush_group)."""

    __slots__ = ("now_ms", "outcomes", "payloads", "size")

    def __init__(self) -> None:
        self.now_ms = 0
        self.payloads: list[bytes] = []
        self.size = 0
        # (command kind, outcome) -> commands, counted into the metrics at the flush.
        self.outcomes: dict[Any, int] = {}


class WritesUnavailable(Exception):
    """The journal cannot take writes (disk full, I/O error): the command was not applied.
    Reads go on being served from the last durable state."""


class NotLeader(Exception):
    """This server follows another (README "Running a cluster"): writes go to the leader,
    whose address the caller gets in the message and in trailing metadata `atpd-leader`."""

    def __init__(self, leader_address: str) -> None:
        self.leader_address = leader_address
        where = leader_address or "an address not known yet (retry shortly)"
        super().__init__(
            f"this server is a read-only follower: send writes to the leader at {where}"
        )


class ReplicationUnconfirmed(Exception):
    """Sync replication with `sync_fallback = "refuse"`: the command was applied and is durable
    on this server, but no follower confirmed it in time. The caller cannot know whether it
    survives a failover: retry with the same ids (every write is idempotent by its id)."""


class InternalFailure(Exception):
    """A command failed inside the core for a reason that is not the caller's (a bug). Its
    partial effects are discarded: the state is rebuilt from durable records, as after a
    journal failure. The caller gets INTERNAL with this message."""


class CommandLog(Protocol):
    """Where applied commands go (the journal). `append` never blocks; `wait_durable` resolves
    once every record up to `sequence` is durable under the configured fsync policy. Both
    raise WritesUnavailable when the journal cannot take records; `check_writable` raises it
    before a command is applied, so a refused command never touches the state."""

    @property
    def last_sequence(self) -> int: ...

    def check_writable(self) -> None: ...

    def append(self, command: Command, now_ms: int) -> int: ...

    def append_payload(self, payload: bytes, now_ms: int) -> int: ...

    async def wait_durable(self, sequence: int) -> None: ...


class NoJournal:
    """Keeps nothing: for tests of the core behaviour over gRPC and for benchmarks."""

    def __init__(self) -> None:
        self._sequence = 0

    @property
    def last_sequence(self) -> int:
        return self._sequence

    def check_writable(self) -> None:
        return None

    def append(self, command: Command, now_ms: int) -> int:
        self._sequence += 1
        return self._sequence

    def append_payload(self, payload: bytes, now_ms: int) -> int:
        self._sequence += 1
        return self._sequence

    async def wait_durable(self, sequence: int) -> None:
        return None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(
        self,
        state: AtpState,
        journal: CommandLog | None = None,
        metrics: Metrics | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.state = state
        self.journal: CommandLog = journal or NoJournal()
        self.metrics = metrics or Metrics()
        self._clock_ms = clock_ms
        self._expiry_handle: asyncio.TimerHandle | None = None
        self._expiry_at_ms: int | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._core_timers: dict[str, Any] = {}
        self._outcome_counters: dict[tuple[str, Any], Any] = {}
        self.ready = False
        # Set when the journal failed: why writes are refused until it is writable again.
        self.write_failure: str | None = None
        # Cleared from a write failure until the state is rebuilt from durable records: reads
        # wait on it, so an answer never shows an effect whose command was refused.
        self.clean = asyncio.Event()
        self.clean.set()
        # Called with the failure reason, once per failure: restores the durable state and
        # waits for the journal to come back (see Durability.on_write_failure).
        self.on_write_failure: Callable[[str], None] | None = None
        # Called after each journaled record with the commands it holds (snapshot scheduling:
        # a batch's group record counts each of its commands).
        self.on_record: Callable[[int], None] | None = None
        # The change stream: position changes of each command, and "ATP changed everywhere".
        self.on_changes: (
            Callable[[list[tuple[int, int, list[int], list[int]]], int], None] | None
        ) = None
        self.on_resync: Callable[[str], None] | None = None
        # Grows the stock table in the background ahead of need (service/table_growth.py).
        self.growth = TableGrowth(self)
        # Signs and verifies promise option tokens (set by create_server).
        self.option_tokens: OptionTokens | None = None
        # In a cluster (service/leadership.py): writes only while the etcd lease surely holds.
        self.lease_fence: LeaseFence | None = None
        # None on the primary; the leader's address on a follower (service/replication_role.py
        # switches it): then every write is refused here, in `check_leader`, and the state only
        # changes by records from the leader (`apply_replicated`).
        self.leader_address: str | None = None

    def check_leader(self) -> None:
        """The one place writes are checked against the replication role, and in a cluster
        against the leadership lease (service/lease_fence.py)."""
        if self.leader_address is not None:
            raise NotLeader(self.leader_address)
        fence = self.lease_fence
        if fence is not None:
            fence.check()

    def check_still_leader(self) -> None:
        """In a cluster, after a write was applied and made durable: still the leader, or the
        write is not acknowledged (LeadershipLostUnacknowledged, UNAVAILABLE)."""
        try:
            self.check_leader()
        except (NotLeader, LeaseLost) as error:
            raise LeadershipLostUnacknowledged(error) from error

    def apply_replicated(self, command: Command, timestamp_ms: int) -> None:
        """A follower applies one record of its leader at the leader's time (the caller journals
        it): watchers see its changes as on the leader. Raises what `state.apply` raises."""
        assert self.leader_address is not None, "only a follower applies replicated records"
        state = self.state
        try:
            state.apply(command, timestamp_ms)
        except BaseException:
            state.changes = {}
            raise
        if state.changes:
            self._publish(state, timestamp_ms)
        if self.on_resync is not None and isinstance(command, SetRules | UpsertNode | BulkLoad):
            self.on_resync(f"{type(command).__name__} changed what every caller may see")
        if self.on_record is not None:
            self.on_record(len(command.commands) if isinstance(command, CommandGroup) else 1)

    def report_write_failure(self, reason: str) -> None:
        """The journal refused a record applied meanwhile (a follower's append): the state goes
        back to what is durable, as after a failed write."""
        self._writes_failed(reason)

    def now_ms(self) -> int:
        """Wall-clock time, never earlier than the last time the core saw (clock steps back)."""
        now = self._clock_ms()
        last = self.state.now_ms
        return now if now > last else last

    async def execute(self, command: CommandOf[ResultT]) -> ResultT:
        """Apply `command` now, journal it if it changed anything, and return its result once
        everything it may depend on is durable. Raises CommandRejected for caller mistakes and
        WritesUnavailable when the journal cannot take it (then nothing of it remains)."""
        if self.leader_address is not None or self.lease_fence is not None:
            self.check_leader()  # a follower, or in a cluster (checked inline: the hot path)
        if self._needs_room(command):
            await self._room_for(command)
        if self.write_failure is not None:
            if isinstance(command, Tick) and self.clean.is_set():
                return cast(ResultT, self._expire_unjournaled())  # the command is a Tick
            raise WritesUnavailable(self.write_failure)
        journal = self.journal
        journal.check_writable()
        result = self._apply_journaled(command)
        # Even an answer that changed nothing (a replayed reservation, a refusal) may rest on
        # records not yet durable: reply only once all of them are.
        try:
            await journal.wait_durable(journal.last_sequence)
        except WritesUnavailable as error:
            self._writes_failed(str(error))
            raise
        if self.lease_fence is not None:
            # The lease may have lapsed while this waited (a stopped process): a successor may
            # not have this write, so it is not acknowledged (the caller retries on the leader).
            self.check_still_leader()
        return result

    async def execute_unwaited(self, command: CommandOf[ResultT]) -> ResultT:
        """`execute` without the final wait for durability, for batches (service/batch*.py):
        the caller applies each command of a batch this way, then awaits `wait_all_durable`
        once, and answers none of them before that. The same checks, journal records, change
        events and metrics as `execute` (both apply through `_apply_journaled`)."""
        self.check_leader()
        if self._needs_room(command):
            await self._room_for(command)
        if self.write_failure is not None:
            raise WritesUnavailable(self.write_failure)
        self.journal.check_writable()
        return self._apply_journaled(command)

    def _apply_journaled(self, command: CommandOf[ResultT]) -> ResultT:
        """Apply `command` now and journal it (or a Tick) when it changed anything: the part of
        `execute` and `execute_unwaited` between their checks and the wait for durability."""
        state = self.state
        now = self.now_ms()
        try:
            result = self._apply_counted(command, now)
        except CommandRejected:
            if state.time_moved:
                # The rejected command still moved the clock past expiries or purges: log that.
                self._append(Tick(), now)
            raise
        if result.changed:
            # Every CommandOf subclass is one of the members of the Command union.
            self._append(cast(Command, command), now)
            # A bulk load moves up to millions of positions at once: one resync, not events.
            if self.on_resync is not None and isinstance(
                command, SetRules | UpsertNode | BulkLoad | NodeLoad
            ):
                self.on_resync(f"{type(command).__name__} changed what every caller may see")
        elif state.time_moved:
            self._append(Tick(), now)
        return result

    def _apply_counted(
        self, command: CommandOf[ResultT], now: int, outcomes: dict[Any, int] | None = None
    ) -> ResultT:
        """`state.apply` with its metrics and change events. An unexpected error inside the
        core becomes InternalFailure (the state is then rebuilt from durable records). The
        outcome is counted in `outcomes` when given (a batch adds them up once)."""
        state = self.state
        kind = type(command).__name__
        timer = self._core_timers.get(kind)
        if timer is None:
            timer = self._core_timers[kind] = self.metrics.core_latency.labels(kind)
        started = time.perf_counter()
        try:
            result = state.apply(command, now)
        except CommandRejected:
            raise
        except Exception as error:
            state.changes = {}  # half-made changes of a state about to be replaced
            raise self._apply_failed(kind, error) from error
        finally:
            timer.observe(time.perf_counter() - started)
            if state.changes:
                self._publish(state, now)
        outcome = getattr(result, "outcome", None)
        if outcome is not None:
            if outcomes is not None:
                key = (kind, outcome)
                outcomes[key] = outcomes.get(key, 0) + 1
            else:
                self._outcome_counter(kind, outcome).inc()
        return result

    def _outcome_counter(self, kind: str, outcome: Any) -> Any:
        counter = self._outcome_counters.get((kind, outcome))
        if counter is None:
            counter = self.metrics.outcomes.labels(kind, outcome.name)
            self._outcome_counters[(kind, outcome)] = counter
        return counter

    # ------------------------------------------------------------------ grouped commands

    def apply_grouped(
        self, command: GroupedCommand, group: PendingGroup, payload: bytes | None = None
    ) -> Any:
        """`execute_unwaited` for a reservation command of a batch (service/batch_commands.py):
        applied at the group's time, its record kept in `group` and journaled with the others
        as one CommandGroup record by `flush_group` (at the latest when the group reaches
        GROUP_MAX_BYTES). The caller must flush before anything that may suspend (an await):
        the group's records are journaled in the order and at the time they were applied.
        `payload`: the command's record if the caller has it already (`encode_command`'s)."""
        self.check_leader()
        if self.write_failure is not None:
            raise WritesUnavailable(self.write_failure)
        if not group.payloads:
            # A group is far smaller than the backlog's headroom (LARGEST_RECORD_BYTES).
            self.journal.check_writable()
            group.now_ms = self.now_ms()
        state = self.state
        now = group.now_ms
        try:
            result = self._apply_counted(command, now, group.outcomes)
        except CommandRejected:
            if state.time_moved:
                self.flush_group(group)
                self._append(Tick(), now)
            raise
        except InternalFailure:
            # What the group applied before belongs in the state rebuilt from the journal.
            self.flush_group(group)
            raise
        if result.changed:
            if payload is None:
                payload = encode_command(command)
            group.payloads.append(payload)
            group.size += len(payload)
            if group.size >= GROUP_MAX_BYTES:
                self.flush_group(group)
        elif state.time_moved:
            self.flush_group(group)
            self._append(Tick(), now)
        return result

    def flush_group(self, group: PendingGroup) -> None:
        """Journal the records `group` holds as one record (nothing if it holds none), and
        count the outcomes of its commands."""
        outcomes = group.outcomes
        if outcomes:
            group.outcomes = {}
            for (kind, outcome), count in outcomes.items():
                self._outcome_counter(kind, outcome).inc(count)
        payloads = group.payloads
        if not payloads:
            return
        group.payloads = []
        group.size = 0
        self._record(
            self.journal.append_payload, encode_group(payloads), group.now_ms, len(payloads)
        )

    async def wait_all_durable(self) -> None:
        """Resolve once every record journaled so far is durable (the end of a batch); raises
        WritesUnavailable (and starts the rebuild) when the journal failed meanwhile."""
        journal = self.journal
        try:
            await journal.wait_durable(journal.last_sequence)
        except WritesUnavailable as error:
            self._writes_failed(str(error))
            raise
        if self.lease_fence is not None:
            self.check_still_leader()  # as in `execute`: nothing acknowledged past the lease

    def catch_up(self) -> int:
        """Before a read: apply expiries already due, so no read ever shows a hold past its
        expiry time even if the timer has not fired yet. Returns the time of the read."""
        now = self.now_ms()
        self.state.observe(now)
        if self.leader_address is not None:
            return now  # a follower's holds expire by the leader's records only
        if self.lease_fence is not None and not self.lease_fence.open:
            return now  # no longer surely the leader: expiries are the leader's records
        next_ms = self.state.next_expiry_ms()
        if next_ms is None or next_ms > now or not self.ready or not self.clean.is_set():
            return now
        try:
            if self.write_failure is not None:
                raise WritesUnavailable(self.write_failure)
            self.journal.check_writable()
        except WritesUnavailable:
            self._expire_unjournaled()
            return now
        try:
            self.state.apply(Tick(), now)
        except Exception as error:
            self.state.changes = {}
            raise self._apply_failed("Tick", error) from error
        if self.state.changes:
            self._publish(self.state, now)
        # Not awaited: a reader does not wait for the disk, and an expiry is implied by time
        # anyway (replay at a later time expires the same holds).
        with contextlib.suppress(WritesUnavailable):
            self._append(Tick(), now)
        return now

    async def journal_tick(self) -> None:
        """Journal a Tick now, even if nothing expires: a new cluster leader's first record, so
        its epoch is on its journal (and its followers') from its first own sequence on."""
        self.check_leader()
        now = self.now_ms()
        try:
            self.state.apply(Tick(), now)
        except Exception as error:
            self.state.changes = {}
            raise self._apply_failed("Tick", error) from error
        if self.state.changes:
            self._publish(self.state, now)
        self._append(Tick(), now)
        await self.journal.wait_durable(self.journal.last_sequence)

    def _expire_unjournaled(self) -> TickResult:
        """While the journal is down, holds still expire on time in memory. Not journaling
        them is safe: an expiry is a function of time, so replaying the durable records at any
        later time expires the same holds."""
        now = self.now_ms()
        try:
            result = self.state.apply(Tick(), now)
        except Exception as error:
            self.state.changes = {}
            raise self._apply_failed("Tick", error) from error
        if self.state.changes:
            self._publish(self.state, now)
        return result

    def _publish(self, state: AtpState, now_ms: int) -> None:
        changes = state.take_changes()
        if self.on_changes is not None:
            self.on_changes(changes, now_ms)

    def _append(self, command: Command, now_ms: int) -> None:
        self._record(self.journal.append, command, now_ms)

    def _record(
        self, append: Callable[[Any, int], int], item: Any, now_ms: int, commands: int = 1
    ) -> None:
        """Journal `item` (a command, or an encoded payload of `commands` commands) through
        `append`; then the expiry timer and the record hook."""
        try:
            append(item, now_ms)
        except WritesUnavailable as error:
            # Applied but not journaled: the state must go back to what is durable.
            self._writes_failed(str(error))
            raise
        self._arm_expiry()
        if self.on_record is not None:
            self.on_record(commands)

    def _writes_failed(self, reason: str) -> None:
        if self.write_failure is not None:
            return
        log.error("journal failed, refusing writes until it recovers: %s", reason)
        self.write_failure = reason
        self.clean.clear()
        if self.on_write_failure is not None:
            self.on_write_failure(reason)

    def _apply_failed(self, kind: str, error: Exception) -> InternalFailure:
        """An unexpected exception inside `state.apply`: the state may hold part of the
        command, so it must not serve. Writes are refused and reads wait while the state is
        rebuilt from durable records (which never contain the failed command); returns the
        error for the caller."""
        reason = f"internal error while applying {kind}: {type(error).__name__}: {error}"
        log.error("%s; rebuilding the state from durable records", reason, exc_info=error)
        if self.write_failure is None:
            self.write_failure = reason
            self.clean.clear()
            self._spawn(self._rebuild_after_failure(reason))
        return InternalFailure(f"{reason} (not applied; the server restores its durable state)")

    async def _rebuild_after_failure(self, reason: str) -> None:
        """Wait until what was journaled before the failure is durable (it belongs in the
        rebuilt state), then rebuild as after a journal failure."""
        with contextlib.suppress(WritesUnavailable, ReplicationUnconfirmed):
            await self.journal.wait_durable(self.journal.last_sequence)
        if self.on_write_failure is not None:
            self.on_write_failure(reason)
            return
        # No durable state to go back to (an in-memory server): reads go on, writes stay
        # refused with the reason until a restart.
        log.error("no journal to rebuild from: writes refused until restart (%s)", reason)
        self.clean.set()

    def replace_state(self, state: AtpState) -> None:
        """Swap in a rebuilt state (after a journal failure): same loop, no await."""
        self.stop()
        self.state.stock.cancel_resize()  # its copy stops; the rebuilt state grows anew
        state.set_watched(self.state.watched)
        self.state = state
        self.clean.set()
        self._arm_expiry()
        if self.on_resync is not None:
            self.on_resync("the state was rebuilt from the journal after a write failure")

    # ------------------------------------------------------------------ stock table growth

    def _needs_room(self, command: CommandOf[Any]) -> bool:
        return self.growth.needs_room(command)

    async def _room_for(self, command: CommandOf[Any]) -> None:
        await self.growth.room_for(command)

    # ------------------------------------------------------------------ expiry timer

    def start(self) -> None:
        """Called on the serving loop once the state is loaded: expire what is due now and arm
        the timer for the next hold (a follower has no timer: its leader expires holds)."""
        if self.leader_address is None:
            self._spawn(self.execute(Tick()))

    def stop(self) -> None:
        if not self.ready:
            self.growth.cancel()  # shutting down: the copy thread stops within a slice
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None
        self._expiry_at_ms = None

    def _arm_expiry(self) -> None:
        if self.leader_address is not None:
            return
        next_ms = self.state.next_expiry_ms()
        if next_ms is None or next_ms == self._expiry_at_ms:
            return
        if self._expiry_at_ms is not None and self._expiry_at_ms < next_ms:
            return  # the armed timer fires first and re-arms
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (next_ms - self._clock_ms()) / 1000.0)
        self._expiry_at_ms = next_ms
        self._expiry_handle = loop.call_later(delay_s, self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_handle = None
        self._expiry_at_ms = None
        next_ms = self.state.next_expiry_ms()
        if next_ms is None:
            return
        if next_ms > self.now_ms():
            self._arm_expiry()  # woke early (timer granularity): sleep again
            return
        self._spawn(self.execute(Tick()))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._on_background_done)

    def _on_background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background command failed", exc_info=task.exception())
        self._arm_expiry()
