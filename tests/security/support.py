"""A TLS + token atpd on a real gRPC channel: a throwaway CA (trustme), certificate files in a
tmp dir, a tokens file with one token per role, and clients that present them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import trustme
from service.harness import FAKE_EPOCH_MS, TEST_LIMITS, ServerThread, seed_nodes

from atpd.config import Config
from atpd.service.tokens import create_token

# Nodes of the scope tests: two stores in two cities and a warehouse.
SECURITY_NODES = {
    "ST-PAR-01": "EU/FR/Paris",
    "ST-LON-01": "EU/GB/London",
    "WH-EU-01": "EU/DE/Frankfurt",
}
ROLE_NAMES = ("reader", "checkout", "pos", "loader", "admin", "replication")
TLS_HOST = "localhost"
_file_numbers = itertools.count()


@dataclass
class Credentials:
    """The files of one secured server: certificates, CA, tokens, and each token's secret."""

    directory: Path
    ca: trustme.CA
    cert_file: Path
    key_file: Path
    ca_file: Path
    tokens_file: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def add_token(self, name: str, role: str, **kwargs: Any) -> str:
        secret, _ = create_token(self.tokens_file, name, role, FAKE_EPOCH_MS, **kwargs)
        self.secrets[name] = secret
        return secret

    def client_cert(self, common_name: str, ca: trustme.CA | None = None) -> tuple[bytes, bytes]:
        """(key PEM, certificate chain PEM) of a client certificate for `common_name`."""
        issued = (ca or self.ca).issue_cert(common_name, common_name=common_name)
        return issued.private_key_pem.bytes(), b"".join(p.bytes() for p in issued.cert_chain_pems)


def make_credentials(directory: Path) -> Credentials:
    ca = trustme.CA()
    server_cert = ca.issue_cert(TLS_HOST, "127.0.0.1")
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    ca_file = directory / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    server_cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    credentials = Credentials(directory, ca, cert_file, key_file, ca_file, directory / "tokens")
    for role in ROLE_NAMES:
        # A pos token is a terminal's and must carry a scope.
        scope = {"nodes": ["ST-PAR-01"]} if role == "pos" else {}
        credentials.add_token(role, role, **scope)
    credentials.add_token("till-paris", "pos", nodes=["ST-PAR-01"])
    credentials.add_token("till-paris-geo", "pos", geo_prefixes=["EU/FR"])
    credentials.add_token("web-checkout", "checkout", channels=["web"])
    return credentials


def secure_config(credentials: Credentials, **overrides: Any) -> Config:
    base = Config(
        port=0,
        metrics_port=-1,
        limits=TEST_LIMITS,
        tls_cert_file=credentials.cert_file,
        tls_key_file=credentials.key_file,
        auth_tokens_file=credentials.tokens_file,
        # Short, so reload tests do not wait long; the check is a cheap stat.
        auth_reload_interval_s=0.05,
        audit_log_file=credentials.directory / "audit.log",
    )
    return replace(base, **overrides)


class SecureServer(ServerThread):
    """ServerThread whose channels speak TLS to `localhost` and may carry a token."""

    def __init__(
        self, config: Config, credentials: Credentials, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.credentials = credentials
        super().__init__(config, clock_ms)

    def secure_channel(
        self,
        secret: str | None = None,
        client_cert: tuple[bytes, bytes] | None = None,
        root_pem: bytes | None = None,
    ) -> grpc.Channel:
        key, chain = client_cert if client_cert is not None else (None, None)
        transport = grpc.ssl_channel_credentials(
            root_pem if root_pem is not None else self.credentials.ca.cert_pem.bytes(), key, chain
        )
        if secret is not None:
            transport = grpc.composite_channel_credentials(
                transport, grpc.access_token_call_credentials(secret)
            )
        channel = grpc.secure_channel(f"{TLS_HOST}:{self.port}", transport)
        self._channels.append(channel)
        return channel

    def as_role(self, name: str) -> grpc.Channel:
        return self.secure_channel(self.credentials.secrets[name])


@contextmanager
def secure_server(
    credentials: Credentials, clock_ms: Callable[[], int] | None = None, **overrides: Any
) -> Iterator[SecureServer]:
    server = SecureServer(secure_config(credentials, **overrides), credentials, clock_ms)
    try:
        server.start()
        seed_nodes(server, SECURITY_NODES)
        yield server
    finally:
        server.close()


def status_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def details_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.details())
    raise AssertionError("the call succeeded")
