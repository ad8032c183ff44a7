"""Authentication over TLS: missing, wrong, expired and revoked tokens; client certificates
(mapped, and from another CA); tokens and certificates reloaded under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
import trustme
from service.harness import FAKE_EPOCH_MS

from atpd.service.tokens import create_token, revoke_token
from atpd.v1 import availability_pb2, availability_pb2_grpc

from .support import (
    Credentials,
    SecureServer,
    details_of,
    secure_server,
    status_of,
)

RPC_TIMEOUT_S = 20.0
# Bounded waits for a reload to take effect (the server looks at the file every 50 ms).
RELOAD_WAIT_S = 20.0
POLL_S = 0.02
REQUEST = availability_pb2.GetAvailabilityRequest(skus=["SKU-1"])


def read(channel: grpc.Channel) -> None:
    availability_pb2_grpc.AvailabilityServiceStub(channel).GetAvailability(
        REQUEST, timeout=RPC_TIMEOUT_S
    )


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


def test_token_lets_a_reader_in(server: SecureServer) -> None:
    """A valid token over TLS reads availability."""
    assert status_of(lambda: read(server.as_role("reader"))) is grpc.StatusCode.OK


@pytest.mark.parametrize(
    "secret",
    ["", "atpd_wrong", "x" * 4_000, "atpd_" + "A" * 43],
)
def test_wrong_or_missing_token_is_unauthenticated(server: SecureServer, secret: str) -> None:
    """A missing or wrong bearer token answers UNAUTHENTICATED with nothing that helps guess."""
    channel = server.secure_channel(secret) if secret else server.secure_channel()
    details = details_of(lambda: read(channel))
    assert status_of(lambda: read(channel)) is grpc.StatusCode.UNAUTHENTICATED
    assert "atpd_" not in details and "sha" not in details.lower()


def test_non_bearer_authorization_is_unauthenticated(server: SecureServer) -> None:
    """An `authorization` header of another scheme (Basic) is refused, not ignored."""
    stub = availability_pb2_grpc.AvailabilityServiceStub(server.secure_channel())
    metadata = (("authorization", "Basic dXNlcjpwYXNz"),)
    code = status_of(lambda: stub.GetAvailability(REQUEST, timeout=5, metadata=metadata))
    assert code is grpc.StatusCode.UNAUTHENTICATED


def test_expired_token_is_unauthenticated(credentials: Credentials) -> None:
    """A token past its expiry answers the same UNAUTHENTICATED as a wrong one."""
    secret = credentials.add_token("old-till", "reader", expires_ms=FAKE_EPOCH_MS + 1_000)
    with secure_server(credentials) as server:
        channel = server.secure_channel(secret)
        assert status_of(lambda: read(channel)) is grpc.StatusCode.UNAUTHENTICATED
        wrong = details_of(lambda: read(server.secure_channel("atpd_wrong")))
        assert details_of(lambda: read(channel)) == wrong


def test_revoked_token_at_start_is_unauthenticated(credentials: Credentials) -> None:
    """A token revoked in the file before the start never works."""
    revoke_token(credentials.tokens_file, "reader", FAKE_EPOCH_MS)
    with secure_server(credentials) as server:
        assert status_of(lambda: read(server.as_role("reader"))) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert status_of(lambda: read(server.as_role("admin"))) is grpc.StatusCode.OK


def test_plaintext_client_cannot_talk_to_tls_port(server: SecureServer) -> None:
    """A client without TLS gets no answer from the TLS port (UNAVAILABLE)."""
    channel = grpc.insecure_channel(server.target)
    try:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        code = status_of(lambda: stub.GetAvailability(REQUEST, timeout=5))
    finally:
        channel.close()
    assert code is grpc.StatusCode.UNAVAILABLE


def test_server_certificate_from_another_ca_is_refused(server: SecureServer) -> None:
    """A client trusting another CA refuses the server's certificate (no call goes through)."""
    other = trustme.CA()
    channel = server.secure_channel(
        server.credentials.secrets["admin"], root_pem=other.cert_pem.bytes()
    )
    assert status_of(lambda: read(channel)) is grpc.StatusCode.UNAVAILABLE


def test_tokens_reload_under_load(credentials: Credentials) -> None:
    """While a client keeps reading, a new token starts working and a revoked one stops,
    without a restart and without a failed call for the tokens that stay."""
    with secure_server(credentials) as server:
        steady = server.as_role("reader")
        failures: list[str] = []
        calls = 0
        stop = threading.Event()

        def keep_reading() -> None:
            nonlocal calls
            while not stop.is_set():
                code = status_of(lambda: read(steady))
                calls += 1
                if code is not grpc.StatusCode.OK:
                    failures.append(code.name)

        worker = threading.Thread(target=keep_reading)
        worker.start()
        try:
            victim = server.as_role("checkout")
            assert status_of(lambda: read(victim)) is grpc.StatusCode.OK
            revoke_token(credentials.tokens_file, "checkout", FAKE_EPOCH_MS)
            wait_until(
                lambda: status_of(lambda: read(victim)) is grpc.StatusCode.UNAUTHENTICATED,
                "the revoked token to stop working",
            )
            secret, _ = create_token(credentials.tokens_file, "new-till", "reader", FAKE_EPOCH_MS)
            newcomer = server.secure_channel(secret)
            wait_until(
                lambda: status_of(lambda: read(newcomer)) is grpc.StatusCode.OK,
                "the new token to work",
            )
        finally:
            stop.set()
            worker.join(RPC_TIMEOUT_S)
        assert calls > 0
        assert not failures, failures


