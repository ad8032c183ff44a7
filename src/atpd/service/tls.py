"""TLS for the gRPC port: server credentials from `tls_cert_file` / `tls_key_file` (and
`tls_client_ca_file` for mutual TLS, client certificates then required), reloaded without a
restart, and the loopback test behind the safe defaults.

Reloading uses `grpc.dynamic_ssl_server_credentials`: gRPC calls our fetcher at every new TLS
handshake and uses the configuration it answers (None: keep the current one). Verified with
grpc.aio on grpcio 1.85. The fetcher re-reads the files when asked to (SIGHUP: `request_reload`)
or when one of their (mtime, size, inode) changed, looked at no more than once per
`CHECK_INTERVAL_S` so handshakes stay cheap. Connections already open keep the certificate
they were made with. A bad new file (unreadable, not PEM, key not matching the certificate)
is logged and the previous certificates stay in use.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from atpd.files import FileRefused, read_regular_file

log = logging.getLogger(__name__)

MAX_PEM_FILE_BYTES = 1 << 20
CHECK_INTERVAL_S = 1.0


class TlsError(ValueError):
    """The certificate, key or CA files cannot be used; the message names the file."""


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine. An empty host,
    a wildcard (0.0.0.0, ::) and any name but `localhost` count as reachable."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _memory_file(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data` (never on a disk): its fd."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return fd


def _check_pair(cert_pem: bytes, key_pem: bytes, cert_file: Path, key_file: Path) -> None:
    """Refuse a certificate that is not PEM or a key that does not match it. ssl checks both
    but reads files only, so the bytes we will serve go through anonymous in-memory files
    (memfd): the private key is never copied to a disk."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_fd = _memory_file("atpd-cert", cert_pem)
    try:
        key_fd = _memory_file("atpd-key", key_pem)
        try:
            context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
        except ssl.SSLError as error:
            raise TlsError(
                f"{cert_file} / {key_file}: not a PEM certificate chain and its private key, "
                f"or the key does not match the certificate ({error.reason or error})"
            ) from None
        finally:
            os.close(key_fd)
    finally:
        os.close(cert_fd)


def _check_ca(ca_pem: bytes, ca_file: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as error:
        raise TlsError(
            f"{ca_file}: tls_client_ca_file: not PEM CA certificates ({error})"
        ) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, MAX_PEM_FILE_BYTES, what)
    except FileRefused as error:
        raise TlsError(str(error)) from None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class CertificateReloader:
    """Server certificate configuration from files, re-read on request or on change."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self.clock_s = clock_s
        self._lock = threading.Lock()  # the fetcher may run on a gRPC core thread
        self._reload_requested = False
        self._checked_s = clock_s()
        self.reloads = 0
        self._stamps = self._current_stamps()
        self.initial = self.load()

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _files(self) -> tuple[Path, ...]:
        files = (self.cert_file, self.key_file)
        return (*files, self.client_ca_file) if self.client_ca_file is not None else files

    def _current_stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stamp(path) for path in self._files())

    def load(self) -> grpc.ServerCertificateConfiguration:
        """Read and check the files now; TlsError naming the file if they cannot be used."""
        cert_pem = _read(self.cert_file, "tls_cert_file")
        key_pem = _read(self.key_file, "tls_key_file")
        _check_pair(cert_pem, key_pem, self.cert_file, self.key_file)
        ca_pem: bytes | None = None
        if self.client_ca_file is not None:
            ca_pem = _read(self.client_ca_file, "tls_client_ca_file")
            _check_ca(ca_pem, self.client_ca_file)
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], ca_pem)

    def request_reload(self) -> None:
        """Re-read the files at the next handshake (SIGHUP)."""
        with self._lock:
            self._reload_requested = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration when the files changed, else None."""
        with self._lock:
            now_s = self.clock_s()
            if not self._reload_requested and now_s - self._checked_s < CHECK_INTERVAL_S:
                return None
            self._checked_s = now_s
            stamps = self._current_stamps()
            if not self._reload_requested and stamps == self._stamps:
                return None
            self._reload_requested = False
            self._stamps = stamps
            try:
                configuration = self.load()
            except TlsError as error:
                log.error("TLS certificates not reloaded, the previous ones stay: %s", error)
                return None
            self.reloads += 1
            log.info("TLS certificates reloaded from %s", self.cert_file)
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            # grpc-stubs says the fetcher may not answer None; gRPC documents None as "keep".
            self.initial,
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )
