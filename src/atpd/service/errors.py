"""Exceptions to gRPC statuses, in one place for every servicer (unary, streams, feeds, watch).

Caller mistakes found at the edge or in the core map to INVALID_ARGUMENT, NOT_FOUND,
ALREADY_EXISTS or RESOURCE_EXHAUSTED; a server that is not ready or cannot write maps to
UNAVAILABLE; anything else is a bug (INTERNAL, re-raised so it is logged). Every message is cut
to `MAX_MESSAGE_BYTES` before it leaves: a status message travels in the trailers, and one of
60 kB no longer fits them (grpcio then answers RESOURCE_EXHAUSTED, grpc-js hangs).
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from atpd.core.results import AlreadyExists, InvalidCommand, LimitExceeded, NotFound
from atpd.core.text import MAX_MESSAGE_BYTES, bounded
from atpd.service.engine import InternalFailure, WritesUnavailable
from atpd.service.validation import InvalidArgument

__all__ = ["MAX_MESSAGE_BYTES", "STATUS_BY_ERROR", "NotReady", "abort", "is_bug", "status_of"]


class NotReady(Exception):
    """The server is still recovering: writes are refused (UNAVAILABLE, retry shortly)."""


STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidCommand, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (WritesUnavailable, grpc.StatusCode.UNAVAILABLE),
    # A write that failed inside the core: the state is being rebuilt from the journal.
    (InternalFailure, grpc.StatusCode.INTERNAL),
)


def is_bug(error: BaseException) -> bool:
    """True for an exception no entry maps: re-raise it so it is logged with its traceback
    (an `InternalFailure` maps to INTERNAL too, but the engine has logged it already)."""
    return not isinstance(error, tuple(error_type for error_type, _ in STATUS_BY_ERROR))


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status an exception answers; INTERNAL for anything unexpected (a bug)."""
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return grpc.StatusCode.INTERNAL


async def abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with `code` and `message` cut to MAX_MESSAGE_BYTES (UTF-8)."""
    assert code is not grpc.StatusCode.OK
    await context.abort(code, bounded(message))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
