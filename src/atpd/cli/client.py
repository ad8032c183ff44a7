"""Client plumbing shared by every client command: the channel, the call wrapper, RPC errors.

A failed call prints one line, `atpd: CODE: details`, on stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    return grpc.insecure_channel(args.target)


def print_rpc_error(error: grpc.RpcError) -> None:
    """One line on stderr: the status code's name and the server's details."""
    print(f"atpd: {error.code().name}: {error.details()}", file=sys.stderr)


def call_or_exit(fn: Callable[[], Any]) -> Any:
    """fn's result; a failed RPC is printed (print_rpc_error) and ends the command with 1."""
    try:
        return fn()
    except grpc.RpcError as error:
        print_rpc_error(error)
        raise SystemExit(1) from None
