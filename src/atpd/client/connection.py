"""Where the server is and how to reach it: the one place the client builds its channel.

`ConnectionOptions` holds the target and the same security options as the CLI's
(`--ca`/`--tls`/`--cert`/`--key`/`--token`); `open_channel` turns them into a grpc.aio channel.
The token travels as `authorization: Bearer <token>` metadata on every call (`metadata()`), and
is refused in clear text off loopback, as the CLI refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
DEFAULT_TARGET = "127.0.0.1:50051"
# The server accepts requests up to 4 MiB by default (max_receive_message_bytes); answers to
# large batches can be bigger than gRPC's default 4 MiB receive limit.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024 * 1024


class ClientOptionError(ValueError):
    """The connection options cannot be used; the message names the option and why."""


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    target: str = DEFAULT_TARGET
    token: str | None = None
    # TLS: on when a CA is given, when `tls` is true, or with a client certificate.
    ca_file: Path | None = None
    tls: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.token:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ClientOptionError("cert_file and key_file go together (mutual TLS needs both)")
        if self.token is not None:
            if not self.token or not self.token.isprintable() or self.token != self.token.strip():
                raise ClientOptionError("token: not a token (empty, spaces or control characters)")
            if not self.uses_tls and host_of(self.target) not in LOOPBACK_HOSTS:
                raise ClientOptionError(
                    f"refusing to send the token in clear text to {self.target}: give ca_file "
                    "(or tls=True)"
                )


def host_of(target: str) -> str:
    if target.startswith("["):
        return target[: target.find("]") + 1]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ClientOptionError(f"{option} {path}: {error.strerror or error}") from None


def open_channel(options: ConnectionOptions) -> grpc.aio.Channel:
    """A grpc.aio channel to options.target (call on the loop that will use it)."""
    options.check()
    channel_options = [("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES)]
    if options.uses_tls:
        credentials = grpc.ssl_channel_credentials(
            _read(options.ca_file, "ca_file") if options.ca_file is not None else None,
            _read(options.key_file, "key_file") if options.key_file is not None else None,
            _read(options.cert_file, "cert_file") if options.cert_file is not None else None,
        )
        return grpc.aio.secure_channel(options.target, credentials, channel_options)
    return grpc.aio.insecure_channel(options.target, channel_options)