def test_broken_tokens_file_keeps_previous_tokens(credentials: Credentials) -> None:
    """A tokens file that becomes invalid is logged and the previous tokens stay in force."""
    with secure_server(credentials) as server:
        reader = server.as_role("reader")
        credentials.tokens_file.write_text("[[token]]\nname = 'x'\n")
        table = server.app.access.settings.tokens  # type: ignore[union-attr]
        assert server.call(table.reload_now) is False
        assert status_of(lambda: read(reader)) is grpc.StatusCode.OK


def test_sighup_reload_of_tokens(credentials: Credentials) -> None:
    """App.reload_credentials (what SIGHUP runs) re-reads the tokens file at once."""
    with secure_server(credentials, auth_reload_interval_s=3600.0) as server:
        victim = server.as_role("loader")
        assert status_of(lambda: read(victim)) is grpc.StatusCode.OK
        revoke_token(credentials.tokens_file, "loader", FAKE_EPOCH_MS)
        server.call(server.app.reload_credentials)
        assert status_of(lambda: read(victim)) is grpc.StatusCode.UNAUTHENTICATED


def replace_certificate(credentials: Credentials, ca: trustme.CA) -> None:
    """Write a new server certificate from `ca` over the configured files (atomically)."""
    issued = ca.issue_cert("localhost", "127.0.0.1")
    for data, path in (
        (issued.cert_chain_pems[0].bytes(), credentials.cert_file),
        (issued.private_key_pem.bytes(), credentials.key_file),
    ):
        temporary = path.with_suffix(".new")
        temporary.write_bytes(data)
        temporary.replace(path)


def test_certificates_reload_under_load(credentials: Credentials) -> None:
    """Replacing the certificate files switches new connections to the new certificate while
    an open connection keeps working through the change."""
    with secure_server(credentials) as server:
        secret = credentials.secrets["reader"]
        steady = server.secure_channel(secret)
        assert status_of(lambda: read(steady)) is grpc.StatusCode.OK
        new_ca = trustme.CA()
        replace_certificate(credentials, new_ca)
        server.call(server.app.reload_credentials)
        wait_until(
            lambda: (
                status_of(
                    lambda: read(server.secure_channel(secret, root_pem=new_ca.cert_pem.bytes()))
                )
                is grpc.StatusCode.OK
            ),
            "a client trusting the new CA to connect",
        )
        assert status_of(lambda: read(steady)) is grpc.StatusCode.OK
        old_trust = server.secure_channel(secret)
        assert status_of(lambda: read(old_trust)) is grpc.StatusCode.UNAVAILABLE
        assert server.app.certificates is not None and server.app.certificates.reloads >= 1


def test_bad_new_certificate_keeps_the_old_one(credentials: Credentials) -> None:
    """A broken certificate file is logged and the previous certificate keeps serving."""
    with secure_server(credentials) as server:
        credentials.cert_file.write_text("not a certificate\n")
        server.call(server.app.reload_credentials)
        fresh = server.secure_channel(credentials.secrets["reader"])
        assert status_of(lambda: read(fresh)) is grpc.StatusCode.OK


def mutual_server(credentials: Credentials, roles: dict[str, object]) -> object:
    return secure_server(
        credentials, tls_client_ca_file=credentials.ca_file, certificate_roles=roles
    )


def test_mutual_tls_certificate_maps_to_role(credentials: Credentials) -> None:
    """With mutual TLS, a client certificate whose common name is in certificate_roles gets
    that role without a token; one that is not mapped is UNAUTHENTICATED."""
    with mutual_server(credentials, {"till-1.maison.example": "reader"}) as server:  # type: ignore[attr-defined]
        mapped = server.secure_channel(client_cert=credentials.client_cert("till-1.maison.example"))
        assert status_of(lambda: read(mapped)) is grpc.StatusCode.OK
        unmapped = server.secure_channel(client_cert=credentials.client_cert("stranger.example"))
        assert status_of(lambda: read(unmapped)) is grpc.StatusCode.UNAUTHENTICATED


def test_client_certificate_from_another_ca_is_refused(credentials: Credentials) -> None:
    """With mutual TLS, a client certificate signed by another CA (or none) never gets a call
    through, even with a valid token."""
    with mutual_server(credentials, {"till-1.maison.example": "reader"}) as server:  # type: ignore[attr-defined]
        secret = credentials.secrets["admin"]
        rogue = credentials.client_cert("till-1.maison.example", ca=trustme.CA())
        assert status_of(lambda: read(server.secure_channel(secret, client_cert=rogue))) is (
            grpc.StatusCode.UNAVAILABLE
        )
        assert status_of(lambda: read(server.secure_channel(secret))) is (
            grpc.StatusCode.UNAVAILABLE
        )
        good = credentials.client_cert("anything.example")
        assert status_of(lambda: read(server.secure_channel(secret, client_cert=good))) is (
            grpc.StatusCode.OK
        )


def test_unusable_tls_files_refuse_the_start(credentials: Credentials, tmp_path: Path) -> None:
    """A key that does not match the certificate refuses create_server with both files named."""
    from atpd.config import ConfigError

    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    with (
        pytest.raises(ConfigError, match="does not match"),
        secure_server(credentials, tls_key_file=other_key),
    ):
        pass
