"""atpd's Python client: `AsyncClient` (asyncio) and `Client` (blocking), plain dataclass
results (`atpd.client.results`) and one exception per gRPC status (`atpd.client.errors`).
Concurrent writes are coalesced into batches on one Submit stream: see README, "Python client".
"""

from atpd.client.aio import AsyncClient
from atpd.client.connection import ClientOptionError, ConnectionOptions
from atpd.client.errors import (
    Aborted,
    AlreadyExists,
    AtpdError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from atpd.client.results import Line
from atpd.client.sync import Client

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AtpdError",
    "Cancelled",
    "Client",
    "ClientOptionError",
    "ConnectionOptions",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Line",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]
