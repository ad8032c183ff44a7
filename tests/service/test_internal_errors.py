"""An unexpected exception inside a write answers INTERNAL (never UNKNOWN) with a clear message,
and a server with nothing durable to rebuild from stops taking writes rather than serve on from
a state that may hold part of the failed command."""

from __future__ import annotations

from typing import Any

import grpc

from atpd.core.commands import Reserve
from atpd.core.state import AtpState

from .harness import RPC_TIMEOUT_S, ServerThread, Stubs, World, reserve_request, rpc_error


class CoreBug(Exception):
    """Stands for a bug in a core handler."""


def test_a_core_bug_answers_internal_and_stops_in_memory_writes(
    server: ServerThread, world: World, api: Stubs
) -> None:
    """A handler raising mid-write is INTERNAL naming the error; later writes are UNAVAILABLE
    with the reason; reads go on."""
    world.set_stock("BAG-1", "paris", 5)
    state: AtpState = server.app.engine.state
    original = state._handlers[Reserve]

    def half_then_fail(state: AtpState, command: Any, now_ms: int) -> Any:
        original(state, command, now_ms)  # applied in full, then the "bug"
        raise CoreBug("something nobody expected")

    server.call(lambda: state._handlers.__setitem__(Reserve, half_then_fail))
    request = reserve_request("cart-1", ("BAG-1", "paris", 1))
    error = rpc_error(lambda: api.reservations.Reserve(request, timeout=RPC_TIMEOUT_S))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "CoreBug: something nobody expected" in (error.details() or "")
    server.call(lambda: state._handlers.__setitem__(Reserve, original))
    again = rpc_error(
        lambda: api.reservations.Reserve(
            reserve_request("cart-2", ("BAG-1", "paris", 1)), timeout=RPC_TIMEOUT_S
        )
    )
    assert again.code() == grpc.StatusCode.UNAVAILABLE
    assert "internal error while applying Reserve" in (again.details() or "")
    assert world.position("BAG-1", "paris").on_hand == 5  # reads answer
