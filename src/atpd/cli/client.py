"""Client plumbing shared by every client command: the options, the channel, the call wrapper,
RPC errors.

Every client command takes `--target`, `--timeout`, `--token` (or `ATPD_TOKEN`), `--ca`, `--tls`,
`--cert` and `--key` (`add_client_options`). The channel speaks TLS when `--ca` or `--tls` is
given; the token goes as `authorization: Bearer <token>` on every call. A token is never sent in
clear text off loopback: without TLS it is refused for any other host.

A failed call prints one line, `atpd: CODE: details`, on stderr and exits with status 1, or
EXIT_UNAUTHENTICATED / EXIT_PERMISSION_DENIED for those two codes (with a hint on what to pass).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
TOKEN_ENVIRONMENT_VARIABLE = "ATPD_TOKEN"
EXIT_RPC_FAILED = 1
EXIT_UNAUTHENTICATED = 4
EXIT_PERMISSION_DENIED = 5
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
CLIENT_EXIT_CODES = (
    "exit status: 0 done; 1 the call failed; 2 bad arguments; 3 the server answered an "
    f"outcome other than OK; {EXIT_UNAUTHENTICATED} UNAUTHENTICATED (no, wrong, expired or "
    f"revoked token); {EXIT_PERMISSION_DENIED} PERMISSION_DENIED (the token's role or scope "
    "does not allow it)"
)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The options every client command shares: where the server is and how to reach it."""
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"server host:port (default {DEFAULT_TARGET}); the servers of a cluster as "
        "host:port,host:port,...: writes go to the leader",
    )
    parser.add_argument(
        "--read-from",
        choices=("leader", "follower"),
        default="leader",
        help="with several targets: answer reads from the leader (default) or the followers",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument(
        "--token",
        help="bearer token (`atpd token create` prints it; default: "
        f"${TOKEN_ENVIRONMENT_VARIABLE})",
    )
    parser.add_argument(
        "--ca", type=Path, help="CA certificate (PEM) that signed the server's: speak TLS"
    )
    parser.add_argument(
        "--tls", action="store_true", help="speak TLS, trusting the system's CAs (implied by --ca)"
    )
    parser.add_argument("--cert", type=Path, help="client certificate chain (PEM), mutual TLS")
    parser.add_argument("--key", type=Path, help="client certificate's private key (PEM)")


class ClientOptionError(ValueError):
    """The connection options cannot be used; the message says which and why."""


def _read_pem(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ClientOptionError(f"{option} {path}: {error.strerror or error}") from None


def _host_of(target: str) -> str:
    if target.startswith("["):
        return target[: target.find("]") + 1]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


if TYPE_CHECKING:  # generic in the type stubs only
    from atpd.client import Client

    UnaryUnaryInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
    UnaryStreamInterceptor = grpc.UnaryStreamClientInterceptor[Any, Any]
    StreamUnaryInterceptor = grpc.StreamUnaryClientInterceptor[Any, Any]
    StreamStreamInterceptor = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    UnaryUnaryInterceptor = grpc.UnaryUnaryClientInterceptor
    UnaryStreamInterceptor = grpc.UnaryStreamClientInterceptor
    StreamUnaryInterceptor = grpc.StreamUnaryClientInterceptor
    StreamStreamInterceptor = grpc.StreamStreamClientInterceptor


class _BearerToken(
    UnaryUnaryInterceptor, UnaryStreamInterceptor, StreamUnaryInterceptor, StreamStreamInterceptor
):
    """Adds `authorization: Bearer <token>` to every call (metadata, not a call credential,
    so it also works over a plaintext loopback channel)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self.header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _token_of(args: argparse.Namespace) -> str | None:
    token: str | None = getattr(args, "token", None) or os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    return token


def _uses_tls(args: argparse.Namespace) -> bool:
    return (
        getattr(args, "ca", None) is not None
        or getattr(args, "cert", None) is not None
        or bool(getattr(args, "tls", False))
    )


def check_client_options(args: argparse.Namespace) -> None:
    """Raise ClientOptionError naming the first option that cannot be used."""
    token = _token_of(args)
    if (getattr(args, "cert", None) is None) != (getattr(args, "key", None) is None):
        raise ClientOptionError("--cert and --key go together (mutual TLS needs both)")
    for target in targets_of(args):
        if not _uses_tls(args) and token and _host_of(target) not in LOOPBACK_HOSTS:
            raise ClientOptionError(
                f"refusing to send the token in clear text to {target}: pass --ca (or --tls)"
            )
    if token and (not token.isprintable() or token != token.strip()):
        raise ClientOptionError("--token: not a token (spaces or control characters)")


def targets_of(args: argparse.Namespace) -> list[str]:
    """--target: one host:port, or several separated by commas (a cluster)."""
    targets = [target.strip() for target in str(args.target).split(",") if target.strip()]
    if not targets:
        raise ClientOptionError("--target: expected host:port[,host:port...]")
    return targets


def build_channel(args: argparse.Namespace) -> grpc.Channel:
    """The channel the options describe (with several targets, to the leader: the one whose
    GetStatus says primary, else the first); raises ClientOptionError naming a bad option."""
    check_client_options(args)
    targets = targets_of(args)
    if len(targets) == 1:
        return _channel_to(targets[0], args)
    from atpd.v1 import admin_pb2, admin_pb2_grpc

    for target in targets:
        channel = _channel_to(target, args)
        try:
            status = admin_pb2_grpc.AdminServiceStub(channel).GetStatus(
                admin_pb2.GetStatusRequest(), timeout=min(float(args.timeout), 2.0)
            )
        except grpc.RpcError:
            status = None
        if status is not None and status.role == "primary":
            return channel
        channel.close()
    return _channel_to(targets[0], args)


def _channel_to(target: str, args: argparse.Namespace) -> grpc.Channel:
    token = _token_of(args)
    ca: Path | None = getattr(args, "ca", None)
    cert: Path | None = getattr(args, "cert", None)
    key: Path | None = getattr(args, "key", None)
    if _uses_tls(args):
        credentials = grpc.ssl_channel_credentials(
            _read_pem(ca, "--ca") if ca is not None else None,
            _read_pem(key, "--key") if key is not None else None,
            _read_pem(cert, "--cert") if cert is not None else None,
        )
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


def open_client(args: argparse.Namespace) -> Client:
    """An atpd.client Client for the options (one call at a time, each with --timeout as its
    deadline, retried on UNAVAILABLE when safe), or the option's problem and exit status 2."""
    from atpd.client import Client
    from atpd.client.connection import ClientOptionError as OptionRefused

    try:
        check_client_options(args)
        for option in ("ca", "key", "cert"):
            path: Path | None = getattr(args, option, None)
            if path is not None:
                _read_pem(path, f"--{option}")  # the CLI's message for an unreadable file
        return Client(
            targets_of(args),
            read_from=getattr(args, "read_from", "leader"),
            token=_token_of(args),
            ca_file=getattr(args, "ca", None),
            tls=bool(getattr(args, "tls", False)),
            cert_file=getattr(args, "cert", None),
            key_file=getattr(args, "key", None),
            timeout_s=args.timeout,
            coalesce=False,
        )
    except (ClientOptionError, OptionRefused) as error:
        print(f"atpd: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """build_channel, or the option's problem on stderr and exit status 2."""
    try:
        return build_channel(args)
    except ClientOptionError as error:
        print(f"atpd: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def print_rpc_error(error: grpc.RpcError) -> None:
    """One line on stderr: the status code's name and the server's details."""
    print(f"atpd: {error.code().name}: {error.details()}", file=sys.stderr)


def call_or_exit(fn: Callable[[], Any]) -> Any:
    """fn's result; a failed RPC (a grpc.RpcError, or an atpd.client AtpdError) is printed as
    `atpd: CODE: details` and ends the command with 1, or EXIT_UNAUTHENTICATED /
    EXIT_PERMISSION_DENIED."""
    from atpd.client.errors import AtpdError

    try:
        return fn()
    except (grpc.RpcError, AtpdError) as error:
        if isinstance(error, AtpdError):
            code = error.code
            print(f"atpd: {code.name}: {error.message}", file=sys.stderr)
        else:
            print_rpc_error(error)
            code = error.code()
        if code is grpc.StatusCode.UNAUTHENTICATED:
            print(
                f"atpd: pass a valid token with --token or ${TOKEN_ENVIRONMENT_VARIABLE} "
                "(`atpd token create` makes one)",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_UNAUTHENTICATED) from None
        if code is grpc.StatusCode.PERMISSION_DENIED:
            raise SystemExit(EXIT_PERMISSION_DENIED) from None
        raise SystemExit(EXIT_RPC_FAILED) from None


def read_text_or_exit(path: Path, what: str) -> str:
    """A TOML file named on the command line (rules, network): a regular file within the 1 MiB
    bound, or the reason on stderr and exit status 1."""
    from atpd.files import MAX_RULES_FILE_BYTES, FileRefused, read_regular_text

    try:
        return read_regular_text(path, MAX_RULES_FILE_BYTES, what)
    except FileRefused as error:
        print(f"atpd: {error}", file=sys.stderr)
        raise SystemExit(1) from None
