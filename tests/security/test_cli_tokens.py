"""The CLI end to end against a TLS + token server: `atpd token create` then client commands
with --token (or ATPD_TOKEN) and --ca; no token is UNAUTHENTICATED with its own exit status and
a hint; token list and revoke; a mutual-TLS client certificate; no token in clear off loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from persistence.server_support import subprocess_environment

from atpd.cli.client import EXIT_PERMISSION_DENIED, EXIT_UNAUTHENTICATED
from atpd.service.tokens import hash_secret
from atpd.v1 import inventory_pb2, inventory_pb2_grpc

from .support import TLS_HOST, Credentials, SecureServer, secure_server

CLI_TIMEOUT_S = 60.0
RELOAD_WAIT_S = 30.0


def atpd(*args: str, token_variable: str | None = None) -> subprocess.CompletedProcess[str]:
    """`atpd ARGS...` in a subprocess; ATPD_TOKEN set only when given."""
    environment = subprocess_environment()
    environment.pop("ATPD_TOKEN", None)
    if token_variable is not None:
        environment["ATPD_TOKEN"] = token_variable
    return subprocess.run(
        [sys.executable, "-m", "atpd.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=environment,
        check=False,
    )


def tls_options(server: SecureServer) -> list[str]:
    return ["--target", f"{TLS_HOST}:{server.port}", "--ca", str(server.credentials.ca_file)]


def create(credentials: Credentials, name: str, *options: str) -> str:
    done = atpd("token", "create", name, *options, "--tokens-file", str(credentials.tokens_file))
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("atpd_") and "\n" not in secret
    assert f"token {name!r} created" in done.stderr
    return secret


def until_status(expected: int, *args: str, token_variable: str | None = None) -> str:
    """Run the command until it exits with `expected` (the server reloads the tokens file on
    its own schedule); its stdout and stderr."""
    deadline = time.monotonic() + RELOAD_WAIT_S
    while True:
        done = atpd(*args, token_variable=token_variable)
        if done.returncode == expected or time.monotonic() > deadline:
            assert done.returncode == expected, (done.returncode, done.stdout, done.stderr)
            return done.stdout + done.stderr


def test_created_token_works_over_tls(credentials: Credentials) -> None:
    """A token made by `atpd token create` (only its hash in the file) lets reserve, get and
    status through over TLS, by --token and by ATPD_TOKEN; the reservation shows its maker."""
    with secure_server(credentials) as server:
        secret = create(credentials, "cli-till", "--role", "pos", "--nodes", "ST-PAR-01")
        admin = create(credentials, "cli-admin", "--role", "admin", "--expires", "30d")
        text = credentials.tokens_file.read_text()
        assert secret not in text and hash_secret(secret) in text
        tls = tls_options(server)
        until_status(0, "status", *tls, "--token", admin)
        stock = atpd("nodes", *tls, "--token", secret)
        assert stock.returncode == 0 and "ST-PAR-01" in stock.stdout, stock.stderr
        reserved = atpd("reserve", "cli-1", "SKU-1@ST-PAR-01=1", "--pos", *tls, "--token", secret)
        # No stock was loaded: the till is let in and the server answers a shortage (exit 3).
        assert reserved.returncode == 3 and "INSUFFICIENT_STOCK" in reserved.stdout
        shown = atpd("nodes", *tls, token_variable=secret)
        assert shown.returncode == 0 and "ST-LON-01" in shown.stdout, shown.stderr


def test_reservation_shows_its_maker_in_the_cli(credentials: Credentials) -> None:
    """`atpd get` prints who made the reservation."""
    with secure_server(credentials) as server:
        tls = tls_options(server)
        admin = credentials.secrets["admin"]
        until_status(0, "status", *tls, "--token", admin)
        inventory_pb2_grpc.InventoryServiceStub(server.as_role("admin")).SetStock(
            inventory_pb2.SetStockRequest(
                sku="SKU-1", node_id="ST-PAR-01", on_hand=3, source_sequence=1
            ),
            timeout=CLI_TIMEOUT_S,
        )
        till = credentials.secrets["till-paris"]
        made = atpd("reserve", "cli-2", "SKU-1@ST-PAR-01=1", *tls, "--token", till)
        assert made.returncode == 0, made.stdout + made.stderr
        shown = atpd("get", "cli-2", *tls, "--token", admin)
        assert "made by till-paris (role pos, scope ST-PAR-01)" in shown.stdout, shown.stdout
        refused = atpd("release", "cli-2", *tls, "--token", credentials.secrets["checkout"])
        assert refused.returncode == EXIT_PERMISSION_DENIED
        assert "PERMISSION_DENIED" in refused.stderr and "'cli-2'" in refused.stderr


def test_without_a_token_the_cli_says_unauthenticated(credentials: Credentials) -> None:
    """No token: UNAUTHENTICATED on stderr with a hint, and its own exit status; a role that
    may not call the method: PERMISSION_DENIED and its exit status."""
    with secure_server(credentials) as server:
        tls = tls_options(server)
        done = atpd("status", *tls)
        assert done.returncode == EXIT_UNAUTHENTICATED, done.stderr
        assert "UNAUTHENTICATED" in done.stderr and "--token" in done.stderr
        wrong = atpd("status", *tls, "--token", "atpd_not-a-token")
        assert wrong.returncode == EXIT_UNAUTHENTICATED
        denied = atpd("snapshot", *tls, "--token", credentials.secrets["reader"])
        assert denied.returncode == EXIT_PERMISSION_DENIED
        assert "PERMISSION_DENIED" in denied.stderr and "'reader'" in denied.stderr


def test_token_list_and_revoke(credentials: Credentials) -> None:
    """list shows name, role, scope, channels and revocation but no secret or hash; a revoked
    token is refused by the running server after its reload."""
    with secure_server(credentials) as server:
        secret = create(credentials, "cli-web", "--role", "checkout", "--channels", "web,app")
        tls = tls_options(server)
        until_status(0, "nodes", *tls, "--token", secret)
        revoked = atpd("token", "revoke", "cli-web", "--tokens-file", str(credentials.tokens_file))
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        listed = atpd("token", "list", "--tokens-file", str(credentials.tokens_file))
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-web "))
        assert "checkout" in row and "web, app" in row and row.rstrip().endswith("UTC")
        till = next(line for line in listed.stdout.splitlines() if line.startswith("till-paris "))
        assert "ST-PAR-01" in till and till.rstrip().endswith("-")
        assert secret not in listed.stdout and hash_secret(secret) not in listed.stdout
        until_status(EXIT_UNAUTHENTICATED, "nodes", *tls, "--token", secret)
        again = atpd("token", "revoke", "nobody", "--tokens-file", str(credentials.tokens_file))
        assert again.returncode == 1 and "no token named 'nobody'" in again.stderr


def test_token_create_refuses_bad_requests(credentials: Credentials) -> None:
    """A pos token without a scope, and a name already used, are refused with the reason."""
    tokens = str(credentials.tokens_file)
    done = atpd("token", "create", "till-x", "--role", "pos", "--tokens-file", tokens)
    assert done.returncode == 1 and "needs a node scope" in done.stderr and not done.stdout
    done = atpd("token", "create", "reader", "--role", "reader", "--tokens-file", tokens)
    assert done.returncode == 1 and "exists already" in done.stderr


def test_client_certificate_options(credentials: Credentials, tmp_path: Path) -> None:
    """--cert/--key present a client certificate: with mutual TLS and a certificate role, a
    command goes through without a token."""
    key, chain = credentials.client_cert("cli-terminal")
    key_file, cert_file = tmp_path / "client.key", tmp_path / "client.pem"
    key_file.write_bytes(key)
    cert_file.write_bytes(chain)
    with secure_server(
        credentials,
        tls_client_ca_file=credentials.ca_file,
        certificate_roles={"cli-terminal": "reader"},
    ) as server:
        tls = tls_options(server)
        done = atpd("nodes", *tls, "--cert", str(cert_file), "--key", str(key_file))
        assert done.returncode == 0 and "ST-PAR-01" in done.stdout, done.stderr
        half = atpd("nodes", *tls, "--cert", str(cert_file))
        assert half.returncode == 2 and "--cert and --key" in half.stderr


def test_no_token_in_clear_text_off_loopback() -> None:
    """Without TLS, a token is never sent to a host other than loopback."""
    done = atpd("get", "r-1", "--target", "192.0.2.1:50051", "--token", "atpd_x")
    assert done.returncode == 2 and "clear text" in done.stderr
