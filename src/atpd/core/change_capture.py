"""Change capture for the Watch stream: before a position changes, remember its ATP for every
watched caller; after the command, `take_changes` pairs it with the ATP after.
"""

from __future__ import annotations

from atpd.core.caller_atp import caller_atp, caller_policy, stock_atp
from atpd.core.results import InvalidCommand
from atpd.core.state_fields import StateFields


def touch(state: StateFields, row: int, node: int) -> None:
    """Called before a position changes: remember its ATP for every watched caller, and
    mark its row dirty while a background resize copies the table."""
    dirty = state.stock.dirty_rows
    if dirty is not None:
        dirty.add(row)
    if state.watched and (row, node) not in state.changes:
        state.changes[(row, node)] = watched_atp(state, row, node)


def watched_atp(state: StateFields, row: int, node: int) -> list[int]:
    result = []
    for channel, segment in state.watched:
        try:
            policy = caller_policy(state, channel, segment)
        except InvalidCommand:  # rules changed under a watcher: it is resynced anyway
            result.append(0)
            continue
        if policy is None:
            result.append(stock_atp(state, row, node) if state.nodes[node].enabled else 0)
        else:
            result.append(caller_atp(state, policy, row, node))
    return result


def take_changes(state: StateFields) -> list[tuple[int, int, list[int], list[int]]]:
    """The positions the last command changed: (row, node, ATP before, ATP after) per
    watched caller, in the order they were first touched; clears the capture."""
    if not state.changes:
        return []
    changes = [
        (row, node, before, watched_atp(state, row, node))
        for (row, node), before in state.changes.items()
    ]
    state.changes = {}
    return changes
