"""Protections: units of a position kept for some callers (beneficiaries). Taking protected
units on reserve, and rebuilding what each protection has given out after a rule swap or a
restore. Giving units back is part of `handlers_reservations.unhold`.
"""

from __future__ import annotations

import numpy as np

from atpd.core.caller_atp import compiled_rules
from atpd.core.commands import Line
from atpd.core.rules_compile import CompiledPolicy
from atpd.core.state_fields import StateFields
from atpd.core.stock import FIELD_ON_HAND


def protection_index(state: StateFields, name: str) -> int:
    for index, protection in enumerate(state.rules.protections):
        if protection.name == name:
            return index
    return -1


def rebuild_protection_consumption(state: StateFields) -> None:
    """After a rule swap: protections are matched by name; holds on protections that no
    longer exist simply stop counting against anything."""
    state.protection_consumed.clear()
    capacity = state.stock.node_capacity
    count = max(len(state.rules.protections), 1)
    table = state.reservations
    for reservation_id in state.protected_reservations:
        row = table.find(reservation_id)
        first = table.first_line[row]
        for line, records in enumerate(table.protected[row]):
            sku, node = table.line_sku[first + line], table.line_node[first + line]
            for name, units in records:
                index = protection_index(state, name)
                if index < 0:
                    continue
                consumed = state.protection_consumed.get(sku)
                if consumed is None:
                    consumed = np.zeros((count, capacity), np.int32)
                    state.protection_consumed[sku] = consumed
                consumed[index, node] += units


def take_protected(
    state: StateFields,
    policy: CompiledPolicy,
    lines: tuple[Line, ...],
    skus: list[int],
    nodes: list[int],
) -> list[list[tuple[str, int]]] | None:
    """A beneficiary's holds use its protected units before the general pool."""
    compiled = compiled_rules(state)
    protections = state.rules.protections
    records: list[list[tuple[str, int]]] = []
    took_any = False
    cells = state.stock.cells
    for line, sku, node in zip(lines, skus, nodes, strict=True):
        taken: list[tuple[str, int]] = []
        left = line.quantity
        for index in policy.mine:
            if left == 0:
                break
            protection = protections[index]
            if not compiled.protection_mask[index, node] or not protection.covers_sku(line.sku):
                continue
            units = (
                protection.units or int(cells[sku, FIELD_ON_HAND, node]) * protection.percent // 100
            )
            consumed = state.protection_consumed.get(sku)
            used = int(consumed[index, node]) if consumed is not None else 0
            take = min(left, units - used)
            if take <= 0:
                continue
            if consumed is None:
                consumed = np.zeros(compiled.protection_mask.shape, np.int32)
                state.protection_consumed[sku] = consumed
            consumed[index, node] += take
            taken.append((protection.name, take))
            left -= take
        took_any = took_any or bool(taken)
        records.append(taken)
    return records if took_any else None
