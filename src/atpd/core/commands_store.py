"""Store operation commands (till sales, offline queues, returns, exchanges, inspection) and
their results. Handlers: core/handlers_store.py.

Till times (`sold_at_ms`, `returned_at_ms`, `at_ms`) are as the till sent them, 0 meaning
"when applied": the core has no clock, so a command applied at `now_ms` records `now_ms` for 0
and replays to the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from atpd.core.command_base import CommandOf
from atpd.core.results import Outcome, Shortage
from atpd.core.store_book import Discrepancy

if TYPE_CHECKING:  # annotations only: commands.py imports this module for its Command union
    from atpd.core.commands import AddSupply, UpsertNode


@dataclass(frozen=True, slots=True)
class SaleLine:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReturnLine:
    sku: str
    quantity: int
    inspect: bool = False


@dataclass(slots=True)
class SaleResult:
    outcome: Outcome
    shortages: tuple[Shortage, ...] = ()
    discrepancies: tuple[Discrepancy, ...] = ()
    replayed: bool = False
    # When it was recorded (the apply time; a replay: the first time); 0 when refused.
    recorded_at_ms: int = 0

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.OK and not self.replayed


@dataclass(frozen=True, slots=True)
class OfflineSaleOutcome:
    receipt_id: str
    duplicate: bool
    discrepancies: tuple[Discrepancy, ...] = ()


@dataclass(frozen=True, slots=True)
class OfflineSalesResult:
    results: tuple[OfflineSaleOutcome, ...]
    recorded_at_ms: int = 0  # the apply time of the call

    @property
    def changed(self) -> bool:
        return any(not result.duplicate for result in self.results)


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: Outcome
    replayed: bool = False
    recorded_at_ms: int = 0

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.OK and not self.replayed


@dataclass(frozen=True, slots=True)
class RecordSale(CommandOf[SaleResult]):
    receipt_id: str
    node_id: str
    lines: tuple[SaleLine, ...]
    force: bool = False
    sold_at_ms: int = 0
    channel: str = ""
    segment: str = ""
    terminal_id: str = ""


@dataclass(frozen=True, slots=True)
class RecordOfflineSales(CommandOf[OfflineSalesResult]):
    """A terminal's queued sales, oldest first; each applied as a forced RecordSale."""

    sales: tuple[RecordSale, ...]


@dataclass(frozen=True, slots=True)
class RecordReturn(CommandOf[StoreResult]):
    return_id: str
    node_id: str
    lines: tuple[ReturnLine, ...]
    returned_at_ms: int = 0
    receipt_id: str = ""
    terminal_id: str = ""


@dataclass(frozen=True, slots=True)
class Exchange(CommandOf[SaleResult]):
    exchange_id: str
    node_id: str
    returned: tuple[ReturnLine, ...]
    sold: tuple[SaleLine, ...]
    force: bool = False
    at_ms: int = 0
    channel: str = ""
    segment: str = ""
    terminal_id: str = ""


@dataclass(frozen=True, slots=True)
class ReleaseInspection(CommandOf[StoreResult]):
    release_id: str
    sku: str
    node_id: str
    quantity: int
    restock: bool  # False: written off


@dataclass(frozen=True, slots=True)
class CatalogueLoadResult:
    outcome: Outcome
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    replayed: bool = False

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.OK and not self.replayed


@dataclass(frozen=True, slots=True)
class NodeLoad(CommandOf[CatalogueLoadResult]):
    """A file of nodes, applied whole (each row as an UpsertNode) or not at all."""

    load_id: str
    nodes: tuple[UpsertNode, ...]


@dataclass(frozen=True, slots=True)
class SupplyLoad(CommandOf[CatalogueLoadResult]):
    """A file of incoming supply, applied whole (each row as an AddSupply) or not at all."""

    load_id: str
    rows: tuple[AddSupply, ...]


StoreCommand = (
    RecordSale
    | RecordOfflineSales
    | RecordReturn
    | Exchange
    | ReleaseInspection
    | NodeLoad
    | SupplyLoad
)
