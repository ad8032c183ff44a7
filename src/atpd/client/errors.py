"""Exceptions of the client: one per gRPC status a call can end with, all `AtpdError`.

A refusal of the server (a status other than OK, for a unary call or for one command of a
batch) raises the subclass named after its status, carrying the server's message (which names
the field and what is wrong). Business outcomes that are not errors (INSUFFICIENT_STOCK,
STALE...) are not raised: they are the `outcome` of the result.
"""

from __future__ import annotations

import grpc


class AtpdError(Exception):
    """A call refused or failed; `code` is the gRPC status, `message` the server's words."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(AtpdError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgument(AtpdError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(AtpdError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(AtpdError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AtpdError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(AtpdError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AtpdError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(AtpdError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(AtpdError):
    code = grpc.StatusCode.ABORTED


class Unimplemented(AtpdError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(AtpdError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(AtpdError):
    """The server could not be reached or could not write (restarting, journal down). Writes
    that are safe to retry were retried until the call's deadline before this was raised."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(AtpdError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_BY_STATUS: dict[grpc.StatusCode, type[AtpdError]] = {
    error.code: error
    for error in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        Unimplemented,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}
_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def error_for(code: grpc.StatusCode, message: str) -> AtpdError:
    """The exception for a status (AtpdError itself for statuses without their own class)."""
    error_type = ERROR_BY_STATUS.get(code)
    if error_type is None:
        return AtpdError(message, code)
    return error_type(message)


def error_for_number(number: int, message: str) -> AtpdError:
    """The exception for a status given by number (a batch result's `error.code`)."""
    return error_for(_STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message)


def error_from_rpc(error: grpc.RpcError) -> AtpdError:
    """The exception for a failed gRPC call (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, str(details or ""))
