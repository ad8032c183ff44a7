"""Access tables of the transfer and restock methods (used by service/method_roles.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

TRANSFER_READS = ("TransferService/GetTransfer", "TransferService/ListTransfers")
# Transfer orders: loaders (an ERP / WMS feed) and stores (pos, within their scope: both ends
# of a new transfer, the source to ship or cancel, the destination to receive).
TRANSFER_WRITES = (
    "TransferService/CreateTransfer",
    "TransferService/ShipTransfer",
    "TransferService/ReceiveTransfer",
    "TransferService/CancelTransfer",
)
# Restocking plans over many nodes: a heavy read and a network-wide write (admin, loader),
# refused to principals limited to some nodes.
RESTOCK_METHODS = (
    "RestockService/PlanRestock",
    "RestockService/GetRestockPlan",
    "RestockService/ApplyRestock",
)
TRANSFER_AUDITED = frozenset((*TRANSFER_WRITES, "RestockService/ApplyRestock"))


def allow_transfer_methods(allow: Callable[..., None]) -> None:
    """Fill the default role table (method_roles._default_method_roles passes its `allow`)."""
    methods: Iterable[str] = TRANSFER_READS
    allow(methods, "reader", "checkout", "pos", "loader", "admin")
    allow(TRANSFER_WRITES, "pos", "loader", "admin")
    allow(RESTOCK_METHODS, "loader", "admin")
