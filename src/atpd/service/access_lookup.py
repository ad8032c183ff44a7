"""What a request acts on, for the access gate: the nodes each method names (directly, or through
the reservation, supply or bulk-load rows it refers to, looked up in the state), and the summary
of an admin or loader call written to the audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("atpd.service.auth")


class StateLookup(Protocol):
    """What scope checks need to know about the state (read on the writer's loop)."""

    def node_geo_path(self, node_id: str) -> tuple[str, ...] | None: ...

    def reservation_nodes(self, reservation_id: str) -> tuple[tuple[str, ...], str] | None:
        """The reservation's node ids and channel, None when unknown."""

    def supply_node(self, supply_id: str) -> str | None: ...

    def transfer_nodes(self, transfer_id: str) -> tuple[str, str] | None:
        """The transfer's (source, destination) node ids, None when unknown."""


class EngineLookup:
    """StateLookup over the engine's current state (the state object is replaced at
    recovery, so it is read through the engine each time)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def node_geo_path(self, node_id: str) -> tuple[str, ...] | None:
        state = self.engine.state
        index = state.node_ids.get(node_id)
        if index < 0:
            return None
        path: tuple[str, ...] = state.nodes[index].geo_path
        return path

    def reservation_nodes(self, reservation_id: str) -> tuple[tuple[str, ...], str] | None:
        state = self.engine.state
        table = state.reservations
        row = table.find(reservation_id)
        if row < 0:
            return None
        names, node_column = state.node_ids.names, table.line_node
        nodes = tuple(names[node_column[at]] for at in table.line_range(row))
        return nodes, table.caller_of(row)[0]

    def supply_node(self, supply_id: str) -> str | None:
        book = self.engine.state.supply
        supply = book.by_id.get(supply_id) or book.closed.get(supply_id)
        return None if supply is None else str(supply.node_id)

    def transfer_nodes(self, transfer_id: str) -> tuple[str, str] | None:
        transfer = self.engine.state.transfers.find(transfer_id)
        if transfer is None:
            return None
        return str(transfer.from_node_id), str(transfer.to_node_id)


# What a request names, per method: node ids (and, for reservation ids, the reservation's
# channel). Each answers () for requests that name none, which the servicer then refuses.
NodesOf = Callable[[Any, StateLookup], tuple[tuple[str, ...], str | None]]


def nodes_by_reservation(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    found = lookup.reservation_nodes(request.reservation_id)
    return ((), None) if found is None else found


def nodes_by_supply(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    node_id = lookup.supply_node(request.supply_id)
    return ((node_id,) if node_id is not None else ()), None


def nodes_by_transfer(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    """Shipping and cancelling act at the source; receiving (and reading) at either end."""
    found = lookup.transfer_nodes(request.transfer_id)
    return (() if found is None else found), None


def transfer_source(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    found = lookup.transfer_nodes(request.transfer_id)
    return (() if found is None else (found[0],)), None


def transfer_destination(request: Any, lookup: StateLookup) -> tuple[tuple[str, ...], str | None]:
    found = lookup.transfer_nodes(request.transfer_id)
    return (() if found is None else (found[1],)), None


NODES_OF: dict[str, NodesOf] = {
    "ReservationService/Reserve": lambda r, _: (
        # Node-less lines are sourced by the server, which checks the plan's nodes itself.
        tuple(line.node_id for line in r.lines if line.node_id),
        r.channel,
    ),
    "ReservationService/Confirm": nodes_by_reservation,
    "ReservationService/Release": nodes_by_reservation,
    "ReservationService/Fulfil": nodes_by_reservation,
    "ReservationService/GetReservation": nodes_by_reservation,
    # The reservation's nodes and the amended lines' nodes: a till may not move a cart into
    # another store's stock.
    "ReservationService/AmendReservation": lambda r, lookup: (
        nodes_by_reservation(r, lookup)[0] + tuple(line.node_id for line in r.lines),
        nodes_by_reservation(r, lookup)[1],
    ),
    "InventoryService/SetStock": lambda r, _: ((r.node_id,), None),
    "InventoryService/AdjustStock": lambda r, _: ((r.node_id,), None),
    "SupplyService/AddSupply": lambda r, _: ((r.node_id,), None),
    "SupplyService/ReceiveSupply": nodes_by_supply,
    "SupplyService/CancelSupply": nodes_by_supply,
    "NetworkService/SetCarrierCapacity": lambda r, _: ((r.node_id,), None),
    # Till calls: the store named, and the channel (empty: the token's default channel).
    "StoreService/RecordSale": lambda r, _: ((r.node_id,), r.channel),
    "StoreService/RecordOfflineSales": lambda r, _: (
        tuple(sale.node_id for sale in r.sales),
        None,
    ),
    "StoreService/RecordReturn": lambda r, _: ((r.node_id,), None),
    "StoreService/Exchange": lambda r, _: ((r.node_id,), r.channel),
    "StoreService/ReleaseInspection": lambda r, _: ((r.node_id,), None),
    "StoreService/LoadSupply": lambda r, _: (tuple(row.node_id for row in r.rows), None),
    # A store may move stock out of and into itself: both ends must be in its scope.
    "TransferService/CreateTransfer": lambda r, _: ((r.from_node_id, r.to_node_id), None),
    "TransferService/ShipTransfer": transfer_source,
    "TransferService/CancelTransfer": transfer_source,
    "TransferService/ReceiveTransfer": transfer_destination,
}


def bulk_load_nodes(message: Any) -> tuple[str, ...]:
    """Node ids a BulkLoad message names (the FULL header's scope, a chunk's node column)."""
    part = message.WhichOneof("part")
    if part == "header":
        return tuple(message.header.node_ids)
    if part == "chunk":
        return tuple(message.chunk.node_ids)
    return ()


# ---------------------------------------------------------------------------- audit summaries


def audit_summary(method: str, request: Any, response: Any) -> dict[str, Any]:
    """What an audited call asked and, if it succeeded, what came of it."""
    summary: dict[str, Any] = {}
    if request is None:
        pass
    elif method == "RulesService/SetRules" or method == "NetworkService/SetNetwork":
        summary = {"source": request.source, "text_chars": len(request.text)}
        if response is not None:
            summary["version"] = response.version
    elif method == "NetworkService/SetCarrierCapacity":
        summary = {"service": request.service, "node_id": request.node_id}
        summary.update(date=request.date, slots=request.slots)
    elif method == "InventoryService/UpsertNode":
        node = request.node
        summary = {"node_id": node.node_id, "geo_path": node.geo_path, "enabled": node.enabled}
        summary["kind"] = int(node.kind)
    elif method == "InventoryService/SetStock":
        summary = {"sku": request.sku, "node_id": request.node_id, "on_hand": request.on_hand}
        summary["source_sequence"] = request.source_sequence
    elif method == "InventoryService/AdjustStock":
        summary = {"sku": request.sku, "node_id": request.node_id, "delta": request.delta}
    elif method == "SupplyService/AddSupply":
        summary = {"supply_id": request.supply_id, "sku": request.sku, "node_id": request.node_id}
        summary["quantity"] = request.quantity
    elif method == "TransferService/CreateTransfer":
        summary = {"transfer_id": request.transfer_id, "from_node_id": request.from_node_id}
        summary.update(to_node_id=request.to_node_id, lines=len(request.lines))
    elif method.startswith("TransferService/"):
        summary = {"transfer_id": request.transfer_id}
    elif method == "RestockService/ApplyRestock":
        summary = {"plan_id": request.plan_id}
    elif method in ("SupplyService/ReceiveSupply", "SupplyService/CancelSupply"):
        summary = {"supply_id": request.supply_id}
        if method.endswith("ReceiveSupply") and request.HasField("quantity"):
            summary["quantity"] = request.quantity
    elif method in ("StoreService/LoadNodes", "StoreService/LoadSupply"):
        rows = request.nodes if method.endswith("LoadNodes") else request.rows
        summary = {"load_id": request.load_id, "rows": len(rows)}
    if method == "FeedService/BulkLoad" and response is not None:
        summary = {"load_id": response.load_id, "mode": int(response.mode), "rows": response.rows}
        summary["chunks"] = response.chunks
    elif method == "AdminService/Snapshot" and response is not None:
        summary = {
            field.name: value
            for field, value in response.ListFields()
            if isinstance(value, int | str | float)
        }
    if response is not None and hasattr(response, "outcome"):
        summary["result"] = int(response.outcome)
    return summary
