"""Which roles may call which method: the default table, the audited methods, the methods
that act on the whole network, and `method_roles` overrides from the config. The gate that
applies them is `auth.py`; the till methods' roles are in `store_access.py`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from atpd.service.principals import AuthConfigError
from atpd.service.store_access import store_method_roles
from atpd.service.tokens import ROLES
from atpd.service.transfer_access import RESTOCK_METHODS, TRANSFER_AUDITED, allow_transfer_methods

_READS = (
    "AvailabilityService/GetAvailability",
    "InventoryService/GetStock",
    "InventoryService/ListNodes",
    "ReservationService/GetReservation",
    "WatchService/Watch",
    "WatchService/WatchBatch",
    "RulesService/GetRules",
    "NetworkService/GetNetwork",
    "NetworkService/GetCarrierCapacity",
    "PromiseService/Promise",
    "PromiseService/PromiseBatch",
    "PromiseService/AssociateView",
)
_RESERVATION_WRITES = (
    "ReservationService/Reserve",
    "ReservationService/Confirm",
    "ReservationService/Release",
    "ReservationService/Fulfil",
    "ReservationService/AmendReservation",
)
_LOADER_WRITES = (
    "InventoryService/SetStock",
    "InventoryService/AdjustStock",
    "FeedService/BulkLoad",
    "SupplyService/AddSupply",
    "SupplyService/ReceiveSupply",
    "SupplyService/CancelSupply",
    # A TMS feed sets carrier slots as a WMS feed sets counts.
    "NetworkService/SetCarrierCapacity",
    "StoreService/LoadSupply",  # a supply file: AddSupply in bulk
)
_ADMIN_ONLY = (
    "RulesService/SetRules",
    "InventoryService/UpsertNode",
    "StoreService/LoadNodes",  # a nodes file: UpsertNode in bulk
    "AdminService/Snapshot",
    "AdminService/GetStatus",
    "NetworkService/SetNetwork",
)
# Change streams: counted against max_watch_subscribers_per_principal, not in-flight calls.
WATCH_METHODS = frozenset({"WatchService/Watch", "WatchService/WatchBatch"})
_BULK_READS = ("FeedService/ExportPositions", "SupplyService/ListSupply")
_BATCHES = ("CommandService/CommandBatch", "CommandService/Submit")  # see batch_commands.py
_BATCHABLE = (*_RESERVATION_WRITES, "InventoryService/SetStock", "InventoryService/AdjustStock")


def _default_method_roles() -> dict[str, frozenset[str]]:
    """Method ("Service/Method") -> roles. admin may call everything; checkout and pos also
    read; pos may AdjustStock (a return or a count correction at its own store) within scope."""
    table: dict[str, set[str]] = {}

    def allow(methods: Iterable[str], *roles: str) -> None:
        for method in methods:
            table.setdefault(method, set()).update(roles)

    allow(_READS, "reader", "checkout", "pos", "loader", "admin")
    allow(_BULK_READS, "reader", "checkout", "loader", "admin")
    allow(_RESERVATION_WRITES, "checkout", "pos", "admin")
    allow(_LOADER_WRITES, "loader", "admin")
    allow(("InventoryService/AdjustStock",), "pos")
    allow(_ADMIN_ONLY, "admin")
    allow_transfer_methods(allow)
    table.update(store_method_roles())
    allow(("ReplicationService/Follow",), "replication", "admin")  # the whole journal
    allow(_BATCHES, "checkout", "pos", "loader", "admin")
    return {method: frozenset(roles) for method, roles in table.items()}


DEFAULT_METHOD_ROLES: Mapping[str, frozenset[str]] = _default_method_roles()
# Admin and loader actions: every call is audited, whatever its outcome.
AUDITED_METHODS = frozenset(_LOADER_WRITES + _ADMIN_ONLY[:4] + ("NetworkService/SetNetwork",))
AUDITED_METHODS |= TRANSFER_AUDITED
# Methods that act on the whole network: refused to a principal limited to some nodes.
GLOBAL_WRITES = frozenset(_ADMIN_ONLY + RESTOCK_METHODS)


def method_roles_from_config(overrides: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    table = dict(DEFAULT_METHOD_ROLES)
    for method, roles in overrides.items():
        if method not in table:
            raise AuthConfigError(
                f"method_roles: unknown method {method!r} (e.g. 'InventoryService/AdjustStock'; "
                f"known: {', '.join(sorted(table))})"
            )
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthConfigError(f"method_roles.{method}: expected a list of role names")
        for role in roles:
            if role not in ROLES:
                raise AuthConfigError(
                    f"method_roles.{method}: {role!r} is not one of {', '.join(ROLES)}"
                )
        table[method] = frozenset(roles)
    for method in (m for m in _BATCHES if m not in overrides):  # roles of their commands
        table[method] = frozenset().union(*(table[m] for m in _BATCHABLE))
    return table
