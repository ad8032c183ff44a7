"""Any exception inside a write leaves the durable state serving, never a half-applied one.

An in-process durable engine (real journal and data directory, fake clock) runs one command of
every write type; a fault is injected at the k-th mutating primitive the core calls (attribute
writes of the state, nodes, supply and the reservation table; writes into the stock arrays and
the reservation table's columns; id interning; the table's rows, id index, expiry and retention
heaps; supply book, load registry and bulk kernels; change capture), for k = 1, 2,
... until the command completes. After each fault the caller must get InternalFailure, the
engine must rebuild from durable records, and the digest must equal the one before the command,
with reserved == sum of open holds.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from sortedcontainers import SortedList

import atpd.core
from atpd.config import Config
from atpd.core import bulk_kernels
from atpd.core.bulk import LoadColumns
from atpd.core.commands import (
    AddSupply,
    AdjustStock,
    CancelSupply,
    Command,
    Confirm,
    Fulfil,
    Line,
    NodeKind,
    ReceiveSupply,
    Release,
    ReservationKind,
    Reserve,
    SetRules,
    SetStock,
    Tick,
    UpsertNode,
)
from atpd.core.geo import Geography
from atpd.core.id_index import IdIndex
from atpd.core.ids import IdMap
from atpd.core.load_command import BulkLoad, LoadMode
from atpd.core.load_registry import LoadRegistry
from atpd.core.nodes import Node
from atpd.core.reservation_table import LINE_COLUMNS, ROW_COLUMNS, ReservationTable
from atpd.core.row_heap import RowHeap
from atpd.core.state import AtpState
from atpd.core.stock import StockTable
from atpd.core.supply import Supply, SupplyBook, SupplyKind
from atpd.persistence.load_file import new_file_name, write_load_file
from atpd.service.engine import Engine, InternalFailure

from .server_support import DurableEngine, FakeClock, recovered_state

RECOVERY_TIMEOUT_S = 30.0
# No write command calls more primitives than this; a bound on the k loop.
MAX_FAULT_POINTS = 400
RULES = """
version = "atomicity"
[defaults]
channel = "web"
segment = "standard"
[channels.web]
max_per_line = 50
supply = { kinds = ["PURCHASE_ORDER"] }
[channels.store]
[segments.standard]
[segments.vip]
[[protections]]
name = "vip-reserve"
units = 2
nodes = { include = ["PAR"] }
for = ["*/vip"]
"""

# Every module of the core, for wrapping the functions that are fault points wherever bound.
CORE_MODULES = [
    importlib.import_module(f"atpd.core.{info.name}")
    for info in pkgutil.iter_modules(atpd.core.__path__)
]


class InjectedFault(Exception):
    """Raised by an instrumented primitive: stands for any bug inside a write."""


class Faults:
    """Counts primitive calls while armed and raises at call number `fail_at`."""

    def __init__(self) -> None:
        self.armed = False
        self.calls = 0
        self.fail_at = 0

    def hit(self) -> None:
        if not self.armed:
            return
        self.calls += 1
        if self.calls == self.fail_at:
            self.armed = False
            raise InjectedFault(f"injected at primitive call {self.calls}")


class FaultyArray(np.ndarray[Any, Any]):
    """A view of a stock array whose item writes go through the fault counter."""

    faults: Faults

    def __setitem__(self, key: Any, value: Any) -> None:
        FaultyArray.faults.hit()
        super().__setitem__(key, value)


class FaultyDict(dict[Any, Any]):
    faults: Faults

    def __setitem__(self, key: Any, value: Any) -> None:
        FaultyDict.faults.hit()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        FaultyDict.faults.hit()
        super().__delitem__(key)


class FaultyColumn(array):  # type: ignore[type-arg]  # any typecode
    """A copy of a reservation table column whose item writes go through the fault counter."""

    faults: Faults

    def __setitem__(self, key: Any, value: Any) -> None:
        FaultyColumn.faults.hit()
        super().__setitem__(key, value)


def wrap_columns(table: ReservationTable) -> None:
    for name in (*ROW_COLUMNS, *LINE_COLUMNS):
        column = getattr(table, name)
        if not isinstance(column, FaultyColumn):
            object.__setattr__(table, name, FaultyColumn(column.typecode, column))


def wrap_arrays(stock: StockTable) -> None:
    for name in ("cells", "source_seq", "present"):
        array = getattr(stock, name)
        if not isinstance(array, FaultyArray):
            object.__setattr__(stock, name, array.view(FaultyArray))


def instrument(state: AtpState) -> None:
    """Route this state's containers through the fault counter (a rebuilt state is new)."""
    wrap_arrays(state.stock)
    wrap_columns(state.reservations)
    if not isinstance(state.protection_consumed, FaultyDict):
        object.__setattr__(state, "protection_consumed", FaultyDict(state.protection_consumed))


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    faults = Faults()
    FaultyArray.faults = faults
    FaultyDict.faults = faults
    FaultyColumn.faults = faults

    def before(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            faults.hit()
            return function(*args, **kwargs)

        return wrapper

    def setattr_through(cls: type[Any]) -> None:
        # The class's own (unbound) __setattr__; mypy would read it off the metaclass instead.
        original = cast(Callable[[Any, str, Any], None], cls.__setattr__)

        def faulty_setattr(self: Any, name: str, value: Any) -> None:
            faults.hit()
            original(self, name, value)

        monkeypatch.setattr(cls, "__setattr__", faulty_setattr)

    cls: type[Any]
    for cls in (AtpState, ReservationTable, RowHeap, IdIndex, Node, Supply):
        setattr_through(cls)
    original_ensure = StockTable.ensure

    def ensure(self: StockTable, sku_count: int, node_count: int) -> None:
        faults.hit()
        original_ensure(self, sku_count, node_count)
        if faults.armed:
            wrap_arrays(self)

    monkeypatch.setattr(StockTable, "ensure", ensure)
    for cls, names in (
        (StockTable, ("mark_present",)),
        (IdMap, ("intern", "intern_many")),
        (ReservationTable, ("insert", "delete", "intern_caller", "intern_maker")),
        (RowHeap, ("push", "discard", "pop_until", "pop_first")),
        (IdIndex, ("add", "remove")),
        (SupplyBook, ("add", "remove")),
        (LoadRegistry, ("add",)),
        (Geography, ("place", "grow")),
        (SortedList, ("add", "remove", "__delitem__")),
    ):
        for name in names:
            monkeypatch.setattr(cls, name, before(getattr(cls, name)))
    # The core's own steps are module functions: wrap them in every module that binds them.
    for module in CORE_MODULES:
        for name in ("touch", "take_protected", "unhold", "rebuild_protection_consumption"):
            if name in vars(module):
                monkeypatch.setattr(module, name, before(getattr(module, name)))
    for name in ("apply_rows", "zero_absent"):
        monkeypatch.setattr(bulk_kernels, name, before(getattr(bulk_kernels, name)))
    # The story drives expiry itself (a Tick step); a timer-driven Tick would expire holds in
    # a freshly rebuilt state before it is compared with the pre-command one.
    monkeypatch.setattr(Engine, "_arm_expiry", lambda self: None)
    original_apply = AtpState.apply

    def apply(self: AtpState, command: Command, now_ms: int) -> Any:
        try:
            result = original_apply(self, command, now_ms)
            faults.hit()  # the last point: every mutation done, then a failure
        finally:
            faults.armed = False  # only the core's own steps count, not the engine's
        return result

    monkeypatch.setattr(AtpState, "apply", apply)
    yield faults


def bulk_command(data_dir: Path, load_id: str) -> BulkLoad:
    columns = LoadColumns(
        ["SKU-A", "SKU-NEW"],
        np.array([0, 1, 1], np.int32),
        ["PAR", "BER"],
        np.array([0, 0, 1], np.int32),
        np.array([33, 7, 8], np.int32),
        np.array([-1, 1, -1], np.int32),
    )
    command = BulkLoad.create(load_id, LoadMode.FULL, 5, ("PAR", "BER"), columns)
    return write_load_file(data_dir, command, new_file_name(load_id))


def story(data_dir: Path) -> list[tuple[int, Callable[[], Command]]]:
    """(clock advance ms, command) covering every write command type, each one applied."""
    cart = ReservationKind.CART
    return [
        (1, lambda: UpsertNode("PAR", NodeKind.STORE, ("EU", "FR", "Paris"))),
        (1, lambda: UpsertNode("BER", NodeKind.WAREHOUSE, ("EU", "DE", "Berlin"))),
        (1, lambda: SetStock("SKU-A", "PAR", 40, 1, safety_stock=1)),
        (1, lambda: SetStock("SKU-B", "BER", 20, 1)),
        (1, lambda: AdjustStock("SKU-A", "PAR", 5, "recount")),
        (1, lambda: SetRules(RULES, "atomicity.toml")),
        (1, lambda: AddSupply("po-1", "SKU-B", "BER", 10, 10**13, SupplyKind.PURCHASE_ORDER)),
        (1, lambda: AddSupply("po-2", "SKU-A", "PAR", 4, 10**13, SupplyKind.PURCHASE_ORDER)),
        (
            1,
            lambda: Reserve(
                "cart-1", (Line("SKU-A", "PAR", 3), Line("SKU-B", "BER", 25)), 60_000, cart
            ),
        ),
        (
            1,
            lambda: Reserve("vip-1", (Line("SKU-A", "PAR", 3),), 60_000, cart, "web", "vip"),
        ),
        (1, lambda: Reserve("cart-2", (Line("SKU-A", "PAR", 2),), 5_000, cart, "store")),
        (1, lambda: Reserve("pos-1", (Line("SKU-A", "PAR", 1),), 0, ReservationKind.POS_SALE)),
        (1, lambda: Confirm("cart-1")),
        (1, lambda: Fulfil("cart-1", (Line("SKU-A", "PAR", 2),))),
        (1, lambda: Release("vip-1")),
        (1, lambda: ReceiveSupply("po-1", 4)),
        (1, lambda: CancelSupply("po-2")),
        (10_000, lambda: Tick()),  # cart-2 expires
        (1, lambda: Fulfil("cart-1", (), release_remainder=True)),
        (1, lambda: bulk_command(data_dir, "load-1")),
        (1, lambda: UpsertNode("BER", NodeKind.WAREHOUSE, ("EU", "DE", "Berlin"), enabled=False)),
    ]


async def wait_rebuilt(durable: DurableEngine, failed_state: AtpState) -> None:
    """Bounded wait: the engine swapped in a rebuilt state and accepts writes again."""
    engine = durable.engine
    for _ in range(int(RECOVERY_TIMEOUT_S / 0.01)):
        rebuilt = engine.state is not failed_state and engine.clean.is_set()
        if rebuilt and engine.write_failure is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not rebuilt within {RECOVERY_TIMEOUT_S} s: {engine.write_failure}")


def test_a_fault_at_any_step_of_any_write_leaves_the_durable_state(
    tmp_path: Path, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault at every primitive step of every write command type answers InternalFailure
    and leaves exactly the pre-command state (digest, reserved == sum of open holds)."""
    config = Config(data_dir=tmp_path, fsync="always")
    covered: dict[str, int] = {}

    async def run() -> str:
        durable = DurableEngine(config, FakeClock())
        durable.state.watched = (("web", "standard"),)  # exercise change capture too
        try:
            for advance_ms, make in story(tmp_path):
                durable.clock.advance(advance_ms)
                for fail_at in range(1, MAX_FAULT_POINTS + 1):
                    state = durable.state
                    instrument(state)
                    before = state.digest()
                    command = make()
                    faults.calls, faults.fail_at, faults.armed = 0, fail_at, True
                    try:
                        result = await durable.engine.execute(command)
                    except InternalFailure as error:
                        assert "InjectedFault" in str(error), error
                        await wait_rebuilt(durable, state)
                        durable.state.check_invariants()
                        assert durable.state.digest() == before, (command, fail_at)
                        continue
                    finally:
                        faults.armed = False
                    assert faults.calls < fail_at  # ran to the end: every point was covered
                    assert getattr(result, "changed", True), (command, result)
                    covered[type(command).__name__] = fail_at - 1
                    break
                else:
                    raise AssertionError(f"{command} never completed")
                durable.state.check_invariants()
            digest = durable.state.digest()
        finally:
            await durable.close(final_snapshot=False)
        return digest

    with caplog.at_level(logging.CRITICAL, logger="atpd"):
        live_digest = asyncio.run(run())
    assert set(covered) == {
        "UpsertNode",
        "SetStock",
        "AdjustStock",
        "SetRules",
        "AddSupply",
        "Reserve",
        "Confirm",
        "Fulfil",
        "Release",
        "ReceiveSupply",
        "CancelSupply",
        "Tick",
        "BulkLoad",
    }
    assert all(points >= 3 for points in covered.values()), covered
    # What was acknowledged is exactly what a restart recovers.
    assert recovered_state(config).digest() == live_digest
