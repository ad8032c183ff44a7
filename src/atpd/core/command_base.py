"""The base of every command: generic in the result `AtpState.apply` returns for it.

`class Reserve(CommandOf[ReserveResult])` lets `apply(Reserve(...))` and
`Engine.execute(Reserve(...))` be typed `ReserveResult` with no cast. A leaf module, so both
commands.py and load_command.py (BulkLoad) can import it.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Result(Protocol):
    """What every command result says: whether the command changed the state (then it is
    journaled)."""

    @property
    def changed(self) -> bool: ...


ResultT = TypeVar("ResultT", bound=Result, covariant=True)


class CommandOf(Generic[ResultT]):
    """A command whose `apply` answers a `ResultT`. No fields: commands are frozen
    dataclasses with slots, so this base has empty slots too."""

    __slots__ = ()
