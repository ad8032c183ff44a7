"""Exceptions to gRPC statuses, in one place for every servicer (unary, streams, feeds, watch).

`STATUS_BY_ERROR` is the only exception-to-status map: servicers call `status_of` and `is_bug`
and decide nothing from exception types themselves. Caller mistakes found at the edge or in the
core map to INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS or RESOURCE_EXHAUSTED (and a
reservation another principal made, PERMISSION_DENIED); a server that is
not ready or cannot write, or whose state was rebuilt under a load, maps to UNAVAILABLE; a load
id already streaming to ABORTED; a stream idle or stalled past its timeout to DEADLINE_EXCEEDED;
anything else is a bug (INTERNAL, re-raised so it is logged). Every message is cut
to `MAX_MESSAGE_BYTES` before it leaves: a status message travels in the trailers, and one of
60 kB no longer fits them (grpcio then answers RESOURCE_EXHAUSTED, grpc-js hangs).
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from atpd.core.promise_context import NoNetwork
from atpd.core.results import (
    AlreadyExists,
    FailedPrecondition,
    InvalidCommand,
    LimitExceeded,
    NotFound,
)
from atpd.core.text import MAX_MESSAGE_BYTES, bounded
from atpd.service.engine import (
    InternalFailure,
    NotLeader,
    ReplicationUnconfirmed,
    WritesUnavailable,
)
from atpd.service.lease_fence import LeadershipLostUnacknowledged, LeaseLost
from atpd.service.ownership import PermissionDenied
from atpd.service.replication_source import ReplicationRefused
from atpd.service.validation import InvalidArgument
from atpd.service.watch import StreamStalled

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STATUS_BY_ERROR",
    "LoadInProgress",
    "NotReady",
    "StateReplaced",
    "StreamIdle",
    "abort",
    "is_bug",
    "status_of",
]


class NotReady(Exception):
    """The server is still recovering: writes are refused (UNAVAILABLE, retry shortly)."""


class LoadInProgress(Exception):
    """Another stream with the same load id has not finished (gRPC ABORTED: retry later)."""


class StreamIdle(Exception):
    """A client stream sent nothing for load_idle_timeout_s (gRPC DEADLINE_EXCEEDED)."""


class StateReplaced(Exception):
    """The state was rebuilt (journal failure) while the load streamed (UNAVAILABLE)."""


STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidCommand, grpc.StatusCode.INVALID_ARGUMENT),
    (NoNetwork, grpc.StatusCode.FAILED_PRECONDITION),
    # A write sent to a follower: the message and the `atpd-leader` trailer name the leader.
    (NotLeader, grpc.StatusCode.FAILED_PRECONDITION),
    (ReplicationRefused, grpc.StatusCode.FAILED_PRECONDITION),
    # A leader whose etcd lease may have lapsed: writes go to the next leader.
    (LeaseLost, grpc.StatusCode.FAILED_PRECONDITION),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (WritesUnavailable, grpc.StatusCode.UNAVAILABLE),
    (LeadershipLostUnacknowledged, grpc.StatusCode.UNAVAILABLE),
    (StateReplaced, grpc.StatusCode.UNAVAILABLE),
    (ReplicationUnconfirmed, grpc.StatusCode.UNAVAILABLE),
    (LoadInProgress, grpc.StatusCode.ABORTED),
    (StreamIdle, grpc.StatusCode.DEADLINE_EXCEEDED),
    (StreamStalled, grpc.StatusCode.DEADLINE_EXCEEDED),
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
