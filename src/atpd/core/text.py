"""Bounded text for error messages: values and lists echoed back to a caller.

An error names the offending value so the caller can find it, but a value can be 100 kB and a
list of known names 5,000 long: echoed in full they made messages too large for the gRPC
trailers (grpcio answered RESOURCE_EXHAUSTED, grpc-js hung). Every echo goes through `shown` or
`listed`; `bounded` is the final cap applied where a status message leaves the server.
"""

from __future__ import annotations

from collections.abc import Sequence

# Characters of an echoed value kept before "... (N characters)".
SHOWN_PREFIX_CHARS = 40
# Names of a list shown before "and N more".
LISTED_NAMES = 5
# Bytes (UTF-8) of a whole error message.
MAX_MESSAGE_BYTES = 1024
# A message of at most this many characters is at most MAX_MESSAGE_BYTES in UTF-8.
_SAFE_CHARS = MAX_MESSAGE_BYTES // 4
_TRUNCATION_MARK = "... (message cut: {count} characters in all)"


def shown(value: str) -> str:
    """`repr(value)`, or the repr of its first characters and its length when it is long."""
    if len(value) <= SHOWN_PREFIX_CHARS:
        return repr(value)
    return f"{value[:SHOWN_PREFIX_CHARS]!r}... ({len(value)} characters)"


def listed(names: Sequence[str], limit: int = LISTED_NAMES) -> str:
    """The first `limit` names joined by ", " (each cut like `shown`), then "and N more"."""
    assert limit >= 1, limit
    parts = [name if len(name) <= SHOWN_PREFIX_CHARS else shown(name) for name in names[:limit]]
    if len(names) > limit:
        parts.append(f"and {len(names) - limit} more")
    return ", ".join(parts)


def bounded(message: str, limit_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """`message` cut so that its UTF-8 form is at most `limit_bytes` (with a mark saying so)."""
    if len(message) <= _SAFE_CHARS and limit_bytes == MAX_MESSAGE_BYTES:
        return message  # the common case: no encoding needed
    encoded = message.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit_bytes:
        return message
    mark = _TRUNCATION_MARK.format(count=len(message))
    keep_bytes = limit_bytes - len(mark.encode())
    assert keep_bytes > 0, limit_bytes
    # Cutting inside a multi-byte character leaves a partial one: drop it.
    head = encoded[:keep_bytes].decode("utf-8", "ignore")
    result = head + mark
    assert len(result.encode("utf-8", "surrogatepass")) <= limit_bytes
    return result
