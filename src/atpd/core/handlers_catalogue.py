"""Handlers of the nodes and supply loads (NodeLoad, SupplyLoad): a whole file applied as one
command, each row as the UpsertNode or AddSupply it is, after every row was checked against
everything that could refuse it, so a load is applied whole or not at all."""

from __future__ import annotations

from atpd.core.commands_store import CatalogueLoadResult, NodeLoad, SupplyLoad
from atpd.core.handlers_stock import upsert_node
from atpd.core.handlers_supply import add_supply
from atpd.core.ids import ADD_NODE_HINT
from atpd.core.limits import MAX_QUANTITY
from atpd.core.results import AlreadyExists, InvalidCommand, LimitExceeded, NotFound, Outcome
from atpd.core.state_fields import StateFields
from atpd.core.store_book import LOAD_NODES, LOAD_SUPPLY, LoadRecord, fingerprint


def _replayed(state: StateFields, kind: str, load_id: str, digest: str) -> LoadRecord | None:
    record = state.store.loads.get((kind, load_id))
    if record is None:
        return None
    if record.fingerprint != digest:
        raise AlreadyExists(f"load_id: {load_id!r} was applied with other rows; choose another id")
    return record


def _check_size(state: StateFields, rows: int) -> None:
    if rows == 0:
        raise InvalidCommand("rows: the load is empty")
    if rows > state.limits.max_catalogue_load_rows:
        raise LimitExceeded(
            f"rows: {rows} rows, max_catalogue_load_rows is {state.limits.max_catalogue_load_rows}"
            ": split the file"
        )


def _answer(record: LoadRecord, replayed: bool) -> CatalogueLoadResult:
    return CatalogueLoadResult(
        Outcome.OK, record.rows, record.created, record.updated, record.unchanged, replayed
    )


def node_load(state: StateFields, command: NodeLoad, now_ms: int) -> CatalogueLoadResult:
    _check_size(state, len(command.nodes))
    digest = fingerprint(command)
    stored = _replayed(state, LOAD_NODES, command.load_id, digest)
    if stored is not None:
        return _answer(stored, replayed=True)
    seen: dict[str, int] = {}
    new_nodes = 0
    for i, node in enumerate(command.nodes):
        first = seen.setdefault(node.node_id, i)
        if first != i:
            raise InvalidCommand(f"rows[{i}].node_id: {node.node_id!r} is on rows[{first}] too")
        new_nodes += node.node_id not in state.node_ids
    if len(state.nodes) + new_nodes > state.limits.max_nodes:
        raise LimitExceeded(
            f"max_nodes: {len(state.nodes)} nodes exist, the load adds {new_nodes}, the limit "
            f"is {state.limits.max_nodes}"
        )
    created = updated = unchanged = 0
    for node in command.nodes:
        result = upsert_node(state, node, now_ms)
        if result.created:
            created += 1
        elif result.changed:
            updated += 1
        else:
            unchanged += 1
    record = LoadRecord(LOAD_NODES, digest, len(command.nodes), created, updated, unchanged)
    state.store.remember_load(command.load_id, record, state.limits.max_remembered_loads)
    return _answer(record, replayed=False)


def supply_load(state: StateFields, command: SupplyLoad, now_ms: int) -> CatalogueLoadResult:
    _check_size(state, len(command.rows))
    digest = fingerprint(command)
    stored = _replayed(state, LOAD_SUPPLY, command.load_id, digest)
    if stored is not None:
        return _answer(stored, replayed=True)
    seen: dict[str, int] = {}
    added: dict[tuple[str, str], int] = {}
    new_skus: set[str] = set()
    fresh: list[bool] = []
    for i, row in enumerate(command.rows):
        field = f"rows[{i}]"
        first = seen.setdefault(row.supply_id, i)
        if first != i:
            raise InvalidCommand(f"{field}.supply_id: {row.supply_id!r} is on rows[{first}] too")
        node = state.node_ids.get(row.node_id)
        if node < 0:
            raise NotFound(f"{field}.node_id: unknown node {row.node_id!r}: {ADD_NODE_HINT}")
        if not 1 <= row.quantity <= MAX_QUANTITY or row.eta_ms <= 0:
            raise InvalidCommand(f"{field}: quantity {row.quantity} or eta_ms {row.eta_ms} invalid")
        existing = state.supply.find(row.supply_id)
        if existing is not None:
            same = (
                existing.sku,
                existing.node_id,
                existing.quantity + existing.received,
                existing.eta_ms,
                int(existing.kind),
            ) == (row.sku, row.node_id, row.quantity, row.eta_ms, int(row.kind))
            if not same:
                raise AlreadyExists(
                    f"{field}.supply_id: {row.supply_id!r} exists with different content"
                )
            fresh.append(False)
            continue
        fresh.append(True)
        sku = state.skus.get(row.sku)
        if sku < 0:
            new_skus.add(row.sku)
        key = (row.sku, row.node_id)
        total = added.get(key, 0) + row.quantity
        expected = state.supply.expected_at(sku, node) if sku >= 0 else 0
        if expected + total > MAX_QUANTITY:
            raise LimitExceeded(
                f"{field}.quantity: {expected + total} units of {row.sku!r} would be expected at "
                f"{row.node_id!r}, above {MAX_QUANTITY} (MAX_QUANTITY)"
            )
        added[key] = total
    if len(state.skus) + len(new_skus) > state.limits.max_skus:
        raise LimitExceeded(f"max_skus: the load adds {len(new_skus)} SKUs to {len(state.skus)}")
    for row, new in zip(command.rows, fresh, strict=True):
        if new:
            result = add_supply(state, row, now_ms)
            assert result.changed, row
    created = sum(fresh)
    record = LoadRecord(LOAD_SUPPLY, digest, len(command.rows), created, 0, len(fresh) - created)
    state.store.remember_load(command.load_id, record, state.limits.max_remembered_loads)
    return _answer(record, replayed=False)
